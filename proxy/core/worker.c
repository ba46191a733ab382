/* The worker: one event loop and everything the data plane owns — its
 * listeners, client connections, pools and servers. It applies a config's
 * changes one at a time (worker_apply_change) and frees closed clients at a
 * safe point; the process layer above drives it. */
#include "worker.h"

#include <errno.h>
#include <fcntl.h>
#include <float.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

#include "../../conf/conf.h"
#include "../../health/backend.h"
#include "../base/log.h"
#include "balance.h"
#include "client.h"
#include "fds.h"
#include "listener.h"
#include "tls.h"
#include "upstream.h"

/* Request-side buffers: 16 KiB holds a typical head many times over
 * (HAProxy's tune.bufsize default). Response-side buffers are 64 KiB: bodies
 * mostly flow that way, and measured on 1 MB responses 64 KiB costs 30-40%
 * less CPU than 16 KiB (fewer read/writev pairs). A larger max_head_bytes
 * raises both so a whole head always fits. */
#define BUF_IN_SIZE_MIN 16384
#define BUF_OUT_SIZE_MIN 65536

/* Idle buffers kept for reuse (4 MiB at 16 KiB): enough for the buffers
 * of a busy loop iteration; beyond that memory goes back to malloc, so a
 * burst does not pin memory for good. */
#define BUF_FREE_MAX 256

/* After EMFILE/ENFILE, accepting pauses this long instead of spinning on a
 * readable socket that cannot be accepted. */
#define ACCEPT_RETRY_S 0.1

const char *worker_state_str(enum worker_state s)
{
    switch (s) {
    case WORKER_STARTING:
        return "starting";
    case WORKER_RUNNING:
        return "running";
    case WORKER_DRAIN_DELAY:
    case WORKER_DRAINING:
        return "draining";
    case WORKER_STOPPED:
        return "stopped";
    }
    return "unknown";
}

/* ---- pools and servers: applying a config's changes ---------------------- */

static struct pool *pool_new(struct worker *w, const char *name)
{
    struct pool *p = calloc(1, sizeof(*p));
    if (!p || !(p->name = strdup(name))) {
        free(p);
        return NULL;
    }
    p->stagger = w->id;
    p->lc_next = w->id;
    struct pool **tail = &w->pools;
    while (*tail)
        tail = &(*tail)->next;
    *tail = p;
    return p;
}

static int pool_add_server(struct pool *p, struct server *s)
{
    if (p->num_servers == p->servers_cap) {
        size_t cap = p->servers_cap ? p->servers_cap * 2 : 4;
        struct server **n = realloc(p->servers, cap * sizeof(*n));
        if (!n)
            return -1;
        p->servers = n;
        p->servers_cap = cap;
    }
    p->servers[p->num_servers++] = s;
    return 0;
}

/* The server of <p> named <name> still in the config (not removed), made
 * by the config (<discovered> false) or by DNS discovery (true): each path
 * only ever touches its own servers. */
static struct server *find_current(struct pool *p, const char *name, bool discovered)
{
    for (size_t i = 0; i < p->num_servers; i++) {
        struct backend *b = p->servers[i]->hb;
        if (p->servers[i]->discovered == discovered && !backend_removed(b) &&
            strcmp(b->name, name) == 0)
            return p->servers[i];
    }
    return NULL;
}

struct server *worker_pool_server(struct pool *p, const char *name)
{
    for (size_t i = 0; i < p->num_servers; i++)
        if (!backend_removed(p->servers[i]->hb) && strcmp(p->servers[i]->hb->name, name) == 0)
            return p->servers[i];
    return NULL;
}

struct server *worker_find_server(struct worker *w, const char *pool, const char *name)
{
    struct pool *p = pool_find(w->pools, pool);
    return p && p->conf ? worker_pool_server(p, name) : NULL;
}

/* A removed server still draining with the same name and address as <cb>:
 * re-added by this reload, it becomes a normal backend again and keeps its
 * connections (DESIGN "Draining details"). */
