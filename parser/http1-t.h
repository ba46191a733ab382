/* HTTP/1.x message head and chunked framing: types only. */
#ifndef USHER_PARSER_HTTP1_T_H
#define USHER_PARSER_HTTP1_T_H

#include <stddef.h>
#include <stdint.h>

/* Return convention shared by every parser entry point (nginx-style):
 * HTTP1_OK on success, HTTP1_AGAIN when more bytes are needed, HTTP1_ERROR on
 * invalid input (the message struct then carries the status and reason). */
enum {
    HTTP1_OK = 0,
    HTTP1_ERROR = -1,
    HTTP1_AGAIN = -2,
};

/* A view into the caller's buffer; never owned, never NUL-terminated. */
struct http1_slice {
    const char *ptr;
    size_t len;
};

struct http1_header {
    struct http1_slice name;
    struct http1_slice value;
};

/* How the message body is delimited (RFC 9112 section 6.3). */
enum http1_framing {
    HTTP1_BODY_NONE = 1,   /* no body at all */
    HTTP1_BODY_LENGTH,     /* exactly content_length bytes */
    HTTP1_BODY_CHUNKED,    /* chunked transfer coding, final */
    HTTP1_BODY_UNTIL_CLOSE /* response only: body ends when the connection closes */
};

enum http1_method {
    HTTP1_METHOD_OTHER = 1,
    HTTP1_METHOD_GET,
    HTTP1_METHOD_HEAD,
    HTTP1_METHOD_POST,
    HTTP1_METHOD_PUT,
    HTTP1_METHOD_DELETE,
    HTTP1_METHOD_OPTIONS,
    HTTP1_METHOD_CONNECT,
    HTTP1_METHOD_TRACE,
    HTTP1_METHOD_PATCH,
};

/* Flags computed from Connection, Expect, Upgrade, Transfer-Encoding. */
enum http1_flag {
    HTTP1_F_CONN_CLOSE = 1u << 0,      /* Connection: close */
    HTTP1_F_CONN_KEEPALIVE = 1u << 1,  /* Connection: keep-alive */
    HTTP1_F_CONN_UPGRADE = 1u << 2,    /* Connection: upgrade */
    HTTP1_F_EXPECT_CONTINUE = 1u << 3, /* Expect: 100-continue */
    HTTP1_F_HAS_UPGRADE = 1u << 4,     /* an Upgrade header field is present */
    HTTP1_F_HAS_TE = 1u << 5,          /* a Transfer-Encoding header field is present */
    HTTP1_F_HAS_CL = 1u << 6,          /* a Content-Length header field is present */
    HTTP1_F_KEEP_ALIVE = 1u << 7, /* net result: the connection may persist after this message */
    /* The request target was in absolute-form ("http://b.test/x", RFC 9112
     * section 3.2.2): target is now its path and query (may be empty or
     * start with '?': origin-form then needs a leading '/'), host its
     * authority, which replaces any Host field. */
    HTTP1_F_ABSOLUTE_FORM = 1u << 8,
};

/* Limits applied while parsing; from the config's `limits` section. */
struct http1_limits {
    size_t max_head_bytes; /* whole head incl. final CRLF; over it: 431 (request) */
    size_t max_headers;    /* header fields; over it: 431. Also the capacity of the headers array */
    size_t max_uri_bytes;  /* request target; over it: 414 */
};

/* Fields shared by requests and responses. */
struct http1_message {
    int minor_version;            /* 0 or 1 (HTTP/1.0, HTTP/1.1) */
    struct http1_header *headers; /* caller-provided array of limits.max_headers entries */
    size_t num_headers;
    size_t head_len; /* bytes of the head including the final CRLF CRLF */
    enum http1_framing framing;
    uint64_t content_length;       /* valid when framing == HTTP1_BODY_LENGTH */
    unsigned flags;                /* enum http1_flag */
    struct http1_slice upgrade;    /* Upgrade field value, if HTTP1_F_HAS_UPGRADE */
    struct http1_slice connection; /* last Connection field value (tokens), may be empty */
    /* On HTTP1_ERROR: the status to answer (400, 414, 431, 501, 505 for
     * requests; 502 for responses) and a static human-readable reason. */
    int error_status;
    const char *error_reason;
};

struct http1_request {
    struct http1_message msg;
    struct http1_slice method;
    enum http1_method method_id;
    struct http1_slice target; /* as sent, or its path and query (HTTP1_F_ABSOLUTE_FORM) */
    /* Host field value, or the target's authority (HTTP1_F_ABSOLUTE_FORM);
     * empty if absent (allowed for HTTP/1.0) */
    struct http1_slice host;
};

struct http1_response {
    struct http1_message msg;
    int status;
    struct http1_slice reason;
};

/* Incremental chunked-body scanner state (RFC 9112 section 7.1). Zero it
 * with http1_chunked_init() before the first byte of a body. */
struct http1_chunked {
    int state;           /* internal */
    uint64_t chunk_left; /* bytes of chunk data still expected */
    uint64_t data_bytes; /* total payload bytes seen so far (for stats) */
    size_t line_len;     /* length of the current size/trailer line (bounded) */
    const char *error_reason;
};

#endif
