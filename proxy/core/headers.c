#include "headers.h"

#include <stdio.h>
#include <string.h>
#include "../../parser/http1.h"

/* Field names a message's Connection header may declare hop-by-hop beyond
 * the standard ones; more are ignored (a bound on per-header work, and no
 * legitimate message lists more). */
#define MAX_CONNECTION_TOKENS 16

/* Appends <n> bytes of <p> to <out>: the common case (room left) inline,
 * without a call; hbuf_append grows it otherwise. Keeps data[len] a NUL,
 * as hbuf_append does. */
static inline int put(struct hbuf *out, const char *p, size_t n)
{
    if (out->len + n + 1 > out->cap)
        return hbuf_append(out, p, n);
    memcpy(out->data + out->len, p, n);
    out->len += n;
    out->data[out->len] = '\0';
    return 0;
}

/* ... a string literal (its length known at compile time: the copy is
 * inlined too). */
#define PUT_LIT(out, lit) put((out), (lit), sizeof(lit) - 1)

static inline int put_str(struct hbuf *out, const char *s)
{
    return put(out, s, strlen(s));
}

/* True if <s> is the lowercase literal <lit> (<n> bytes: letters, digits,
 * '-') in any case. Eight bytes at a time, with no call: for a byte c,
 * (c | 0x20) is a lowercase letter only if c is that letter in either case,
 * and '-' or a digit only if c is it or a control byte (CR, 0x10..0x19) —
 * which the parser never lets into a field name or value, nor nghttp2
 * into an HTTP/2 one. */
static inline bool lower_eq(struct http1_slice s, const char *lit, size_t n)
{
    if (s.len != n)
        return false;
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        uint64_t a, b;
        memcpy(&a, s.ptr + i, 8);
        memcpy(&b, lit + i, 8);
        if ((a | 0x2020202020202020ull) != b)
            return false;
    }
    for (; i < n; i++)
        if (((unsigned char)s.ptr[i] | 0x20) != (unsigned char)lit[i])
            return false;
    return true;
}
#define name_is(s, lit) lower_eq((s), (lit), sizeof(lit) - 1)

/* What usher does with a field, by name. Classified by length first: most
 * fields match no candidate and cost one switch. */
enum field_kind {
    FIELD_END_TO_END = 0,  /* forwarded (unless Connection names it) */
    FIELD_HOP_BY_HOP,      /* RFC 9110 7.6.1, plus Keep-Alive and Proxy-Connection */
    FIELD_XFF,             /* X-Forwarded-For: appended to */
    FIELD_XF_SET,          /* X-Forwarded-Proto / -Host: replaced */
    FIELD_CONTENT_LENGTH,  /* forwarded once, as the parsed number */
    FIELD_TRANSFER_CODING, /* Transfer-Encoding: forwarded as one list without empty elements */
    FIELD_HOST,            /* replaced by the target's authority in absolute-form */
    FIELD_REQUEST_ID,      /* X-Request-Id: one forwarded, or one generated */
};

static enum field_kind field_kind(struct http1_slice name)
{
    switch (name.len) {
    case 2:
        return name_is(name, "te") ? FIELD_HOP_BY_HOP : FIELD_END_TO_END;
    case 4:
        return name_is(name, "host") ? FIELD_HOST : FIELD_END_TO_END;
    case 7:
        return name_is(name, "trailer") || name_is(name, "upgrade")
                   ? FIELD_HOP_BY_HOP
                   : FIELD_END_TO_END;
    case 10:
        return name_is(name, "connection") || name_is(name, "keep-alive")
                   ? FIELD_HOP_BY_HOP
                   : FIELD_END_TO_END;
    case 12:
        return name_is(name, "x-request-id") ? FIELD_REQUEST_ID : FIELD_END_TO_END;
    case 14:
        if (name_is(name, "content-length"))
            return FIELD_CONTENT_LENGTH;
        /* the settings of an h2c upgrade, which usher never takes up nor
         * passes on */
        return name_is(name, "http2-settings") ? FIELD_HOP_BY_HOP : FIELD_END_TO_END;
    case 15:
        return name_is(name, "x-forwarded-for") ? FIELD_XFF : FIELD_END_TO_END;
    case 16:
        if (name_is(name, "proxy-connection"))
            return FIELD_HOP_BY_HOP;
        return name_is(name, "x-forwarded-host") ? FIELD_XF_SET : FIELD_END_TO_END;
    case 17:
        if (name_is(name, "transfer-encoding"))
            return FIELD_TRANSFER_CODING;
        return name_is(name, "x-forwarded-proto") ? FIELD_XF_SET : FIELD_END_TO_END;
    }
    return FIELD_END_TO_END;
}

/* The names a message's Connection fields list, except keep-alive, close
 * and upgrade: those name no field or one dropped anyway, so the common
 * "Connection: keep-alive" costs nothing per field. */
struct conn_tokens {
    struct http1_slice v[MAX_CONNECTION_TOKENS];
    size_t n;
};

