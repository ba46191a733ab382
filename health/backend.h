/* The backend state machine, its active health checks and its
 * deregistration timer. */
#ifndef USHER_HEALTH_BACKEND_H
#define USHER_HEALTH_BACKEND_H

#include "backend-t.h"

/* Creates the runtime backend for <cb> of pool <cp> and starts its health
 * checks on <loop> (first check after a short random delay within one
 * interval, so a fleet is not checked in lockstep). The state is
 * BACKEND_CHECKING with a health check, BACKEND_HEALTHY without.
 * Returns NULL on allocation failure. */
struct backend *backend_new(struct ev_loop *loop, const struct conf_pool *cp,
                            const struct conf_backend *cb, const struct backend_hooks *hooks,
                            void *hooks_ctx);

/* Applies a reload that kept this backend (same pool, name and address):
 * new weight and health-check settings; state, streaks and counters are
 * kept. A backend that was draining because it was removed becomes a normal
 * backend again (state from its last check). Returns 0 or -1 (ENOMEM). */
int backend_reconfigure(struct backend *b, const struct conf_pool *cp,
                        const struct conf_backend *cb);

/* The reload removed this backend: it drains with <delay_ms> and is handed to
 * hooks->gone once its last connection ends or the delay passes. */
void backend_remove(struct backend *b, conf_ms delay_ms);

/* Like backend_remove(), for a backend whose address left its DNS answer:
 * the drain reason is BACKEND_DRAIN_DNS. */
void backend_remove_dns(struct backend *b, conf_ms delay_ms);

/* Fills <snap> with the state of <b> that an upgrade hands over. */
void backend_snapshot(const struct backend *b, struct backend_snapshot *snap);

/* Takes over the state an old process had for this backend (same pool,
 * name and address): state, drain reason and check streaks. A drain it had
 * for removal is not taken over (the new config decides). The transition is
 * reported through the state_changed hook at a safe point. */
void backend_restore(struct backend *b, const struct backend_snapshot *snap);
/* The runtime API drains <b> (reason BACKEND_DRAIN_ADMIN) with a deadline of
 * <delay_ms>: no new traffic, whatever its checks say, until
 * backend_admin_ready(). A backend a reload removed stays removed.
 * Idempotent. Reported through hooks->state_changed at a safe point. */
void backend_admin_drain(struct backend *b, conf_ms delay_ms);

/* Clears an admin drain: the backend returns to what its checks say
 * (healthy if its last check passed or it has none, else checking). A
 * backend not admin-drained is left alone (a 503 or removal drain is not
 * the API's to end). Returns true if it was admin-drained. */
bool backend_admin_ready(struct backend *b);

/* The client TLS settings of a pool's `tls` <t> for tlsc_ctx_new()
 * (proxy/net/tlsclient.h), with the ALPN its <protocol> offers ("h2" for
 * h2, "http/1.1" otherwise). The strings stay <t>'s. One mapping for every
 * builder: the reload's LOADING job, a backend's own build, the data plane. */
void backend_tls_params(const struct conf_pool_tls *t, enum conf_pool_protocol protocol,
                        struct tlsc_params *out);

/* Gives <b> its pool's TLS client context <ctx> (tlsclient.h; a reference
 * is taken), the one the pool's upstream connections use: the next check
 * connects with it. NULL detaches it. Without one attached, a backend of a
 * pool with `tls` builds its own from the pool's conf at its first check
 * (reading the files on the loop: attaching the context the reload built
 * off the loop is the better way). Only meaningful while the pool's conf
 * has `tls`. The session slot stays: a session is only ever offered
 * through the context that made it. */
void backend_tls_set(struct backend *b, struct tlsc_ctx *ctx);

/* The pool's TLS client context for <b>'s connections: the one attached
 * (backend_tls_set), else one built from the pool's conf and kept (as a
 * check builds it: dropped when the pool's TLS settings change). Safe on
 * any thread that may read <b>'s settings (a worker's first HTTP/2
 * connection to it, its checks). NULL with the reason in <err> (<cap>)
 * when the files do not load. */
struct tlsc_ctx *backend_tls_ctx(struct backend *b, char *err, size_t cap);

/* Stops checks and timers and frees <b>. The proxy must hold no reference. */
void backend_free(struct backend *b);

/* True if new requests/connections may go to <b>: healthy with weight > 0. */
bool backend_in_rotation(const struct backend *b);

/* True if a reload (or DNS) removed <b> and it is draining toward "gone". */
bool backend_removed(const struct backend *b);

/* The proxy opened / closed an upstream connection to <b>, from any
 * thread. Releasing the last connection of a draining backend completes
 * its drain early: at once on the backend's loop thread, at that loop's
 * next iteration from another thread. */
void backend_conn_acquire(struct backend *b);
void backend_conn_release(struct backend *b);

/* Passive health: the proxy reports the outcome of one real request to
 * <b> (<failure>: connect failure, reset, timeout, 502/503/504; <why> its
 * static reason), from any thread. When passive_health.consecutive_failures
 * failures in a row call for an ejection it returns true and the
 * eject_wanted hook runs on the backend's loop — at once from that loop's
 * thread, at its next iteration from another (the proxy checks the pool's
 * cap, then calls backend_eject); false otherwise, and always without
 * passive_health. */
bool backend_passive_report(struct backend *b, bool failure, const char *why);

/* Ejects <b> (state BACKEND_EJECTED) for passive_health.ejection_time,
 * doubled for each ejection in a row (at most 10x); the failure count
 * starts again. It comes back when the time passes — healthy, or unhealthy
 * if its last active check failed. */
void backend_eject(struct backend *b);

/* How many backends of a pool of <pool_size> may be ejected at once:
 * floor(pool_size x <max_percent> / 100), but 1 in a pool of 2 or more
 * (0 if <max_percent> is 0). */
unsigned backend_ejection_cap(unsigned pool_size, unsigned max_percent);

/* Stops health checks (process shutdown); the state is kept. */
void backend_checks_stop(struct backend *b);

/* "checking", "healthy", "unhealthy", "draining", "ejected". */
const char *backend_state_str(enum backend_state s);

/* The drain reason as DESIGN's /status names it: "health_503", "removed",
 * "admin", "dns"; "none" when not draining. */
const char *backend_drain_reason_str(enum backend_drain_reason r);

#endif
