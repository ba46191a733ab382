#include "headers.h"

#include <stdio.h>
#include <string.h>
#include "../../parser/http1.h"

/* Field names a message's Connection header may declare hop-by-hop beyond
 * the standard ones; more are ignored (a bound on per-header work, and no
 * legitimate message lists more). */
#define MAX_CONNECTION_TOKENS 16

/* What usher does with a field, by name. Classified by length first: most
 * fields match no candidate and cost one switch. */
enum field_kind {
    FIELD_END_TO_END = 0, /* forwarded (unless Connection names it) */
    FIELD_HOP_BY_HOP,     /* RFC 9110 7.6.1, plus Keep-Alive and Proxy-Connection */
    FIELD_XFF,            /* X-Forwarded-For: appended to */
    FIELD_XF_SET,         /* X-Forwarded-Proto / -Host: replaced */
};

static enum field_kind field_kind(struct http1_slice name)
{
    switch (name.len) {
    case 2:
        return http1_slice_eq(name, "te") ? FIELD_HOP_BY_HOP : FIELD_END_TO_END;
    case 7:
        return http1_slice_eq(name, "trailer") || http1_slice_eq(name, "upgrade")
                   ? FIELD_HOP_BY_HOP
                   : FIELD_END_TO_END;
    case 10:
        return http1_slice_eq(name, "connection") || http1_slice_eq(name, "keep-alive")
                   ? FIELD_HOP_BY_HOP
                   : FIELD_END_TO_END;
    case 15:
        return http1_slice_eq(name, "x-forwarded-for") ? FIELD_XFF : FIELD_END_TO_END;
    case 16:
        if (http1_slice_eq(name, "proxy-connection"))
            return FIELD_HOP_BY_HOP;
        return http1_slice_eq(name, "x-forwarded-host") ? FIELD_XF_SET : FIELD_END_TO_END;
    case 17:
        return http1_slice_eq(name, "x-forwarded-proto") ? FIELD_XF_SET : FIELD_END_TO_END;
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
        if (!http1_slice_eq(m->headers[i].name, "connection"))
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

static bool is_hop_by_hop(struct http1_slice name, const struct conn_tokens *ct)
{
    return field_kind(name) == FIELD_HOP_BY_HOP || listed_in_connection(ct, name);
}

static int append_field(struct hbuf *out, const struct http1_header *h)
{
    if (hbuf_append(out, h->name.ptr, h->name.len) < 0 || hbuf_append(out, ": ", 2) < 0 ||
        hbuf_append(out, h->value.ptr, h->value.len) < 0 || hbuf_append(out, "\r\n", 2) < 0)
        return -1;
    return 0;
}

int headers_build_request(struct hbuf *out, const struct http1_request *req,
                          const struct forward_info *fi)
{
    const struct http1_message *m = &req->msg;
    struct conn_tokens ct;
    collect_connection(m, &ct);

    int rc = 0;
    rc |= hbuf_append(out, req->method.ptr, req->method.len);
    rc |= hbuf_append(out, " ", 1);
    rc |= hbuf_append(out, req->target.ptr, req->target.len);
    rc |= hbuf_append_str(out, m->minor_version == 0 ? " HTTP/1.0\r\n" : " HTTP/1.1\r\n");

    bool has_xff = false;
    for (size_t i = 0; i < m->num_headers; i++) {
        const struct http1_header *h = &m->headers[i];
        enum field_kind k = field_kind(h->name);
        has_xff |= k == FIELD_XFF;
        if (k != FIELD_END_TO_END || listed_in_connection(&ct, h->name))
            continue;
        rc |= append_field(out, h);
    }

    /* X-Forwarded-For: every earlier hop in order, then this client */
    rc |= hbuf_append_str(out, "X-Forwarded-For: ");
    for (size_t i = 0; has_xff && i < m->num_headers; i++) {
        const struct http1_header *h = &m->headers[i];
        if (field_kind(h->name) != FIELD_XFF || h->value.len == 0)
            continue;
        rc |= hbuf_append(out, h->value.ptr, h->value.len);
        rc |= hbuf_append(out, ", ", 2);
    }
    rc |= hbuf_append_str(out, fi->client_addr);
    rc |= hbuf_append_str(out, "\r\nX-Forwarded-Proto: ");
    rc |= hbuf_append_str(out, fi->proto);
    rc |= hbuf_append(out, "\r\n", 2);
    if (req->host.len) {
        rc |= hbuf_append_str(out, "X-Forwarded-Host: ");
        rc |= hbuf_append(out, req->host.ptr, req->host.len);
        rc |= hbuf_append(out, "\r\n", 2);
    }
    if (fi->upgrade) {
        rc |= hbuf_append_str(out, "Connection: upgrade\r\nUpgrade: ");
        rc |= hbuf_append(out, m->upgrade.ptr, m->upgrade.len);
        rc |= hbuf_append(out, "\r\n", 2);
    } else if (m->minor_version == 0) {
        /* HTTP/1.0 upstream requests are one-shot unless asked otherwise;
         * ask, so the connection can be pooled */
        rc |= hbuf_append_str(out, "Connection: keep-alive\r\n");
    }
    rc |= hbuf_append(out, "\r\n", 2);
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
    int rc = hbuf_append(out, status_line, sizeof(status_line) - 1);
    rc |= hbuf_append(out, res->reason.ptr, res->reason.len);
    rc |= hbuf_append(out, "\r\n", 2);
    for (size_t i = 0; i < m->num_headers; i++) {
        const struct http1_header *h = &m->headers[i];
        if (is_hop_by_hop(h->name, &ct) ||
            (dechunk && http1_slice_eq(h->name, "transfer-encoding")))
            continue;
        rc |= append_field(out, h);
    }
    switch (conn) {
    case RESPONSE_CONN_KEEP_ALIVE:
        break;
    case RESPONSE_CONN_KEEP_ALIVE_10:
        rc |= hbuf_append_str(out, "Connection: keep-alive\r\n");
        break;
    case RESPONSE_CONN_CLOSE:
        rc |= hbuf_append_str(out, "Connection: close\r\n");
        break;
    case RESPONSE_CONN_UPGRADE:
        rc |= hbuf_append_str(out, "Connection: upgrade\r\nUpgrade: ");
        rc |= hbuf_append(out, m->upgrade.ptr, m->upgrade.len);
        rc |= hbuf_append(out, "\r\n", 2);
        break;
    }
    rc |= hbuf_append(out, "\r\n", 2);
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
        rc |= hbuf_append(out, body, (size_t)body_len);
    return rc ? -1 : 0;
}
