/* One path applies a config, at startup (against an empty config) and at
 * every reload: prepare -> commit -> abort, after nginx's ngx_init_cycle.
 * conf_diff() is the only diff: every identity rule (backends by pool and
 * name, an address change as removed + added; listeners by name and bind)
 * lives there. Nothing established is ever closed here. */
#include "reload.h"

#include <arpa/inet.h>
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "../../conf/conf.h"
#include "../../health/backend.h"
#include "../base/log.h"
#include "../core/certs.h"
#include "../core/h2conf.h"
#include "../core/listener.h"
#include "../core/worker.h"
#include "../sources/discover.h"
#include "sysd.h"
#include "../admin/auth.h"
#include "../control/bgwork.h"
#include "../control/overrides.h"
#include "../net/list.h"
#include "../net/tlsclient.h"

/* What prepare built for one new config, so commit cannot fail on I/O and
 * abort knows exactly what to throw away. */
struct plan {
    struct conf *nc;
    struct conf_diff diff;
    struct ssl_ctx_st **tls; /* per listener of nc: its TLS context, until handed over */
    bool tls_ready;          /* tls was built by the caller */
    struct listener **fresh; /* per listener of nc: bound by prepare (LISTENER_ADDED) */
    const char *error;       /* static: why prepare or commit failed */
    char *tls_error;         /* the file:line:col message of a bad certificate, or NULL */
    bool is_reload;          /* log each change (startup applies everything) */
    struct hbuf *changes;    /* the changes as JSON for POST /reload, NULL if unwanted */
};

static size_t listener_index(const struct conf *nc, const struct conf_listener *cl)
{
    return (size_t)(cl - nc->listeners);
}

/* Throws away what prepare built; the new config stays the caller's. */
static void plan_abort(struct plan *pl)
{
    size_t n = pl->nc->num_listeners;
    for (size_t i = 0; pl->fresh && i < n; i++)
        listener_free(pl->fresh[i]); /* closes without accepting: nothing was served */
    if (pl->tls)
        listener_tls_release(pl->tls, n);
    free(pl->fresh);
    free(pl->tls);
    conf_diff_free(&pl->diff);
}

static void log_change(const struct conf_change *ch, struct hbuf *json)
{
    const struct conf_pool *p = ch->new_pool ? ch->new_pool : ch->old_pool;
    const struct conf_backend *b = ch->new_backend ? ch->new_backend : ch->old_backend;
    const struct conf_listener *l = ch->new_listener ? ch->new_listener : ch->old_listener;
    log_info("reload change", "kind=%s pool=%s backend=%s listener=%s",
             conf_change_kind_str(ch->kind), p ? p->name : "-", b ? b->name : "-",
             l ? l->name : "-");
    if (!json)
        return;
    if (json->len)
        hbuf_append_str(json, ",");
    hbuf_printf(json, "{\"kind\":\"%s\",\"pool\":", conf_change_kind_str(ch->kind));
    const char *names[] = {p ? p->name : NULL, b ? b->name : NULL, l ? l->name : NULL};
    const char *keys[] = {"", ",\"backend\":", ",\"listener\":"};
    for (int i = 0; i < 3; i++) {
        hbuf_append_str(json, keys[i]);
        if (names[i])
            log_json_str(json, names[i]);
        else
            hbuf_append_str(json, "null");
    }
    hbuf_append_str(json, "}");
}

static void errors_add(struct conf_errors *e, const char *msg)
{
    if (e->count == e->capacity) {
        size_t cap = e->capacity ? e->capacity * 2 : 4;
        char **m = realloc(e->messages, cap * sizeof(*m));
        if (!m)
            return;
        e->messages = m;
        e->capacity = cap;
    }
    char *dup = strdup(msg);
    if (dup)
        e->messages[e->count++] = dup;
}

static void outcome_error(struct reload_outcome *out, const char *msg)
{
    if (out)
        errors_add(&out->errors, msg);
}

void reload_outcome_free(struct reload_outcome *out)
{
    conf_errors_clear(&out->errors);
    hbuf_free(&out->changes);
}

/* Everything that can fail for a reason other than memory happens here,
 * before anything running is touched. */