static void collect_connection(const struct http1_message *m, struct conn_tokens *ct)
{
    ct->n = 0;
    for (size_t i = 0; i < m->num_headers; i++) {
        if (!name_is(m->headers[i].name, "connection"))
            continue;
        const char *p = m->headers[i].value.ptr, *end = p + m->headers[i].value.len;
        struct http1_slice el;
        while (ct->n < MAX_CONNECTION_TOKENS && http1_list_next(&p, end, &el))
            if (!name_is(el, "keep-alive") && !name_is(el, "close") && !name_is(el, "upgrade"))
                ct->v[ct->n++] = el;
    }
}

static bool listed_in_connection(const struct conn_tokens *ct, struct http1_slice name)
{
    for (size_t i = 0; i < ct->n; i++)
        if (http1_slices_eq(ct->v[i], name))
            return true;
    return false;
}

/* Appends "name: value\r\n". A line that already reads exactly so in the
 * head it came in (one space after the colon, nothing after the value:
 * most lines) is copied in one piece; the bytes written are the same. */
static int append_field(struct hbuf *out, const struct http1_header *h)
{
    const char *n = h->name.ptr, *v = h->value.ptr;
    if (v == n + h->name.len + 2 && n[h->name.len] == ':' && n[h->name.len + 1] == ' ' &&
        v[h->value.len] == '\r')
        return put(out, n, h->name.len + 2 + h->value.len + 2);
    int rc = put(out, n, h->name.len);
    rc |= PUT_LIT(out, ": ");
    rc |= put(out, v, h->value.len);
    rc |= PUT_LIT(out, "\r\n");
    return rc;
}

/* UINT64_MAX has 20 decimal digits */
#define U64_DIGITS 20

/* The one spelling of the framing fields (RFC 9110 section 8.6, RFC 9112
 * section 6.1): written in place of the first of them, whatever number of
 * fields and spelling the sender used (duplicates, leading zeros, empty
 * list elements), so the next hop cannot read a different framing. */
static int append_content_length(struct hbuf *out, uint64_t n)
{
    char digits[U64_DIGITS];
    size_t i = sizeof(digits);
    do
        digits[--i] = (char)('0' + n % 10);
    while ((n /= 10) != 0);
    int rc = PUT_LIT(out, "Content-Length: ");
    rc |= put(out, digits + i, sizeof(digits) - i);
    rc |= PUT_LIT(out, "\r\n");
    return rc;
}

static int append_transfer_coding(struct hbuf *out, const struct http1_message *m)
{
    int rc = PUT_LIT(out, "Transfer-Encoding: ");
    bool first = true;
    for (size_t i = 0; i < m->num_headers; i++) {
        if (field_kind(m->headers[i].name) != FIELD_TRANSFER_CODING)
            continue;
        const char *p = m->headers[i].value.ptr, *end = p + m->headers[i].value.len;
        struct http1_slice el;
        while (http1_list_next(&p, end, &el)) {
            if (!first)
                rc |= PUT_LIT(out, ", ");
            rc |= put(out, el.ptr, el.len);
            first = false;
        }
    }
    rc |= PUT_LIT(out, "\r\n");
    return rc;
}

/* Which canonical framing fields are already written (or must not be). */
struct framing_seen {
    bool cl, te;
};

/* What happens to field <h> (of kind <k>) of <m> on its way: appended as it
 * is, replaced by its canonical spelling (once, where the first of its kind
 * was), or dropped. The framing fields go out even when Connection names
 * them: the body that follows is framed by them, and a next hop reading it
 * without them would see a different message boundary. Returns 0 or -1. */
static int forward_field(struct hbuf *out, const struct http1_message *m,
                         const struct http1_header *h, enum field_kind k,
                         const struct conn_tokens *ct, struct framing_seen *seen)
{
    switch (k) {
    case FIELD_HOP_BY_HOP:
    case FIELD_XFF:
    case FIELD_XF_SET:
        return 0;
    case FIELD_CONTENT_LENGTH:
        if (seen->cl)
            return 0;
        seen->cl = true;
        return append_content_length(out, m->content_length);
    case FIELD_TRANSFER_CODING:
        if (seen->te)
            return 0;
        seen->te = true;
        return append_transfer_coding(out, m);
    case FIELD_HOST:
    case FIELD_REQUEST_ID:
    case FIELD_END_TO_END:
        break;
    }
    return listed_in_connection(ct, h->name) ? 0 : append_field(out, h);
}

/* Trailer fields a recipient could act on as if they were in the head
 * (RFC 9110 section 6.5.1): framing, routing, credentials, request
 * modifiers, how to read the content, and hop-by-hop fields. A backend that
 * merges trailers into the head must not see a second Host or a late
 * Authorization that usher never saw. Trailers are rare: a plain list. */
static const char *const trailer_dropped[] = {
    "content-length",
    "transfer-encoding",
    "host",
    "authorization",
    "proxy-authorization",
    "cookie",
    "set-cookie",
    "content-type",
    "content-encoding",
    "content-range",
    "expect",
    "connection",
    "keep-alive",
    "te",
    "trailer",
    "upgrade",
    "proxy-connection",
    "max-forwards",
    "range",
    "cache-control",
    "www-authenticate",
    "proxy-authenticate",
    "forwarded",
    "x-forwarded-for",
    "x-forwarded-proto",
    "x-forwarded-host",
};

