/* The backend state machine and its deregistration timer (DESIGN.md,
 * "Backend states and what each one means for traffic").
 *
 * Hooks are only ever called from this module's libev callbacks: the check
 * callbacks (via check_done), drain_timer and gone_timer. A change
 * made inside a call from the proxy (backend_remove, backend_reconfigure,
 * backend_conn_release) updates the fields at once, so backend_in_rotation()
 * is right immediately, and is reported through gone_timer at 0 s, so the
 * proxy is never re-entered.
 *
 * A drain episode starts when the backend enters draining with connections
 * left: drain_deadline = now + delay and drain_timer runs. It ends, with
 * drain_deadline back to 0, when the last connection is released (early
 * completion), when the delay passes (drain_expired), or when the backend
 * returns to service (healthy again, re-added). It is not ended by
 * draining(503) -> unhealthy: the connections it waits for are still there. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "backend.h"
#include "check.h"

#include "../proxy/net/list.h"
#include "../proxy/net/tlsclient.h"

static const char reason_removed[] = "removed";
static const char reason_dns[] = "dns";
static const char reason_readded[] = "re-added";
static const char reason_no_check[] = "no health check";
static const char reason_passive[] = "passive health";
static const char reason_ejection_over[] = "ejection time over";

/* DESIGN.md: an ejection doubles with each repeat, at most 10x. */
#define EJECT_MAX_FACTOR 10
static const char reason_admin[] = "admin drain";
static const char reason_admin_ready[] = "admin ready";

static void drain_cb(struct ev_loop *loop, ev_timer *w, int revents);
static void eject_cb(struct ev_loop *loop, ev_timer *w, int revents);
static void deferred_cb(struct ev_loop *loop, ev_timer *w, int revents);
static void wake_cb(struct ev_loop *loop, ev_async *w, int revents);

const char *backend_state_str(enum backend_state s)
{
    switch (s) {
    case BACKEND_CHECKING:
        return "checking";
    case BACKEND_HEALTHY:
        return "healthy";
    case BACKEND_UNHEALTHY:
        return "unhealthy";
    case BACKEND_DRAINING:
        return "draining";
    case BACKEND_EJECTED:
        return "ejected";
    }
    return "unknown";
}

const char *backend_drain_reason_str(enum backend_drain_reason r)
{
    switch (r) {
    case BACKEND_DRAIN_NONE:
        return "none";
    case BACKEND_DRAIN_503:
        return "health_503";
    case BACKEND_DRAIN_REMOVED:
        return "removed";
    case BACKEND_DRAIN_ADMIN:
        return "admin";
    case BACKEND_DRAIN_DNS:
        return "dns";
    case BACKEND_DRAIN_NOT_SERVING:
        return "not_serving";
    }
    return "unknown";
}

bool backend_in_rotation(const struct backend *b)
{
    return b->state == BACKEND_HEALTHY && b->weight > 0;
}

bool backend_removed(const struct backend *b)
{
    return b->state == BACKEND_DRAINING &&
           (b->drain_reason == BACKEND_DRAIN_REMOVED || b->drain_reason == BACKEND_DRAIN_DNS);
}

static unsigned threshold(unsigned t)
{
    return t == 0 ? 1 : t;
}

/* Starts gone_timer at 0 s: the safe point for deferred notifications and
 * for the gone hook. */
static void defer(struct backend *b)
{
    if (ev_is_active(&b->gone_timer))
        return;
    ev_timer_set(&b->gone_timer, 0., 0.);
    ev_timer_start(b->loop, &b->gone_timer);
}

static void notify(struct backend *b, enum backend_state from, const char *reason)
{
    if (b->hooks && b->hooks->state_changed)
        b->hooks->state_changed(b, from, reason, b->hooks_ctx);
}

/* Reports the pending deferred change, if any and if it still is one
 * (removed then re-added before the report leaves nothing to say). */
