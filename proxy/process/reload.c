/* One path applies a config, at startup (against an empty config) and at
 * every reload: prepare -> commit -> abort, after nginx's ngx_init_cycle.
 * conf_diff() is the only diff: every identity rule (backends by pool and
 * name, an address change as removed + added; listeners by name and bind)
 * lives there. Nothing established is ever closed here. */
#include "reload.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "../../conf/conf.h"
#include "../base/log.h"
#include "../core/listener.h"
#include "../core/worker.h"
#include "../sources/discover.h"
#include "sysd.h"
#include "../admin/auth.h"
#include "../control/overrides.h"

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

static void outcome_error(struct reload_outcome *out, const char *msg)
{
    if (!out)
        return;
    struct conf_errors *e = &out->errors;
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

static void reload_failed(struct process *p, const char *why)
{
    p->reloads_error++;
    log_error("reload failed", "reason=\"%s\" generation=%llu", why,
              (unsigned long long)p->w->generation);
}

int reload_run(struct process *p, struct reload_outcome *out)
{
    struct worker *w = p->w;
    struct conf *old = w->conf;
    struct conf_errors errs = {0};
    log_info("reload started", "file=%s generation=%llu", old->path,
             (unsigned long long)w->generation);
    struct plan pl = {.nc = conf_load(old->path, &errs),
                      .is_reload = true,
                      .changes = out ? &out->changes : NULL};
    if (!pl.nc) {
        for (size_t i = 0; i < errs.count; i++) {
            log_kv(CONF_LOG_ERROR, "config error", LOG_STR("error", errs.messages[i]));
            outcome_error(out, errs.messages[i]);
        }
        if (errs.count == 0)
            outcome_error(out, "cannot load the configuration");
        conf_errors_clear(&errs);
        reload_failed(p, "invalid config, running config kept");
        return -1;
    }
    if (plan_prepare(p, old, &pl) < 0) {
        plan_abort(&pl);
        conf_free(pl.nc);
        outcome_error(out, pl.tls_error ? pl.tls_error : pl.error);
        free(pl.tls_error);
        reload_failed(p, pl.error);
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
        reload_failed(p, pl.error);
        return -1;
    }
    p->reloads_ok++;
    log_info("reload done", "generation=%llu", (unsigned long long)w->generation);
    return 0;
}