bool headers_trailer_dropped(struct http1_slice name)
{
    for (size_t i = 0; i < sizeof(trailer_dropped) / sizeof(trailer_dropped[0]); i++)
        if (http1_slice_eq(name, trailer_dropped[i]))
            return true;
    return false;
}

bool headers_request_id(const struct http1_message *m, struct http1_slice *id)
{
    for (size_t i = 0; i < m->num_headers; i++)
        if (m->headers[i].value.len > 0 && field_kind(m->headers[i].name) == FIELD_REQUEST_ID) {
            *id = m->headers[i].value;
            return true;
        }
    return false;
}

int headers_build_request(struct hbuf *out, const struct http1_request *req,
                          const struct forward_info *fi)
{
    const struct http1_message *m = &req->msg;
    struct conn_tokens ct;
    collect_connection(m, &ct);

    bool absolute = m->flags & HTTP1_F_ABSOLUTE_FORM;
    int rc = 0;
    if (!absolute && req->target.ptr == req->method.ptr + req->method.len + 1) {
        /* "METHOD target" as it came (the parser allows one SP only) */
        rc |= put(out, req->method.ptr, req->method.len + 1 + req->target.len);
    } else {
        rc |= put(out, req->method.ptr, req->method.len);
        rc |= PUT_LIT(out, " ");
        /* origin-form always starts with '/' (RFC 9112 section 3.2.1) */
        if (absolute && (req->target.len == 0 || req->target.ptr[0] == '?'))
            rc |= PUT_LIT(out, "/");
        rc |= put(out, req->target.ptr, req->target.len);
    }
    rc |= m->minor_version == 0 ? PUT_LIT(out, " HTTP/1.0\r\n") : PUT_LIT(out, " HTTP/1.1\r\n");
    /* RFC 9112 section 3.2.2: the target's authority replaces the Host */
    if (absolute) {
        rc |= PUT_LIT(out, "Host: ");
        rc |= put(out, req->host.ptr, req->host.len);
        rc |= PUT_LIT(out, "\r\n");
    }

    bool has_xff = false, rid_seen = false, rid_sent = false;
    struct framing_seen seen = {false, false};
    for (size_t i = 0; i < m->num_headers; i++) {
        const struct http1_header *h = &m->headers[i];
        enum field_kind k = field_kind(h->name);
        has_xff |= k == FIELD_XFF;
        if (k == FIELD_HOST && absolute)
            continue;
        if (k == FIELD_REQUEST_ID) {
            /* the id the access log names: the first non-empty one decides,
             * whatever Connection says */
            if (!rid_seen && h->value.len > 0) {
                rid_seen = true;
                if (!fi->request_id_max || h->value.len <= fi->request_id_max) {
                    rc |= append_field(out, h);
                    rid_sent = true;
                    if (fi->request_id_out)
                        *fi->request_id_out = h->value;
                }
            }
            continue;
        }
        if (k == FIELD_HOP_BY_HOP && fi->te_trailers && h->name.len == 2 &&
            http1_list_has_token(h->value, "trailers"))
            *fi->te_trailers = true;
        rc |= forward_field(out, m, h, k, &ct, &seen);
    }

    /* X-Forwarded-For: every earlier hop in order, then this client */
    rc |= PUT_LIT(out, "X-Forwarded-For: ");
    for (size_t i = 0; has_xff && i < m->num_headers; i++) {
        const struct http1_header *h = &m->headers[i];
        if (field_kind(h->name) != FIELD_XFF || h->value.len == 0)
            continue;
        rc |= put(out, h->value.ptr, h->value.len);
        rc |= PUT_LIT(out, ", ");
    }
    rc |= put_str(out, fi->client_addr);
    rc |= PUT_LIT(out, "\r\nX-Forwarded-Proto: ");
    rc |= put_str(out, fi->proto);
    rc |= PUT_LIT(out, "\r\n");
    if (req->host.len) {
        rc |= PUT_LIT(out, "X-Forwarded-Host: ");
        rc |= put(out, req->host.ptr, req->host.len);
        rc |= PUT_LIT(out, "\r\n");
    }
    if (!rid_sent && fi->new_request_id) {
        rc |= PUT_LIT(out, "X-Request-Id: ");
        rc |= put_str(out, fi->new_request_id(fi->ctx));
        rc |= PUT_LIT(out, "\r\n");
    }
    if (fi->upgrade) {
        rc |= PUT_LIT(out, "Connection: upgrade\r\nUpgrade: ");
        rc |= put(out, m->upgrade.ptr, m->upgrade.len);
        rc |= PUT_LIT(out, "\r\n");
    } else if (m->minor_version == 0) {
        /* HTTP/1.0 upstream requests are one-shot unless asked otherwise;
         * ask, so the connection can be pooled */
        rc |= PUT_LIT(out, "Connection: keep-alive\r\n");
    }
    rc |= PUT_LIT(out, "\r\n");
    return rc ? -1 : 0;
}

int headers_build_response(struct hbuf *out, const struct http1_response *res,
                           enum response_conn conn, bool dechunk)
{
    const struct http1_message *m = &res->msg;
    struct conn_tokens ct;
    collect_connection(m, &ct);

