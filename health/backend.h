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

/* Stops checks and timers and frees <b>. The proxy must hold no reference. */
void backend_free(struct backend *b);

/* True if new requests/connections may go to <b>: healthy with weight > 0. */
bool backend_in_rotation(const struct backend *b);

/* True if a reload removed <b> and it is draining toward "gone". */
bool backend_removed(const struct backend *b);

/* The proxy opened / closed an upstream connection to <b>. Releasing the
 * last connection of a draining backend completes its drain early. */
void backend_conn_acquire(struct backend *b);
void backend_conn_release(struct backend *b);

/* Stops health checks (process shutdown); the state is kept. */
void backend_checks_stop(struct backend *b);

/* "checking", "healthy", "unhealthy", "draining". */
const char *backend_state_str(enum backend_state s);

/* "none", "503", "removed", "admin" (for logs). */
const char *backend_drain_reason_str(enum backend_drain_reason r);

/* The drain reason as DESIGN's /status names it: "health_503", "removed",
 * "admin"; NULL when not draining. */
const char *backend_drain_reason_name(enum backend_drain_reason r);

#endif