static void notify_flush(struct backend *b)
{
    const char *reason = b->notify_reason;

    if (!reason)
        return;
    b->notify_reason = NULL;
    if (b->notify_from != b->state || b->notify_drain_reason != b->drain_reason)
        notify(b, b->notify_from, reason);
}

/* The one place the state changes. From a libev callback (<deferred>
 * false) the hook is called now, after any older pending report; from a
 * proxy call (<deferred> true) it is queued on gone_timer, coalesced with
 * a report already pending. */
static void enter(struct backend *b, enum backend_state to, enum backend_drain_reason dr,
                  const char *reason, bool deferred)
{
    enum backend_state from;
    enum backend_drain_reason from_dr;

    if (!deferred)
        notify_flush(b);
    from = b->state;
    from_dr = b->drain_reason;
    b->state = to;
    b->drain_reason = to == BACKEND_DRAINING ? dr : BACKEND_DRAIN_NONE;
    if (to != BACKEND_DRAINING) {
        b->drain_started_at = 0;
        b->drain_until = 0;
    }
    if (deferred) {
        if (!b->notify_reason) {
            b->notify_from = from;
            b->notify_drain_reason = from_dr;
        }
        b->notify_reason = reason;
        defer(b);
        return;
    }
    notify(b, from, reason);
}

/* Starts a drain episode of <delay_ms>, or keeps the running one if it
 * ends earlier (a second reason to drain does not extend the grace already
 * given). No connections: nothing to wait for, the drain is complete. */
static void drain_begin(struct backend *b, conf_ms delay_ms)
{
    ev_tstamp delay = (ev_tstamp)delay_ms / 1000.0;
    ev_tstamp deadline = ev_now(b->loop) + delay;

    if (b->drain_started_at == 0 || b->state != BACKEND_DRAINING) {
        b->drain_started_at = ev_now(b->loop);
        b->drain_until = deadline;
    } else if (deadline < b->drain_until) {
        b->drain_until = deadline;
    }
    if (b->connections == 0)
        return;
    if (ev_is_active(&b->drain_timer)) {
        if (deadline >= b->drain_deadline)
            return;
        ev_timer_stop(b->loop, &b->drain_timer);
    }
    b->drain_deadline = deadline;
    ev_timer_set(&b->drain_timer, delay, 0.);
    ev_timer_start(b->loop, &b->drain_timer);
}

static void drain_end(struct backend *b)
{
    ev_timer_stop(b->loop, &b->drain_timer);
    b->drain_deadline = 0;
}

/* Back in service: whatever drain episode was running is over. */
static void enter_healthy(struct backend *b, const char *reason, bool deferred)
{
    drain_end(b);
    enter(b, BACKEND_HEALTHY, BACKEND_DRAIN_NONE, reason, deferred);
}