    /* status is 100..599 (the parser checked): no printf on the hot path */
    char status_line[] = "HTTP/1.1 000 ";
    status_line[9] = (char)('0' + res->status / 100);
    status_line[10] = (char)('0' + res->status / 10 % 10);
    status_line[11] = (char)('0' + res->status % 10);
    int rc = put(out, status_line, sizeof(status_line) - 1);
    rc |= put(out, res->reason.ptr, res->reason.len);
    rc |= PUT_LIT(out, "\r\n");
    struct framing_seen seen = {false, dechunk};
    for (size_t i = 0; i < m->num_headers; i++) {
        const struct http1_header *h = &m->headers[i];
        enum field_kind k = field_kind(h->name);
        /* the XF fields mean nothing in a response: passed on as they are */
        if (k == FIELD_XFF || k == FIELD_XF_SET)
            k = FIELD_END_TO_END;
        rc |= forward_field(out, m, h, k, &ct, &seen);
    }
    switch (conn) {
    case RESPONSE_CONN_KEEP_ALIVE:
        break;
    case RESPONSE_CONN_KEEP_ALIVE_10:
        rc |= PUT_LIT(out, "Connection: keep-alive\r\n");
        break;
    case RESPONSE_CONN_CLOSE:
        rc |= PUT_LIT(out, "Connection: close\r\n");
        break;
    case RESPONSE_CONN_UPGRADE:
        rc |= PUT_LIT(out, "Connection: upgrade\r\nUpgrade: ");
        rc |= put(out, m->upgrade.ptr, m->upgrade.len);
        rc |= PUT_LIT(out, "\r\n");
        break;
    }
    rc |= PUT_LIT(out, "\r\n");
    return rc ? -1 : 0;
}

int headers_build_error(struct hbuf *out, int status, const char *detail, bool close,
                        bool head_only)
{
    const char *text = http1_status_text(status);
    char body[256];
    int body_len = headers_error_text(body, sizeof(body), status, detail);
    int rc = hbuf_printf(out,
                         "HTTP/1.1 %d %s\r\nContent-Type: text/plain\r\nContent-Length: %d\r\n"
                         "Cache-Control: no-store\r\n%s\r\n",
                         status, text, body_len, close ? "Connection: close\r\n" : "");
    if (!head_only)
        rc |= put(out, body, (size_t)body_len);
    return rc ? -1 : 0;
}

/* ---- HTTP/2 <-> HTTP/1.1 (RFC 9113 section 8) ------------------------------ */

/* tchar (RFC 9110 5.6.2): a method. */
static bool tchar(unsigned char c)
{
    if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9'))
        return true;
    return c && strchr("!#$%&'*+-.^_`|~", c) != NULL; /* strchr finds the NUL too */
}

/* tchar, lowercase only: an HTTP/2 field name (RFC 9113 8.2.1: uppercase
 * makes the message malformed). */
static bool h2_name_char(unsigned char c)
{
    return tchar(c) && !(c >= 'A' && c <= 'Z');
}

/* A field value an HTTP/1.1 head can carry as it is (RFC 9113 8.2.1):
 * no NUL, CR, LF or other control byte but HTAB, no whitespace at either
 * end. */
static bool h2_value_ok(struct http1_slice v)
{
    for (size_t i = 0; i < v.len; i++) {
        unsigned char c = (unsigned char)v.ptr[i];
        if ((c < 0x20 && c != '\t') || c == 0x7f)
            return false;
    }
    return v.len == 0 || (v.ptr[0] != ' ' && v.ptr[0] != '\t' && v.ptr[v.len - 1] != ' ' &&
                          v.ptr[v.len - 1] != '\t');
}

/* Visible ASCII only (0x21..0x7e): a request line's method and target
 * cannot carry anything else. */
static bool visible_ascii(struct http1_slice s)
{
    for (size_t i = 0; i < s.len; i++)
        if ((unsigned char)s.ptr[i] < 0x21 || (unsigned char)s.ptr[i] > 0x7e)
            return false;
    return true;
}

/* RFC 3986 authority without userinfo (RFC 9113 8.3.1 forbids it): host,
 * IP literal, port. */
static bool authority_ok(struct http1_slice a)
{
    if (a.len == 0)
        return false;
    for (size_t i = 0; i < a.len; i++) {
        unsigned char c = (unsigned char)a.ptr[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              (c && strchr("-._~%!$&'()*+,;=:[]", c)))) /* strchr finds the NUL too */
            return false;
    }
    return true;
}

static bool slice_is(struct http1_slice s, const char *lit)
{
    size_t n = strlen(lit);
    return s.len == n && memcmp(s.ptr, lit, n) == 0;
}

/* Methods are case-sensitive (RFC 9110 9.1). */
static enum http1_method method_id_of(struct http1_slice m)
{
    static const struct {
        const char *name;
        enum http1_method id;
    } known[] = {
        {"GET", HTTP1_METHOD_GET},         {"HEAD", HTTP1_METHOD_HEAD},
        {"POST", HTTP1_METHOD_POST},       {"PUT", HTTP1_METHOD_PUT},
        {"DELETE", HTTP1_METHOD_DELETE},   {"OPTIONS", HTTP1_METHOD_OPTIONS},
        {"CONNECT", HTTP1_METHOD_CONNECT}, {"TRACE", HTTP1_METHOD_TRACE},
        {"PATCH", HTTP1_METHOD_PATCH},
    };
    for (size_t i = 0; i < sizeof(known) / sizeof(known[0]); i++)
        if (slice_is(m, known[i].name))
            return known[i].id;
    return HTTP1_METHOD_OTHER;
}

