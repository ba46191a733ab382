/* RFC 6455 frame boundaries in a WebSocket byte stream: lengths only, the
 * payload is never unmasked or copied. A tunnel follows both directions so
 * it can put a close frame of its own between two frames. */
#ifndef USHER_PROXY_WSFRAME_H
#define USHER_PROXY_WSFRAME_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* RFC 6455 7.4.1: "going away" (a server going down). */
#define WS_CLOSE_GOING_AWAY 1001

/* The largest close frame ws_close_frame() writes: 2 + 4 (mask) + 2 (code). */
#define WS_CLOSE_FRAME_MAX 8

struct ws_tracker {
    uint8_t hdr[14];       /* the frame header read so far */
    unsigned hdr_len;      /* bytes of it */
    uint64_t payload_left; /* payload bytes of the current frame still to come */
    bool in_payload;       /* header complete, payload_left bytes to skip */
    bool broken;           /* a length it cannot follow: it gives up for good */
    bool close_seen;       /* a close frame (opcode 8) went by */
};

/* Follows <n> bytes of the stream at <p>. Returns the offset in <p> just
 * after the last frame that ended within these bytes (1..n), or 0 if none
 * did. Once t->broken it returns 0 forever. */
size_t ws_track(struct ws_tracker *t, const uint8_t *p, size_t n);

/* True if the bytes fed so far end exactly on a frame boundary. */
bool ws_at_boundary(const struct ws_tracker *t);

/* Writes a close frame with status <code> into <out> (WS_CLOSE_FRAME_MAX
 * bytes of room): masked with <mask_key> if <masked> (a client's frame,
 * RFC 6455 5.3), unmasked otherwise (a server's). Returns its length. */
size_t ws_close_frame(uint8_t *out, uint16_t code, bool masked, uint32_t mask_key);

#endif