static int plan_prepare(struct process *p, const struct conf *old, struct plan *pl)
{
    struct conf *nc = pl->nc;
    size_t n = nc->num_listeners;
    if (!pl->tls)
        pl->tls = calloc(n ? n : 1, sizeof(*pl->tls));
    pl->fresh = calloc(n ? n : 1, sizeof(*pl->fresh));
    if (!pl->tls || !pl->fresh || conf_diff(old, nc, &pl->diff) < 0) {
        pl->error = "out of memory";
        return -1;
    }
    char msg[512];
    if (!pl->tls_ready && listener_tls_prepare(nc, pl->tls, msg, sizeof(msg)) < 0) {
        log_kv(CONF_LOG_ERROR, "config error", LOG_STR("error", msg));
        pl->tls_error = strdup(msg);
        pl->error = "invalid config, running config kept";
        return -1;
    }
    for (size_t i = 0; i < pl->diff.count; i++) {
        const struct conf_change *ch = &pl->diff.changes[i];
        if (ch->kind != CONF_LISTENER_ADDED)
            continue;
        const struct conf_listener *cl = ch->new_listener;
        size_t k = listener_index(nc, cl);
        const char *err = NULL;
        int fd = sysd_claim(&p->inherited, cl->name);
        pl->fresh[k] = worker_listener_open(p->w, cl, fd, pl->tls[k], &err);
        if (!pl->fresh[k]) {
            log_error("listener failed", "name=%s bind=%s reason=\"%s: %s\"", cl->name,
                      cl->bind.text, err, strerror(errno));
            pl->error = "cannot bind a new listener, running config kept";
            return -1;
        }
        pl->tls[k] = NULL; /* the listener owns it now */
    }
    return 0;
}

/* Applies the changes in conf_diff order (pools and backends, then removed
 * listeners, then new ones). Only memory can fail here. */
static int plan_commit(struct process *p, struct plan *pl)
{
    struct worker *w = p->w;
    struct conf *nc = pl->nc;
    int rc = 0;
    for (size_t i = 0; i < pl->diff.count; i++) {
        const struct conf_change *ch = &pl->diff.changes[i];
        if (pl->is_reload)
            log_change(ch, pl->changes);
        if (worker_apply_change(w, nc, ch) < 0)
            rc = -1;
        if (ch->kind == CONF_LISTENER_REMOVED) {
            struct listener *l = worker_find_listener(w, ch->old_listener);
            if (l)
                worker_listener_remove(w, l);
        }
    }
    worker_commit_conf(w, nc);
    /* discovered backends are not in the config, so not in the diff:
     * discovery follows the new generation itself (while the old one,
     * whose pools it may still name, lives) */
    if (discover_configure(p->discover, nc) < 0)
        rc = -1;

    /* kept listeners follow the new generation (split, TLS context) */
    for (struct listener *l = w->listeners; l; l = l->next) {
        if (l->closed || !l->conf)
            continue;
        const struct conf_listener *cl = conf_find_listener(nc, l->name);
        size_t k = listener_index(nc, cl);
        if (worker_listener_configure(w, l, cl, pl->tls[k]) < 0)
            rc = -1;
        pl->tls[k] = NULL;
    }
    for (size_t k = 0; k < nc->num_listeners; k++) {
        struct listener *l = pl->fresh[k];
        if (!l)
            continue;
        pl->fresh[k] = NULL;
        if (listener_configure(l, &nc->listeners[k], w->pools, l->tls_ctx) < 0 ||
            worker_listener_add(w, l) < 0)
            rc = -1;
        log_info("listener started", "name=%s bind=%s protocol=%s", l->name, l->bind_text,
                 conf_protocol_str(l->protocol));
    }
    worker_accept_resume(w);
    listener_tls_release(pl->tls, nc->num_listeners);
    free(pl->tls);
    free(pl->fresh);
    conf_diff_free(&pl->diff);
    pl->tls = NULL;
    pl->fresh = NULL;
    if (rc < 0)
        pl->error = "out of memory: the config was applied in part";
    return rc;
}

int reload_start(struct process *p, struct ssl_ctx_st **tls)
{
    struct conf empty = {0};
    struct plan pl = {.nc = p->w->conf, .tls = tls, .tls_ready = true};
    if (plan_prepare(p, &empty, &pl) < 0)
        plan_abort(&pl);
    else if (plan_commit(p, &pl) == 0)
        return 0;
    log_error("startup failed", "reason=\"%s\"", pl.error);
    return -1;
}

int reload_apply(struct process *p, struct conf *nc, struct ssl_ctx_st **tls,
                 struct reload_outcome *out)
{
    struct worker *w = p->w;
    struct conf *old = w->conf;
    struct plan pl = {.nc = nc,
                      .tls = tls,
                      .tls_ready = true,
                      .is_reload = true,
                      .changes = out ? &out->changes : NULL};
    if (plan_prepare(p, old, &pl) < 0) {
        plan_abort(&pl);
        conf_free(pl.nc);
        outcome_error(out, pl.tls_error ? pl.tls_error : pl.error);
        free(pl.tls_error);
        if (out)
            out->reason = pl.error;
        return -1;
    }
    const char *needs_restart = conf_restart_needed(old, pl.nc);
    if (needs_restart)
        log_warn("reload partial",
                 "key=%s reason=\"changing it needs a restart, the old value stays\"",
                 needs_restart);
    log_info("reload diff", "changes=%zu", pl.diff.count);
    log_configure(pl.nc->log.level, pl.nc->log.format);
    w->generation++;
    int rc = plan_commit(p, &pl);
    conf_free(old);
    /* the token file is re-read at every reload; one that became unreadable
     * keeps the token in force (logged) rather than opening mutations */
    auth_load(p, w->conf, false);
    overrides_apply(p, true);
    if (rc < 0) {
        outcome_error(out, pl.error);
        if (out)
            out->reason = pl.error;
        return -1;
    }
    return 0;
}

