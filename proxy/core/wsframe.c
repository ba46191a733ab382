#include "wsframe.h"

#include <string.h>

#define WS_OP_CLOSE 0x8
#define WS_FIN 0x80
#define WS_MASK_BIT 0x80
#define WS_LEN_16 126 /* 7-bit length: a 16-bit length follows */
#define WS_LEN_64 127 /* 7-bit length: a 64-bit length follows */
/* RFC 6455 5.5: control frames carry at most 125 bytes and are never fragmented */
#define WS_CONTROL_MAX 125

/* Header bytes needed to know the whole header, from what is there. */
static unsigned hdr_need(const struct ws_tracker *t)
{
    if (t->hdr_len < 2)
        return 2;
    unsigned len7 = t->hdr[1] & 0x7f;
    unsigned need = 2 + (len7 == WS_LEN_16 ? 2 : len7 == WS_LEN_64 ? 8 : 0);
    if (t->hdr[1] & WS_MASK_BIT)
        need += 4;
    return need;
}

/* The header is complete: checks its length, returns -1 if it is not one
 * RFC 6455 5.2 allows. */
static int hdr_done(struct ws_tracker *t)
{
    unsigned len7 = t->hdr[1] & 0x7f;
    unsigned op = t->hdr[0] & 0x0f;
    uint64_t len = len7;
    if (len7 == WS_LEN_16) {
        len = ((uint64_t)t->hdr[2] << 8) | t->hdr[3];
        if (len < WS_LEN_16)
            return -1; /* minimal encoding required */
    } else if (len7 == WS_LEN_64) {
        len = 0;
        for (int i = 0; i < 8; i++)
            len = (len << 8) | t->hdr[2 + i];
        if (len >> 63)
            return -1; /* the most significant bit must be 0 */
        if (len <= 0xffff)
            return -1;
    }
    if (op >= 0x8 && (len > WS_CONTROL_MAX || !(t->hdr[0] & WS_FIN)))
        return -1;
    if (op == WS_OP_CLOSE)
        t->close_seen = true;
    t->payload_left = len;
    t->in_payload = true;
    t->hdr_len = 0;
    return 0;
}

size_t ws_track(struct ws_tracker *t, const uint8_t *p, size_t n)
{
    size_t i = 0, boundary = 0;
    while (i < n && !t->broken) {
        if (!t->in_payload) {
            t->hdr[t->hdr_len++] = p[i++];
            if (t->hdr_len < hdr_need(t))
                continue;
            if (hdr_done(t) < 0) {
                t->broken = true;
                return 0;
            }
        }
        uint64_t take = n - i < t->payload_left ? n - i : t->payload_left;
        i += (size_t)take;
        t->payload_left -= take;
        if (t->payload_left == 0) {
            t->in_payload = false;
            boundary = i;
        }
    }
    return t->broken ? 0 : boundary;
}

bool ws_at_boundary(const struct ws_tracker *t)
{
    return !t->broken && !t->in_payload && t->hdr_len == 0;
}

size_t ws_close_frame(uint8_t *out, uint16_t code, bool masked, uint32_t mask_key)
{
    uint8_t payload[2] = {(uint8_t)(code >> 8), (uint8_t)code};
    size_t n = 0;
    out[n++] = WS_FIN | WS_OP_CLOSE;
    out[n++] = (masked ? WS_MASK_BIT : 0) | (uint8_t)sizeof(payload);
    if (!masked) {
        memcpy(out + n, payload, sizeof(payload));
        return n + sizeof(payload);
    }
    uint8_t key[4] = {(uint8_t)(mask_key >> 24), (uint8_t)(mask_key >> 16),
                      (uint8_t)(mask_key >> 8), (uint8_t)mask_key};
    memcpy(out + n, key, sizeof(key));
    n += sizeof(key);
    for (size_t i = 0; i < sizeof(payload); i++)
        out[n++] = payload[i] ^ key[i % 4];
    return n;
}