static struct server *find_draining(struct pool *p, const struct conf_backend *cb)
{
    for (size_t i = 0; i < p->num_servers; i++) {
        struct backend *b = p->servers[i]->hb;
        if (backend_removed(b) && strcmp(b->name, cb->name) == 0 &&
            strcmp(b->address_text, cb->address.text) == 0 && b->addr_len == cb->address.sa_len &&
            memcmp(&b->addr, &cb->address.sa, b->addr_len) == 0)
            return p->servers[i];
    }
    return NULL;
}

/* A replica worker follows its primary, which applied the change first:
 * it gets its own server for the primary's (new or revived) one. Health
 * settings, removals and weights are the shared backend's: the primary's
 * change covers them. */
static int add_replica(struct worker *w, struct pool *p, const struct conf_pool *cp,
                       const struct conf_backend *cb, bool discovered)
{
    struct pool *pp = pool_find(w->primary->pools, cp->name);
    struct server *ps = pp ? find_current(pp, cb->name, discovered) : NULL;
    if (!ps)
        return -1;
    for (struct server *r = ps->next_replica; r; r = r->next_replica)
        if (r->w == w) {
            r->discovered = discovered; /* revived with the primary */
            return 0;
        }
    struct server *s = server_new(w, p, cp, cb, ps);
    if (!s || pool_add_server(p, s) < 0) {
        server_free(s);
        return -1;
    }
    s->discovered = discovered;
    s->from_startup = ps->from_startup;
    s->ramp_started = ps->ramp_started;
    return 0;
}

static int add_backend(struct worker *w, const struct conf_pool *cp, const struct conf_backend *cb,
                       bool discovered)
{
    struct pool *p = pool_find(w->pools, cp->name);
    if (!p)
        return -1;
    if (w->primary)
        return add_replica(w, p, cp, cb, discovered);
    if (discovered && find_current(p, cb->name, true))
        return 0; /* already there */
    struct server *s = find_draining(p, cb);
    if (s) {
        s->discovered = discovered; /* whoever brings it back owns it */
        return backend_reconfigure(s->hb, cp, cb);
    }
    s = server_new(w, p, cp, cb, NULL);
    if (!s || pool_add_server(p, s) < 0) {
        server_free(s);
        return -1;
    }
    s->discovered = discovered;
    log_info("backend added", "pool=%s backend=%s address=%s state=%s", p->name, s->hb->name,
             s->hb->address_text, backend_state_str(s->hb->state));
    return 0;
}

static void remove_backend(struct worker *w, const char *pool, const char *name, conf_ms delay,
                           bool discovered)
{
    if (w->primary)
        return; /* the shared backend drains; the replicas follow its hooks */
    struct pool *p = pool_find(w->pools, pool);
    struct server *s = p ? find_current(p, name, discovered) : NULL;
    if (!s)
        return;
    log_info("backend removed", "pool=%s backend=%s address=%s connections=%u", p->name,
             s->hb->name, s->hb->address_text, s->hb->connections);
    if (discovered)
        backend_remove_dns(s->hb, delay);
    else
        backend_remove(s->hb, delay);
}

/* A backend's new settings take effect at once; its state stays. The
 * discovered backends of the pool take the pool's new settings too, with
 * the identity and weight the discovery gave them. */
static int reconfigure_pool(struct worker *w, const struct conf_pool *cp)
{
    if (w->primary)
        return 0; /* health settings are the shared backend's */
    struct pool *p = pool_find(w->pools, cp->name);
    if (!p)
        return -1;
    for (size_t i = 0; i < cp->num_backends; i++) {
        struct server *s = find_current(p, cp->backends[i].name, false);
        if (s && backend_reconfigure(s->hb, cp, &cp->backends[i]) < 0)
            return -1;
    }
    for (size_t i = 0; i < p->num_servers; i++) {
        struct server *s = p->servers[i];
        if (!s->discovered || backend_removed(s->hb))
            continue;
        const struct conf_backend cb = {.name = s->hb->name, .weight = s->hb->weight};
        if (backend_reconfigure(s->hb, cp, &cb) < 0)
            return -1;
    }
    return 0;
}

/* The delay a removed backend drains with: its pool's in the new config,
 * or the one it had if the pool went too. */
static conf_ms removal_delay(const struct conf *nc, const struct conf_pool *old_pool)
{
    const struct conf_pool *np = conf_find_pool(nc, old_pool->name);
    return np ? np->deregistration_delay : old_pool->deregistration_delay;
}

