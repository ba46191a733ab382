#include "body.h"

#include <string.h>

#include "../../parser/http1.h"
#include "headers.h"

void body_start(struct body_state *bs, const struct http1_message *m, bool dechunk)
{
    bs->framing = m->framing;
    bs->dechunk = dechunk && m->framing == HTTP1_BODY_CHUNKED;
    bs->left = m->content_length;
    http1_chunked_init(&bs->chunked);
    bs->trailers = NULL;
    bs->done = m->framing == HTTP1_BODY_NONE ||
               (m->framing == HTTP1_BODY_LENGTH && m->content_length == 0);
}

/* The scanner stands where a trailer line (or the final CRLF) starts, or
 * inside a run of chunk data: the parser names its states. */
static bool scanner_at(const struct http1_chunked *c, const char *state)
{
    return strcmp(http1_chunked_state_str(c), state) == 0;
}

/* The payload of the raw bytes after *<fwd> moves down to join the bytes
 * ready to send; the chunk framing is dropped. With bs->trailers, the
 * trailer section is filtered as for HTTP/1.1 (headers_trailer_dropped) and
 * its kept lines move there instead of being dropped: the scanner is then
 * fed a line at a time outside chunk data, so it stops where the trailers
 * begin. */
static int dechunk(struct body_state *bs, struct buf *b, size_t *fwd)
{
    char *raw = buf_head(b) + *fwd;
    size_t raw_len = buf_len(b) - *fwd, rd = 0;
    char *wr = raw;
    while (rd < raw_len && !bs->done) {
        size_t avail = raw_len - rd, used, off, len;
        /* a trailer line starts, or the final CRLF's LF is still due */
        if (bs->trailers &&
            (scanner_at(&bs->chunked, "trailer") || scanner_at(&bs->chunked, "end-lf"))) {
            int rc = http1_chunked_filter(&bs->chunked, raw + rd, &avail, &used,
                                          headers_trailer_dropped);
            if (rc == HTTP1_ERROR || hbuf_append(bs->trailers, raw + rd, used) < 0)
                return -1;
            raw_len = rd + avail; /* dropped lines are gone from the buffer */
            rd += used;
            bs->done = rc == HTTP1_OK;
            if (rc == HTTP1_AGAIN)
                break; /* a partial line waits for the rest */
            continue;
        }
        if (bs->trailers && !scanner_at(&bs->chunked, "data")) {
            const char *lf = memchr(raw + rd, '\n', avail);
            if (lf)
                avail = (size_t)(lf - (raw + rd)) + 1;
        }
        int rc = http1_chunked_decode(&bs->chunked, raw + rd, avail, &used, &off, &len);
        if (rc == HTTP1_ERROR)
            return -1;
        memmove(wr, raw + rd + off, len);
        wr += len;
        rd += used;
        bs->done = rc == HTTP1_OK;
    }
    size_t rest = raw_len - rd; /* after the body: never forwarded */
    memmove(wr, raw + rd, rest);
    *fwd = (size_t)(wr - buf_head(b));
    b->end = b->start + *fwd + rest;
    return 0;
}

void body_took(struct body_state *bs, size_t n)
{
    if (bs->framing != HTTP1_BODY_LENGTH)
        return;
    bs->left -= n;
    bs->done = bs->left == 0;
}

int body_frame(struct body_state *bs, struct buf *b, size_t *fwd)
{
    if (bs->done || !b)
        return 0;
    if (bs->dechunk)
        return dechunk(bs, b, fwd);
    size_t avail = buf_len(b) - *fwd;
    switch (bs->framing) {
    case HTTP1_BODY_NONE:
        bs->done = true;
        break;
    case HTTP1_BODY_LENGTH: {
        size_t take = bs->left < avail ? (size_t)bs->left : avail;
        *fwd += take;
        bs->left -= take;
        bs->done = bs->left == 0;
        break;
    }
    case HTTP1_BODY_CHUNKED: {
        if (avail == 0)
            break;
        /* trailer fields that framing, routing or credentials depend on are
         * dropped in place (DESIGN "HTTP behaviour") */
        size_t used = 0, kept = avail;
        int rc = http1_chunked_filter(&bs->chunked, buf_head(b) + *fwd, &kept, &used,
                                      headers_trailer_dropped);
        b->end -= avail - kept;
        *fwd += used;
        if (rc == HTTP1_ERROR)
            return -1;
        bs->done = rc == HTTP1_OK;
        break;
    }
    case HTTP1_BODY_UNTIL_CLOSE:
        *fwd += avail;
        break;
    }
    return 0;
}
