/* libFuzzer harness for the gRPC health messages (health/grpcpb.c): any
 * bytes a backend answers with decode to a status or to -1, never read
 * past them; and a request for any service name reads back as one
 * well-formed message (its status field absent: UNKNOWN).
 *
 * Input: the bytes of a response body, also taken as a service name. */
#include "fuzz_util.h"

#include "health/grpcpb.c"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    (void)check_head; /* fuzz_util.h's, for the HTTP/1.1 harnesses */
    /* an exactly sized heap copy: a read past it is caught */
    uint8_t *copy = malloc(size ? size : 1);
    memcpy(copy, data, size);
    int st = grpcpb_health_response(copy, size);
    if (st < -1)
        abort();
    free(copy);

    size_t cap = GRPCPB_PREFIX_LEN + 1 + VARINT_MAX + size;
    uint8_t *req = malloc(cap);
    int n = grpcpb_health_request(req, cap, (const char *)data, size);
    if (n < 0 || (size_t)n > cap)
        abort();
    /* field 1 is a string: read as a response it is an unknown
     * length-delimited field, skipped, and the status is absent */
    if (grpcpb_health_response(req, (size_t)n) != GRPCPB_UNKNOWN)
        abort();
    if (grpcpb_health_request(req, (size_t)n - 1, (const char *)data, size) != -1)
        abort();
    free(req);
    return 0;
}