/* ---- the front half ---------------------------------------------------------
 * One reload is a run through these phases, each ending in a callback on
 * the control loop, so nothing in between holds the loop:
 *
 *   IDLE --request--> LOADING --load_done--> RESOLVING --> (apply) --> IDLE
 *                      (background thread:      (names;
 *                       conf_load, TLS)          bounded)
 *
 * A request while a run is under way is queued: its caller waits for the
 * next run, which starts as soon as this one ends, and every request queued
 * meanwhile shares it (the file is read once for all of them, after the
 * last of them asked). Each run ends with one log line, `reload done
 * generation=N` or `reload failed reason=...`, and READY=1 to systemd. */

enum reload_phase {
    RELOAD_IDLE = 0,
    RELOAD_LOADING,   /* conf_load and the TLS contexts, on the background thread */
    RELOAD_RESOLVING, /* host names of the new config */
    RELOAD_APPLYING,  /* reload_apply(): synchronous */
};

struct reload_waiter {
    reload_done_cb done;
    void *ctx;
    struct reload_waiter *next;
};

struct names;

/* One run: what the background thread loaded, its names, then the outcome. */
struct reload_run {
    struct process *p; /* NULL once abandoned (process exit): only freed */
    char *path;
    struct reload_loaded loaded;
    struct names *names; /* RELOAD_RESOLVING */
    struct reload_outcome out;
};

struct reloader {
    struct process *p;
    enum reload_phase phase;
    struct reload_run *run;        /* the run under way */
    struct reload_waiter *current; /* answered when it ends */
    struct reload_waiter *next;    /* answered by the run after it */
    bool again;                    /* something was asked for during this run */
    ev_timer kick;                 /* starts that next run from a fresh callback */
};

static const char why_invalid[] = "invalid config, running config kept";
static const char why_draining[] = "draining";
static const char why_nomem[] = "out of memory";
static const char why_stopping[] = "usher is stopping";
static const char why_unresolved[] = "cannot resolve a host name, running config kept";

static void tls_error(void *arg, const char *msg)
{
    errors_add(arg, msg);
}

/* The TLS side of a loaded config, read on the background thread and read
 * again at every reload, so files replaced in place are picked up:
 *  - each TLS listener's certificate set (proxy/core/certs.h), handed on
 *    as l->tls[i], its default context, which carries the whole set (the
 *    handshake picks the certificate by SNI; strict_sni refuses);
 *  - each pool's client context (pools[].tls: the CA, the client
 *    certificate and key), built to check it. It is not handed on yet:
 *    health checks build their own from the pool's conf until the data
 *    plane takes these (backend_tls_set(), health/backend.h).
 * Every problem is an error at its key's position. Returns 0 or -1. */
static int tls_load(struct reload_loaded *l)
{
    const struct conf *nc = l->nc;
    size_t before = l->errs.count;
    for (size_t i = 0; i < nc->num_listeners; i++) {
        const struct conf_listener *cl = &nc->listeners[i];
        if (!cl->tls.enabled)
            continue;
        /* ALPN: h2 then http/1.1 on an http listener with HTTP/2, http/1.1
         * alone with http2: false, none for tcp (as listener_tls_prepare) */
        enum tls_alpn alpn = cl->protocol != CONF_PROTO_HTTP ? TLS_ALPN_NONE
                             : h2_enabled(cl)                ? TLS_ALPN_H2_HTTP11
                                                             : TLS_ALPN_HTTP11;
        struct cert_set_params prm = {.alpn = tls_alpn_wire(alpn)};
        struct cert_set *set = NULL;
        if (cert_set_build(nc, i, &prm, &set, tls_error, &l->errs) == 0)
            l->tls[i] = cert_set_ctx(set); /* the set's reference */
    }
    for (size_t i = 0; i < nc->num_pools; i++) {
        const struct conf_pool *cp = &nc->pools[i];
        if (!cp->tls.enabled)
            continue;
        struct tlsc_params prm;
        backend_tls_params(&cp->tls, cp->protocol, &prm);
        char err[768], msg[1024];
        struct tlsc_ctx *c = tlsc_ctx_new(&prm, err, sizeof(err));
        if (!c) {
            snprintf(msg, sizeof(msg), "%s:%u:%u: pools[%zu].tls: %s", nc->path, cp->pos.line,
                     cp->pos.column, i, err);
            errors_add(&l->errs, msg);
        }
        tlsc_ctx_free(c);
    }
    return l->errs.count > before ? -1 : 0;
}

