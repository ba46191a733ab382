/* libFuzzer harness for http1_chunked_scan: the data scanned whole and in
 * pieces (each piece in its own exactly sized heap copy) must give the same
 * result, and counts stay within what was given. */
#include "parser/http1.h"

#include <stdlib.h>
#include <string.h>

/* Piece sizes cycle through 1..MAX_PIECE, starting from the data's size. */
#define MAX_PIECE 7

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
    return 0;
}