/* Content-Length (RFC 9110 8.6): digits, at most 19 (no overflow). */
static bool parse_length(struct http1_slice v, uint64_t *out)
{
    if (v.len == 0 || v.len > 19)
        return false;
    uint64_t n = 0;
    for (size_t i = 0; i < v.len; i++) {
        if (v.ptr[i] < '0' || v.ptr[i] > '9')
            return false;
        n = n * 10 + (uint64_t)(v.ptr[i] - '0');
    }
    *out = n;
    return true;
}

static int h2_fail(struct h2_request *req, int status, const char *reason)
{
    req->error_status = status;
    req->error_reason = reason;
    return -1;
}

/* Where each pseudo-header goes. */
enum pseudo { PSEUDO_METHOD, PSEUDO_SCHEME, PSEUDO_AUTHORITY, PSEUDO_PATH, PSEUDO_COUNT };

static int pseudo_of(struct http1_slice name)
{
    if (slice_is(name, ":method"))
        return PSEUDO_METHOD;
    if (slice_is(name, ":scheme"))
        return PSEUDO_SCHEME;
    if (slice_is(name, ":authority"))
        return PSEUDO_AUTHORITY;
    if (slice_is(name, ":path"))
        return PSEUDO_PATH;
    return -1; /* :protocol (RFC 8441 is not offered) or unknown: malformed */
}

/* The fields of an HTTP/2 request checked once, before anything is
 * written (RFC 9113 8.1.1: a malformed request goes no further). */
static int h2_check(const struct h2_field *f, size_t n, bool end_stream,
                    const struct http1_limits *lim, struct h2_request *req, const struct h2_field **host)
{
    struct http1_slice ps[PSEUDO_COUNT] = {{NULL, 0}};
    bool seen[PSEUDO_COUNT] = {false}, regular = false, cookies = false, cl_seen = false;
    size_t fields = 0;
    *host = NULL;
    for (size_t i = 0; i < n; i++) {
        struct http1_slice name = f[i].name, value = f[i].value;
        if (name.len == 0)
            return h2_fail(req, 400, "empty field name");
        if (name.ptr[0] == ':') {
            int k = pseudo_of(name);
            if (k < 0)
                return h2_fail(req, 400, "unknown pseudo-header");
            if (regular)
                return h2_fail(req, 400, "pseudo-header after a regular field");
            if (seen[k])
                return h2_fail(req, 400, "repeated pseudo-header");
            seen[k] = true;
            ps[k] = value;
            continue;
        }
        regular = true;
        for (size_t k = 0; k < name.len; k++)
            if (!h2_name_char((unsigned char)name.ptr[k]))
                return h2_fail(req, 400, "invalid field name");
        if (!h2_value_ok(value))
            return h2_fail(req, 400, "invalid field value");
        /* RFC 9113 8.2.2: connection-specific fields make it malformed */
        if (slice_is(name, "connection") || slice_is(name, "keep-alive") ||
            slice_is(name, "proxy-connection") || slice_is(name, "transfer-encoding") ||
            slice_is(name, "upgrade"))
            return h2_fail(req, 400, "connection-specific field");
        if (slice_is(name, "te") && !http1_slice_eq(value, "trailers"))
            return h2_fail(req, 400, "te other than trailers");
        if (slice_is(name, "host")) {
            if (*host)
                return h2_fail(req, 400, "repeated host");
            *host = &f[i];
        }
        if (slice_is(name, "content-length")) {
            uint64_t v;
            if (!parse_length(value, &v) || (cl_seen && v != req->content_length))
                return h2_fail(req, 400, "invalid content-length");
            cl_seen = true;
            req->content_length = v;
        }
        if (slice_is(name, "cookie")) {
            fields += !cookies; /* the crumbs become one field (RFC 9113 8.2.3) */
            cookies = true;
            continue;
        }
        fields++;
    }
    if (fields > lim->max_headers)
        return h2_fail(req, 431, "too many header fields");
    if (!seen[PSEUDO_METHOD] || ps[PSEUDO_METHOD].len == 0 || !visible_ascii(ps[PSEUDO_METHOD]))
        return h2_fail(req, 400, "missing or invalid :method");
    for (size_t k = 0; k < ps[PSEUDO_METHOD].len; k++)
        if (!tchar((unsigned char)ps[PSEUDO_METHOD].ptr[k]))
            return h2_fail(req, 400, "missing or invalid :method");
    req->method = ps[PSEUDO_METHOD];
    req->method_id = method_id_of(req->method);
    if (req->method_id == HTTP1_METHOD_CONNECT)
        return h2_fail(req, 501, "CONNECT is not supported");
    if (!seen[PSEUDO_SCHEME] || ps[PSEUDO_SCHEME].len == 0 || !visible_ascii(ps[PSEUDO_SCHEME]))
        return h2_fail(req, 400, "missing or invalid :scheme");
    struct http1_slice path = ps[PSEUDO_PATH];
    if (!seen[PSEUDO_PATH] || path.len == 0 || !visible_ascii(path) ||
        (path.ptr[0] != '/' &&
         !(req->method_id == HTTP1_METHOD_OPTIONS && path.len == 1 && path.ptr[0] == '*')))
        return h2_fail(req, 400, "missing or invalid :path");
    if (path.len > lim->max_uri_bytes)
        return h2_fail(req, 414, "request target too long");
    req->path = path;
    /* :authority, else Host (RFC 9113 8.3.1); both: they must agree */
    struct http1_slice auth = seen[PSEUDO_AUTHORITY] ? ps[PSEUDO_AUTHORITY]
                              : *host                ? (*host)->value
                                                     : (struct http1_slice){NULL, 0};
    if (!authority_ok(auth))
        return h2_fail(req, 400, "missing or invalid :authority");
    if (seen[PSEUDO_AUTHORITY] && *host && !http1_slices_eq((*host)->value, auth))
        return h2_fail(req, 400, "host differs from :authority");
    req->authority = auth;
    if (end_stream && cl_seen && req->content_length != 0)
        return h2_fail(req, 400, "content-length without a body");
    /* the body goes as it is with a length, chunked without one */
    req->framing = end_stream ? HTTP1_BODY_NONE : cl_seen ? HTTP1_BODY_LENGTH : HTTP1_BODY_CHUNKED;
    req->has_content_length = cl_seen;
    return 0;
}

