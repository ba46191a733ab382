/* One HTTP/1.1 response, read as its bytes arrive, for usher's own clients
 * (usher ctl, the etcd gateway client), over parser/http1: the head
 * (http1_parse_response, as strict as for a backend's answer), then the
 * body by Content-Length, chunked (http1_chunked_decode: extensions
 * skipped, trailers read and dropped) or until the connection closes.
 * Interim 1xx heads are skipped. The decoded body is kept in <body>, at
 * most <body_max> bytes at a time: a streaming caller (the etcd watch)
 * takes what it used off the front with h1resp_body_take, so a long-lived
 * body is bounded per unconsumed message, not in all.
 *
 *     struct h1resp r;
 *     h1resp_init(&r, HTTP1_METHOD_GET, 1 << 20);
 *     while ((n = read(fd, buf, sizeof(buf))) > 0)
 *         if (h1resp_feed(&r, buf, n) != H1RESP_AGAIN)
 *             break;
 *     if (n == 0)
 *         h1resp_eof(&r);
 *     ... r.done ? r.status, r.body : r.error ...
 *     h1resp_free(&r);
 *
 * No I/O and no libev: the caller reads. Not for the data plane, which
 * streams bodies without holding them. */
#ifndef USHER_BASE_H1RESP_H
#define USHER_BASE_H1RESP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "../../parser/http1-t.h"
#include "buf.h"

/* Returns of h1resp_feed and h1resp_eof (the house's 0 / negative / AGAIN). */
enum {
    H1RESP_DONE = 0,   /* the response is complete */
    H1RESP_ERROR = -1, /* it is not a valid response, or too large: <error> says why */
    H1RESP_AGAIN = -2, /* more bytes needed */
};

/* A response head larger than this is refused: usher's admin listener and
 * etcd's gateway send a few hundred bytes. */
#define H1RESP_HEAD_MAX (16 * 1024)
/* Header fields in one head, at most. */
#define H1RESP_HEADERS_MAX 64

/* The error reasons of the reader itself (the parser's own reasons, such
 * as "invalid chunk size", come through <error> as they are). */
extern const char h1resp_err_body_too_large[];
extern const char h1resp_err_closed_in_head[];
extern const char h1resp_err_closed_in_body[];
extern const char h1resp_err_upgrade[];
extern const char h1resp_err_nomem[];

struct h1resp {
    /* the head, once <have_head> */
    bool have_head;
    int status;
    enum http1_framing framing;
    /* the body decoded so far (data[len] is a NUL once anything came) */
    struct hbuf body;
    bool done;         /* the whole response is in */
    const char *error; /* static, once H1RESP_ERROR was returned */

    /* internal */
    enum http1_method method;
    size_t body_max;
    struct hbuf in; /* bytes of a head not yet complete */
    uint64_t length_left;
    struct http1_chunked chunked;
};

/* Readies <r> for the response to a request of <method> (HEAD changes the
 * framing), holding at most <body_max> bytes of body at a time. */
void h1resp_init(struct h1resp *r, enum http1_method method, size_t body_max);

/* Frees what <r> holds; it may be initialised again. */
void h1resp_free(struct h1resp *r);

/* Reads the <n> bytes at <data>, the next bytes from the connection.
 * Returns H1RESP_AGAIN (more needed), H1RESP_DONE (complete; bytes after
 * the response are ignored) or H1RESP_ERROR (<error> says why; feeding
 * more changes nothing). <have_head> and <body> may be read after any
 * return. */
int h1resp_feed(struct h1resp *r, const char *data, size_t n);

/* The connection closed. Returns H1RESP_DONE if the response is complete
 * (a body until close ends here), H1RESP_ERROR if it was cut short. */
int h1resp_eof(struct h1resp *r);

/* Drops the first <n> bytes of <body>, which the caller used. */
void h1resp_body_take(struct h1resp *r, size_t n);

#endif
