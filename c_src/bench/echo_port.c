/*
 * echo_port.c — the IPC floor for benchmarks: echoes every {packet,4} frame
 * read on fd 3 to fd 4 unchanged. Same transport as ibkr_oauth_port, no
 * decoding at all. Frames arrive back to back in one buffer, so all complete
 * frames of a read go out in a single write. Exits 0 on EOF.
 */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define BUF_BASE ((size_t)64 * 1024)
#define FRAME_MAX ((size_t)64 * 1024 * 1024)

static int write_all(int fd, const char *p, size_t n)
{
    while (n > 0) {
        ssize_t k = write(fd, p, n);
        if (k < 0) {
            if (errno == EINTR)
                continue;
            return -1;
        }
        p += k;
        n -= (size_t)k;
    }
    return 0;
}

int main(void)
{
    size_t cap = BUF_BASE, len = 0;
    char *buf = malloc(cap);
    if (buf == NULL)
        return 1;
    for (;;) {
        ssize_t n = read(3, buf + len, cap - len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            break;
        len += (size_t)n;

        /* The prefix made of complete frames. */
        size_t off = 0, need = 0;
        while (len - off >= 4) {
            const unsigned char *h = (const unsigned char *)buf + off;
            uint32_t flen = ((uint32_t)h[0] << 24) | ((uint32_t)h[1] << 16) |
                            ((uint32_t)h[2] << 8) | h[3];
            if (flen > FRAME_MAX) {
                free(buf);
                return 1;
            }
            if (len - off - 4 < flen) {
                need = 4 + (size_t)flen;
                break;
            }
            off += 4 + (size_t)flen;
        }
        if (off > 0 && write_all(4, buf, off) != 0)
            break;
        len -= off;
        memmove(buf, buf + off, len);
        if (need > cap) {
            char *p = realloc(buf, need);
            if (p == NULL)
                break;
            buf = p;
            cap = need;
        }
    }
    free(buf);
    return 0;
}