static int apply_change_one(struct worker *w, const struct conf *nc, const struct conf_change *ch)
{
    switch (ch->kind) {
    case CONF_POOL_ADDED:
        if (!pool_find(w->pools, ch->new_pool->name) && !pool_new(w, ch->new_pool->name))
            return -1;
        return 0;
    case CONF_POOL_REMOVED:
    case CONF_LISTENER_ADDED:
    case CONF_LISTENER_REMOVED:
    case CONF_LISTENER_SPLIT:
    case CONF_ROUTE_ADDED:
    case CONF_ROUTE_REMOVED:
    case CONF_ROUTE_CHANGED:
        return 0; /* pools are re-pointed by worker_commit_conf; listeners are the caller's */
    case CONF_POOL_CHANGED:
        return reconfigure_pool(w, ch->new_pool);
    case CONF_BACKEND_ADDED:
        return add_backend(w, ch->new_pool, ch->new_backend, false);
    case CONF_BACKEND_REMOVED:
        remove_backend(w, ch->old_pool->name, ch->old_backend->name,
                       removal_delay(nc, ch->old_pool), false);
        return 0;
    case CONF_BACKEND_WEIGHT: {
        if (w->primary)
            return 0;
        struct pool *p = pool_find(w->pools, ch->new_pool->name);
        struct server *s = p ? find_current(p, ch->new_backend->name, false) : NULL;
        return s ? backend_reconfigure(s->hb, ch->new_pool, ch->new_backend) : -1;
    }
    }
    return 0;
}

static int apply_discovered_one(struct worker *w, const struct conf_change *ch)
{
    switch (ch->kind) {
    case CONF_BACKEND_ADDED:
        return add_backend(w, ch->new_pool, ch->new_backend, true);
    case CONF_BACKEND_REMOVED:
        remove_backend(w, ch->old_pool->name, ch->old_backend->name,
                       ch->old_pool->deregistration_delay, true);
        return 0;
    case CONF_BACKEND_WEIGHT: {
        if (w->primary)
            return 0;
        struct pool *p = pool_find(w->pools, ch->new_pool->name);
        struct server *s = p ? find_current(p, ch->new_backend->name, true) : NULL;
        return s ? backend_reconfigure(s->hb, ch->new_pool, ch->new_backend) : 0;
    }
    default:
        return 0;
    }
}

/* The primary applies a change first, then each replica (which finds the
 * primary's server to share its backend). */
int worker_apply_change(struct worker *w, const struct conf *nc, const struct conf_change *ch)
{
    int rc = 0;
    for (; w; w = w->next_replica)
        rc |= apply_change_one(w, nc, ch);
    return rc;
}

int worker_apply_discovered(struct worker *w, const struct conf_change *ch)
{
    int rc = 0;
    for (; w; w = w->next_replica)
        rc |= apply_discovered_one(w, ch);
    return rc;
}

void worker_commit_conf(struct worker *w, struct conf *nc)
{
    for (; w; w = w->next_replica) {
        for (struct pool *p = w->pools; p; p = p->next)
            p->conf = conf_find_pool(nc, p->name);
        w->conf = nc;
        worker_apply_limits(w, nc);
    }
}

void worker_set_state(struct worker *w, enum worker_state state)
{
    for (; w; w = w->next_replica)
        w->state = state;
}

unsigned worker_clients(const struct worker *w)
{
    unsigned n = 0;
    for (; w; w = w->next_replica)
        n += w->num_clients;
    return n;
}

void worker_pool_totals(const struct worker *w, const char *pool, struct pool_totals *t)
{
    memset(t, 0, sizeof(*t));
    for (; w; w = w->next_replica) {
        const struct pool *p = pool_find(w->pools, pool);
        if (!p)
            continue;
        for (int r = 0; r < RETRY_REASONS; r++)
            t->retries[r] += p->retries[r];
        t->budget_refused += p->retry_budget_refused;
    }
}

void worker_h2_totals(const struct worker *w, struct h2_totals *t)
{
    memset(t, 0, sizeof(*t));
    for (; w; w = w->next_replica) {
        t->streams += w->h2_streams;
        for (int r = 0; r < H2_GOAWAY_REASONS; r++)
            t->goaway[r] += w->h2_goaway[r];
    }
}

