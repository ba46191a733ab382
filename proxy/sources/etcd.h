/* An etcd v3 client over its HTTP/JSON gateway (etcd 3.4: /v3/kv/...,
 * /v3/watch, /v3/lease/...), on the event loop: non-blocking sockets and
 * libev watchers, never a blocking call. Bodies are jansson values; keys
 * and values travel base64-encoded (etcd_b64 / etcd_unb64).
 *
 * Unary calls each use their own connection (one request, then the
 * server's reply); the watch is one long-lived streaming POST that
 * reconnects by itself with backoff (ETCD_BACKOFF_MAX_S at most between
 * tries) across the configured endpoints and resumes from the revision
 * after the last one it delivered. */
#ifndef USHER_PROXY_ETCD_H
#define USHER_PROXY_ETCD_H

#include <ev.h>
#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>

#include "../../conf/conf-t.h"

/* A unary call that gets no complete reply in this long failed (etcd
 * answers a loopback request in milliseconds; a dead peer must not hold a
 * mutation for long). */
#define ETCD_CALL_TIMEOUT_S 2.0
/* Reconnect backoff of the watch: first retry, then doubled up to the
 * DESIGN's "at most 5 s between tries". */
#define ETCD_BACKOFF_MIN_S 0.1
#define ETCD_BACKOFF_MAX_S 5.0

struct etcd;

/* A unary call's outcome: <reply> (borrowed, valid during the call) is
 * the parsed body of a 200 reply, or NULL with <why> a static reason. */
typedef void (*etcd_reply_cb)(void *ctx, json_t *reply, const char *why);

struct etcd_watch_hooks {
    /* The stream is up (etcd said "created"): from now on it delivers. */
    void (*up)(void *ctx);
    /* One watch response's "result" (borrowed): events, header. */
    void (*result)(void *ctx, json_t *result);
    /* The stream broke (<why> static); it reconnects by itself. */
    void (*down)(void *ctx, const char *why);
    void *ctx;
};

/* A client of the endpoints <eps> (<n> of them; the array must outlive
 * the client) on <loop>. NULL on allocation failure. */
struct etcd *etcd_new(struct ev_loop *loop, const struct conf_address *eps, size_t n);

/* Stops the watch and every call (their callbacks are not called). */
void etcd_free(struct etcd *e);

/* POSTs <body> (stolen) to <path> ("/v3/kv/range"...). 0: <cb> will be
 * called exactly once, later, from the loop; -1: it will not be. */
int etcd_call(struct etcd *e, const char *path, json_t *body, etcd_reply_cb cb, void *ctx);

/* Watches the keys from <key> up to <range_end> (both raw bytes, NUL
 * terminated), from revision <start_rev> on, with <hooks>. Replaces a
 * watch already set. Returns 0 or -1 (allocation). */
int etcd_watch(struct etcd *e, const char *key, const char *range_end, long long start_rev,
               const struct etcd_watch_hooks *hooks);

/* Breaks the watch stream now and reconnects with backoff from the next
 * revision (a unary call saw etcd fail, so the stream is suspect). */
void etcd_watch_reset(struct etcd *e, const char *why);

/* The endpoint in use, "127.0.0.1:2379". */
const char *etcd_endpoint(const struct etcd *e);

/* Base64 of <n> bytes of <s>: a new JSON string, NULL on allocation failure. */
json_t *etcd_b64(const char *s, size_t n);

/* Decodes the base64 JSON string <v> into a malloc'd NUL-terminated
 * buffer (*<n> bytes without the NUL). NULL if <v> is not base64. */
char *etcd_unb64(const json_t *v, size_t *n);

/* The key right after every key starting with <prefix>: the prefix with
 * its last byte incremented (etcd's range_end for "keys with this prefix").
 * malloc'd; NULL on allocation failure. */
char *etcd_prefix_end(const char *prefix);

/* An int64 field of a gateway reply, which encodes int64 as a string
 * ("revision":"42"), or <dflt> when absent. */
long long etcd_int(const json_t *obj, const char *key, long long dflt);

#endif
