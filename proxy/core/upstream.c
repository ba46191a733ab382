#include "upstream.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "../../health/backend.h"
#include "../net/io.h"
#include "../net/net.h"
#include "../base/log.h"
#include "../base/metrics.h"
#include "fds.h"

/* A request with a body cannot be replayed if the pooled connection it was
 * written to turns out closed; it only takes a connection that idled less
 * than this share of timeouts.backend_idle (a backend whose own keep-alive
 * timeout is close to usher's closes right then). */
#define UNREPLAYABLE_IDLE_SHARE 0.5

/* Pooling stops once client and upstream connections use this share of the
 * descriptors usher may use: the rest is kept for clients. */
#define FD_PRESSURE_SHARE 0.9

/* ---- the draining rules (DESIGN.md "Draining details") ------------------ */

const char *upstream_keep_rule(const struct keep_facts *f)
{
    if (!f->reusable)
        return "the exchange left it unusable"; /* Connection: close, unread body, ... */
    if (!f->in_rotation)
        return "its backend is out of rotation"; /* rule 2: in-flight done, then closed */
    if (f->switched_away)
        return "its pool was switched away"; /* the old colour empties for --wait-drained */
    if (f->process_draining)
        return "the process drains"; /* nothing will reuse it */
    if (f->pool_full)
        return "the idle pool is full";
    if (f->fd_pressure)
        return "descriptors are short"; /* a client must not get 503 for it */
    return NULL;
}

/* Rule 1: idle pooled connections to a draining backend close at once.
 * Health owns one backend for every worker: <ctx> is the primary server,
 * and what the rule does is done for each worker's replica (the control
 * thread calls this while every worker is parked). */
static void state_changed_one(struct server *s, enum backend_state from)
{
    struct backend *b = s->hb;
    if (server_in_rotation(s)) {
        /* slow start: entering rotation after startup ramps up (a backend
         * of the first config is not new to anyone) */
        if (from != BACKEND_HEALTHY && !(s->from_startup && from == BACKEND_CHECKING))
            s->ramp_started = ev_now(s->w->loop);
        s->from_startup = false;
        return;
    }
    s->ramp_started = 0;
    upstream_close_idle(s);
    if (b->drain_deadline > 0) {
        /* owners of tunnels say goodbye before the deadline (tunnel_close_grace) */
        struct list *pos, *tmp;
        list_for_each_safe (pos, tmp, &s->active) {
            struct upstream *u = container_of(pos, struct upstream, pool_link);
            if (u->cb)
                u->cb(u->owner, UPSTREAM_DRAIN_STARTED, 0);
        }
    }
}

static void on_state_changed(struct backend *b, enum backend_state from, const char *reason,
                             void *ctx)
{
    log_info("backend state", "pool=%s backend=%s from=%s to=%s reason=\"%s\" connections=%u",
             b->pool_name, b->name, backend_state_str(from), backend_state_str(b->state),
             reason ? reason : "", b->connections);
    for (struct server *s = ctx; s; s = s->next_replica)
        state_changed_one(s, from);
}

/* Rule 3: tunnels and in-flight requests run until the deadline; then
 * every owner lets go of its connection. */
static void on_drain_expired(struct backend *b, void *ctx)
{
    log_info("backend drain expired", "pool=%s backend=%s closing=%u", b->pool_name, b->name,
             b->connections);
    for (struct server *s = ctx; s; s = s->next_replica) {
        struct list *pos, *tmp;
        list_for_each_safe (pos, tmp, &s->active) {
            struct upstream *u = container_of(pos, struct upstream, pool_link);
            u->cb(u->owner, UPSTREAM_DRAIN_EXPIRED, 0);
        }
        upstream_close_idle(s);
    }
}

static void unlink_server(struct server *s)
{
    struct pool *p = s->pool;
    for (size_t i = 0; i < p->num_servers; i++) {
        if (p->servers[i] != s)
            continue;
        memmove(&p->servers[i], &p->servers[i + 1],
                (p->num_servers - i - 1) * sizeof(p->servers[0]));
        p->num_servers--;
        break;
    }
}