/* RFC 9110 8.6: a request whose method defines a meaning for content
 * carries Content-Length, 0 included, so a backend never answers 411. */
static bool length_expected(enum http1_method m)
{
    return m == HTTP1_METHOD_POST || m == HTTP1_METHOD_PUT || m == HTTP1_METHOD_PATCH ||
           m == HTTP1_METHOD_OTHER;
}

int headers_h2_request(struct hbuf *out, const struct h2_field *f, size_t n, bool end_stream,
                       const struct http1_limits *lim, const struct forward_info *fi,
                       struct h2_request *req)
{
    memset(req, 0, sizeof(*req));
    const struct h2_field *host;
    if (h2_check(f, n, end_stream, lim, req, &host) < 0)
        return -1;

    int rc = put(out, req->method.ptr, req->method.len);
    rc |= PUT_LIT(out, " ");
    rc |= put(out, req->path.ptr, req->path.len);
    rc |= PUT_LIT(out, " HTTP/1.1\r\nHost: ");
    rc |= put(out, req->authority.ptr, req->authority.len);
    rc |= PUT_LIT(out, "\r\n");

    /* cookie crumbs joined into one field (RFC 9113 8.2.3) */
    bool cookie = false;
    for (size_t i = 0; i < n; i++) {
        if (!slice_is(f[i].name, "cookie"))
            continue;
        rc |= cookie ? PUT_LIT(out, "; ") : PUT_LIT(out, "Cookie: ");
        rc |= put(out, f[i].value.ptr, f[i].value.len);
        cookie = true;
    }
    if (cookie)
        rc |= PUT_LIT(out, "\r\n");

    bool has_xff = false, rid_seen = false, rid_sent = false, cl_written = false;
    for (size_t i = 0; i < n; i++) {
        struct http1_slice name = f[i].name, value = f[i].value;
        if (name.ptr[0] == ':' || slice_is(name, "cookie"))
            continue;
        struct http1_header h = {name, value};
        switch (field_kind(name)) {
        case FIELD_HOST:     /* written from :authority */
        case FIELD_HOP_BY_HOP: /* te: trailers, http2-settings */
        case FIELD_XF_SET:
        case FIELD_TRANSFER_CODING: /* refused by h2_check */
            continue;
        case FIELD_XFF:
            has_xff = true;
            continue;
        case FIELD_CONTENT_LENGTH:
            if (!cl_written)
                rc |= append_content_length(out, req->content_length);
            cl_written = true;
            continue;
        case FIELD_REQUEST_ID:
            if (!rid_seen && value.len > 0) {
                rid_seen = true;
                if (!fi->request_id_max || value.len <= fi->request_id_max) {
                    rc |= append_field(out, &h);
                    rid_sent = true;
                    if (fi->request_id_out)
                        *fi->request_id_out = value;
                }
            }
            continue;
        case FIELD_END_TO_END:
            break;
        }
        if (slice_is(name, "user-agent") && !req->user_agent.ptr)
            req->user_agent = value;
        rc |= append_field(out, &h);
    }
    if (req->framing == HTTP1_BODY_CHUNKED)
        rc |= PUT_LIT(out, "Transfer-Encoding: chunked\r\n");
    else if (!req->has_content_length && length_expected(req->method_id))
        rc |= PUT_LIT(out, "Content-Length: 0\r\n");

