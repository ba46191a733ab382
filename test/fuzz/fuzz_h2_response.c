/* libFuzzer harness for the HTTP/2 -> HTTP/1.1 response translation of
 * HTTP/2 backends (headers_h1_from_h2_response, proxy/core/headers.c):
 * whatever field list a backend sends (nghttp2 validates it first; this
 * harness does not, so the function's own checks are what stands), the
 * head the exchange reads is exactly one response that usher's strict
 * parser reads back, with the status given, one framing, and a body as the
 * translation said — or the response is refused.
 *
 * Input: a flags byte (bit 0: END_STREAM on the HEADERS; bit 1: an answer
 * to HEAD), then records [name length][value length][name][value]. */
#include "fuzz_util.h"

#include "proxy/base/buf.c"
#include "proxy/core/headers.c"

#define MAX_FIELDS 64

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    (void)check_head;
    if (size < 1)
        return 0;
    bool end_stream = data[0] & 1, head = data[0] & 2;
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
    int status = 0;
    enum h2_body body = 0;
    if (headers_h1_from_h2_response(&out, f, n, end_stream, head, &status, &body) == 0) {
        static const struct http1_limits loose = {1 << 20, MAX_HEADERS, 1 << 20};
        struct http1_response r = {.msg.headers = headers};
        int rc = http1_parse_response(out.data, out.len, &loose,
                                      head ? HTTP1_METHOD_HEAD : HTTP1_METHOD_GET, &r);
        if (rc == HTTP1_ERROR && r.msg.error_reason &&
            strcmp(r.msg.error_reason, "too many header fields") == 0)
            goto out; /* more fields than MAX_HEADERS: the exchange answers 502 */
        if (rc != HTTP1_OK || r.msg.head_len != out.len || r.status != status)
            abort(); /* not exactly one head, or another status */
        switch (body) {
        case H2_BODY_NONE:
            if (r.msg.framing != HTTP1_BODY_NONE &&
                !(r.msg.framing == HTTP1_BODY_LENGTH && r.msg.content_length == 0))
                abort();
            break;
        case H2_BODY_LENGTH:
            if (r.msg.framing != HTTP1_BODY_LENGTH)
                abort();
            break;
        case H2_BODY_CHUNKED:
            if (r.msg.framing != HTTP1_BODY_CHUNKED)
                abort();
            break;
        default:
            abort();
        }
    }
out:
    hbuf_free(&out);
    for (size_t i = 0; i < ncopies; i++)
        free(copies[i]);
    return 0;
}
