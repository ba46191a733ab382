/* gRPC as usher sees it (see grpc.h). Framing after
 * grpc/doc/PROTOCOL-HTTP2.md: Length-Prefixed-Message = Compressed-Flag
 * (1 byte) Message-Length (4 bytes, big-endian) Message; grpc-message is
 * percent-encoded. */
#include "grpc.h"

#include <stdio.h>
#include <string.h>
#include <strings.h>

/* The bytes of a Length-Prefixed-Message before its message. */
#define GRPC_PREFIX_LEN 5

bool grpc_content_type(struct http1_slice v)
{
    static const char base[] = "application/grpc";
    size_t n = sizeof(base) - 1;
    if (v.len < n || strncasecmp(v.ptr, base, n) != 0)
        return false;
    return v.len == n || v.ptr[n] == '+' || v.ptr[n] == ';';
}

enum grpc_code grpc_code_of(int status)
{
    switch (status) {
    case 421: /* misdirected: another connection will do */
    case 502:
    case 503:
        return GRPC_UNAVAILABLE;
    case 408:
    case 504:
        return GRPC_DEADLINE_EXCEEDED;
    case 414:
    case 431:
        return GRPC_RESOURCE_EXHAUSTED;
    case 404:
    case 501:
        return GRPC_UNIMPLEMENTED;
    default:
        return GRPC_INTERNAL;
    }
}

/* Percent-encodes <s> into <out> (<cap> with the NUL): bytes outside
 * 0x20..0x7e and '%' become %XX (PROTOCOL-HTTP2.md, "grpc-message").
 * Cut at a whole escape when it does not fit. */
static void percent_encode(char *out, size_t cap, const char *s)
{
    static const char hex[] = "0123456789ABCDEF";
    size_t o = 0;
    for (; s && *s; s++) {
        unsigned char c = (unsigned char)*s;
        bool plain = c >= 0x20 && c <= 0x7e && c != '%';
        size_t need = plain ? 1 : 3;
        if (o + need + 1 > cap)
            break;
        if (plain) {
            out[o++] = (char)c;
        } else {
            out[o++] = '%';
            out[o++] = hex[c >> 4];
            out[o++] = hex[c & 15];
        }
    }
    out[o] = '\0';
}

size_t grpc_error_fields(struct grpc_error *e, int status, const char *detail)
{
    snprintf(e->status, sizeof(e->status), "%d", (int)grpc_code_of(status));
    percent_encode(e->message, sizeof(e->message), detail ? detail : "");
    e->f[0] = (struct h2_field){{":status", 7}, {"200", 3}};
    e->f[1] = (struct h2_field){{"content-type", 12}, {"application/grpc", 16}};
    e->f[2] = (struct h2_field){{"grpc-status", 11}, {e->status, strlen(e->status)}};
    e->f[3] = (struct h2_field){{"grpc-message", 12}, {e->message, strlen(e->message)}};
    return 4;
}

int grpc_trailer_lines(struct hbuf *out, enum grpc_code code, const char *detail)
{
    char msg[GRPC_MESSAGE_MAX];
    percent_encode(msg, sizeof(msg), detail);
    return hbuf_printf(out, "grpc-status: %d\r\ngrpc-message: %s\r\n", (int)code, msg);
}

void grpc_follow(struct grpc_call *g, const uint8_t *p, size_t n)
{
    while (n > 0) {
        if (g->prefix_got < GRPC_PREFIX_LEN) {
            size_t take = GRPC_PREFIX_LEN - g->prefix_got;
            if (take > n)
                take = n;
            memcpy(g->prefix + g->prefix_got, p, take);
            g->prefix_got += (unsigned)take;
            g->framed += take;
            p += take;
            n -= take;
            if (g->prefix_got < GRPC_PREFIX_LEN)
                return;
            uint32_t len = (uint32_t)g->prefix[1] << 24 | (uint32_t)g->prefix[2] << 16 |
                           (uint32_t)g->prefix[3] << 8 | g->prefix[4];
            g->msg_end = g->framed + len;
        }
        uint64_t left = g->msg_end - g->framed;
        size_t take = left < n ? (size_t)left : n;
        g->framed += take;
        p += take;
        n -= take;
        if (g->framed == g->msg_end) {
            g->last_end = g->framed;
            g->prefix_got = 0;
        }
    }
}

bool grpc_cut(const struct grpc_call *g, uint64_t sent, uint64_t *cut)
{
    if (g->last_end < sent)
        return false; /* <sent> is inside a message still arriving */
    *cut = g->last_end;
    return true;
}