uint64_t worker_accept_paused(const struct worker *w)
{
    uint64_t n = 0;
    for (; w; w = w->next_replica)
        n += w->accept_paused;
    return n;
}

/* ---- listeners ----------------------------------------------------------- */

static void accept_pause_one(struct worker *w)
{
    for (struct listener *l = w->listeners; l; l = l->next)
        listener_pause(l);
}

static void accept_resume_one(struct worker *w)
{
    if (w->state >= WORKER_DRAINING)
        return;
    for (struct listener *l = w->listeners; l; l = l->next)
        listener_resume(l);
}

static void accept_retry_cb(struct ev_loop *loop, ev_timer *t, int revents)
{
    struct worker *w = container_of(t, struct worker, accept_retry);
    if (!w->accept_limited)
        accept_resume_one(w);
}

/* Another worker is short of descriptors: this one's idle pooled
 * connections go (they are the process's descriptors too). */
static void reclaim_cb(struct ev_loop *loop, ev_async *a, int revents)
{
    struct worker *w = container_of(a, struct worker, reclaim);
    unsigned n = __atomic_exchange_n(&w->reclaim_wanted, 0, __ATOMIC_RELAXED);
    if (n)
        upstream_reclaim_idle(w, n);
}

/* Descriptors are short: idle pooled connections go before a client could
 * be refused for want of one — this worker's now, the others' at their
 * next event (before this client's request can need its upstream). */
static void reclaim_for_client(struct worker *w)
{
    unsigned closed = upstream_reclaim_idle(w, FDS_PER_CLIENT);
    if (closed >= FDS_PER_CLIENT)
        return;
    for (struct worker *o = worker_first(w); o; o = o->next_replica) {
        if (o == w)
            continue;
        __atomic_add_fetch(&o->reclaim_wanted, FDS_PER_CLIENT - closed, __ATOMIC_RELAXED);
        ev_async_send(o->loop, &o->reclaim);
    }
}

/* Closes this worker's idle splice pipes: their descriptors are the
 * process's too. */
static void trim_pipes(struct worker *w)
{
    unsigned open = w->pipes.open;
    kpipe_pool_trim(&w->pipes);
    worker_fds_pipes(w, open);
}

/* The process's descriptors would not give one more client its own and its
 * upstream's (a splice pipe spends two): this worker's idle pipes go first. */
static bool short_of_fds(struct worker *w)
{
    if (worker_fds_used(w) + FDS_PER_CLIENT <= w->max_fds)
        return false;
    trim_pipes(w);
    return worker_fds_used(w) + FDS_PER_CLIENT > w->max_fds;
}

/* Stops accepting for ACCEPT_RETRY_S: the descriptors are short (another
 * worker may be the one to give some back, so a timer looks again). */
static void accept_pause_retry(struct worker *w)
{
    w->accept_paused++;
    accept_pause_one(w);
    ev_timer_stop(w->loop, &w->accept_retry);
    ev_timer_set(&w->accept_retry, ACCEPT_RETRY_S, 0.);
    ev_timer_start(w->loop, &w->accept_retry);
}

static void on_accepted(struct listener *l, int fd, const struct sockaddr_storage *sa)
{
    struct worker *w = l->owner;
    if (worker_fds_used(w) + FDS_PER_CLIENT > w->max_fds) {
        trim_pipes(w);
        reclaim_for_client(w);
    }
    client_accept(w, l, fd, sa);
    if (w->accept_limited)
        return;
    if (w->num_clients >= w->max_clients) {
        w->accept_limited = true;
        w->accept_paused++;
        log_warn("accept paused", "reason=max_connections connections=%u", w->num_clients);
        accept_pause_one(w);
    } else if (short_of_fds(w)) {
        log_warn("accept paused", "reason=descriptors connections=%u retry_ms=%d", w->num_clients,
                 (int)(ACCEPT_RETRY_S * 1000));
        accept_pause_retry(w);
    }
}

