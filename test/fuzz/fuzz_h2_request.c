/* libFuzzer harness for the HTTP/2 -> HTTP/1.1 request translation
 * (headers_h2_request, proxy/core/headers.c): whatever header list an
 * HTTP/2 client sends, what usher writes for its backend is one request
 * head that usher's own strict HTTP/1.1 parser reads back exactly — the
 * same method and target, one Host (the authority), no connection-specific
 * field, framing as announced — or the request is refused with 400, 414,
 * 431 or 501. A translation that smuggled a second request or a different
 * framing would fail here.
 *
 * Input: a flags byte (bit 0: END_STREAM on the HEADERS; bit 1: the small
 * limits), then records [name length][value length][name][value] (one byte
 * each for the lengths), any bytes allowed. */
#include "fuzz_util.h"

#include "proxy/base/buf.c"
#include "proxy/core/headers.c"

#define MAX_FIELDS 64

static const char *new_id(void *ctx)
{
    return "0123456789abcdef0123456789abcdef";
}

static bool name_eq(struct http1_slice s, const char *lit)
{
    return http1_slice_eq(s, lit);
}

static void check_out(const struct hbuf *out, const struct h2_request *req)
{
    static const struct http1_limits loose = {1 << 20, MAX_HEADERS, 1 << 20};
    struct http1_request p = {.msg.headers = headers};
    if (http1_parse_request(out->data, out->len, &loose, &p) != HTTP1_OK ||
        p.msg.head_len != out->len)
        abort(); /* not exactly one valid head */
    if (p.method.len != req->method.len || memcmp(p.method.ptr, req->method.ptr, p.method.len) ||
        p.target.len != req->path.len || memcmp(p.target.ptr, req->path.ptr, p.target.len))
        abort();
    if (p.host.len != req->authority.len ||
        memcmp(p.host.ptr, req->authority.ptr, p.host.len))
        abort();
    unsigned hosts = 0, cookies = 0, lengths = 0, codings = 0;
    for (size_t i = 0; i < p.msg.num_headers; i++) {
        struct http1_slice n = p.msg.headers[i].name;
        if (name_eq(n, "connection") || name_eq(n, "keep-alive") ||
            name_eq(n, "proxy-connection") || name_eq(n, "upgrade") || name_eq(n, "te") ||
            name_eq(n, "http2-settings") || name_eq(n, "trailer"))
            abort(); /* connection-specific: never reaches a backend */
        hosts += name_eq(n, "host");
        cookies += name_eq(n, "cookie");
        lengths += name_eq(n, "content-length");
        codings += name_eq(n, "transfer-encoding");
    }
    if (hosts != 1 || cookies > 1 || lengths > 1 || codings > (req->framing == HTTP1_BODY_CHUNKED))
        abort();
    switch (req->framing) {
    case HTTP1_BODY_NONE:
        if (p.msg.framing != HTTP1_BODY_NONE &&
            !(p.msg.framing == HTTP1_BODY_LENGTH && p.msg.content_length == 0))
            abort();
        break;
    case HTTP1_BODY_LENGTH:
        if (p.msg.framing != HTTP1_BODY_LENGTH || p.msg.content_length != req->content_length)
            abort();
        break;
    case HTTP1_BODY_CHUNKED:
        if (p.msg.framing != HTTP1_BODY_CHUNKED)
            abort();
        break;
    default:
        abort();
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    (void)check_head; /* fuzz_util.h's, for the HTTP/1.1 harnesses */
    if (size < 1)
        return 0;
    bool end_stream = data[0] & 1;
    const struct http1_limits *lim = &limits[(data[0] >> 1) & 1];
    /* every field in its own exactly sized heap copy: a read past one is caught */
    struct h2_field f[MAX_FIELDS];
    char *copies[2 * MAX_FIELDS];
    size_t n = 0, pos = 1, ncopies = 0;
    while (n < MAX_FIELDS && pos + 2 <= size) {
        size_t nl = data[pos], vl = data[pos + 1];
        pos += 2;
        if (pos + nl + vl > size)
            break;
        char *name = malloc(nl ? nl : 1), *value = malloc(vl ? vl : 1);
        memcpy(name, data + pos, nl);
        memcpy(value, data + pos + nl, vl);
        copies[ncopies++] = name;
        copies[ncopies++] = value;
        f[n].name = (struct http1_slice){name, nl};
        f[n].value = (struct http1_slice){value, vl};
        n++;
        pos += nl + vl;
    }
    struct hbuf out = {0};
    struct h2_request req;
    struct forward_info fi = {.client_addr = "192.0.2.1", .proto = "https",
                              .request_id_max = 64, .new_request_id = new_id};
    int rc = headers_h2_request(&out, f, n, end_stream, lim, &fi, &req);
    if (rc == 0) {
        check_out(&out, &req);
    } else if (!req.error_reason || (req.error_status != 400 && req.error_status != 414 &&
                                     req.error_status != 431 && req.error_status != 501)) {
        abort();
    }
    hbuf_free(&out);
    for (size_t i = 0; i < ncopies; i++)
        free(copies[i]);
    return 0;
}
