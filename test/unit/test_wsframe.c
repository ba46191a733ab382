// links: usher_proxy_core
/* The WebSocket frame tracker (proxy/core/wsframe.c): boundaries found
 * whatever the read sizes, fed whole and one byte at a time; lengths it
 * cannot follow make it give up, never guess. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "proxy/core/wsframe.h"
#include "test/unit/check.h"

/* Appends one frame (opcode <op>, <len> payload bytes, masked or not) to
 * <out>; returns its size. */
static size_t frame(uint8_t *out, unsigned op, uint64_t len, int masked, int fin)
{
    size_t n = 0;
    out[n++] = (uint8_t)((fin ? 0x80 : 0) | op);
    uint8_t m = masked ? 0x80 : 0;
    if (len < 126) {
        out[n++] = m | (uint8_t)len;
    } else if (len <= 0xffff) {
        out[n++] = m | 126;
        out[n++] = (uint8_t)(len >> 8);
        out[n++] = (uint8_t)len;
    } else {
        out[n++] = m | 127;
        for (int i = 7; i >= 0; i--)
            out[n++] = (uint8_t)(len >> (8 * i));
    }
    if (masked) {
        memcpy(out + n, "\x12\x34\x56\x78", 4);
        n += 4;
    }
    memset(out + n, 0xa5, (size_t)len);
    return n + (size_t)len;
}

/* Feeds <buf> in pieces of <step> bytes; records every boundary offset. */
static size_t feed(const uint8_t *buf, size_t len, size_t step, size_t *bounds, size_t cap,
                   struct ws_tracker *t)
{
    size_t nb = 0;
    for (size_t off = 0; off < len; off += step) {
        size_t n = len - off < step ? len - off : step;
        size_t b = ws_track(t, buf + off, n);
        if (b && nb < cap && (nb == 0 || bounds[nb - 1] != off + b))
            bounds[nb++] = off + b;
    }
    return nb;
}

static void test_boundaries(void)
{
    static uint8_t buf[200000];
    size_t ends[8], n = 0, k = 0;
    n += frame(buf + n, 0x1, 5, 1, 1); /* masked text */
    ends[k++] = n;
    n += frame(buf + n, 0x2, 0, 0, 1); /* empty binary */
    ends[k++] = n;
    n += frame(buf + n, 0x2, 300, 1, 0); /* 16-bit length, fragment */
    ends[k++] = n;
    n += frame(buf + n, 0x9, 4, 1, 1); /* ping inside the fragmented message */
    ends[k++] = n;
    n += frame(buf + n, 0x0, 70000, 0, 1); /* 64-bit length, last fragment */
    ends[k++] = n;
    n += frame(buf + n, 0x8, 2, 1, 1); /* close */
    ends[k++] = n;
    size_t steps[] = {1, 2, 3, 7, 125, 4096, n};
    for (size_t s = 0; s < sizeof(steps) / sizeof(steps[0]); s++) {
        struct ws_tracker t;
        memset(&t, 0, sizeof(t));
        size_t bounds[64];
        size_t nb = feed(buf, n, steps[s], bounds, 64, &t);
        CHECK(!t.broken, "step %zu: broken", steps[s]);
        CHECK(ws_at_boundary(&t), "step %zu: not at a boundary at the end", steps[s]);
        CHECK(t.close_seen, "step %zu: close not seen", steps[s]);
        if (steps[s] == 1) {
            /* one byte at a time: every boundary is seen exactly */
            CHECK(nb == k, "step 1: %zu boundaries, want %zu", nb, k);
            for (size_t i = 0; i < nb && i < k; i++)
                CHECK(bounds[i] == ends[i], "boundary %zu at %zu, want %zu", i, bounds[i], ends[i]);
        } else {
            /* a piece reports the last boundary within it: each is a real one */
            for (size_t i = 0; i < nb; i++) {
                int real = 0;
                for (size_t j = 0; j < k; j++)
                    real |= bounds[i] == ends[j];
                CHECK(real, "step %zu: boundary at %zu is none", steps[s], bounds[i]);
            }
        }
    }
    /* mid-frame: no boundary yet */
    struct ws_tracker t;
    memset(&t, 0, sizeof(t));
    CHECK(ws_at_boundary(&t), "a fresh tracker starts at a boundary");
    CHECK(ws_track(&t, buf, 3) == 0, "no frame ends in 3 bytes of a 11-byte frame");
    CHECK(!ws_at_boundary(&t), "mid-frame");
}

static void test_bad_lengths(void)
{
    struct {
        const char *what;
        uint8_t bytes[12];
        size_t len;
    } cases[] = {
        {"64-bit length with the top bit", {0x82, 0x7f, 0x80, 0, 0, 0, 0, 0, 0, 1}, 10},
        {"16-bit length below 126", {0x82, 0x7e, 0x00, 0x10}, 4},
        {"64-bit length below 65536", {0x82, 0x7f, 0, 0, 0, 0, 0, 0, 0x10, 0}, 10},
        {"control frame over 125 bytes", {0x89, 0x7e, 0x00, 0x80}, 4},
        {"fragmented control frame", {0x09, 0x00}, 2},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        for (size_t step = 1; step <= cases[i].len; step += cases[i].len - 1) {
            struct ws_tracker t;
            memset(&t, 0, sizeof(t));
            size_t bounds[4];
            feed(cases[i].bytes, cases[i].len, step, bounds, 4, &t);
            CHECK(t.broken, "%s (step %zu): not detected", cases[i].what, step);
            CHECK(!ws_at_boundary(&t), "%s: a broken stream has no boundary", cases[i].what);
            uint8_t more[2] = {0x81, 0x00};
            CHECK(ws_track(&t, more, 2) == 0, "%s: broken for good", cases[i].what);
        }
    }
}

static void test_close_frame(void)
{
    uint8_t f[WS_CLOSE_FRAME_MAX];
    size_t n = ws_close_frame(f, WS_CLOSE_GOING_AWAY, 0, 0);
    CHECK(n == 4 && f[0] == 0x88 && f[1] == 0x02 && f[2] == 0x03 && f[3] == 0xe9,
          "unmasked close 1001: %zu bytes %02x %02x %02x %02x", n, f[0], f[1], f[2], f[3]);
    n = ws_close_frame(f, WS_CLOSE_GOING_AWAY, 1, 0x01020304);
    CHECK(n == 8 && f[0] == 0x88 && f[1] == 0x82, "masked close header");
    CHECK((f[6] ^ f[2]) == 0x03 && (f[7] ^ f[3]) == 0xe9, "masked close payload unmasks to 1001");
    struct ws_tracker t;
    memset(&t, 0, sizeof(t));
    CHECK(ws_track(&t, f, n) == n && t.close_seen, "the tracker follows its own close frame");
}

int main(void)
{
    test_boundaries();
    test_bad_lengths();
    test_close_frame();
    return check_report("test_wsframe");
}