int reload_load(const char *path, unsigned conf_flags, struct reload_loaded *l)
{
    memset(l, 0, sizeof(*l));
    l->nc = conf_load_flags(path, conf_flags, &l->errs);
    if (!l->nc) {
        if (l->errs.count == 0) {
            char msg[512];
            snprintf(msg, sizeof(msg), "%s: cannot load configuration", path);
            errors_add(&l->errs, msg);
        }
        return -1;
    }
    char msg[512];
    l->tls = calloc(l->nc->num_listeners + 1, sizeof(*l->tls));
    if (!l->tls) {
        snprintf(msg, sizeof(msg), "%s: out of memory", path);
        errors_add(&l->errs, msg);
    } else if (tls_load(l) == 0) {
        return 0;
    }
    /* a bad certificate is a config error like any other */
    if (l->tls)
        listener_tls_release(l->tls, l->nc->num_listeners);
    free(l->tls);
    l->tls = NULL;
    conf_free(l->nc);
    l->nc = NULL;
    return -1;
}

void reload_loaded_free(struct reload_loaded *l)
{
    if (l->tls && l->nc)
        listener_tls_release(l->tls, l->nc->num_listeners);
    free(l->tls);
    l->tls = NULL;
    conf_free(l->nc);
    l->nc = NULL;
    conf_errors_clear(&l->errs);
}

/* ---- host names ---------------------------------------------------------------
 * A config loaded with CONF_LOAD_DEFER_RESOLVE lists the addresses that hold
 * a host name (conf.unresolved). They are resolved on the control loop with
 * c-ares, configured as discovery is (discover_names_start), every distinct
 * name once, the whole of it within DISCOVER_NAMES_TIMEOUT_MS: first the
 * names of resolver.nameservers themselves (with /etc/resolv.conf: they are
 * what resolves the rest), then all the others. A name that does not
 * resolve in time keeps the address the running config has for the same
 * thing with the same text (a backend: same pool, name and address text;
 * a listener: same name and bind; admin.bind, a nameserver, an etcd
 * endpoint: the same text), logged `address kept`, and for a backend shown
 * in /status as its resolve_error. One with no such address (new, or its
 * text changed) is a config error at its file:line:column. */

/* Distinct names of a step, each with its index in the batch. */
struct name_set {
    const char **hosts; /* owned by the conf */
    size_t n;
    size_t *slots; /* host index + 1, 0 empty */
    size_t mask;
};

struct names {
    struct conf *nc;        /* being filled in */
    const struct conf *old; /* the config in force; NULL at startup */
    struct ev_loop *loop;
    ev_tstamp deadline; /* of the whole resolution */
    int step;           /* 0: the nameservers' names, 1: the others */
    struct name_set set;
    size_t *host_of; /* per conf.unresolved entry of the step: index in set, or -1 */
    struct discover_names *batch;
    struct conf_errors errs;
    struct discover_resolve_error *kept; /* backends that kept their address */
    size_t num_kept, cap_kept;
    /* the running config's backends by (pool, name), built at the first
     * name that does not resolve */
    const struct conf_backend **old_ix;
    size_t old_mask;
    bool old_ix_built;
    ev_timer finish;         /* calls <done> from a callback of its own */
    void (*done)(void *ctx); /* the resolution ended (errs says how) */
    void *ctx;
};

static size_t str_hash(const char *a, const char *b)
{
    uint64_t h = 1469598103934665603ull;
    for (const char *s = a; s && *s; s++)
        h = (h ^ (unsigned char)*s) * 1099511628211ull;
    h = (h ^ 0xff) * 1099511628211ull;
    for (const char *s = b; s && *s; s++)
        h = (h ^ (unsigned char)*s) * 1099511628211ull;
    return (size_t)h;
}

static bool is_nameserver(const struct conf *nc, const struct conf_address *a)
{
    return a >= nc->resolver.nameservers &&
           a < nc->resolver.nameservers + nc->resolver.num_nameservers;
}

/* The entries of the step, and their distinct names. */
static int names_collect(struct names *nm)
{
    const struct conf *nc = nm->nc;
    size_t cap = 4;
    while (cap < 2 * (nc->num_unresolved + 1))
        cap *= 2;
    nm->set = (struct name_set){.hosts = calloc(nc->num_unresolved + 1, sizeof(char *)),
                                .slots = calloc(cap, sizeof(size_t)),
                                .mask = cap - 1};
    nm->host_of = calloc(nc->num_unresolved + 1, sizeof(size_t));
    if (!nm->set.hosts || !nm->set.slots || !nm->host_of)
        return -1;
    for (size_t i = 0; i < nc->num_unresolved; i++) {
        const struct conf_address *a = nc->unresolved[i].address;
        nm->host_of[i] = (size_t)-1;
        if (conf_address_resolved(a) || is_nameserver(nc, a) != (nm->step == 0))
            continue;
        size_t k = str_hash(a->host, NULL) & nm->set.mask;
        while (nm->set.slots[k] && strcmp(nm->set.hosts[nm->set.slots[k] - 1], a->host) != 0)
            k = (k + 1) & nm->set.mask;
        if (!nm->set.slots[k]) {
            nm->set.hosts[nm->set.n] = a->host;
            nm->set.slots[k] = ++nm->set.n;
        }
        nm->host_of[i] = nm->set.slots[k] - 1;
    }
    return 0;
}

