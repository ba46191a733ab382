/* What a reload changes: the difference between two validated configs.
 * A pure function of its inputs; the order of the changes is documented with
 * enum conf_change_kind. */
#include "conf.h"

#include <stdlib.h>
#include <string.h>

struct builder {
    struct conf_diff *out;
    size_t cap;
    bool oom;
};

static void push(struct builder *b, struct conf_change ch)
{
    if (b->oom)
        return;
    if (b->out->count == b->cap) {
        size_t cap = b->cap ? b->cap * 2 : 16;
        struct conf_change *c = realloc(b->out->changes, cap * sizeof(*c));
        if (!c) {
            b->oom = true;
            return;
        }
        b->out->changes = c;
        b->cap = cap;
    }
    b->out->changes[b->out->count++] = ch;
}

static bool str_equal(const char *a, const char *b)
{
    if (!a || !b)
        return a == b;
    return strcmp(a, b) == 0;
}

/* A backend's address: the text (health checks use its host name) and what
 * it resolved to (a DNS change on reload moves the traffic). */
static bool backend_address_equal(const struct conf_address *a, const struct conf_address *b)
{
    return str_equal(a->text, b->text) && conf_address_same(a, b);
}

static bool health_equal(const struct conf_health_check *a, const struct conf_health_check *b)
{
    if (a->enabled != b->enabled)
        return false;
    if (!a->enabled)
        return true; /* the other settings of a disabled check do nothing */
    return a->protocol == b->protocol && str_equal(a->path, b->path) &&
           a->interval == b->interval && a->timeout == b->timeout &&
           a->healthy_threshold == b->healthy_threshold &&
           a->unhealthy_threshold == b->unhealthy_threshold && a->expect_min == b->expect_min &&
           a->expect_max == b->expect_max;
}

static bool passive_equal(const struct conf_passive_health *a, const struct conf_passive_health *b)
{
    if (a->enabled != b->enabled)
        return false;
    if (!a->enabled)
        return true; /* as for health checks: nothing to compare when off */
    return a->consecutive_failures == b->consecutive_failures &&
           a->ejection_time == b->ejection_time && a->max_ejected_percent == b->max_ejected_percent;
}

static bool discover_equal(const struct conf_discover *a, const struct conf_discover *b)
{
    if (a->enabled != b->enabled)
        return false;
    if (!a->enabled)
        return true;
    return str_equal(a->dns, b->dns) && a->srv == b->srv && a->port == b->port &&
           a->interval == b->interval;
}

static bool pool_settings_equal(const struct conf_pool *a, const struct conf_pool *b)
{
    return a->balance == b->balance && a->deregistration_delay == b->deregistration_delay &&
           a->slow_start == b->slow_start && health_equal(&a->health_check, &b->health_check) &&
           passive_equal(&a->passive_health, &b->passive_health) &&
           discover_equal(&a->discover, &b->discover);
}

static const struct conf_backend *find_backend(const struct conf_pool *p, const char *name)
{
    for (size_t i = 0; i < p->num_backends; i++)
        if (str_equal(p->backends[i].name, name))
            return &p->backends[i];
    return NULL;
}

static const struct conf_split *find_split(const struct conf_listener *l, const char *pool)
{
    for (size_t i = 0; i < l->num_splits; i++)
        if (str_equal(l->splits[i].pool, pool))
            return &l->splits[i];
    return NULL;
}

/* The pools map as a set: order does not matter, names and weights do. */
static bool splits_equal(const struct conf_listener *a, const struct conf_listener *b)
{
    if (a->num_splits != b->num_splits)
        return false;
    for (size_t i = 0; i < a->num_splits; i++) {
        const struct conf_split *s = find_split(b, a->splits[i].pool);
        if (!s || s->weight != a->splits[i].weight)
            return false;
    }
    return true;
}

static bool listener_settings_equal(const struct conf_listener *a, const struct conf_listener *b)
{
    return a->protocol == b->protocol && a->tls.enabled == b->tls.enabled &&
           (!a->tls.enabled ||
            (str_equal(a->tls.cert, b->tls.cert) && str_equal(a->tls.key, b->tls.key))) &&
           splits_equal(a, b);
}

static const struct conf_pool *find_pool(const struct conf *c, const char *name)
{
    return c ? conf_find_pool(c, name) : NULL;
}

static const struct conf_listener *find_listener(const struct conf *c, const char *name)
{
    return c ? conf_find_listener(c, name) : NULL;
}