static void check_done(struct backend *b, enum hc_outcome outcome, const char *reason, int status)
{
    unsigned healthy_t = threshold(b->hc.healthy_threshold);
    unsigned unhealthy_t = threshold(b->hc.unhealthy_threshold);

    b->checked_once = true;
    b->last_result = reason;
    b->last_status = status;
    b->last_check_at = ev_now(b->loop);
    /* Checks are stopped on removal; a late result must not revive it. */
    if (backend_removed(b))
        return;
    /* An admin drain holds whatever checks say: streaks keep counting so
     * /status shows them, the state waits for backend_admin_ready(). */
    if (b->drain_reason == BACKEND_DRAIN_ADMIN) {
        if (outcome == HC_SUCCESS) {
            b->checks_ok++;
            b->success_streak++;
            b->failure_streak = 0;
        } else {
            b->checks_failed++;
            b->failure_streak += outcome == HC_FAILURE;
            b->success_streak = 0;
        }
        return;
    }

    switch (outcome) {
    case HC_SUCCESS:
        b->checks_ok++;
        b->success_streak++;
        b->failure_streak = 0;
        /* an ejected backend waits for its time, whatever its checks say */
        if (b->state == BACKEND_EJECTED)
            break;
        if (b->state == BACKEND_CHECKING ||
            (b->state != BACKEND_HEALTHY && b->success_streak >= healthy_t))
            enter_healthy(b, reason, false);
        break;
    case HC_FAILURE:
        b->checks_failed++;
        b->failure_streak++;
        b->success_streak = 0;
        /* Leaving draining(503) for unhealthy keeps drain_timer running:
         * the episode still waits on the connections it had. */
        if (b->state == BACKEND_EJECTED)
            break; /* decided when the ejection ends */
        if (b->state != BACKEND_UNHEALTHY && b->failure_streak >= unhealthy_t)
            enter(b, BACKEND_UNHEALTHY, BACKEND_DRAIN_NONE, reason, false);
        break;
    case HC_DRAINING:
        /* Neither a success nor a failure: a backend answering 503 for a
         * long deploy stays draining rather than flapping to unhealthy. */
        b->checks_failed++;
        b->success_streak = 0;
        b->failure_streak = 0;
        if (b->state != BACKEND_DRAINING) {
            ev_timer_stop(b->loop, &b->eject_timer);
            drain_begin(b, b->deregistration_delay);
            enter(b, BACKEND_DRAINING,
                  b->hc.protocol == CONF_PROTO_GRPC ? BACKEND_DRAIN_NOT_SERVING : BACKEND_DRAIN_503,
                  reason, false);
        }
        break;
    }
}

void backend_snapshot(const struct backend *b, struct backend_snapshot *snap)
{
    snap->state = b->state;
    snap->drain_reason = b->drain_reason;
    snap->success_streak = b->success_streak;
    snap->failure_streak = b->failure_streak;
    snap->checked_once = b->checked_once;
}

void backend_restore(struct backend *b, const struct backend_snapshot *snap)
{
    if (backend_removed(b) || snap->drain_reason == BACKEND_DRAIN_REMOVED ||
        snap->drain_reason == BACKEND_DRAIN_DNS)
        return;
    b->success_streak = snap->success_streak;
    b->failure_streak = snap->failure_streak;
    b->checked_once = b->checked_once || snap->checked_once;
    if (snap->state != b->state)
        enter(b, snap->state, snap->drain_reason, "inherited", true);
}

static void drain_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    struct backend *b = container_of(w, struct backend, drain_timer);

    notify_flush(b);
    b->drain_deadline = 0;
    /* The proxy closes what is left; its closes call backend_conn_release,
     * which defers gone for a removed backend once the count reaches 0. */
    if (b->connections > 0 && b->hooks && b->hooks->drain_expired)
        b->hooks->drain_expired(b, b->hooks_ctx);
    if (backend_removed(b) && b->connections == 0)
        defer(b);
}

static void deferred_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    struct backend *b = container_of(w, struct backend, gone_timer);

    notify_flush(b);
    if (!backend_removed(b) || b->connections > 0)
        return;
    drain_end(b);
    /* Stopped so a release made inside the hooks above cannot report gone
     * twice; the proxy frees <b> inside gone, so nothing may follow it. */
    ev_timer_stop(loop, &b->gone_timer);
    if (b->hooks && b->hooks->gone)
        b->hooks->gone(b, b->hooks_ctx);
}

/* True when the caller runs the backend's own loop: it may change the
 * state now. A worker thread hands the change to that loop instead. */
static bool on_own_thread(const struct backend *b)
{
    return pthread_equal(pthread_self(), b->thread);
}

static void eject_wanted(struct backend *b, const char *why)
{
    if (b->hooks && b->hooks->eject_wanted)
        b->hooks->eject_wanted(b, why, b->hooks_ctx);
}

