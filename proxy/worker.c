#include "worker.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

#include "../conf/conf.h"
#include "../health/backend.h"
#include "admin.h"
#include "client.h"
#include "lifecycle.h"
#include "list.h"
#include "listener.h"
#include "log.h"
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

/* How often readiness is re-evaluated while the first health round runs. */
#define READY_POLL_S 0.02

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

/* ---- health hooks -------------------------------------------------------- */

static struct pool *pool_of(struct backend *b)
{
    return ((struct backend_conns *)b->proxy_data)->pool;
}

static void on_state_changed(struct backend *b, enum backend_state from, const char *reason,
                             void *ctx)
{
    log_info("backend state", "pool=%s backend=%s from=%s to=%s reason=\"%s\" connections=%u",
             b->pool_name, b->name, backend_state_str(from), backend_state_str(b->state),
             reason ? reason : "", b->connections);
    if (b->state == BACKEND_DRAINING) {
        /* pooled connections would never be used again */
        upstream_close_idle(b);
    }
}

static void on_drain_expired(struct backend *b, void *ctx)
{
    struct backend_conns *bc = b->proxy_data;
    unsigned n = 0;
    struct list *pos, *tmp;
    list_for_each_safe (pos, tmp, &bc->active)
        n++;
    log_info("backend drain expired", "pool=%s backend=%s closing=%u", b->pool_name, b->name, n);
    list_for_each_safe (pos, tmp, &bc->active) {
        struct upstream *u = container_of(pos, struct upstream, pool_link);
        client_close(u->client);
    }
    upstream_close_idle(b);
}

static void on_gone(struct backend *b, void *ctx)
{
    struct pool *p = pool_of(b);
    log_info("backend gone", "pool=%s backend=%s address=%s", b->pool_name, b->name,
             b->address_text);
    for (size_t i = 0; i < p->num_backends; i++) {
        if (p->backends[i] != b)
            continue;
        memmove(&p->backends[i], &p->backends[i + 1],
                (p->num_backends - i - 1) * sizeof(p->backends[0]));
        p->num_backends--;
        break;
    }
    upstream_close_idle(b);
    upstream_backend_detach(b);
    backend_free(b);
}

static const struct backend_hooks hooks = {
    .state_changed = on_state_changed,
    .drain_expired = on_drain_expired,
    .gone = on_gone,
};

/* ---- pools and backends -------------------------------------------------- */

struct pool *worker_find_pool(struct worker *w, const char *name)
{
    for (struct pool *p = w->pools; p; p = p->next)
        if (strcmp(p->name, name) == 0)
            return p;
    return NULL;
}

static struct pool *pool_new(struct worker *w, const char *name)
{
    struct pool *p = calloc(1, sizeof(*p));
    if (!p || !(p->name = strdup(name))) {
        free(p);
        return NULL;
    }
    struct pool **tail = &w->pools;
    while (*tail)
        tail = &(*tail)->next;
    *tail = p;
    return p;
}

static int pool_add_backend(struct pool *p, struct backend *b)
{
    if (p->num_backends == p->backends_cap) {
        size_t cap = p->backends_cap ? p->backends_cap * 2 : 4;
        struct backend **n = realloc(p->backends, cap * sizeof(*n));
        if (!n)
            return -1;
        p->backends = n;
        p->backends_cap = cap;
    }
    p->backends[p->num_backends++] = b;
    return 0;
}

static struct backend *find_backend(struct pool *p, const struct conf_backend *cb)
{
    for (size_t i = 0; i < p->num_backends; i++) {
        struct backend *b = p->backends[i];
        if (strcmp(b->name, cb->name) == 0 && strcmp(b->address_text, cb->address.text) == 0)
            return b;
    }
    return NULL;
}

/* A reload removed <b> (or its whole pool): it drains with <delay>. */
static void remove_backend(struct pool *p, struct backend *b, conf_ms delay)
{
    log_info("backend removed", "pool=%s backend=%s address=%s connections=%u", p->name, b->name,
             b->address_text, b->connections);
    backend_remove(b, delay);
}

