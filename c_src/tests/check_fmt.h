/*
 * check_fmt.h — snprintf for the cmocka tests that fails the test on an
 * encoding error or truncation: a cut-off path or expected value would
 * silently test something else. Include after <cmocka.h>.
 */
#ifndef IBKR_CHECK_FMT_H
#define IBKR_CHECK_FMT_H

#include <stddef.h>
#include <stdio.h>

static inline int check_fmt_fits(int n, size_t cap)
{
    return n >= 0 && (size_t)n < cap;
}

#define CHECK_FMT(buf, cap, ...) assert_true(check_fmt_fits(snprintf((buf), (cap), __VA_ARGS__), (cap)))

#endif