static void names_step_free(struct names *nm)
{
    discover_names_free(nm->batch);
    nm->batch = NULL;
    free(nm->set.hosts);
    free(nm->set.slots);
    free(nm->host_of);
    nm->set = (struct name_set){0};
    nm->host_of = NULL;
}

static void names_free(struct names *nm)
{
    if (!nm)
        return;
    ev_timer_stop(nm->loop, &nm->finish);
    names_step_free(nm);
    conf_errors_clear(&nm->errs);
    free(nm->kept);
    free(nm->old_ix);
    free(nm);
}

static void old_ix_build(struct names *nm)
{
    const struct conf *old = nm->old;
    size_t n = 0, cap = 4;
    nm->old_ix_built = true;
    for (size_t i = 0; old && i < old->num_pools; i++)
        n += old->pools[i].num_backends;
    while (cap < 2 * (n + 1))
        cap *= 2;
    nm->old_ix = calloc(cap, sizeof(*nm->old_ix));
    if (!nm->old_ix)
        return; /* no fallback: the names that failed are errors */
    nm->old_mask = cap - 1;
    for (size_t i = 0; old && i < old->num_pools; i++)
        for (size_t j = 0; j < old->pools[i].num_backends; j++) {
            const struct conf_backend *b = &old->pools[i].backends[j];
            size_t k = str_hash(old->pools[i].name, b->name) & nm->old_mask;
            while (nm->old_ix[k])
                k = (k + 1) & nm->old_mask;
            nm->old_ix[k] = b;
        }
}

/* The old backend <pool>/<name>, or NULL. Backends carry no pool name, so
 * the pool is checked by address: the one whose array holds it. */
static const struct conf_backend *old_backend(struct names *nm, const char *pool, const char *name)
{
    if (!nm->old_ix_built)
        old_ix_build(nm);
    if (!nm->old_ix)
        return NULL;
    const struct conf_pool *op = conf_find_pool(nm->old, pool);
    if (!op)
        return NULL;
    for (size_t k = str_hash(pool, name) & nm->old_mask; nm->old_ix[k];
         k = (k + 1) & nm->old_mask) {
        const struct conf_backend *b = nm->old_ix[k];
        if (b >= op->backends && b < op->backends + op->num_backends && strcmp(b->name, name) == 0)
            return b;
    }
    return NULL;
}

static const struct conf_address *same_text(const struct conf_address *list, size_t n,
                                            const char *text)
{
    for (size_t i = 0; i < n; i++)
        if (list[i].text && strcmp(list[i].text, text) == 0)
            return &list[i];
    return NULL;
}

/* What the running config resolved the same thing with the same text to,
 * or NULL. A backend sets *<pool>, *<backend>. */
static const struct conf_address *previous(struct names *nm, const struct conf_unresolved *u,
                                           const char **pool, const char **backend)
{
    const struct conf *nc = nm->nc, *old = nm->old;
    const struct conf_address *a = u->address, *prev = NULL;
    size_t i, j;
    int end = 0;
    if (!old)
        return NULL;
    if (sscanf(u->key, "pools[%zu].backends[%zu].address%n", &i, &j, &end) == 2 &&
        u->key[end] == '\0' && i < nc->num_pools && j < nc->pools[i].num_backends &&
        &nc->pools[i].backends[j].address == a) {
        *pool = nc->pools[i].name;
        *backend = nc->pools[i].backends[j].name;
        const struct conf_backend *ob = old_backend(nm, *pool, *backend);
        prev = ob ? &ob->address : NULL;
    } else if (sscanf(u->key, "listeners[%zu].bind%n", &i, &end) == 1 && u->key[end] == '\0' &&
               i < nc->num_listeners) {
        const struct conf_listener *ol = conf_find_listener(old, nc->listeners[i].name);
        prev = ol ? &ol->bind : NULL;
    } else if (a == &nc->admin.bind) {
        prev = old->admin.enabled ? &old->admin.bind : NULL;
    } else if (is_nameserver(nc, a)) {
        prev = same_text(old->resolver.nameservers, old->resolver.num_nameservers, a->text);
    } else if (a >= nc->fleet.etcd && a < nc->fleet.etcd + nc->fleet.num_etcd) {
        prev = same_text(old->fleet.etcd, old->fleet.num_etcd, a->text);
    }
    if (!prev || !prev->text || strcmp(prev->text, a->text) != 0 || !conf_address_resolved(prev))
        return NULL;
    return prev;
}

static void keep(struct names *nm, const char *pool, const char *backend, const char *why)
{
    if (nm->num_kept == nm->cap_kept) {
        size_t cap = nm->cap_kept ? nm->cap_kept * 2 : 16;
        struct discover_resolve_error *k = realloc(nm->kept, cap * sizeof(*k));
        if (!k)
            return; /* /status shows null for it: the log line still tells */
        nm->kept = k;
        nm->cap_kept = cap;
    }
    nm->kept[nm->num_kept++] = (struct discover_resolve_error){pool, backend, why};
}