static int sync_pool(struct worker *w, struct pool *p, const struct conf_pool *cp)
{
    bool *keep = calloc(p->num_backends + 1, sizeof(*keep));
    if (!keep)
        return -1;
    size_t existing = p->num_backends;
    for (size_t i = 0; i < cp->num_backends; i++) {
        const struct conf_backend *cb = &cp->backends[i];
        struct backend *b = find_backend(p, cb);
        if (b) {
            for (size_t k = 0; k < existing; k++)
                if (p->backends[k] == b)
                    keep[k] = true;
            backend_reconfigure(b, cp, cb);
            continue;
        }
        b = backend_new(w->loop, cp, cb, &hooks, w);
        if (!b || upstream_backend_attach(b, p) < 0 || pool_add_backend(p, b) < 0) {
            if (b) {
                upstream_backend_detach(b);
                backend_free(b);
            }
            free(keep);
            return -1;
        }
        log_info("backend added", "pool=%s backend=%s address=%s state=%s", p->name, b->name,
                 b->address_text, backend_state_str(b->state));
    }
    for (size_t k = 0; k < existing; k++) {
        struct backend *b = p->backends[k];
        if (!keep[k] && !backend_removed(b))
            remove_backend(p, b, cp->deregistration_delay);
    }
    free(keep);
    return 0;
}

int worker_sync_pools(struct worker *w, const struct conf *conf)
{
    for (struct pool *p = w->pools; p; p = p->next) {
        if (conf_find_pool(conf, p->name))
            continue;
        /* a removed pool's backends drain with the delay they had */
        conf_ms delay = p->conf ? p->conf->deregistration_delay : 0;
        for (size_t i = 0; i < p->num_backends; i++)
            if (!backend_removed(p->backends[i]))
                remove_backend(p, p->backends[i], delay);
        p->conf = NULL;
    }
    for (size_t i = 0; i < conf->num_pools; i++) {
        const struct conf_pool *cp = &conf->pools[i];
        struct pool *p = worker_find_pool(w, cp->name);
        if (!p && !(p = pool_new(w, cp->name)))
            return -1;
        p->conf = cp;
        if (sync_pool(w, p, cp) < 0)
            return -1;
    }
    return 0;
}

/* ---- readiness ----------------------------------------------------------- */

static bool first_round_done(const struct worker *w)
{
    for (const struct pool *p = w->pools; p; p = p->next)
        for (size_t i = 0; i < p->num_backends; i++) {
            const struct backend *b = p->backends[i];
            if (!backend_removed(b) && b->hc.enabled && !b->checked_once)
                return false;
        }
    return true;
}

static void ready_poll_cb(struct ev_loop *loop, ev_timer *t, int revents)
{
    struct worker *w = container_of(t, struct worker, ready_timer);
    if (w->state != WORKER_STARTING || !first_round_done(w))
        return;
    ev_timer_stop(loop, t);
    w->state = WORKER_RUNNING;
    log_info("ready", "generation=%llu", (unsigned long long)w->generation);
}

bool worker_ready(const struct worker *w)
{
    return w->state == WORKER_RUNNING;
}

/* ---- connections bookkeeping --------------------------------------------- */

static void reaper_cb(struct ev_loop *loop, ev_idle *idle, int revents)
{
    struct worker *w = container_of(idle, struct worker, reaper);
    struct list *pos, *tmp;
    list_for_each_safe (pos, tmp, &w->closed) {
        list_remove(pos);
        client_free(container_of(pos, struct client, link));
    }
    ev_idle_stop(loop, idle);
}

void worker_client_opened(struct worker *w, struct client *c)
{
    w->num_clients++;
    c->listener->connections++;
}

void worker_client_closed(struct worker *w, struct client *c)
{
    w->num_clients--;
    c->listener->connections--;
    list_append(&w->closed, &c->link);
    ev_idle_start(w->loop, &w->reaper);
    if (w->accept_limited && w->num_clients < w->max_clients) {
        w->accept_limited = false;
        log_info("accept resumed", "connections=%u", w->num_clients);
        worker_accept_resume(w);
    }
    lifecycle_connection_closed(w);
}

void worker_accept_pause(struct worker *w)
{
    for (struct listener *l = w->listeners; l; l = l->next)
        listener_pause(l);
}

void worker_accept_resume(struct worker *w)
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
        worker_accept_resume(w);
}

/* ---- creation and teardown ----------------------------------------------- */

/* Descriptors kept aside from client/upstream pairs: stdio, the event
 * loop's own, listeners, the admin socket and its clients, one health check
 * per backend (added below). */
#define FD_RESERVE 64

/* Caps max_connections so that every client connection can also open its
 * upstream connection: a client accepted without a descriptor left for its
 * backend could only be answered with an error. */