static void on_accept_failed(struct listener *l, int err)
{
    struct worker *w = l->owner;
    log_warn("accept paused", "reason=\"%s\" retry_ms=%d", strerror(err),
             (int)(ACCEPT_RETRY_S * 1000));
    accept_pause_retry(w);
}

static const struct listener_ops listener_ops = {
    .accepted = on_accepted,
    .accept_failed = on_accept_failed,
};

struct listener *worker_listener_open(struct worker *w, const struct conf_listener *cl, int fd,
                                      struct ssl_ctx_st *tls_ctx, const char **err)
{
    return listener_open(w->loop, cl, fd, tls_ctx, &listener_ops, w, err);
}

struct listener *worker_listener_replicate(struct worker *w, struct listener *pl, const char **err)
{
    int fd = fcntl(pl->fd, F_DUPFD_CLOEXEC, 0);
    if (fd < 0) {
        *err = "cannot duplicate the listening socket";
        return NULL;
    }
    struct listener *l = listener_open(w->loop, pl->conf, fd, tls_context_ref(pl->tls_ctx),
                                       &listener_ops, w, err);
    if (!l) {
        tls_context_free(pl->tls_ctx);
        return NULL;
    }
    l->next_replica = pl->next_replica;
    pl->next_replica = l;
    return l;
}

static void listener_append(struct worker *w, struct listener *l)
{
    struct listener **tail = &w->listeners;
    while (*tail)
        tail = &(*tail)->next;
    *tail = l;
    l->next = NULL;
}

int worker_listener_add(struct worker *w, struct listener *l)
{
    listener_append(w, l);
    for (struct worker *r = w->next_replica; r; r = r->next_replica) {
        const char *err = NULL;
        struct listener *rl = worker_listener_replicate(r, l, &err);
        if (!rl) {
            log_error("listener failed", "name=%s bind=%s worker=%u reason=\"%s: %s\"", l->name,
                      l->bind_text, r->id, err, strerror(errno));
            return -1;
        }
        listener_append(r, rl);
        if (listener_configure(rl, l->conf, r->pools, rl->tls_ctx) < 0)
            return -1;
    }
    return 0;
}

int worker_listener_configure(struct worker *w, struct listener *l, const struct conf_listener *cl,
                              struct ssl_ctx_st *tls_ctx)
{
    int rc = 0;
    for (struct listener *r = l->next_replica; r; r = r->next_replica) {
        struct ssl_ctx_st *ref = tls_ctx == r->tls_ctx ? tls_ctx : tls_context_ref(tls_ctx);
        if (listener_configure(r, cl, ((struct worker *)r->owner)->pools, ref) < 0) {
            if (ref != r->tls_ctx)
                tls_context_free(ref);
            rc = -1;
        }
    }
    if (listener_configure(l, cl, w->pools, tls_ctx) < 0) {
        if (tls_ctx != l->tls_ctx)
            tls_context_free(tls_ctx);
        return -1;
    }
    return rc;
}

static void listener_remove_one(struct worker *w, struct listener *l)
{
    listener_close(l);
    l->conf = NULL;                        /* leaves /status with its last connection (reaper) */
    ev_prepare_start(w->loop, &w->reaper); /* ... or now, if it has none */
    struct list *pos, *tmp;
    list_for_each_safe (pos, tmp, &w->clients) {
        struct client *c = container_of(pos, struct client, link);
        if (c->listener == l)
            client_shutdown_idle(c, 0);
    }
}

void worker_listener_remove(struct worker *w, struct listener *l)
{
    struct listener_totals t;
    listener_totals(l, &t);
    log_info("listener removed", "name=%s bind=%s connections=%u", l->name, l->bind_text,
             t.connections);
    /* every worker takes what its descriptor can still accept; the socket
     * (and its queue) goes with the last descriptor, the primary's */
    for (struct listener *r = l->next_replica; r; r = r->next_replica)
        listener_remove_one(r->owner, r);
    listener_remove_one(w, l);
}

bool worker_pool_in_use(const struct worker *w, const struct pool *p)
{
    for (const struct listener *l = w->listeners; l; l = l->next)
        for (size_t i = 0; !l->closed && i < l->num_slots; i++)
            if (l->slots[i].pool == p && l->slots[i].weight > 0)
                return true;
    return false;
}