    rc |= PUT_LIT(out, "X-Forwarded-For: ");
    for (size_t i = 0; has_xff && i < n; i++) {
        if (f[i].value.len == 0 || f[i].name.ptr[0] == ':' || !slice_is(f[i].name, "x-forwarded-for"))
            continue;
        rc |= put(out, f[i].value.ptr, f[i].value.len);
        rc |= PUT_LIT(out, ", ");
    }
    rc |= put_str(out, fi->client_addr);
    rc |= PUT_LIT(out, "\r\nX-Forwarded-Proto: ");
    rc |= put_str(out, fi->proto);
    rc |= PUT_LIT(out, "\r\nX-Forwarded-Host: ");
    rc |= put(out, req->authority.ptr, req->authority.len);
    rc |= PUT_LIT(out, "\r\n");
    if (!rid_sent && fi->new_request_id) {
        rc |= PUT_LIT(out, "X-Request-Id: ");
        rc |= put_str(out, fi->new_request_id(fi->ctx));
        rc |= PUT_LIT(out, "\r\n");
    }
    rc |= PUT_LIT(out, "\r\n");
    if (rc)
        return h2_fail(req, 0, "out of memory");
    return 0;
}

/* Copies <name> lowercased to the end of <scratch>; its offset in *<off>. */
static int put_lower(struct hbuf *scratch, struct http1_slice name, size_t *off)
{
    *off = scratch->len;
    if (put(scratch, name.ptr, name.len) < 0)
        return -1;
    for (size_t i = *off; i < scratch->len; i++)
        if (scratch->data[i] >= 'A' && scratch->data[i] <= 'Z')
            scratch->data[i] |= 0x20;
    return 0;
}

int headers_h2_response(const struct http1_response *res, struct hbuf *scratch,
                        struct h2_field *out)
{
    const struct http1_message *m = &res->msg;
    struct conn_tokens ct;
    collect_connection(m, &ct);
    hbuf_reset(scratch);
    char status[3] = {(char)('0' + res->status / 100), (char)('0' + res->status / 10 % 10),
                      (char)('0' + res->status % 10)};
    if (put(scratch, status, 3) < 0)
        return -1;
    /* names are written first and pointed at last: <scratch> may move as
     * it grows, so the slices hold offsets until then */
    size_t n = 1;
    out[0].value = (struct http1_slice){NULL, 0};
    for (size_t i = 0; i < m->num_headers; i++) {
        const struct http1_header *h = &m->headers[i];
        enum field_kind k = field_kind(h->name);
        if (k == FIELD_HOP_BY_HOP || k == FIELD_TRANSFER_CODING || listed_in_connection(&ct, h->name))
            continue; /* RFC 9113 8.2.2; the body goes de-chunked */
        size_t off;
        if (put_lower(scratch, h->name, &off) < 0)
            return -1;
        out[n].name = (struct http1_slice){(const char *)(uintptr_t)off, h->name.len};
        out[n].value = h->value;
        n++;
    }
    out[0].name = (struct http1_slice){":status", 7};
    out[0].value = (struct http1_slice){scratch->data, 3};
    for (size_t i = 1; i < n; i++)
        out[i].name.ptr = scratch->data + (uintptr_t)out[i].name.ptr;
    return (int)n;
}

int headers_h2_trailers(const struct hbuf *lines, struct hbuf *scratch, struct h2_field *out,
                        size_t cap)
{
    hbuf_reset(scratch);
    size_t n = 0, pos = 0;
    /* "name: value\r\n" lines as the chunked scanner accepted them (a name,
     * a colon, a value without control bytes), then the final CRLF */
    while (pos < lines->len && n < cap) {
        const char *line = lines->data + pos;
        const char *lf = memchr(line, '\n', lines->len - pos);
        if (!lf)
            break;
        size_t len = (size_t)(lf - line) + 1;
        pos += len;
        const char *colon = memchr(line, ':', len);
        if (!colon)
            continue; /* the final CRLF */
        struct http1_slice v = {colon + 1, (size_t)(lf - colon - 1)};
        while (v.len && (v.ptr[0] == ' ' || v.ptr[0] == '\t'))
            v.ptr++, v.len--;
        while (v.len && (v.ptr[v.len - 1] == '\r' || v.ptr[v.len - 1] == ' ' ||
                         v.ptr[v.len - 1] == '\t'))
            v.len--;
        size_t off;
        if (put_lower(scratch, (struct http1_slice){line, (size_t)(colon - line)}, &off) < 0)
            return -1;
        out[n].name = (struct http1_slice){(const char *)(uintptr_t)off, (size_t)(colon - line)};
        out[n].value = v;
        n++;
    }
    for (size_t i = 0; i < n; i++)
        out[i].name.ptr = scratch->data + (uintptr_t)out[i].name.ptr;
    return (int)n;
}

int headers_error_text(char *out, size_t cap, int status, const char *detail)
{
    const char *text = http1_status_text(status);
    int n = detail ? snprintf(out, cap, "%d %s: %s\n", status, text, detail)
                   : snprintf(out, cap, "%d %s\n", status, text);
    if (n < 0)
        return 0;
    return (size_t)n >= cap ? (int)cap - 1 : n;
}

/* ---- HTTP/2 backends: HTTP/1.1 -> HTTP/2 requests, HTTP/2 -> HTTP/1.1 responses ---- */

/* Appends field <name> (lowercased into <scratch>, its offset kept in the
 * slice until the end, as <scratch> may move) = <value> to <out>[*<n>]. */
static int add_field(struct hbuf *scratch, struct h2_field *out, size_t *n, struct http1_slice name,
                     struct http1_slice value)
{
    size_t off;
    if (put_lower(scratch, name, &off) < 0)
        return -1;
    out[*n].name = (struct http1_slice){(const char *)(uintptr_t)off, name.len};
    out[*n].value = value;
    (*n)++;
    return 0;
}

