/* HTTP/1.x head parsing and chunked framing: pure functions over bytes.
 * No I/O, no allocation; results are slices into the caller's buffer. */
#ifndef USHER_PARSER_HTTP1_H
#define USHER_PARSER_HTTP1_H

#include <stdbool.h>
#include "http1-t.h"

/* Parses a request head from <buf>[0..<len>). <req>->msg.headers must point
 * to an array of <lim>->max_headers entries. The parse is restartable: call
 * again with the same buffer grown by newly read bytes.
 * Returns HTTP1_OK (head complete, req->msg.head_len set), HTTP1_AGAIN (need
 * more bytes; nothing invalid so far), or HTTP1_ERROR (req->msg.error_status
 * is 400, 414, 431, 501 or 505 and req->msg.error_reason a static string).
 * A request with a body framing of HTTP1_BODY_UNTIL_CLOSE is never returned. */
int http1_parse_request(const char *buf, size_t len, const struct http1_limits *lim,
                        struct http1_request *req);

/* Parses a response head. <req_method> is the method of the request it
 * answers (HEAD and CONNECT change the framing). Same returns as
 * http1_parse_request; on HTTP1_ERROR error_status is 502. 1xx responses are
 * returned as complete heads with framing HTTP1_BODY_NONE; a 101 keeps
 * HTTP1_F_HAS_UPGRADE so the caller can switch to a tunnel. */
int http1_parse_response(const char *buf, size_t len, const struct http1_limits *lim,
                         enum http1_method req_method, struct http1_response *res);

/* Resets <c> for a new chunked body. */
void http1_chunked_init(struct http1_chunked *c);

/* Scans chunked framing in <buf>[0..<len>) without modifying it, so the
 * bytes can be forwarded as they are. Sets *<consumed> to how many bytes
 * belong to the body. Returns HTTP1_OK when the body ended (last chunk,
 * trailers and final CRLF consumed; bytes after *consumed belong to the next
 * message), HTTP1_AGAIN when all <len> bytes were consumed and the body goes
 * on, HTTP1_ERROR on invalid framing (c->error_reason says why). */
int http1_chunked_scan(struct http1_chunked *c, const char *buf, size_t len, size_t *consumed);

/* Name of the scanner's current state ("size", "data", "trailer", "done",
 * "error"...), for logs and tests. */
const char *http1_chunked_state_str(const struct http1_chunked *c);

/* Like http1_chunked_scan, but stops after the first run of chunk data and
 * reports it: <buf>[*<data_off> .. *<data_off> + *<data_len>) is payload
 * (*<data_len> is 0 when this step held only framing). Call again with the
 * bytes after *<consumed> to go on. Same returns as http1_chunked_scan. */
int http1_chunked_decode(struct http1_chunked *c, const char *buf, size_t len, size_t *consumed,
                         size_t *data_off, size_t *data_len);

/* A decision about a header field, by its name. */
typedef bool (*http1_field_pred)(struct http1_slice name);

/* Like http1_chunked_scan, but rewrites the trailer section of <buf> in
 * place: every trailer field whose name <drop> is true for is removed,
 * moving the bytes after it down and shrinking *<len>. A trailer line is
 * consumed only once complete, so after HTTP1_AGAIN the bytes from
 * *<consumed> to *<len> (at most one partial trailer line) must be passed
 * again, with more behind them. Same returns as http1_chunked_scan. */
int http1_chunked_filter(struct http1_chunked *c, char *buf, size_t *len, size_t *consumed,
                         http1_field_pred drop);

/* True if the comma-separated token list <list> contains <token>
 * (case-insensitive, optional whitespace around elements). */
bool http1_list_has_token(struct http1_slice list, const char *token);

/* Next element of the comma-separated list in [*<pp>, <end>), without its
 * surrounding whitespace; empty elements are skipped (RFC 9110 section
 * 5.6.1). Returns false at the end of the list. */
bool http1_list_next(const char **pp, const char *end, struct http1_slice *el);

/* Case-insensitive comparison of two slices. */
bool http1_slices_eq(struct http1_slice a, struct http1_slice b);

/* Case-insensitive comparison of <s> with the NUL-terminated <lit>. */
bool http1_slice_eq(struct http1_slice s, const char *lit);

/* Returns the standard reason phrase for <status> ("OK", "Bad Request"...),
 * or "Unknown" */
const char *http1_status_text(int status);

#endif