static unsigned max_clients_for(const struct conf *conf)
{
    struct rlimit rl;
    unsigned want = conf->limits.max_connections;
    if (getrlimit(RLIMIT_NOFILE, &rl) < 0 || rl.rlim_cur == RLIM_INFINITY)
        return want;
    size_t reserve = FD_RESERVE + conf->num_listeners;
    for (size_t i = 0; i < conf->num_pools; i++)
        reserve += conf->pools[i].num_backends;
    rlim_t usable = rl.rlim_cur > reserve ? (rl.rlim_cur - reserve) / 2 : 1;
    if (usable >= want)
        return want;
    log_warn("max_connections lowered",
             "configured=%u effective=%llu nofile=%llu "
             "reason=\"each client needs 2 file descriptors\"",
             want, (unsigned long long)usable, (unsigned long long)rl.rlim_cur);
    return usable ? (unsigned)usable : 1;
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
    w->max_clients = max_clients_for(conf);
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

struct worker *worker_new(struct ev_loop *loop, struct conf *conf)
{
    struct worker *w = calloc(1, sizeof(*w));
    if (!w)
        return NULL;
    w->loop = loop;
    w->conf = conf;
    w->generation = 1;
    w->state = WORKER_STARTING;
    list_init(&w->clients);
    list_init(&w->closed);
    buf_pool_init(&w->bufs_in, BUF_IN_SIZE_MIN, BUF_FREE_MAX);
    buf_pool_init(&w->bufs_out, BUF_OUT_SIZE_MIN, BUF_FREE_MAX / 4);
    worker_apply_limits(w, conf);
    if (!w->headers) {
        free(w);
        return NULL;
    }
    ev_idle_init(&w->reaper, reaper_cb);
    ev_timer_init(&w->accept_retry, accept_retry_cb, 0., 0.);
    ev_timer_init(&w->ready_timer, ready_poll_cb, 0., READY_POLL_S);
    w->started_at = ev_now(loop);
    return w;
}

int worker_start(struct worker *w)
{
    const struct conf *conf = w->conf;
    log_configure(conf->log.level, conf->log.format);
    if (worker_sync_pools(w, conf) < 0) {
        log_error("startup failed", "reason=\"out of memory\"");
        return -1;
    }
    struct listener **tail = &w->listeners;
    for (size_t i = 0; i < conf->num_listeners; i++) {
        const struct conf_listener *cl = &conf->listeners[i];
        const char *err = NULL;
        struct listener *l = listener_open(w, cl, &err);
        if (!l) {
            log_error("listener failed", "name=%s bind=%s reason=\"%s: %s\"", cl->name,
                      cl->bind.text, err, strerror(errno));
            return -1;
        }
        *tail = l;
        tail = &l->next;
        listener_resume(l);
        log_info("listener started", "name=%s bind=%s protocol=%s", cl->name, cl->bind.text,
                 conf_protocol_str(cl->protocol));
    }
    if (conf->admin.enabled && admin_start(w) < 0)
        return -1;
    lifecycle_start(w);
    ev_timer_start(w->loop, &w->ready_timer);
    ready_poll_cb(w->loop, &w->ready_timer, 0);
    return 0;
}

int worker_run(struct worker *w)
{
    ev_run(w->loop, 0);
    return w->exit_code;
}

void worker_free(struct worker *w)
{
    if (!w)
        return;
    struct list *pos, *tmp;

    for (struct listener *l = w->listeners; l; l = l->next)
        listener_close(l);
    log_info("released", "what=listeners");

    list_for_each_safe (pos, tmp, &w->clients) {
        client_close(container_of(pos, struct client, link));
    }
    reaper_cb(w->loop, &w->reaper, 0);
    log_info("released", "what=client_connections");

    for (struct pool *p = w->pools; p; p = p->next)
        for (size_t i = 0; i < p->num_backends; i++)
            backend_checks_stop(p->backends[i]);
    log_info("released", "what=health_checks");

    while (w->pools) {
        struct pool *p = w->pools;
        w->pools = p->next;
        for (size_t i = 0; i < p->num_backends; i++) {
            upstream_close_idle(p->backends[i]);
            upstream_backend_detach(p->backends[i]);
            backend_free(p->backends[i]);
        }
        free(p->backends);
        free(p->name);
        free(p);
    }
    log_info("released", "what=backend_pools");

    admin_stop(w);
    log_info("released", "what=admin_listener");

    lifecycle_stop(w);
    while (w->listeners) {
        struct listener *l = w->listeners;
        w->listeners = l->next;
        listener_free(l);
    }
    ev_timer_stop(w->loop, &w->ready_timer);
    ev_timer_stop(w->loop, &w->accept_retry);
    ev_idle_stop(w->loop, &w->reaper);
    buf_pool_destroy(&w->bufs_in);
    buf_pool_destroy(&w->bufs_out);
    free(w->headers);
    conf_free(w->conf);
    free(w);
}
