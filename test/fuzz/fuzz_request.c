/* libFuzzer harness for http1_parse_request: no crash, no read past the
 * data (exactly sized heap copy), and the result invariants hold. */
#include "fuzz_util.h"

static void check(const char *buf, size_t len, const struct http1_limits *lim)
{
    struct http1_request req = {.msg.headers = headers}, pre = {.msg.headers = headers2};
    const struct http1_message *m = &req.msg;
    int r = http1_parse_request(buf, len, lim, &req);

    if (r == HTTP1_AGAIN)
        return;
    if (r == HTTP1_ERROR) {
        int st = m->error_status;
        if (!m->error_reason || (st != 400 && st != 414 && st != 431 && st != 501 && st != 505))
            abort();
        /* a prefix either waits or fails the same way */
        int rp = http1_parse_request(buf, len / 2, lim, &pre);
        if (rp != HTTP1_AGAIN && (rp != HTTP1_ERROR || pre.msg.error_reason != m->error_reason))
            abort();
        return;
    }
    if (r != HTTP1_OK)
        abort();
    check_head(m, buf, len, lim);
    if (m->minor_version < 0 || m->minor_version > 1)
        abort();
    if (m->framing != HTTP1_BODY_NONE && m->framing != HTTP1_BODY_LENGTH &&
        m->framing != HTTP1_BODY_CHUNKED)
        abort(); /* never UNTIL_CLOSE for a request */
    if ((m->framing == HTTP1_BODY_LENGTH && !(m->flags & HTTP1_F_HAS_CL)) ||
        (m->framing == HTTP1_BODY_CHUNKED && !(m->flags & HTTP1_F_HAS_TE)))
        abort();
    /* an absolute-form target without a path ("http://h") leaves an empty
     * origin-form target: headers_build_request forwards it as "/" */
    if (req.method.len == 0 || req.target.len > lim->max_uri_bytes ||
        (req.target.len == 0 && !(m->flags & HTTP1_F_ABSOLUTE_FORM)))
        abort();
    in_buf(req.method, buf, m->head_len);
    in_buf(req.target, buf, m->head_len);
    in_buf(req.host, buf, m->head_len);
    /* complete exactly at head_len, not a byte earlier */
    if (http1_parse_request(buf, m->head_len - 1, lim, &pre) != HTTP1_AGAIN)
        abort();
    if (http1_parse_request(buf, m->head_len, lim, &pre) != HTTP1_OK ||
        pre.msg.head_len != m->head_len || pre.msg.flags != m->flags ||
        pre.msg.framing != m->framing || pre.msg.num_headers != m->num_headers)
        abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *buf = malloc(size ? size : 1);
    if (!buf)
        return 0;
    memcpy(buf, data, size);
    for (size_t i = 0; i < sizeof(limits) / sizeof(limits[0]); i++)
        check(buf, size, &limits[i]);
    free(buf);
    return 0;
}
