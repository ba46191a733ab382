/* libFuzzer harness for http1_parse_response, as the answer to GET, HEAD
 * and CONNECT: no crash, no read past the data, invariants hold. */
#include "fuzz_util.h"

static const enum http1_method methods[] = {HTTP1_METHOD_GET, HTTP1_METHOD_HEAD,
                                            HTTP1_METHOD_CONNECT};

static void check(const char *buf, size_t len, const struct http1_limits *lim,
                  enum http1_method method)
{
    struct http1_response res = {.msg.headers = headers}, pre = {.msg.headers = headers2};
    const struct http1_message *m = &res.msg;
    int r = http1_parse_response(buf, len, lim, method, &res);

    if (r == HTTP1_AGAIN)
        return;
    if (r == HTTP1_ERROR) {
        if (!m->error_reason || m->error_status != 502)
            abort();
        int rp = http1_parse_response(buf, len / 2, lim, method, &pre);
        if (rp != HTTP1_AGAIN && (rp != HTTP1_ERROR || pre.msg.error_reason != m->error_reason))
            abort();
        return;
    }
    if (r != HTTP1_OK)
        abort();
    check_head(m, buf, len, lim);
    if (res.status < 100 || res.status > 599)
        abort();
    if (m->framing < HTTP1_BODY_NONE || m->framing > HTTP1_BODY_UNTIL_CLOSE)
        abort();
    if (m->framing == HTTP1_BODY_UNTIL_CLOSE && (m->flags & HTTP1_F_KEEP_ALIVE))
        abort();
    if ((method == HTTP1_METHOD_HEAD || res.status < 200) && m->framing != HTTP1_BODY_NONE)
        abort();
    in_buf(res.reason, buf, m->head_len);
    if (http1_parse_response(buf, m->head_len - 1, lim, method, &pre) != HTTP1_AGAIN)
        abort();
    if (http1_parse_response(buf, m->head_len, lim, method, &pre) != HTTP1_OK ||
        pre.msg.head_len != m->head_len || pre.msg.flags != m->flags ||
        pre.msg.framing != m->framing || pre.status != res.status)
        abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *buf = malloc(size ? size : 1);
    if (!buf)
        return 0;
    memcpy(buf, data, size);
    for (size_t i = 0; i < sizeof(limits) / sizeof(limits[0]); i++)
        for (size_t j = 0; j < sizeof(methods) / sizeof(methods[0]); j++)
            check(buf, size, &limits[i], methods[j]);
    free(buf);
    return 0;
}
