/* libFuzzer harness for http1_chunked_scan and http1_chunked_filter: the
 * data scanned whole and in pieces (each piece in its own exactly sized heap
 * copy) must give the same result, and counts stay within what was given;
 * the filter must agree with the scanner on the framing, and give the same
 * bytes whole and in pieces. */
#include "parser/http1.h"

#include <stdlib.h>
#include <string.h>

/* Piece sizes cycle through 1..MAX_PIECE, starting from the data's size. */
#define MAX_PIECE 7

/* Some trailers kept, some dropped: the names of odd length go. */
static bool drop_odd(struct http1_slice name)
{
    return name.len % 2;
}

/* Runs the filter over <data> fed <step(i)> bytes at a time behind what it
 * held back, as a connection does; the bytes passed on go to <out> (which
 * has room for <size>). Returns the last result; *<out_len> bytes out. */
static int filter_pieces(const uint8_t *data, size_t size, bool whole, char *out, size_t *out_len,
                         struct http1_chunked *c)
{
    char *buf = malloc(size ? size : 1);
    size_t have = 0, at = 0, step = size % MAX_PIECE + 1;
    int r = HTTP1_AGAIN;

    if (!buf)
        abort();
    http1_chunked_init(c);
    *out_len = 0;
    while (r == HTTP1_AGAIN && at < size) {
        size_t add = whole ? size : (size - at < step ? size - at : step);
        memcpy(buf + have, data + at, add);
        at += add;
        have += add;
        step = step % MAX_PIECE + 1;
        size_t n = have, used;
        r = http1_chunked_filter(c, buf, &n, &used, drop_odd);
        if (n > have || used > n)
            abort();
        memcpy(out + *out_len, buf, used);
        *out_len += used;
        memmove(buf, buf + used, n - used);
        have = n - used;
    }
    free(buf);
    return r;
}

static void check_filter(const uint8_t *data, size_t size, int scan_r,
                         const struct http1_chunked *scanned)
{
    struct http1_chunked fw, fp;
    size_t lw, lp;
    char *ow = malloc(size ? size : 1), *op = malloc(size ? size : 1);
    if (!ow || !op)
        abort();
    int rw = filter_pieces(data, size, true, ow, &lw, &fw);
    int rp = filter_pieces(data, size, false, op, &lp, &fp);
    if (size && (rw != scan_r || fw.error_reason != scanned->error_reason ||
                 fw.data_bytes != scanned->data_bytes))
        abort();
    if (rp != rw || lp != lw || memcmp(ow, op, lw) || fp.error_reason != fw.error_reason)
        abort();
    free(ow);
    free(op);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct http1_chunked whole, parts;
    size_t consumed, total = 0, n;
    int r, rp = HTTP1_AGAIN;
    char *buf = malloc(size ? size : 1);

    if (!buf)
        return 0;
    memcpy(buf, data, size);
    http1_chunked_init(&whole);
    r = http1_chunked_scan(&whole, buf, size, &consumed);
    free(buf);
    if (consumed > size || whole.data_bytes > consumed)
        abort();
    if (r == HTTP1_AGAIN && consumed != size)
        abort();
    if (r == HTTP1_ERROR && !whole.error_reason)
        abort();
    if (r != HTTP1_OK && r != HTTP1_AGAIN && r != HTTP1_ERROR)
        abort();

    http1_chunked_init(&parts);
    for (size_t at = 0, step = size % MAX_PIECE + 1; at < size && rp == HTTP1_AGAIN;
         at += step, step = step % MAX_PIECE + 1) {
        size_t len = size - at < step ? size - at : step;
        char *piece = malloc(len);
        if (!piece)
            abort();
        memcpy(piece, data + at, len);
        rp = http1_chunked_scan(&parts, piece, len, &n);
        free(piece);
        if (n > len)
            abort();
        total += n;
    }
    if (size == 0)
        rp = r;
    if (rp != r || total != consumed || parts.data_bytes != whole.data_bytes ||
        parts.error_reason != whole.error_reason)
        abort();
    check_filter(data, size, r, &whole);
    return 0;
}