bool backend_passive_report(struct backend *b, bool failure, const char *why)
{
    if (!b->ph.enabled)
        return false;
    if (!failure) {
        __atomic_store_n(&b->passive_streak, 0, __ATOMIC_RELAXED);
        return false;
    }
    unsigned streak = __atomic_add_fetch(&b->passive_streak, 1, __ATOMIC_RELAXED);
    /* one report of each run of <threshold> asks (the ejection resets the
     * streak; one refused by the pool's cap is asked again a run later) */
    if (b->state != BACKEND_HEALTHY || streak % threshold(b->ph.consecutive_failures) != 0)
        return false;
    if (on_own_thread(b)) {
        eject_wanted(b, why);
    } else {
        __atomic_store_n(&b->eject_why, why, __ATOMIC_RELEASE);
        ev_async_send(b->loop, &b->wake);
    }
    return true;
}

unsigned backend_ejection_cap(unsigned pool_size, unsigned max_percent)
{
    if (max_percent == 0)
        return 0;
    unsigned cap = (unsigned)((uint64_t)pool_size * max_percent / 100);
    if (cap == 0 && pool_size >= 2)
        cap = 1;
    return cap;
}

void backend_eject(struct backend *b)
{
    ev_tstamp now = ev_now(b->loop);
    /* a backend that stayed in rotation longer than its last ejection
     * lasted starts again from ejection_time */
    if (b->returned_at > 0 && now - b->returned_at > (ev_tstamp)b->eject_ms / 1000.0)
        b->eject_level = 0;
    unsigned factor = 1;
    for (unsigned i = 0; i < b->eject_level && factor < EJECT_MAX_FACTOR; i++)
        factor *= 2;
    if (factor > EJECT_MAX_FACTOR)
        factor = EJECT_MAX_FACTOR;
    b->eject_level++;
    b->eject_ms = b->ph.ejection_time * factor;
    b->ejections_total++;
    __atomic_store_n(&b->passive_streak, 0, __ATOMIC_RELAXED);
    b->ejected_until = now + (ev_tstamp)b->eject_ms / 1000.0;
    ev_timer_stop(b->loop, &b->eject_timer);
    ev_timer_set(&b->eject_timer, (ev_tstamp)b->eject_ms / 1000.0, 0.);
    ev_timer_start(b->loop, &b->eject_timer);
    enter(b, BACKEND_EJECTED, BACKEND_DRAIN_NONE, reason_passive, true);
}

/* The ejection time passed: back in rotation, unless its active check
 * is failing. */
static void eject_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    struct backend *b = container_of(w, struct backend, eject_timer);

    notify_flush(b);
    if (b->state != BACKEND_EJECTED)
        return;
    b->returned_at = ev_now(loop);
    b->ejected_until = 0;
    __atomic_store_n(&b->passive_streak, 0, __ATOMIC_RELAXED);
    /* its active checks must still pass: the last one failing sends it to
     * unhealthy, to come back after healthy_threshold successes */
    if (b->hc.enabled && b->failure_streak > 0)
        enter(b, BACKEND_UNHEALTHY, BACKEND_DRAIN_NONE, reason_ejection_over, false);
    else
        enter_healthy(b, reason_ejection_over, false);
}

/* Seeds the per-backend jitter source: different per backend (identity,
 * address of the struct) and per process run (time, pid). */
static unsigned seed(const struct backend *b)
{
    const char *parts[] = {b->pool_name, b->name, b->address_text};
    uint32_t h = 2166136261u; /* FNV-1a 32-bit offset basis */
    struct timespec ts;

    for (size_t i = 0; i < sizeof(parts) / sizeof(parts[0]); i++)
        for (const char *p = parts[i]; p && *p; p++)
            h = (h ^ (unsigned char)*p) * 16777619u; /* FNV-1a prime */
    clock_gettime(CLOCK_MONOTONIC, &ts);
    h ^= (uint32_t)ts.tv_nsec ^ (uint32_t)ts.tv_sec ^ ((uint32_t)getpid() << 16);
    h ^= (uint32_t)(uintptr_t)b;
    return h;
}