/* Fills the step's addresses from the batch: the answer, else the address
 * the running config has, else an error. */
static void names_fill(struct names *nm)
{
    struct conf *nc = nm->nc;
    for (size_t i = 0; i < nc->num_unresolved; i++) {
        if (nm->host_of[i] == (size_t)-1)
            continue;
        const struct conf_unresolved *u = &nc->unresolved[i];
        struct sockaddr_storage sa;
        socklen_t len = 0;
        const char *why = "out of memory";
        if (nm->batch && discover_names_result(nm->batch, nm->host_of[i], &sa, &len, &why) == 0 &&
            conf_address_fill(u->address, (const struct sockaddr *)&sa, len) == 0)
            continue;
        const char *pool = NULL, *backend = NULL;
        const struct conf_address *prev = previous(nm, u, &pool, &backend);
        if (prev &&
            conf_address_fill(u->address, (const struct sockaddr *)&prev->sa, prev->sa_len) == 0) {
            char ip[INET6_ADDRSTRLEN + 8] = "?";
            const void *in =
                prev->sa.ss_family == AF_INET6
                    ? (const void *)&((const struct sockaddr_in6 *)&prev->sa)->sin6_addr
                    : (const void *)&((const struct sockaddr_in *)&prev->sa)->sin_addr;
            inet_ntop(prev->sa.ss_family, in, ip, sizeof(ip));
            log_kv(CONF_LOG_WARN, "address kept", LOG_STR("key", u->key), LOG_STR("pool", pool),
                   LOG_STR("backend", backend), LOG_STR("address", u->address->text),
                   LOG_STR("resolved", ip), LOG_STR("reason", why));
            if (backend)
                keep(nm, pool, backend, why);
            continue;
        }
        char reason[160];
        snprintf(reason, sizeof(reason), "cannot resolve host (%s)", why);
        conf_unresolved_error(nc, u, reason, &nm->errs);
    }
}

static void names_step(struct names *nm);

static void names_batch_done(void *ctx)
{
    struct names *nm = ctx;
    names_fill(nm);
    names_step_free(nm);
    nm->step++;
    names_step(nm);
}

/* Starts the current step, or ends the resolution (nm->done) when there is
 * nothing left to resolve or it already failed. */
static void names_step(struct names *nm)
{
    for (; nm->step < 2 && nm->errs.count == 0; nm->step++) {
        if (names_collect(nm) < 0) {
            errors_add(&nm->errs, why_nomem);
            break;
        }
        if (nm->set.n == 0) {
            names_step_free(nm);
            continue;
        }
        double left = nm->deadline - ev_time();
        conf_ms ms = left > 0 ? (conf_ms)(left * 1000.0) : 0;
        const char *why = NULL;
        nm->batch = discover_names_start(nm->loop, nm->nc, nm->step == 0, nm->set.hosts, nm->set.n,
                                         ms, names_batch_done, nm, &why);
        if (nm->batch)
            return; /* names_batch_done goes on */
        /* no resolver at all: every name of the step is as good as timed
         * out (the running addresses stay) */
        log_kv(CONF_LOG_ERROR, "resolver failed", LOG_STR("error", why));
        names_fill(nm);
        names_step_free(nm);
    }
    names_step_free(nm);
    if (nm->errs.count == 0)
        conf_check_resolved(nm->nc, &nm->errs); /* binds that collide once resolved */
    ev_timer_start(nm->loop, &nm->finish);
}

static void names_finish_cb(struct ev_loop *loop, ev_timer *t, int revents)
{
    struct names *nm = container_of(t, struct names, finish);
    nm->done(nm->ctx);
}

/* Resolves <nc>'s names on <loop> against the config in force <old> (NULL:
 * none, every name is new); <done>(<ctx>) follows on the loop, never from
 * inside this call, then nm->errs says what failed. NULL out of memory. */
static struct names *names_start(struct conf *nc, const struct conf *old, struct ev_loop *loop,
                                 void (*done)(void *ctx), void *ctx)
{
    struct names *nm = calloc(1, sizeof(*nm));
    if (!nm)
        return NULL;
    nm->nc = nc;
    nm->old = old;
    nm->loop = loop;
    nm->deadline = ev_time() + DISCOVER_NAMES_TIMEOUT_MS / 1000.0;
    nm->done = done;
    nm->ctx = ctx;
    ev_timer_init(&nm->finish, names_finish_cb, 0., 0.);
    names_step(nm);
    return nm;
}

/* Startup: nothing is served yet, so the loop may wait here. */
static void startup_done(void *ctx)
{
    *(bool *)ctx = true;
}

