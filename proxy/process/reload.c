/* One path applies a config, at startup (against an empty config) and at
 * every reload: prepare -> commit -> abort, after nginx's ngx_init_cycle.
 * conf_diff() is the only diff: every identity rule (backends by pool and
 * name, an address change as removed + added; listeners by name and bind)
 * lives there. Nothing established is ever closed here. */
#include "reload.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "../../conf/conf.h"
#include "../base/log.h"
#include "../core/listener.h"
#include "../core/worker.h"
#include "../sources/discover.h"
#include "sysd.h"
#include "../admin/auth.h"
#include "../control/bgwork.h"
#include "../control/overrides.h"
#include "../net/list.h"

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

/* One run: what the background thread loaded, then the outcome. */
struct reload_run {
    struct process *p; /* NULL once abandoned (process exit): only freed */
    char *path;
    struct reload_loaded loaded;
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

int reload_load(const char *path, struct reload_loaded *l)
{
    memset(l, 0, sizeof(*l));
    l->nc = conf_load(path, &l->errs);
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
    if (!l->tls)
        snprintf(msg, sizeof(msg), "%s: out of memory", path);
    else if (listener_tls_prepare(l->nc, l->tls, msg, sizeof(msg)) == 0)
        return 0;
    /* a bad certificate is a config error like any other */
    errors_add(&l->errs, msg);
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

/* The background thread: everything that blocks. */
static void load_run(void *arg)
{
    struct reload_run *r = arg;
    reload_load(r->path, &r->loaded);
}

static void run_free(struct reload_run *r)
{
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
    run_end(p, reload_apply(p, nc, tls, &r->out));
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
    run_apply(p);
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