static char *dup_or_null(const char *s)
{
    return s ? strdup(s) : NULL;
}

static void tls_conf_clear(struct conf_pool_tls *t)
{
    free(t->ca);
    free(t->sni);
    free(t->cert);
    free(t->key);
    memset(t, 0, sizeof(*t));
}

/* Copies <from> into <to> (strings duplicated). Returns 0 or -1 (ENOMEM,
 * <to> left empty). */
static int tls_conf_copy(struct conf_pool_tls *to, const struct conf_pool_tls *from)
{
    memset(to, 0, sizeof(*to));
    to->enabled = from->enabled;
    to->verify = from->verify;
    if ((from->ca && !(to->ca = strdup(from->ca))) ||
        (from->sni && !(to->sni = strdup(from->sni))) ||
        (from->cert && !(to->cert = strdup(from->cert))) ||
        (from->key && !(to->key = strdup(from->key)))) {
        tls_conf_clear(to);
        return -1;
    }
    return 0;
}

static bool str_eq(const char *a, const char *b)
{
    return a == b || (a && b && strcmp(a, b) == 0);
}

static bool tls_conf_equal(const struct conf_pool_tls *a, const struct conf_pool_tls *b)
{
    if (a->enabled != b->enabled)
        return false;
    return !a->enabled ||
           (a->verify == b->verify && str_eq(a->ca, b->ca) && str_eq(a->sni, b->sni) &&
            str_eq(a->cert, b->cert) && str_eq(a->key, b->key));
}

/* Takes the pool's connection settings (tls, send_proxy, protocol).
 * Returns true if they changed; -1 in *<rc> when out of memory. */
static bool transport_take(struct backend *b, const struct conf_pool *cp, int *rc)
{
    *rc = 0;
    bool changed = b->protocol != cp->protocol || b->send_proxy != cp->send_proxy ||
                   !tls_conf_equal(&b->tls_conf, &cp->tls);
    if (!changed)
        return false;
    struct conf_pool_tls t;
    if (tls_conf_copy(&t, &cp->tls) < 0) {
        *rc = -1;
        return false;
    }
    tls_conf_clear(&b->tls_conf);
    b->tls_conf = t;
    b->protocol = cp->protocol;
    b->send_proxy = cp->send_proxy ? cp->send_proxy : CONF_PROXY_OFF;
    if (!b->tls_attached) {
        /* one built here from the old settings: the next check builds anew */
        tlsc_ctx_free(b->tls);
        b->tls = NULL;
    }
    return true;
}

void backend_tls_set(struct backend *b, struct tlsc_ctx *ctx)
{
    if (ctx == b->tls && b->tls_attached)
        return;
    struct tlsc_ctx *old = b->tls;
    b->tls = tlsc_ctx_ref(ctx);
    b->tls_attached = ctx != NULL;
    tlsc_ctx_free(old);
}

