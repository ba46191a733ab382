/* In-process reload: parse and validate the whole new file first, bind what
 * is new, then swap the config and apply the difference in place. Nothing
 * established is ever closed here. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "../conf/conf.h"
#include "client.h"
#include "lifecycle.h"
#include "list.h"
#include "listener.h"
#include "log.h"
#include "worker.h"

/* A listener is kept by a reload when its name and bind address stay: the
 * same rule conf_diff applies (a bind written differently but resolving to
 * the same address keeps its socket). l->conf is still the old generation. */
static bool same_listener(const struct listener *l, const struct conf_listener *cl)
{
    return !l->closed && strcmp(l->name, cl->name) == 0 &&
           conf_address_same(&l->conf->bind, &cl->bind);
}

static struct listener *find_listener(struct worker *w, const struct conf_listener *cl)
{
    for (struct listener *l = w->listeners; l; l = l->next)
        if (same_listener(l, cl))
            return l;
    return NULL;
}

static void log_changes(const struct conf *old, const struct conf *nc)
{
    struct conf_diff d = {0};
    if (conf_diff(old, nc, &d) < 0)
        return;
    for (size_t i = 0; i < d.count; i++) {
        const struct conf_change *ch = &d.changes[i];
        const struct conf_pool *p = ch->new_pool ? ch->new_pool : ch->old_pool;
        const struct conf_backend *b = ch->new_backend ? ch->new_backend : ch->old_backend;
        const struct conf_listener *l = ch->new_listener ? ch->new_listener : ch->old_listener;
        log_info("reload change", "kind=%s pool=%s backend=%s listener=%s",
                 conf_change_kind_str(ch->kind), p ? p->name : "-", b ? b->name : "-",
                 l ? l->name : "-");
    }
    log_info("reload diff", "changes=%zu", d.count);
    conf_diff_free(&d);
}

/* Drops listeners that were removed earlier and have no connection left. */
static void reap_listeners(struct worker *w)
{
    struct listener **pp = &w->listeners;
    while (*pp) {
        struct listener *l = *pp;
        if (l->closed && l->connections == 0) {
            *pp = l->next;
            listener_free(l);
        } else {
            pp = &l->next;
        }
    }
}

static void reload_failed(struct worker *w, const char *why)
{
    w->stats.reloads_error++;
    log_error("reload failed", "reason=\"%s\" generation=%llu", why,
              (unsigned long long)w->generation);
}

int lifecycle_reload(struct worker *w)
{
    struct conf_errors errs = {0};
    log_info("reload started", "file=%s generation=%llu", w->conf->path,
             (unsigned long long)w->generation);
    struct conf *nc = conf_load(w->conf->path, &errs);
    if (!nc) {
        for (size_t i = 0; i < errs.count; i++)
            log_kv(CONF_LOG_ERROR, "config error", LOG_STR("error", errs.messages[i]));
        conf_errors_clear(&errs);
        reload_failed(w, "invalid config, running config kept");
        return -1;
    }

    char tls_err[512];
    if (listener_check_tls(nc, tls_err, sizeof(tls_err)) < 0) {
        log_kv(CONF_LOG_ERROR, "config error", LOG_STR("error", tls_err));
        conf_free(nc);
        reload_failed(w, "invalid config, running config kept");
        return -1;
    }

    /* bind new listeners before committing: a port in use fails the reload
     * as a whole, with the old config still serving */
    struct listener *fresh = NULL, **tail = &fresh;
    for (size_t i = 0; i < nc->num_listeners; i++) {
        const struct conf_listener *cl = &nc->listeners[i];
        if (find_listener(w, cl))
            continue;
        const char *err = NULL;
        struct listener *l = listener_open(w, cl, &err);
        if (!l) {
            log_error("listener failed", "name=%s bind=%s reason=\"%s: %s\"", cl->name,
                      cl->bind.text, err, strerror(errno));
            while (fresh) {
                struct listener *next = fresh->next;
                listener_free(fresh);
                fresh = next;
            }
            conf_free(nc);
            reload_failed(w, "cannot bind a new listener, running config kept");
            return -1;
        }
        *tail = l;
        tail = &l->next;
    }

    struct conf *old = w->conf;
    const char *needs_restart = conf_restart_needed(old, nc);
    if (needs_restart)
        log_warn("reload partial",
                 "key=%s reason=\"changing it needs a restart, the old value stays\"",
                 needs_restart);
    log_changes(old, nc);
    w->conf = nc;
    w->generation++;
    log_configure(nc->log.level, nc->log.format);
    worker_apply_limits(w, nc);
    if (worker_sync_pools(w, nc) < 0)
        log_error("reload incomplete", "reason=\"out of memory\"");

    for (struct listener *l = w->listeners; l; l = l->next) {
        if (l->closed)
            continue;
        const struct conf_listener *cl = NULL;
        for (size_t i = 0; i < nc->num_listeners && !cl; i++)
            if (same_listener(l, &nc->listeners[i]))
                cl = &nc->listeners[i];
        if (cl) {
            listener_configure(l, cl);
            continue;
        }
        /* removed: stop accepting; its connections drain like in the
         * process drain (idle ones now, busy ones after their response) */
        log_info("listener removed", "name=%s bind=%s connections=%u", l->name, l->bind_text,
                 l->connections);
        listener_close(l);
        l->conf = NULL;
        struct list *pos, *tmp;
        list_for_each_safe (pos, tmp, &w->clients) {
            struct client *c = container_of(pos, struct client, link);
            if (c->listener == l)
                client_shutdown_idle(c);
        }
    }
    /* fresh listeners: re-point their splits now that pools are synced */
    for (struct listener *l = fresh; l; l = l->next) {
        listener_configure(l, l->conf);
        log_info("listener started", "name=%s bind=%s protocol=%s", l->name, l->bind_text,
                 conf_protocol_str(l->protocol));
    }
    *tail = NULL;
    struct listener **end = &w->listeners;
    while (*end)
        end = &(*end)->next;
    *end = fresh;
    reap_listeners(w);
    if (!w->accept_limited)
        worker_accept_resume(w);

    conf_free(old);
    w->stats.reloads_ok++;
    log_info("reload done", "generation=%llu", (unsigned long long)w->generation);
    return 0;
}
