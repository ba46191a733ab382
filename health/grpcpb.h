/* The two messages of grpc.health.v1 (grpc/src/proto/grpc/health/v1/
 * health.proto), encoded and decoded by hand — no protobuf library for
 * two one-field messages: HealthCheckRequest { string service = 1; } and
 * HealthCheckResponse { ServingStatus status = 1; }, each in gRPC's framing
 * (a Length-Prefixed-Message: a compressed flag, a 4-byte big-endian
 * length, the message). Pure functions over bytes: no I/O, no allocation.
 * Fuzzed (test/fuzz/fuzz_grpc_health.c). */
#ifndef USHER_HEALTH_GRPCPB_H
#define USHER_HEALTH_GRPCPB_H

#include <stddef.h>
#include <stdint.h>

/* HealthCheckResponse.ServingStatus. */
enum grpcpb_serving {
    GRPCPB_UNKNOWN = 0,
    GRPCPB_SERVING = 1,
    GRPCPB_NOT_SERVING = 2,
    GRPCPB_SERVICE_UNKNOWN = 3, /* Watch only, but a server may say it */
};

/* The bytes of a Length-Prefixed-Message before its message. */
#define GRPCPB_PREFIX_LEN 5

/* Writes the framed HealthCheckRequest asking about <service> (<len>
 * bytes; 0: the server as a whole, an empty message) into <out> (<cap>
 * bytes). Returns its length, or -1 if it does not fit. */
int grpcpb_health_request(uint8_t *out, size_t cap, const char *service, size_t len);

/* Reads the response body <p> (<n> bytes: every DATA byte of the answer):
 * exactly one uncompressed Length-Prefixed-Message holding a
 * HealthCheckResponse. Returns its status (a field absent is UNKNOWN, as
 * proto3 says; unknown fields are skipped; the last status wins), or -1 if
 * the bytes are anything else (truncated, compressed, trailing bytes, a
 * malformed varint or field). */
int grpcpb_health_response(const uint8_t *p, size_t n);

#endif
