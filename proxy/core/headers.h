/* Rebuilding heads: usher never forwards a head as it came in. It writes a
 * new one with hop-by-hop fields removed and its own fields added, so what a
 * peer sees is exactly what usher understood (RFC 9110 section 7.6.1). */
#ifndef USHER_PROXY_HEADERS_H
#define USHER_PROXY_HEADERS_H

#include <stdbool.h>
#include "../../parser/http1-t.h"
#include "../base/buf.h"

/* What the rebuilt request head must carry besides the client's fields. */
struct forward_info {
    const char *client_addr; /* appended to X-Forwarded-For */
    const char *proto;       /* X-Forwarded-Proto: "http" or "https" */
    bool upgrade;            /* keep Upgrade and send Connection: upgrade */
    /* X-Request-Id: the client's first non-empty one is forwarded (any
     * other dropped) if it is at most <request_id_max> bytes (0: any
     * length), and then put in *<request_id_out> (if not NULL); otherwise
     * <new_request_id>(<ctx>) (if set) gives the id to send. Found in the
     * one pass over the fields that rebuilds the head. */
    size_t request_id_max;
    struct http1_slice *request_id_out;
    const char *(*new_request_id)(void *ctx);
    void *ctx;
};

/* The first non-empty X-Request-Id of <m> in *<id>. Returns false if none.
 * For an answer usher makes itself, where no head is rebuilt. */
bool headers_request_id(const struct http1_message *m, struct http1_slice *id);

/* Appends the upstream request head for <req> to <out>. Returns 0 or -1. */
int headers_build_request(struct hbuf *out, const struct http1_request *req,
                          const struct forward_info *fi);

/* True for a trailer field name that must not reach the next hop (framing,
 * routing, credentials, hop-by-hop): the <drop> of http1_chunked_filter. */
bool headers_trailer_dropped(struct http1_slice name);

/* How the response head must end for the client. */
enum response_conn {
    RESPONSE_CONN_KEEP_ALIVE = 1, /* HTTP/1.1 client: nothing to add */
    RESPONSE_CONN_KEEP_ALIVE_10,  /* HTTP/1.0 client: Connection: keep-alive */
    RESPONSE_CONN_CLOSE,          /* Connection: close */
    RESPONSE_CONN_UPGRADE,        /* 101: Connection: upgrade + Upgrade */
};

/* Appends the client response head for <res> to <out>; <dechunk> drops
 * Transfer-Encoding (the body goes out de-chunked, delimited by the close).
 * Returns 0 or -1. */
int headers_build_response(struct hbuf *out, const struct http1_response *res,
                           enum response_conn conn, bool dechunk);

/* Appends a complete response usher makes itself: <status> with a short
 * plain-text body naming <detail> (may be NULL). Returns 0 or -1. */
int headers_build_error(struct hbuf *out, int status, const char *detail, bool close,
                        bool head_only);

#endif
