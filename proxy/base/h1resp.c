#include "h1resp.h"

#include <string.h>

#include "../../parser/http1.h"

const char h1resp_err_body_too_large[] = "response body too large";
const char h1resp_err_closed_in_head[] = "connection closed before the response head ended";
const char h1resp_err_closed_in_body[] = "connection closed before the response body ended";
const char h1resp_err_upgrade[] = "unexpected 101 Switching Protocols";
const char h1resp_err_nomem[] = "out of memory";

void h1resp_init(struct h1resp *r, enum http1_method method, size_t body_max)
{
    memset(r, 0, sizeof(*r));
    r->method = method;
    r->body_max = body_max;
}

void h1resp_free(struct h1resp *r)
{
    hbuf_free(&r->body);
    hbuf_free(&r->in);
}

static int fail(struct h1resp *r, const char *why)
{
    r->error = why;
    return H1RESP_ERROR;
}

static int keep(struct h1resp *r, const char *p, size_t n)
{
    if (n == 0)
        return 0;
    if (r->body.len + n > r->body_max)
        return fail(r, h1resp_err_body_too_large);
    return hbuf_append(&r->body, p, n) < 0 ? fail(r, h1resp_err_nomem) : 0;
}

/* Body bytes at <p>: decoded into <body> by the framing. */
static int body_bytes(struct h1resp *r, const char *p, size_t n)
{
    switch (r->framing) {
    case HTTP1_BODY_LENGTH: {
        size_t take = n < r->length_left ? n : (size_t)r->length_left;
        if (keep(r, p, take) < 0)
            return H1RESP_ERROR;
        r->length_left -= take;
        r->done = r->length_left == 0;
        break;
    }
    case HTTP1_BODY_CHUNKED:
        while (n > 0 && !r->done) {
            size_t used, off, len;
            int rc = http1_chunked_decode(&r->chunked, p, n, &used, &off, &len);
            if (rc == HTTP1_ERROR)
                return fail(r, r->chunked.error_reason);
            if (keep(r, p + off, len) < 0)
                return H1RESP_ERROR;
            r->done = rc == HTTP1_OK;
            p += used;
            n -= used;
        }
        break;
    case HTTP1_BODY_UNTIL_CLOSE:
        if (keep(r, p, n) < 0)
            return H1RESP_ERROR;
        break;
    case HTTP1_BODY_NONE:
        break;
    }
    return r->done ? H1RESP_DONE : H1RESP_AGAIN;
}

/* Parses the head held in <in>; then the bytes after it are body. */
static int head(struct h1resp *r)
{
    static const struct http1_limits lim = {
        .max_head_bytes = H1RESP_HEAD_MAX,
        .max_headers = H1RESP_HEADERS_MAX,
        .max_uri_bytes = H1RESP_HEAD_MAX,
    };
    for (;;) {
        struct http1_header fields[H1RESP_HEADERS_MAX];
        struct http1_response res = {.msg.headers = fields};
        int rc = http1_parse_response(r->in.data, r->in.len, &lim, r->method, &res);
        if (rc == HTTP1_AGAIN)
            return H1RESP_AGAIN;
        if (rc == HTTP1_ERROR)
            return fail(r, res.msg.error_reason);
        size_t used = res.msg.head_len;
        if (res.status == 101)
            return fail(r, h1resp_err_upgrade);
        if (res.status >= 100 && res.status < 200) {
            /* an interim answer (100 Continue, 103 Early Hints): the final one follows */
            memmove(r->in.data, r->in.data + used, r->in.len - used);
            r->in.len -= used;
            continue;
        }
        r->have_head = true;
        r->status = res.status;
        r->framing = res.msg.framing;
        r->length_left = res.msg.content_length;
        http1_chunked_init(&r->chunked);
        r->done = r->framing == HTTP1_BODY_NONE ||
                  (r->framing == HTTP1_BODY_LENGTH && r->length_left == 0);
        int brc = r->done ? H1RESP_DONE : body_bytes(r, r->in.data + used, r->in.len - used);
        hbuf_free(&r->in);
        return brc;
    }
}

int h1resp_feed(struct h1resp *r, const char *data, size_t n)
{
    if (r->error)
        return H1RESP_ERROR;
    if (r->done)
        return H1RESP_DONE;
    if (r->have_head)
        return body_bytes(r, data, n);
    if (n && hbuf_append(&r->in, data, n) < 0)
        return fail(r, h1resp_err_nomem);
    return head(r);
}

int h1resp_eof(struct h1resp *r)
{
    if (r->error)
        return H1RESP_ERROR;
    if (!r->have_head)
        return fail(r, h1resp_err_closed_in_head);
    if (r->framing == HTTP1_BODY_UNTIL_CLOSE)
        r->done = true;
    return r->done ? H1RESP_DONE : fail(r, h1resp_err_closed_in_body);
}

void h1resp_body_take(struct h1resp *r, size_t n)
{
    if (n > r->body.len)
        n = r->body.len;
    if (n == 0)
        return;
    memmove(r->body.data, r->body.data + n, r->body.len - n);
    r->body.len -= n;
    r->body.data[r->body.len] = '\0';
}
