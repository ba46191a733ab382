// links: usher_health
/* health/grpcpb.c: the grpc.health.v1 messages by hand — requests as
 * grpc-core encodes them, responses decoded (unknown fields skipped, the
 * last status winning) and everything malformed refused. */
#include <string.h>

#include "health/grpcpb.h"
#include "test/unit/check.h"

static int decode(const char *bytes, size_t n)
{
    return grpcpb_health_response((const uint8_t *)bytes, n);
}

int main(void)
{
    uint8_t out[64];
    /* the whole server: an empty message */
    CHECK_INT(grpcpb_health_request(out, sizeof(out), "", 0), 5);
    CHECK(memcmp(out, "\0\0\0\0\0", 5) == 0);
    /* a service: field 1, length-delimited */
    CHECK_INT(grpcpb_health_request(out, sizeof(out), "svc.A", 5), 12);
    CHECK(memcmp(out, "\0\0\0\0\x07\x0a\x05svc.A", 12) == 0);
    CHECK_INT(grpcpb_health_request(out, 11, "svc.A", 5), -1);
    /* a 200-byte service name: a two-byte length */
    char name[200];
    memset(name, 'n', sizeof(name));
    uint8_t big[256];
    CHECK_INT(grpcpb_health_request(big, sizeof(big), name, sizeof(name)), 5 + 3 + 200);
    CHECK(big[4] == 203 && big[5] == 0x0a && big[6] == 0xc8 && big[7] == 0x01);

    CHECK_INT(decode("\0\0\0\0\x02\x08\x01", 7), GRPCPB_SERVING);
    CHECK_INT(decode("\0\0\0\0\x02\x08\x02", 7), GRPCPB_NOT_SERVING);
    CHECK_INT(decode("\0\0\0\0\x00", 5), GRPCPB_UNKNOWN); /* absent: the default */
    CHECK_INT(decode("\0\0\0\0\x02\x08\x03", 7), GRPCPB_SERVICE_UNKNOWN);
    /* unknown fields of every type skipped, the last status wins */
    CHECK_INT(decode("\0\0\0\0\x18\x08\x02\x10\x05\x19"
                     "12345678\x22\x02xy\x2d"
                     "abcd\x08\x01",
                     5 + 0x18),
              GRPCPB_SERVING);
    /* malformed */
    CHECK_INT(decode("\0\0\0\0", 4), -1);               /* a short prefix */
    CHECK_INT(decode("\x01\0\0\0\x02\x08\x01", 7), -1); /* compressed */
    CHECK_INT(decode("\0\0\0\0\x03\x08\x01", 7), -1);   /* truncated */
    CHECK_INT(decode("\0\0\0\0\x02\x08\x01\0", 8), -1); /* a byte after the message */
    CHECK_INT(decode("\0\0\0\0\x01\x08", 6), -1);       /* a key without value */
    CHECK_INT(decode("\0\0\0\0\x02\x00\x01", 7), -1);   /* field 0 */
    CHECK_INT(decode("\0\0\0\0\x02\x0b\x01", 7), -1);   /* a group */
    CHECK_INT(decode("\0\0\0\0\x03\x12\x05x", 8), -1);  /* a length past the end */
    CHECK_INT(decode("\0\0\0\0\x0b\x08\xff\xff\xff\xff\xff\xff\xff\xff\xff\x01", 16), -1);
    CHECK_INT(decode("\0\0\0\0\x0c\x08\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\x01", 17), -1);
    return check_report("test_grpcpb");
}