int reload_resolve_startup(struct reload_loaded *l)
{
    struct ev_loop *loop = ev_loop_new(EVFLAG_AUTO);
    bool done = false;
    struct names *nm = loop ? names_start(l->nc, NULL, loop, startup_done, &done) : NULL;
    if (!nm) {
        errors_add(&l->errs, why_nomem);
    } else {
        while (!done)
            ev_run(loop, EVRUN_ONCE);
        for (size_t i = 0; i < nm->errs.count; i++)
            errors_add(&l->errs, nm->errs.messages[i]);
        names_free(nm);
    }
    if (loop)
        ev_loop_destroy(loop);
    if (l->errs.count == 0)
        return 0;
    if (l->tls && l->nc)
        listener_tls_release(l->tls, l->nc->num_listeners);
    free(l->tls);
    l->tls = NULL;
    conf_free(l->nc);
    l->nc = NULL;
    return -1;
}

/* The background thread: everything that blocks. */
static void load_run(void *arg)
{
    struct reload_run *r = arg;
    /* names are the control loop's to resolve, with c-ares: a blocking
     * getaddrinfo here would hold up every job queued behind it */
    reload_load(r->path, CONF_LOAD_DEFER_RESOLVE, &r->loaded);
}

static void run_free(struct reload_run *r)
{
    names_free(r->names);
    reload_loaded_free(&r->loaded);
    reload_outcome_free(&r->out);
    free(r->path);
    free(r);
}

/* Calls and frees every waiter of <list>; with <out> NULL (process exit)
 * only frees them. */
static void answer_all(struct reload_waiter *list, int rc, const struct reload_outcome *out)
{
    while (list) {
        struct reload_waiter *w = list;
        list = w->next;
        if (w->done && out)
            w->done(w->ctx, rc, out);
        free(w);
    }
}

/* Ends the run under way with <rc>: one log line, READY=1, the answers.
 * The run asked for meanwhile starts from the kick timer, not from here:
 * no run ever starts inside another's callbacks. */
static void run_end(struct process *p, int rc)
{
    struct reloader *rl = p->reloader;
    struct reload_run *r = rl->run;
    unsigned long long gen = (unsigned long long)p->w->generation;
    if (rc == 0) {
        p->reloads_ok++;
        log_info("reload done", "generation=%llu", gen);
    } else {
        p->reloads_error++;
        if (!r->out.reason)
            r->out.reason = why_invalid;
        if (r->out.errors.count == 0)
            outcome_error(&r->out, r->out.reason);
        log_error("reload failed", "reason=\"%s\" generation=%llu", r->out.reason, gen);
    }
    sysd_notify("READY=1\nSTATUS=%s, generation %llu", rc == 0 ? "reloaded" : "reload failed", gen);
    struct reload_waiter *answer = rl->current;
    rl->run = NULL;
    rl->current = rl->next;
    rl->next = NULL;
    rl->phase = RELOAD_IDLE;
    if (rl->again) {
        rl->again = false;
        ev_timer_start(p->loop, &rl->kick);
    }
    answer_all(answer, rc, &r->out);
    run_free(r);
}

/* The loaded config goes in (or not): the last, synchronous step. */
static void run_apply(struct process *p)
{
    struct reloader *rl = p->reloader;
    struct reload_run *r = rl->run;
    if (p->w->state >= WORKER_DRAIN_DELAY) {
        r->out.reason = why_draining;
        run_end(p, -1);
        return;
    }
    rl->phase = RELOAD_APPLYING;
    struct conf *nc = r->loaded.nc;
    struct ssl_ctx_st **tls = r->loaded.tls;
    r->loaded.nc = NULL; /* both pass to reload_apply */
    r->loaded.tls = NULL;
    int rc = reload_apply(p, nc, tls, &r->out);
    /* /status: the backends that kept their address, from this run on */
    if (rc == 0 && discover_set_resolve_errors(p->discover, r->names->kept, r->names->num_kept) < 0)
        log_kv(CONF_LOG_WARN, "resolve errors not shown", LOG_STR("reason", why_nomem));
    run_end(p, rc);
}

/* The names are resolved (or kept, or not): errors fail the run. */
static void names_done(void *arg)
{
    struct reload_run *r = arg;
    struct process *p = r->p;
    struct names *nm = r->names;
    if (nm->errs.count) {
        for (size_t i = 0; i < nm->errs.count; i++) {
            log_kv(CONF_LOG_ERROR, "config error", LOG_STR("error", nm->errs.messages[i]));
            outcome_error(&r->out, nm->errs.messages[i]);
        }
        r->out.reason = why_unresolved;
        run_end(p, -1);
        return;
    }
    run_apply(p);
}

