/* Body framing on the wire: how many of the bytes read belong to the
 * current message's body (Content-Length, chunked, until close), and
 * de-chunking in place for an HTTP/1.0 client. No I/O. */
#ifndef USHER_PROXY_BODY_H
#define USHER_PROXY_BODY_H

#include <stdbool.h>
#include <stdint.h>

#include "../../parser/http1-t.h"
#include "../base/buf.h"

/* Where a message's body stands. */
struct body_state {
    enum http1_framing framing;
    bool done;                    /* every body byte has been framed (maybe not yet sent) */
    bool dechunk;                 /* strip the chunked framing (for an HTTP/1.0 client) */
    uint64_t left;                /* HTTP1_BODY_LENGTH: bytes still to come */
    struct http1_chunked chunked; /* HTTP1_BODY_CHUNKED scanner */
    /* dechunk: where the kept trailer lines go ("name: value\r\n", the ones
     * headers_trailer_dropped spares, then the final CRLF), for an HTTP/2
     * client's trailing HEADERS; NULL: trailers are dropped with the
     * framing (an HTTP/1.0 client) */
    struct hbuf *trailers;
};

/* Starts the body of message <m> (its head just parsed). <dechunk> strips
 * the chunked framing and only applies to a chunked body. */
void body_start(struct body_state *bs, const struct http1_message *m, bool dechunk);

/* Extends *<fwd> over the bytes of <b> after *<fwd> that belong to the body
 * (de-chunking them in place if bs->dechunk). Bytes after the body stay in
 * <b>, unframed. Returns 0, or -1 on invalid chunked framing (the reason is
 * bs->chunked.error_reason). <b> may be NULL. */
int body_frame(struct body_state *bs, struct buf *b, size_t *fwd);

/* <n> body bytes went past the buffer (spliced, kernel to kernel): counts
 * them as framed. Only for a Content-Length or until-close body that is not
 * de-chunked; <n> never exceeds bs->left. */
void body_took(struct body_state *bs, size_t n);

#endif