static void on_gone(struct backend *b, void *ctx)
{
    struct server *primary = ctx;
    log_info("backend gone", "pool=%s backend=%s address=%s", b->pool_name, b->name,
             b->address_text);
    /* the replicas first: the primary owns the backend they point at */
    while (primary->next_replica) {
        struct server *r = primary->next_replica;
        primary->next_replica = r->next_replica;
        unlink_server(r);
        server_free(r);
    }
    unlink_server(primary);
    server_free(primary);
}

/* Backends of <p> ejected now. */
static unsigned pool_ejected(const struct pool *p)
{
    unsigned n = 0;
    for (size_t i = 0; i < p->num_servers; i++)
        n += p->servers[i]->hb->state == BACKEND_EJECTED;
    return n;
}

static void on_eject_wanted(struct backend *b, const char *why, void *ctx)
{
    struct server *s = ctx;
    const struct conf_pool *cp = s->pool->conf;
    unsigned cap = cp ? backend_ejection_cap((unsigned)s->pool->num_servers,
                                             cp->passive_health.max_ejected_percent)
                      : 0;
    unsigned ejected = pool_ejected(s->pool);
    if (ejected >= cap) {
        log_kv(CONF_LOG_WARN, "backend ejection refused", LOG_STR("pool", b->pool_name),
               LOG_STR("backend", b->name), LOG_STR("reason", "max_ejected_percent"),
               LOG_UINT("ejected", ejected), LOG_UINT("cap", cap));
        return;
    }
    backend_eject(b);
    log_kv(CONF_LOG_WARN, "backend ejected", LOG_STR("pool", b->pool_name),
           LOG_STR("backend", b->name), LOG_STR("last_failure", why),
           LOG_UINT("ejection_ms", b->eject_ms), LOG_UINT("ejections", b->ejections_total));
}

static const struct backend_hooks hooks = {
    .state_changed = on_state_changed,
    .drain_expired = on_drain_expired,
    .gone = on_gone,
    .eject_wanted = on_eject_wanted,
};

void server_passive_report(struct server *s, bool failure, const char *why)
{
    backend_passive_report(s->hb, failure, why);
}

struct server *server_new(struct worker *w, struct pool *p, const struct conf_pool *cp,
                          const struct conf_backend *cb, struct server *primary)
{
    struct server *s = calloc(1, sizeof(*s));
    if (!s)
        return NULL;
    s->w = w;
    s->pool = p;
    list_init(&s->idle);
    list_init(&s->active);
    if (primary) {
        s->hb = primary->hb;
        s->primary = primary;
        s->next_replica = primary->next_replica;
        primary->next_replica = s;
    } else {
        s->hb = backend_new(w->health_loop, cp, cb, &hooks, s);
    }
    if (!s->hb) {
        free(s);
        return NULL;
    }
    s->from_startup = w->state == WORKER_STARTING && w->generation <= 1;
    if (!s->from_startup && backend_in_rotation(s->hb))
        s->ramp_started = ev_now(w->loop); /* added by a reload, in rotation at once */
    return s;
}

void server_free(struct server *s)
{
    if (!s)
        return;
    upstream_close_idle(s);
    if (!s->primary)
        backend_free(s->hb);
    free(s);
}

unsigned server_weight(const struct server *s)
{
    return s->weight_overridden ? s->weight_override : s->hb->weight;
}

bool server_in_rotation(const struct server *s)
{
    return s->hb->state == BACKEND_HEALTHY && server_weight(s) > 0;
}

void server_override_weight(struct server *s, bool set, unsigned weight)
{
    for (; s; s = s->next_replica) {
        s->weight_overridden = set;
        s->weight_override = set ? weight : 0;
        if (!server_in_rotation(s))
            upstream_close_idle(s);
    }
}

void server_totals(const struct server *s, struct server_totals *t)
{
    memset(t, 0, sizeof(*t));
    for (; s; s = s->next_replica) {
        t->requests += s->requests_total;
        for (int i = 0; i < STATUS_CLASSES; i++)
            t->responses[i] += s->responses[i];
        t->connect_failures += s->connect_failures;
        t->bytes_in += s->bytes_in;
        t->bytes_out += s->bytes_out;
        t->idle += s->idle_count;
        metrics_histogram_add(&t->duration, &s->duration);
    }
}