/* The control loop, once the background thread loaded the file. */
static void load_done(void *arg)
{
    struct reload_run *r = arg;
    struct process *p = r->p;
    if (!p) {
        run_free(r); /* abandoned at exit */
        return;
    }
    if (!r->loaded.nc) {
        for (size_t i = 0; i < r->loaded.errs.count; i++) {
            log_kv(CONF_LOG_ERROR, "config error", LOG_STR("error", r->loaded.errs.messages[i]));
            outcome_error(&r->out, r->loaded.errs.messages[i]);
        }
        r->out.reason = why_invalid;
        run_end(p, -1);
        return;
    }
    p->reloader->phase = RELOAD_RESOLVING;
    r->names = names_start(r->loaded.nc, p->w->conf, p->loop, names_done, r);
    if (!r->names) {
        r->out.reason = why_nomem;
        run_end(p, -1);
    }
}

static void run_start(struct process *p)
{
    struct reloader *rl = p->reloader;
    struct reload_run *r = calloc(1, sizeof(*r));
    if (!r) {
        struct reload_outcome o = {.reason = why_nomem};
        struct reload_waiter *answer = rl->current;
        rl->current = NULL;
        outcome_error(&o, why_nomem);
        p->reloads_error++;
        log_error("reload failed", "reason=\"%s\" generation=%llu", why_nomem,
                  (unsigned long long)p->w->generation);
        answer_all(answer, -1, &o);
        reload_outcome_free(&o);
        return;
    }
    r->p = p;
    rl->run = r;
    rl->phase = RELOAD_LOADING;
    const struct conf *old = p->w->conf;
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    sysd_notify("RELOADING=1\nMONOTONIC_USEC=%llu",
                (unsigned long long)ts.tv_sec * 1000000ull + (unsigned long long)ts.tv_nsec / 1000);
    log_info("reload started", "file=%s generation=%llu", old->path,
             (unsigned long long)p->w->generation);
    if (p->w->state >= WORKER_DRAIN_DELAY) {
        r->out.reason = why_draining;
        run_end(p, -1);
        return;
    }
    r->path = strdup(old->path);
    if (!r->path || bgwork_submit(p->bg, load_run, load_done, r) < 0) {
        r->out.reason = why_nomem;
        run_end(p, -1);
    }
}

static void kick_cb(struct ev_loop *loop, ev_timer *t, int revents)
{
    struct reloader *rl = container_of(t, struct reloader, kick);
    /* a request since run_end may have started one already: it serves
     * those waiters too, as it began after they asked */
    if (rl->phase == RELOAD_IDLE && rl->current)
        run_start(rl->p);
}

int reload_init(struct process *p)
{
    struct reloader *rl = calloc(1, sizeof(*rl));
    if (!rl)
        return -1;
    rl->p = p;
    ev_timer_init(&rl->kick, kick_cb, 0., 0.);
    p->reloader = rl;
    p->reload = reload_request;
    p->reload_cancel = reload_cancel;
    return 0;
}

int reload_request(struct process *p, reload_done_cb done, void *ctx)
{
    struct reloader *rl = p->reloader;
    struct reload_waiter *w = calloc(1, sizeof(*w));
    if (!rl || !w) {
        free(w);
        return -1;
    }
    w->done = done;
    w->ctx = ctx;
    if (rl->phase != RELOAD_IDLE) {
        /* the file may have been read before the caller changed it: the
         * next run answers, one for every request made meanwhile */
        w->next = rl->next;
        rl->next = w;
        if (!rl->again)
            log_info("reload queued", "generation=%llu", (unsigned long long)p->w->generation);
        rl->again = true;
        return 0;
    }
    w->next = rl->current;
    rl->current = w;
    ev_timer_stop(p->loop, &rl->kick); /* this run serves what the kick would have */
    run_start(p);
    return 0;
}

static bool forget(struct reload_waiter **list, void *ctx)
{
    for (struct reload_waiter **pp = list; *pp; pp = &(*pp)->next)
        if ((*pp)->ctx == ctx) {
            struct reload_waiter *w = *pp;
            *pp = w->next;
            free(w);
            return true;
        }
    return false;
}

void reload_cancel(struct process *p, void *ctx)
{
    struct reloader *rl = p->reloader;
    if (rl && !forget(&rl->current, ctx))
        forget(&rl->next, ctx);
}

void reload_stop(struct process *p)
{
    struct reloader *rl = p->reloader;
    if (!rl)
        return;
    ev_timer_stop(p->loop, &rl->kick);
    if (rl->run || rl->current || rl->next) {
        /* whoever waits hears that it never happened (the admin listener
         * sends what it can before it closes) */
        struct reload_outcome o = {.reason = why_stopping};
        outcome_error(&o, why_stopping);
        log_error("reload failed", "reason=\"%s\" generation=%llu", why_stopping,
                  (unsigned long long)p->w->generation);
        struct reload_waiter *current = rl->current, *next = rl->next;
        rl->current = rl->next = NULL;
        answer_all(current, -1, &o);
        answer_all(next, -1, &o);
        reload_outcome_free(&o);
    }
    if (rl->run) {
        if (rl->phase == RELOAD_LOADING)
            rl->run->p = NULL; /* its job frees it when it is done */
        else
            run_free(rl->run);
    }
    free(rl);
    p->reloader = NULL;
}