static void diff_backends(struct builder *b, const struct conf_pool *op, const struct conf_pool *np)
{
    for (size_t i = 0; i < op->num_backends; i++) {
        const struct conf_backend *ob = &op->backends[i];
        const struct conf_backend *nb = find_backend(np, ob->name);
        if (!nb || !backend_address_equal(&ob->address, &nb->address))
            push(b, (struct conf_change){
                        .kind = CONF_BACKEND_REMOVED, .old_pool = op, .old_backend = ob});
    }
    for (size_t i = 0; i < np->num_backends; i++) {
        const struct conf_backend *nb = &np->backends[i];
        const struct conf_backend *ob = find_backend(op, nb->name);
        if (!ob || !backend_address_equal(&ob->address, &nb->address))
            push(b, (struct conf_change){
                        .kind = CONF_BACKEND_ADDED, .new_pool = np, .new_backend = nb});
        else if (ob->weight != nb->weight)
            push(b, (struct conf_change){.kind = CONF_BACKEND_WEIGHT,
                                         .old_pool = op,
                                         .new_pool = np,
                                         .old_backend = ob,
                                         .new_backend = nb});
    }
}

int conf_diff(const struct conf *old, const struct conf *new, struct conf_diff *out)
{
    struct builder b = {.out = out};
    size_t n_old_pools = old ? old->num_pools : 0, n_new_pools = new ? new->num_pools : 0;
    size_t n_old_lis = old ? old->num_listeners : 0, n_new_lis = new ? new->num_listeners : 0;

    out->changes = NULL;
    out->count = 0;

    for (size_t i = 0; i < n_old_pools; i++) {
        const struct conf_pool *op = &old->pools[i];
        if (find_pool(new, op->name))
            continue;
        for (size_t j = 0; j < op->num_backends; j++)
            push(&b, (struct conf_change){.kind = CONF_BACKEND_REMOVED,
                                          .old_pool = op,
                                          .old_backend = &op->backends[j]});
        push(&b, (struct conf_change){.kind = CONF_POOL_REMOVED, .old_pool = op});
    }
    for (size_t i = 0; i < n_new_pools; i++) {
        const struct conf_pool *np = &new->pools[i];
        const struct conf_pool *op = find_pool(old, np->name);
        if (!op) {
            push(&b, (struct conf_change){.kind = CONF_POOL_ADDED, .new_pool = np});
            for (size_t j = 0; j < np->num_backends; j++)
                push(&b, (struct conf_change){.kind = CONF_BACKEND_ADDED,
                                              .new_pool = np,
                                              .new_backend = &np->backends[j]});
            continue;
        }
        if (!pool_settings_equal(op, np))
            push(&b,
                 (struct conf_change){.kind = CONF_POOL_CHANGED, .old_pool = op, .new_pool = np});
        diff_backends(&b, op, np);
    }

    /* a listener is its name and its socket: a new bind is a new listener */
    for (size_t i = 0; i < n_old_lis; i++) {
        const struct conf_listener *ol = &old->listeners[i];
        const struct conf_listener *nl = find_listener(new, ol->name);
        if (!nl || !conf_address_same(&ol->bind, &nl->bind))
            push(&b, (struct conf_change){.kind = CONF_LISTENER_REMOVED, .old_listener = ol});
    }
    for (size_t i = 0; i < n_new_lis; i++) {
        const struct conf_listener *nl = &new->listeners[i];
        const struct conf_listener *ol = find_listener(old, nl->name);
        if (!ol || !conf_address_same(&ol->bind, &nl->bind))
            push(&b, (struct conf_change){.kind = CONF_LISTENER_ADDED, .new_listener = nl});
        else if (!listener_settings_equal(ol, nl))
            push(&b, (struct conf_change){
                         .kind = CONF_LISTENER_SPLIT, .old_listener = ol, .new_listener = nl});
    }

    if (b.oom) {
        conf_diff_free(out);
        return -1;
    }
    return 0;
}

void conf_diff_free(struct conf_diff *d)
{
    free(d->changes);
    d->changes = NULL;
    d->count = 0;
}

const char *conf_change_kind_str(enum conf_change_kind k)
{
    switch (k) {
    case CONF_BACKEND_ADDED:
        return "backend_added";
    case CONF_BACKEND_REMOVED:
        return "backend_removed";
    case CONF_BACKEND_WEIGHT:
        return "backend_weight";
    case CONF_POOL_ADDED:
        return "pool_added";
    case CONF_POOL_REMOVED:
        return "pool_removed";
    case CONF_POOL_CHANGED:
        return "pool_changed";
    case CONF_LISTENER_ADDED:
        return "listener_added";
    case CONF_LISTENER_REMOVED:
        return "listener_removed";
    case CONF_LISTENER_SPLIT:
        return "listener_split";
    }
    return "?";
}