double server_oldest_connection_age(const struct server *s)
{
    ev_tstamp now = ev_now(s->w->loop), oldest = now;
    for (; s; s = s->next_replica) {
        const struct list *heads[] = {&s->active, &s->idle};
        for (size_t k = 0; k < 2; k++)
            for (const struct list *pos = heads[k]->next; pos != heads[k]; pos = pos->next) {
                const struct upstream *u = container_of(pos, struct upstream, pool_link);
                if (u->opened_at < oldest)
                    oldest = u->opened_at;
            }
    }
    return now - oldest;
}

/* ---- connections --------------------------------------------------------- */

void upstream_want(struct upstream *u, unsigned events)
{
    io_watch(u->w->loop, &u->io, u->fd, &u->io_events, events);
}

static void upstream_io_cb(struct ev_loop *loop, ev_io *io, int revents)
{
    struct upstream *u = container_of(io, struct upstream, io);
    int err = 0;
    switch (u->state) {
    case UPSTREAM_IDLE:
        if (u->mux) {
            /* HTTP/2: its peer may speak while no stream is open */
            u->cb(u->owner, (revents & EV_READ) ? UPSTREAM_READABLE : UPSTREAM_WRITABLE, 0);
            return;
        }
        /* a pooled connection must stay silent: data or EOF means the
         * backend closed it (or broke the protocol), so it is never reused */
        upstream_close(u);
        return;
    case UPSTREAM_CONNECTING:
        switch (net_connect_result(u->fd, &err)) {
        case NET_AGAIN:
            return;
        case NET_ERROR:
            u->cb(u->owner, UPSTREAM_CONNECT_FAILED, err);
            return;
        }
        u->state = UPSTREAM_ACTIVE;
        u->cb(u->owner, UPSTREAM_CONNECTED, 0);
        return;
    case UPSTREAM_ACTIVE:
        if (revents & EV_READ)
            u->cb(u->owner, UPSTREAM_READABLE, 0);
        else
            u->cb(u->owner, UPSTREAM_WRITABLE, 0);
        return;
    }
}

static void idle_timeout_cb(struct ev_loop *loop, ev_timer *t, int revents)
{
    upstream_close(container_of(t, struct upstream, idle_timer));
}

struct upstream *upstream_connect(struct server *s, upstream_cb cb, void *owner, int *err)
{
    struct worker *w = s->w;
    struct backend *b = s->hb;
    int in_progress = 0;
    int fd = net_connect_start((const struct sockaddr *)&b->addr, b->addr_len, &in_progress, err);
    if (fd < 0)
        return NULL;
    struct upstream *u = calloc(1, sizeof(*u));
    if (!u) {
        *err = ENOMEM;
        close(fd);
        return NULL;
    }
    u->w = w;
    u->server = s;
    u->fd = fd;
    u->state = UPSTREAM_CONNECTING;
    u->opened_at = ev_now(w->loop);
    u->cb = cb;
    u->owner = owner;
    ev_io_init(&u->io, upstream_io_cb, fd, 0);
    ev_timer_init(&u->idle_timer, idle_timeout_cb, 0., 0.);
    list_append(&s->active, &u->pool_link);
    w->num_upstreams++;
    worker_fds_add(w, 1);
    backend_conn_acquire(b);
    /* a loopback connect usually completes at once; EV_WRITE reports it
     * either way */
    upstream_want(u, EV_WRITE);
    return u;
}

/* True if the backend has not closed <u>: nothing may be readable on a
 * pooled connection, and a FIN that arrived shows as a 0-byte peek. */
static bool still_open(const struct upstream *u)
{
    char byte;
    ssize_t n = recv(u->fd, &byte, 1, MSG_PEEK | MSG_DONTWAIT);
    return n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK);
}

struct upstream *upstream_take_idle(struct server *s, bool replayable, upstream_cb cb, void *owner)
{
    const struct conf *conf = s->w->conf;
    ev_tstamp now = ev_now(s->w->loop);
    double max_idle = (double)conf->timeouts.backend_idle / 1000.0 * UNREPLAYABLE_IDLE_SHARE;
    while (!list_empty(&s->idle)) {
        /* the most recently used one: least likely to have been closed by a
         * backend's own keep-alive timeout */
        struct upstream *u = container_of(s->idle.prev, struct upstream, pool_link);
        if (u->mux) {
            /* an HTTP/2 one of a pool a reload moved back to http1 */
            upstream_close(u);
            continue;
        }
        /* a replayable request that finds it closed goes again on a new
         * connection (RFC 9112 9.3.1): the peek, one syscall per request,
         * is for the ones that cannot */
        if (!replayable && !still_open(u)) {
            upstream_close(u);
            continue;
        }
        if (!replayable && now - u->idle_since > max_idle)
            return NULL; /* the others idled longer still */
        upstream_take(u, cb, owner);
        return u;
    }
    return NULL;
}