void worker_split_overridden(struct worker *w, const struct listener *l)
{
    for (size_t i = 0; i < l->num_slots; i++) {
        struct pool *p = l->slots[i].pool;
        if (!p || l->slots[i].weight > 0 || worker_pool_in_use(w, p))
            continue;
        for (size_t k = 0; k < p->num_servers; k++)
            server_close_idle(p->servers[k]);
    }
}

struct listener *worker_listener_named(struct worker *w, const char *name)
{
    for (struct listener *l = w->listeners; l; l = l->next)
        if (!l->closed && l->conf && strcmp(l->name, name) == 0)
            return l;
    return NULL;
}

struct listener *worker_find_listener(struct worker *w, const struct conf_listener *cl)
{
    for (struct listener *l = w->listeners; l; l = l->next)
        if (!l->closed && strcmp(l->name, cl->name) == 0 &&
            conf_address_same(&l->conf->bind, &cl->bind))
            return l;
    return NULL;
}

void worker_accept_pause(struct worker *w)
{
    for (; w; w = w->next_replica)
        accept_pause_one(w);
}

void worker_accept_resume(struct worker *w)
{
    for (; w; w = w->next_replica)
        if (!w->accept_limited)
            accept_resume_one(w);
}

void worker_release_listeners(struct worker *w)
{
    for (; w; w = w->next_replica) {
        for (struct listener *l = w->listeners; l; l = l->next)
            listener_release(l);
        ev_timer_stop(w->loop, &w->accept_retry);
    }
}

/* The replicas first: each accepts what is queued, and the primary, whose
 * descriptor is the last, takes what arrived meanwhile before the close. */
static void close_listeners_one(struct worker *w)
{
    if (!w)
        return;
    close_listeners_one(w->next_replica);
    for (struct listener *l = w->listeners; l; l = l->next)
        listener_close(l);
    ev_timer_stop(w->loop, &w->accept_retry);
}

void worker_close_listeners(struct worker *w)
{
    close_listeners_one(w);
}

static void shutdown_idle_one(struct worker *w, conf_ms spread_ms, bool after_request)
{
    ev_tstamp now = ev_now(w->loop);
    unsigned n = 0, i = 0;
    struct list *pos, *tmp;
    list_for_each_safe (pos, tmp, &w->clients)
        if (client_spread_candidate(container_of(pos, struct client, link)))
            n++;
    list_for_each_safe (pos, tmp, &w->clients) {
        struct client *c = container_of(pos, struct client, link);
        ev_tstamp at = 0;
        if (after_request) {
            at = DBL_MAX;
        } else if (spread_ms > 0 && client_spread_candidate(c)) {
            /* slot i of n, centred in its 1/n of the window: an even rate
             * of closes, so the next hop sees no reconnect burst */
            at = now + (double)spread_ms / 1000.0 * ((double)i + 0.5) / (double)n;
            i++;
        }
        client_shutdown_idle(c, at);
    }
}

/* Each worker spreads its own idle connections over the whole window: the
 * sum is as even as each. */
void worker_shutdown_idle(struct worker *w, conf_ms spread_ms, bool after_request)
{
    for (; w; w = w->next_replica)
        shutdown_idle_one(w, spread_ms, after_request);
}

void worker_tunnels_deadline(struct worker *w, ev_tstamp deadline)
{
    for (; w; w = w->next_replica) {
        w->drain_deadline = deadline; /* for tunnels that start from now on */
        struct list *pos, *tmp;
        list_for_each_safe (pos, tmp, &w->clients) {
            client_tunnel_deadline(container_of(pos, struct client, link), deadline);
        }
    }
}

static unsigned close_clients_one(struct worker *w)
{
    unsigned cut = 0;
    struct list *pos, *tmp;
    list_for_each_safe (pos, tmp, &w->clients) {
        struct client *c = container_of(pos, struct client, link);
        if (!client_is_idle(c))
            cut++;
        client_close(c);
    }
    return cut;
}

unsigned worker_close_clients(struct worker *w)
{
    unsigned cut = 0;
    for (; w; w = w->next_replica)
        cut += close_clients_one(w);
    return cut;
}

unsigned worker_busy_clients(const struct worker *w)
{
    unsigned n = 0;
    for (; w; w = w->next_replica)
        n += w->num_clients - w->num_lingering;
    return n;
}

