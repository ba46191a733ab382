/* grpc.health.v1 messages by hand (see grpcpb.h). Protobuf's wire format
 * (protobuf.dev/programming-guides/encoding): a message is a run of
 * fields, each a varint key (field number << 3 | wire type) and a value:
 * a varint (type 0), 8 bytes (1), a varint length and that many bytes (2),
 * 4 bytes (5); types 3 and 4 (groups) are long deprecated and refused. */
#include "grpcpb.h"

#include <stdbool.h>
#include <string.h>

/* A varint takes at most 10 bytes (64 bits, 7 per byte). */
#define VARINT_MAX 10

/* Field 1, length-delimited (HealthCheckRequest.service); field 1,
 * varint (HealthCheckResponse.status). */
#define KEY_SERVICE ((1u << 3) | 2u)
#define FIELD_STATUS 1u

enum wire_type { WT_VARINT = 0, WT_FIXED64 = 1, WT_LEN = 2, WT_FIXED32 = 5 };

static size_t varint_put(uint8_t *out, uint64_t v)
{
    size_t n = 0;
    do {
        uint8_t b = (uint8_t)(v & 0x7f);
        v >>= 7;
        out[n++] = v ? (uint8_t)(b | 0x80) : b;
    } while (v);
    return n;
}

/* Reads a varint at *<pos> of <p> (<n>); false if truncated or too long. */
static bool varint_get(const uint8_t *p, size_t n, size_t *pos, uint64_t *v)
{
    uint64_t r = 0;
    for (unsigned i = 0; i < VARINT_MAX; i++) {
        if (*pos >= n)
            return false;
        uint8_t b = p[(*pos)++];
        if (i == VARINT_MAX - 1 && b > 1)
            return false; /* more than 64 bits */
        r |= (uint64_t)(b & 0x7f) << (7 * i);
        if (!(b & 0x80)) {
            *v = r;
            return true;
        }
    }
    return false;
}

int grpcpb_health_request(uint8_t *out, size_t cap, const char *service, size_t len)
{
    uint8_t key_len[1 + VARINT_MAX];
    size_t head = 0;
    if (len > 0) {
        key_len[head++] = KEY_SERVICE;
        head += varint_put(key_len + head, len);
    }
    size_t msg = head + len;
    if (msg > UINT32_MAX || cap < GRPCPB_PREFIX_LEN + msg)
        return -1;
    out[0] = 0; /* not compressed */
    out[1] = (uint8_t)(msg >> 24);
    out[2] = (uint8_t)(msg >> 16);
    out[3] = (uint8_t)(msg >> 8);
    out[4] = (uint8_t)msg;
    memcpy(out + GRPCPB_PREFIX_LEN, key_len, head);
    if (len)
        memcpy(out + GRPCPB_PREFIX_LEN + head, service, len);
    return (int)(GRPCPB_PREFIX_LEN + msg);
}

int grpcpb_health_response(const uint8_t *p, size_t n)
{
    if (n < GRPCPB_PREFIX_LEN || p[0] != 0)
        return -1; /* truncated, or compressed (usher offers no encoding) */
    size_t len = (size_t)p[1] << 24 | (size_t)p[2] << 16 | (size_t)p[3] << 8 | p[4];
    if (len != n - GRPCPB_PREFIX_LEN)
        return -1; /* not exactly one message */
    const uint8_t *m = p + GRPCPB_PREFIX_LEN;
    size_t pos = 0;
    int status = GRPCPB_UNKNOWN;
    while (pos < len) {
        uint64_t key, v;
        if (!varint_get(m, len, &pos, &key) || (key >> 3) == 0)
            return -1;
        switch ((unsigned)(key & 7)) {
        case WT_VARINT:
            if (!varint_get(m, len, &pos, &v))
                return -1;
            if ((key >> 3) == FIELD_STATUS)
                status = v > 0x7fffffff ? -1 : (int)v;
            if (status < 0)
                return -1; /* an enum is an int32 */
            break;
        case WT_FIXED64:
            if (len - pos < 8)
                return -1;
            pos += 8;
            break;
        case WT_LEN:
            if (!varint_get(m, len, &pos, &v) || v > len - pos)
                return -1;
            pos += (size_t)v;
            break;
        case WT_FIXED32:
            if (len - pos < 4)
                return -1;
            pos += 4;
            break;
        default:
            return -1; /* groups, or no such type */
        }
    }
    return status;
}