void upstream_take(struct upstream *u, upstream_cb cb, void *owner)
{
    struct server *s = u->server;
    list_remove(&u->pool_link);
    s->idle_count--;
    list_append(&s->active, &u->pool_link);
    ev_timer_stop(u->w->loop, &u->idle_timer);
    u->state = UPSTREAM_ACTIVE;
    u->cb = cb;
    u->owner = owner;
}

/* True if a runtime split override set <p> to 0 and no open listener
 * sends it new traffic: a switch, after which nothing will reuse its
 * connections. A split set to 0 by the config keeps pooling, so flipping
 * back and forth by reload reuses them. */
static bool pool_switched_away(const struct worker *w, const struct pool *p)
{
    bool overridden = false;
    for (const struct listener *l = w->listeners; l; l = l->next)
        for (size_t i = 0; !l->closed && i < l->num_slots; i++) {
            if (l->slots[i].pool != p)
                continue;
            if (l->slots[i].weight > 0)
                return false;
            overridden |= l->split_overridden;
        }
    return overridden;
}

static bool fd_pressure(const struct worker *w)
{
    return (double)worker_fds_used(w) >= (double)w->max_fds * FD_PRESSURE_SHARE;
}

void upstream_release(struct upstream *u, bool reusable)
{
    struct server *s = u->server;
    struct worker *w = u->w;
    const struct conf *conf = w->conf;
    struct keep_facts facts = {
        .reusable = reusable,
        .in_rotation = server_in_rotation(s),
        .switched_away = pool_switched_away(w, s->pool),
        .pool_full = s->idle_count >= conf->limits.backend_idle_connections,
        .process_draining = w->state >= WORKER_DRAINING,
        .fd_pressure = fd_pressure(w),
    };
    if (upstream_keep_rule(&facts)) {
        upstream_close(u);
        return;
    }
    list_remove(&u->pool_link);
    list_append(&s->idle, &u->pool_link);
    s->idle_count++;
    u->state = UPSTREAM_IDLE;
    if (!u->mux) {
        u->cb = NULL;
        u->owner = NULL;
    }
    u->idle_since = ev_now(w->loop);
    upstream_want(u, EV_READ);
    ev_timer_set(&u->idle_timer, (double)conf->timeouts.backend_idle / 1000.0, 0.);
    ev_timer_start(w->loop, &u->idle_timer);
}

void upstream_close(struct upstream *u)
{
    struct server *s = u->server;
    if (u->mux && u->cb) {
        upstream_cb cb = u->cb;
        u->cb = NULL;
        cb(u->owner, UPSTREAM_CLOSED, 0); /* its session lets go of it */
    }
    if (u->state == UPSTREAM_IDLE)
        s->idle_count--;
    list_remove(&u->pool_link);
    upstream_want(u, 0);
    ev_timer_stop(u->w->loop, &u->idle_timer);
    close(u->fd);
    u->w->num_upstreams--;
    worker_fds_add(u->w, -1);
    free(u);
    backend_conn_release(s->hb);
}

void upstream_close_idle(struct server *s)
{
    struct list *pos, *tmp;
    list_for_each_safe (pos, tmp, &s->idle) {
        upstream_close(container_of(pos, struct upstream, pool_link));
    }
}

void server_close_idle(struct server *s)
{
    for (; s; s = s->next_replica)
        upstream_close_idle(s);
}

unsigned upstream_reclaim_idle(struct worker *w, unsigned n)
{
    unsigned closed = 0;
    for (struct pool *p = w->pools; p && closed < n; p = p->next)
        for (size_t i = 0; i < p->num_servers && closed < n; i++) {
            struct server *s = p->servers[i];
            /* the oldest first: the most recent one is the likeliest reused */
            while (!list_empty(&s->idle) && closed < n) {
                upstream_close(container_of(s->idle.next, struct upstream, pool_link));
                closed++;
            }
        }
    return closed;
}