/* ---- the safe point ------------------------------------------------------ */

/* Drops listeners a reload removed once their last connection closed. */
static void reap_listeners(struct worker *w)
{
    struct listener **pp = &w->listeners;
    while (*pp) {
        struct listener *l = *pp;
        if (l->closed && !l->conf && l->connections == 0) {
            *pp = l->next;
            listener_free(l);
        } else {
            pp = &l->next;
        }
    }
}

/* Runs before the loop blocks, after every callback of the iteration: an
 * ev_prepare, unlike an ev_idle, runs under full load too (Redis frees
 * clients the same way, from beforeSleep). */
static void reaper_cb(struct ev_loop *loop, ev_prepare *prep, int revents)
{
    struct worker *w = container_of(prep, struct worker, reaper);
    ev_prepare_stop(loop, prep);
    struct list *pos, *tmp;
    list_for_each_safe (pos, tmp, &w->closed) {
        list_remove(pos);
        client_free(container_of(pos, struct client, link));
    }
    reap_listeners(w);
    if (w->accept_limited && w->num_clients < w->max_clients) {
        w->accept_limited = false;
        log_info("accept resumed", "connections=%u", w->num_clients);
        accept_resume_one(w);
    }
    if (w->hooks.clients_closed)
        w->hooks.clients_closed(w, w->hooks.ctx);
}

/* ---- readiness ----------------------------------------------------------- */

bool worker_first_round_done(const struct worker *w)
{
    for (const struct pool *p = w->pools; p; p = p->next)
        for (size_t i = 0; i < p->num_servers; i++) {
            const struct backend *b = p->servers[i]->hb;
            if (!backend_removed(b) && b->hc.enabled && !b->checked_once)
                return false;
        }
    return true;
}

bool worker_ready(const struct worker *w)
{
    return w->state == WORKER_RUNNING;
}

/* ---- limits -------------------------------------------------------------- */

/* Descriptors kept aside from client/upstream pairs: stdio, the event
 * loop's own, listeners, the admin socket and its clients, one health check
 * per backend (added below). */
#define FD_RESERVE 64

/* Caps max_connections so that every client connection can also open its
 * upstream connection: a client accepted without a descriptor left for its
 * backend could only be answered with an error. */
static void fd_limits(struct worker *w, const struct conf *conf)
{
    struct rlimit rl;
    unsigned before = w->max_clients;
    uint64_t total = conf->limits.max_connections;
    w->max_fds = UINT32_MAX;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY) {
        size_t reserve = FD_RESERVE + conf->num_listeners;
        for (size_t i = 0; i < conf->num_pools; i++)
            reserve += conf->pools[i].num_backends;
        rlim_t usable = rl.rlim_cur > reserve ? rl.rlim_cur - reserve : FDS_PER_CLIENT;
        w->max_fds = usable > UINT32_MAX ? UINT32_MAX : (unsigned)usable;
        if (usable / FDS_PER_CLIENT < total)
            total = usable / FDS_PER_CLIENT ? usable / FDS_PER_CLIENT : 1;
    }
    /* the limit is the process's: worker i of n takes its share, the first
     * ones one more while there is a remainder (a paused worker leaves its
     * connections to the others, so the sum is the limit) */
    unsigned shares = worker_first(w)->replicas + 1;
    uint64_t mine = total / shares + (w->id < total % shares);
    w->max_clients = mine ? (unsigned)mine : 1;
    if (total >= conf->limits.max_connections || w->max_clients == before || w->primary)
        return; /* nothing to say, or said already (once, by the first worker) */
    log_warn("max_connections lowered",
             "configured=%u effective=%llu nofile=%llu "
             "reason=\"each client needs 2 file descriptors\"",
             conf->limits.max_connections, (unsigned long long)total,
             (unsigned long long)rl.rlim_cur);
}

void worker_raise_fd_limit(void)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
}