struct backend *backend_new(struct ev_loop *loop, const struct conf_pool *cp,
                            const struct conf_backend *cb, const struct backend_hooks *hooks,
                            void *hooks_ctx)
{
    struct backend *b = calloc(1, sizeof(*b));

    if (!b)
        return NULL;
    b->loop = loop;
    b->hooks = hooks;
    b->hooks_ctx = hooks_ctx;
    hc_init(b, check_done);
    ev_init(&b->drain_timer, drain_cb);
    ev_init(&b->eject_timer, eject_cb);
    ev_init(&b->gone_timer, deferred_cb);
    b->thread = pthread_self();
    ev_async_init(&b->wake, wake_cb);
    ev_async_start(loop, &b->wake);
    ev_unref(loop); /* a backend alone does not keep the loop running */

    b->pool_name = dup_or_null(cp->name);
    b->name = dup_or_null(cb->name);
    b->address_text = dup_or_null(cb->address.text);
    b->host = dup_or_null(cb->address.host);
    if ((cp->name && !b->pool_name) || (cb->name && !b->name) ||
        (cb->address.text && !b->address_text) || (cb->address.host && !b->host))
        goto fail;
    b->send_proxy = CONF_PROXY_OFF;
    int trc;
    transport_take(b, cp, &trc);
    if (trc < 0)
        goto fail;
    b->hc = cp->health_check;
    b->hc.path = NULL;
    if (cp->health_check.enabled && cp->health_check.path) {
        b->hc.path = strdup(cp->health_check.path);
        if (!b->hc.path)
            goto fail;
    }
    if (cb->address.sa_len <= sizeof(b->addr)) {
        memcpy(&b->addr, &cb->address.sa, cb->address.sa_len);
        b->addr_len = cb->address.sa_len;
    }
    b->weight = cb->weight;
    b->deregistration_delay = cp->deregistration_delay;
    b->ph = cp->passive_health;
    b->rand_state = seed(b);
    b->last_result = hc_reason_none;

    if (b->hc.enabled) {
        b->state = BACKEND_CHECKING;
        hc_schedule(b, hc_first_delay(b));
    } else {
        b->state = BACKEND_HEALTHY;
        b->checked_once = true;
    }
    return b;

fail:
    backend_free(b);
    return NULL;
}

static bool hc_equal(const struct conf_health_check *a, const struct conf_health_check *b)
{
    if (a->enabled != b->enabled)
        return false;
    if (!a->enabled)
        return true;
    return a->protocol == b->protocol && str_eq(a->path, b->path) && a->interval == b->interval &&
           a->timeout == b->timeout && a->healthy_threshold == b->healthy_threshold &&
           a->unhealthy_threshold == b->unhealthy_threshold && a->expect_min == b->expect_min &&
           a->expect_max == b->expect_max;
}

int backend_reconfigure(struct backend *b, const struct conf_pool *cp,
                        const struct conf_backend *cb)
{
    char *path = NULL;
    bool changed;

    if (cp->health_check.enabled && cp->health_check.path) {
        path = strdup(cp->health_check.path);
        if (!path)
            return -1;
    }
    int trc;
    bool transport_changed = transport_take(b, cp, &trc);
    if (trc < 0) {
        free(path);
        return -1;
    }
    changed = !hc_equal(&b->hc, &cp->health_check) || transport_changed;
    free(b->hc.path);
    b->hc = cp->health_check;
    b->hc.path = path;
    b->weight = cb->weight;
    b->deregistration_delay = cp->deregistration_delay;
    b->ph = cp->passive_health;

    if (!b->hc.enabled) {
        hc_stop(b);
        b->checked_once = true;
        if (b->state != BACKEND_HEALTHY && b->state != BACKEND_EJECTED &&
            b->drain_reason != BACKEND_DRAIN_ADMIN)
            enter_healthy(b, backend_removed(b) ? reason_readded : reason_no_check, true);
        return 0;
    }
    if (backend_removed(b)) {
        /* Re-added while draining: a normal backend again, connections
         * kept. Only a backend whose last check passed skips checking. */
        bool ok = b->last_result && strcmp(b->last_result, hc_reason_ok) == 0;

        drain_end(b);
        enter(b, ok ? BACKEND_HEALTHY : BACKEND_CHECKING, BACKEND_DRAIN_NONE, reason_readded, true);
        hc_stop(b);
        hc_schedule(b, hc_first_delay(b));
        return 0;
    }
    if (changed || !hc_running(b)) {
        hc_stop(b);
        hc_schedule(b, hc_first_delay(b));
    }
    return 0;
}

static void remove_as(struct backend *b, conf_ms delay_ms, enum backend_drain_reason dr,
                      const char *reason)
{
    hc_stop(b);
    ev_timer_stop(b->loop, &b->eject_timer);
    drain_begin(b, delay_ms);
    if (!backend_removed(b))
        enter(b, BACKEND_DRAINING, dr, reason, true);
    if (b->connections == 0)
        defer(b);
}

