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

/* The short plain-text body of an error usher makes itself ("502 Bad
 * Gateway: <detail>\n") into <out> (<cap> bytes). Returns its length. */
int headers_error_text(char *out, size_t cap, int status, const char *detail);

/* ---- HTTP/2 clients (RFC 9113 section 8) ------------------------------------ */

/* One field of an HTTP/2 header list, as HPACK decoded it. */
struct h2_field {
    struct http1_slice name;
    struct http1_slice value;
};

/* What headers_h2_request found in an HTTP/2 request (slices point into
 * the fields). */
struct h2_request {
    enum http1_method method_id;
    struct http1_slice method, path, authority, user_agent;
    enum http1_framing framing; /* of the body as forwarded: NONE, LENGTH or CHUNKED */
    bool has_content_length;
    uint64_t content_length;
    int error_status;         /* on failure: 400, 414, 431 or 501 (0: out of memory) */
    const char *error_reason; /* on failure: a static reason */
};

/* Translates the HTTP/2 request <f> (<n> fields, pseudo-headers first;
 * <end_stream>: it has no body) into the HTTP/1.1 head its backend gets,
 * appended to <out>: "METHOD :path HTTP/1.1", Host from :authority (else
 * host), cookie crumbs joined in one Cookie (RFC 9113 8.2.3), te and
 * http2-settings dropped, Content-Length as sent (0 for a body-less
 * POST/PUT/PATCH), Transfer-Encoding: chunked for a body without one, and
 * X-Forwarded-* and X-Request-Id as for HTTP/1.1 (<fi>). A malformed
 * request (RFC 9113 8.1.1: connection-specific fields, te other than
 * trailers, bad pseudo-headers, names with uppercase, values with CR, LF,
 * NUL or surrounding whitespace, Host disagreeing with :authority) is 400,
 * a :path over lim->max_uri_bytes 414, more than lim->max_headers fields
 * 431, CONNECT 501: -1 with req->error_status and nothing usable in <out>.
 * A pure function over the list: fuzzed (test/fuzz/fuzz_h2_request.c).
 * Returns 0 or -1. */
int headers_h2_request(struct hbuf *out, const struct h2_field *f, size_t n, bool end_stream,
                       const struct http1_limits *lim, const struct forward_info *fi,
                       struct h2_request *req);

/* The fields an HTTP/2 client gets for the response head <res> (final or
 * interim): ":status" first, then its fields with names lowercased (copied
 * into <scratch>, which the slices then point into), without the
 * connection-specific ones (RFC 9113 8.2.2), Transfer-Encoding (the body
 * goes de-chunked) and those its Connection names. <out> has room for
 * res->msg.num_headers + 1. Returns the count, or -1 (memory). */
int headers_h2_response(const struct http1_response *res, struct hbuf *scratch,
                        struct h2_field *out);

/* The trailer fields of <lines> (kept "name: value\r\n" lines of a chunked
 * body, struct body_state's trailers) as at most <cap> HTTP/2 fields, names
 * lowercased into <scratch>. Returns the count, or -1 (memory). */
int headers_h2_trailers(const struct hbuf *lines, struct hbuf *scratch, struct h2_field *out,
                        size_t cap);

#endif