void worker_apply_limits(struct worker *w, const struct conf *conf)
{
    fd_limits(w, conf);
    w->limits.max_head_bytes = conf->limits.max_head_bytes;
    w->limits.max_headers = conf->limits.max_headers;
    w->limits.max_uri_bytes = conf->limits.max_uri_bytes;
    if (conf->limits.max_headers > w->headers_cap) {
        struct http1_header *h = realloc(w->headers, conf->limits.max_headers * sizeof(*h));
        if (h) {
            w->headers = h;
            w->headers_cap = conf->limits.max_headers;
        } else {
            w->limits.max_headers = w->headers_cap;
        }
    }
    size_t head = conf->limits.max_head_bytes;
    /* buffers of another size are freed when they come back */
    w->bufs_in.buf_size = head > BUF_IN_SIZE_MIN ? head : BUF_IN_SIZE_MIN;
    w->bufs_out.buf_size = head > BUF_OUT_SIZE_MIN ? head : BUF_OUT_SIZE_MIN;
}

/* ---- creation and teardown ----------------------------------------------- */

struct worker *worker_new(struct ev_loop *loop, struct ev_loop *health_loop,
                          struct worker *primary, struct conf *conf,
                          const struct worker_hooks *hooks)
{
    struct worker *w = calloc(1, sizeof(*w));
    if (!w)
        return NULL;
    w->loop = loop;
    w->health_loop = health_loop;
    w->primary = primary;
    w->id = primary ? ++primary->replicas : 0;
    w->conf = conf;
    w->generation = 1;
    w->state = WORKER_STARTING;
    w->hooks = *hooks;
    list_init(&w->clients);
    list_init(&w->closed);
    buf_pool_init(&w->bufs_in, BUF_IN_SIZE_MIN, BUF_FREE_MAX);
    buf_pool_init(&w->bufs_out, BUF_OUT_SIZE_MIN, BUF_FREE_MAX / 4);
    worker_apply_limits(w, conf);
    if (!w->headers) {
        free(w);
        return NULL;
    }
    ev_prepare_init(&w->reaper, reaper_cb);
    ev_async_init(&w->reclaim, reclaim_cb);
    ev_async_start(loop, &w->reclaim);
    ev_unref(loop); /* it alone does not keep the loop running */
    ev_timer_init(&w->accept_retry, accept_retry_cb, 0., 0.);
    w->started_at = ev_now(loop);
    if (prng_seed(&w->rng) < 0)
        log_warn("getrandom failed", "fallback=clock");
    if (primary) {
        struct worker **tail = &primary->next_replica;
        while (*tail)
            tail = &(*tail)->next_replica;
        *tail = w;
    }
    return w;
}

static void free_one(struct worker *w);

void worker_free(struct worker *w)
{
    if (!w)
        return;
    worker_close_listeners(w);
    log_info("released", "what=listeners");
    worker_close_clients(w);
    log_info("released", "what=client_connections");
    /* the replicas first: their servers point at the primary's backends */
    while (w->next_replica) {
        struct worker *r = w->next_replica;
        w->next_replica = r->next_replica;
        free_one(r);
    }
    free_one(w);
}

static void free_one(struct worker *w)
{
    struct list *pos, *tmp;
    list_for_each_safe (pos, tmp, &w->closed) {
        list_remove(pos);
        client_free(container_of(pos, struct client, link));
    }

    for (struct pool *p = w->pools; !w->primary && p; p = p->next)
        for (size_t i = 0; i < p->num_servers; i++)
            backend_checks_stop(p->servers[i]->hb);
    if (!w->primary)
        log_info("released", "what=health_checks");

    while (w->pools) {
        struct pool *p = w->pools;
        w->pools = p->next;
        for (size_t i = 0; i < p->num_servers; i++)
            server_free(p->servers[i]);
        free(p->servers);
        free(p->name);
        free(p);
    }
    if (!w->primary)
        log_info("released", "what=backend_pools");

    while (w->listeners) {
        struct listener *l = w->listeners;
        w->listeners = l->next;
        listener_free(l);
    }
    ev_timer_stop(w->loop, &w->accept_retry);
    ev_prepare_stop(w->loop, &w->reaper);
    ev_ref(w->loop);
    ev_async_stop(w->loop, &w->reclaim);
    buf_pool_destroy(&w->bufs_in);
    buf_pool_destroy(&w->bufs_out);
    trim_pipes(w);
    free(w->headers);
    free(w);
}