void backend_remove(struct backend *b, conf_ms delay_ms)
{
    remove_as(b, delay_ms, BACKEND_DRAIN_REMOVED, reason_removed);
}

void backend_remove_dns(struct backend *b, conf_ms delay_ms)
{
    remove_as(b, delay_ms, BACKEND_DRAIN_DNS, reason_dns);
}

void backend_admin_drain(struct backend *b, conf_ms delay_ms)
{
    if (backend_removed(b) || b->drain_reason == BACKEND_DRAIN_ADMIN)
        return;
    /* drain_begin first: a backend already draining (503) keeps its record
     * start; enter() only resets the record when leaving draining */
    drain_begin(b, delay_ms);
    enter(b, BACKEND_DRAINING, BACKEND_DRAIN_ADMIN, reason_admin, true);
}

bool backend_admin_ready(struct backend *b)
{
    bool ok;

    if (b->drain_reason != BACKEND_DRAIN_ADMIN)
        return false;
    ok = !b->hc.enabled || (b->last_result && strcmp(b->last_result, hc_reason_ok) == 0);
    drain_end(b);
    if (ok)
        enter(b, BACKEND_HEALTHY, BACKEND_DRAIN_NONE, reason_admin_ready, true);
    else
        enter(b, BACKEND_CHECKING, BACKEND_DRAIN_NONE, reason_admin_ready, true);
    if (b->hc.enabled) {
        hc_stop(b);
        hc_schedule(b, hc_first_delay(b));
    }
    return true;
}

void backend_conn_acquire(struct backend *b)
{
    __atomic_add_fetch(&b->connections, 1, __ATOMIC_RELAXED);
}

/* The last connection ended: the drain completed early. */
static void last_released(struct backend *b)
{
    drain_end(b);
    if (backend_removed(b))
        defer(b);
}

void backend_conn_release(struct backend *b)
{
    unsigned n = __atomic_load_n(&b->connections, __ATOMIC_RELAXED);
    do {
        if (n == 0)
            return; /* unbalanced release: never wrap around */
    } while (!__atomic_compare_exchange_n(&b->connections, &n, n - 1, false, __ATOMIC_ACQ_REL,
                                          __ATOMIC_RELAXED));
    if (n > 1)
        return;
    if (on_own_thread(b))
        last_released(b);
    else
        ev_async_send(b->loop, &b->wake);
}

/* On the backend's loop: what worker threads reported. The count is read
 * again: a connection opened since the report means the drain goes on. */
static void wake_cb(struct ev_loop *loop, ev_async *w, int revents)
{
    struct backend *b = container_of(w, struct backend, wake);
    const char *why = __atomic_exchange_n(&b->eject_why, NULL, __ATOMIC_ACQUIRE);
    if (__atomic_load_n(&b->connections, __ATOMIC_ACQUIRE) == 0)
        last_released(b);
    if (why && b->state == BACKEND_HEALTHY)
        eject_wanted(b, why);
}

void backend_checks_stop(struct backend *b)
{
    hc_stop(b);
}

void backend_free(struct backend *b)
{
    if (!b)
        return;
    hc_stop(b);
    ev_timer_stop(b->loop, &b->drain_timer);
    ev_timer_stop(b->loop, &b->eject_timer);
    ev_timer_stop(b->loop, &b->gone_timer);
    ev_ref(b->loop);
    ev_async_stop(b->loop, &b->wake);
    free(b->hc.path);
    b->hc.path = NULL;
    tlsc_ctx_free(b->tls);
    b->tls = NULL;
    tlsc_session_clear(&b->tls_session);
    tls_conf_clear(&b->tls_conf);
    free(b->host);
    free(b->pool_name);
    free(b->name);
    free(b->address_text);
    free(b);
}
