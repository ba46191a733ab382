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

/* True if field name <s>, already known to be as long as the lowercase
 * literal <lit>, names it (case-insensitively). The first byte decides
 * most mismatches without a call: every literal here starts with a
 * letter, for which (c | 0x20) is its lowercase. */
static inline bool name_is(struct http1_slice s, const char *lit)
{
    return (s.ptr[0] | 0x20) == lit[0] && http1_slice_eq(s, lit);
}

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
        return name_is(name, "content-length") ? FIELD_CONTENT_LENGTH : FIELD_END_TO_END;
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
        if (m->headers[i].name.len != 10 || !name_is(m->headers[i].name, "connection"))
            continue;
        const char *p = m->headers[i].value.ptr, *end = p + m->headers[i].value.len;
        struct http1_slice el;
        while (ct->n < MAX_CONNECTION_TOKENS && http1_list_next(&p, end, &el))
            if (!http1_slice_eq(el, "keep-alive") && !http1_slice_eq(el, "close") &&
                !http1_slice_eq(el, "upgrade"))
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
    int body_len = detail ? snprintf(body, sizeof(body), "%d %s: %s\n", status, text, detail)
                          : snprintf(body, sizeof(body), "%d %s\n", status, text);
    if (body_len < 0 || (size_t)body_len >= sizeof(body))
        body_len = (int)sizeof(body) - 1;
    int rc = hbuf_printf(out,
                         "HTTP/1.1 %d %s\r\nContent-Type: text/plain\r\nContent-Length: %d\r\n"
                         "Cache-Control: no-store\r\n%s\r\n",
                         status, text, body_len, close ? "Connection: close\r\n" : "");
    if (!head_only)
        rc |= put(out, body, (size_t)body_len);
    return rc ? -1 : 0;
}