int headers_h2_from_h1_request(const struct http1_request *req, const char *scheme,
                               bool te_trailers, struct hbuf *scratch, struct h2_field *out)
{
    const struct http1_message *m = &req->msg;
    hbuf_reset(scratch);
    /* the pseudo-headers are literals, not copied: only regular names move */
    size_t n = 0;
    out[n++] = (struct h2_field){{":method", 7}, req->method};
    out[n++] = (struct h2_field){{":scheme", 7}, {scheme, strlen(scheme)}};
    if (req->host.len)
        out[n++] = (struct h2_field){{":authority", 10}, req->host};
    struct http1_slice path = req->target;
    if (path.len == 0)
        path = (struct http1_slice){"/", 1}; /* absolute-form without a path */
    out[n++] = (struct h2_field){{":path", 5}, path};
    size_t first_regular = n;
    for (size_t i = 0; i < m->num_headers; i++) {
        const struct http1_header *h = &m->headers[i];
        switch (field_kind(h->name)) {
        case FIELD_HOST:            /* :authority */
        case FIELD_HOP_BY_HOP:      /* RFC 9113 8.2.2; te: trailers is added below */
        case FIELD_TRANSFER_CODING: /* HTTP/2 frames the body itself */
            continue;
        default:
            break;
        }
        if (add_field(scratch, out, &n, h->name, h->value) < 0)
            return -1;
    }
    if (te_trailers)
        out[n++] = (struct h2_field){{"te", 2}, {"trailers", 8}};
    /* the copied names hold offsets into <scratch>; "te" is a literal */
    for (size_t i = first_regular; i < n - (te_trailers ? 1 : 0); i++)
        out[i].name.ptr = scratch->data + (uintptr_t)out[i].name.ptr;
    return (int)n;
}

/* "HTTP/1.1 NNN " without printf (as headers_build_response). */
static int put_status_line(struct hbuf *out, int status)
{
    char line[] = "HTTP/1.1 000 ";
    line[9] = (char)('0' + status / 100);
    line[10] = (char)('0' + status / 10 % 10);
    line[11] = (char)('0' + status % 10);
    int rc = put(out, line, sizeof(line) - 1);
    rc |= put_str(out, http1_status_text(status));
    rc |= PUT_LIT(out, "\r\n");
    return rc;
}

/* :status is three digits, 100..599 (RFC 9110 15). */
static int status_of(struct http1_slice v)
{
    if (v.len != 3)
        return -1;
    int s = 0;
    for (size_t i = 0; i < 3; i++) {
        if (v.ptr[i] < '0' || v.ptr[i] > '9')
            return -1;
        s = s * 10 + (v.ptr[i] - '0');
    }
    return s >= 100 && s <= 599 ? s : -1;
}

int headers_h1_from_h2_response(struct hbuf *out, const struct h2_field *f, size_t n,
                                bool end_stream, bool head_request, int *status, enum h2_body *body)
{
    int st = -1;
    bool has_length = false;
    for (size_t i = 0; i < n; i++) {
        if (f[i].name.len > 0 && f[i].name.ptr[0] == ':') {
            if (slice_is(f[i].name, ":status") && st < 0)
                st = status_of(f[i].value);
            else
                return -1; /* a request's pseudo-header, or :status twice */
        } else if (field_kind(f[i].name) == FIELD_CONTENT_LENGTH) {
            uint64_t v;
            if (!parse_length(f[i].value, &v))
                return -1;
            has_length = true;
        }
    }
    if (st < 0)
        return -1;
    *status = st;
    int rc = put_status_line(out, st);
    for (size_t i = 0; i < n; i++) {
        struct http1_slice name = f[i].name, value = f[i].value;
        if (name.len == 0 || name.ptr[0] == ':')
            continue;
        enum field_kind k = field_kind(name);
        if (k == FIELD_HOP_BY_HOP || k == FIELD_TRANSFER_CODING)
            continue; /* never in a valid HTTP/2 response: nghttp2 refuses them */
        /* nghttp2 refuses these too (RFC 9113 8.2.1); checked again, as
         * the head must read back as exactly one */
        for (size_t j = 0; j < name.len; j++)
            if (!h2_name_char((unsigned char)name.ptr[j]))
                return -1;
        if (!h2_value_ok(value))
            return -1;
        rc |= put(out, name.ptr, name.len);
        rc |= PUT_LIT(out, ": ");
        rc |= put(out, value.ptr, value.len);
        rc |= PUT_LIT(out, "\r\n");
    }
    if (st < 200 || st == 204 || st == 304 || head_request) {
        *body = H2_BODY_NONE; /* RFC 9110 6.4.1: these never carry content */
    } else if (has_length) {
        *body = H2_BODY_LENGTH;
    } else if (end_stream) {
        *body = H2_BODY_NONE;
        rc |= PUT_LIT(out, "Content-Length: 0\r\n");
    } else {
        *body = H2_BODY_CHUNKED;
        rc |= PUT_LIT(out, "Transfer-Encoding: chunked\r\n");
    }
    rc |= PUT_LIT(out, "\r\n");
    return rc ? -1 : 0;
}
