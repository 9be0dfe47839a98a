/*
 * mono_ms.h — CLOCK_MONOTONIC in milliseconds: the clock of every poll
 * deadline (curl_watch.c, ws_client.c).
 */
#ifndef IBKR_MONO_MS_H
#define IBKR_MONO_MS_H

#include <stdint.h>
#include <time.h>

static inline int64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

#endif
