/* What a reload changes: the difference between two validated configs.
 * A pure function of its inputs; the order of the changes is documented with
 * enum conf_change_kind.
 *
 * Linear in the size of the two configs: every match by name (pools,
 * backends of a pool, listeners, routes of a listener, pools of a split)
 * goes through a hash index built for this diff, never a scan per element,
 * so a config with tens of thousands of backends diffs in milliseconds. */
#include "conf.h"
#include "index.h"

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

/* An index over <count> elements of <stride> bytes whose name is the
 * `char *` at <first_name>; on failure the builder is out of memory and
 * the index empty (every look-up misses). */
static void index_build(struct builder *b, struct conf_index *ix, const void *first_name,
                        size_t stride, size_t count)
{
    if (count == 0) {
        *ix = (struct conf_index){0};
        return;
    }
    if (conf_index_build(ix, first_name, stride, count) < 0) {
        b->oom = true;
        *ix = (struct conf_index){0};
    }
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
    return a->protocol == b->protocol && str_equal(a->service, b->service) &&
           str_equal(a->path, b->path) && a->interval == b->interval && a->timeout == b->timeout &&
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

static bool pool_tls_equal(const struct conf_pool_tls *a, const struct conf_pool_tls *b)
{
    if (a->enabled != b->enabled)
        return false;
    if (!a->enabled)
        return true;
    return str_equal(a->ca, b->ca) && a->verify == b->verify && str_equal(a->sni, b->sni) &&
           str_equal(a->cert, b->cert) && str_equal(a->key, b->key);
}

static bool pool_settings_equal(const struct conf_pool *a, const struct conf_pool *b)
{
    return a->protocol == b->protocol && pool_tls_equal(&a->tls, &b->tls) &&
           a->send_proxy == b->send_proxy && a->balance == b->balance &&
           a->deregistration_delay == b->deregistration_delay && a->slow_start == b->slow_start &&
           health_equal(&a->health_check, &b->health_check) &&
           passive_equal(&a->passive_health, &b->passive_health) &&
           discover_equal(&a->discover, &b->discover);
}

/* A pools map as a set: order does not matter, names and weights do.
 * Splits are small, but a listener may name every pool: past a handful,
 * one side is indexed. */
#define SPLITS_SCAN_MAX 8

static bool splits_equal(struct builder *b, const struct conf_split *x, size_t nx,
                         const struct conf_split *y, size_t ny)
{
    struct conf_index ix;
    bool equal = true;

    if (nx != ny)
        return false;
    if (nx <= SPLITS_SCAN_MAX) {
        for (size_t i = 0; equal && i < nx; i++) {
            size_t j = 0;
            while (j < ny && !str_equal(y[j].pool, x[i].pool))
                j++;
            equal = j < ny && y[j].weight == x[i].weight;
        }
        return equal;
    }
    index_build(b, &ix, CONF_INDEX_FIELD(y, pool), ny);
    for (size_t i = 0; equal && i < nx; i++) {
        size_t j = conf_index_find(&ix, x[i].pool);
        equal = j != CONF_INDEX_NONE && y[j].weight == x[i].weight;
    }
    conf_index_free(&ix);
    return equal;
}

static bool certificates_equal(const struct conf_tls *a, const struct conf_tls *b)
{
    if (a->num_certificates != b->num_certificates)
        return false;
    for (size_t i = 0; i < a->num_certificates; i++)
        if (!str_equal(a->certificates[i].cert, b->certificates[i].cert) ||
            !str_equal(a->certificates[i].key, b->certificates[i].key))
            return false;
    return true;
}

static bool tls_equal(const struct conf_tls *a, const struct conf_tls *b)
{
    if (a->enabled != b->enabled)
        return false;
    if (!a->enabled)
        return true;
    return str_equal(a->cert, b->cert) && str_equal(a->key, b->key) &&
           a->strict_sni == b->strict_sni && certificates_equal(a, b);
}

static bool cidrs_equal(const struct conf_listener *a, const struct conf_listener *b)
{
    if (a->num_proxy_protocol_from != b->num_proxy_protocol_from)
        return false;
    for (size_t i = 0; i < a->num_proxy_protocol_from; i++) {
        const struct conf_cidr *x = &a->proxy_protocol_from[i], *y = &b->proxy_protocol_from[i];
        if (x->family != y->family || x->prefix != y->prefix ||
            memcmp(x->addr, y->addr, sizeof(x->addr)) != 0)
            return false;
    }
    return true;
}

/* The listener's own settings and its default split; not its routes. */
static bool listener_settings_equal(struct builder *bd, const struct conf_listener *a,
                                    const struct conf_listener *b)
{
    return a->protocol == b->protocol && tls_equal(&a->tls, &b->tls) && a->http2 == b->http2 &&
           a->proxy_protocol == b->proxy_protocol &&
           (a->proxy_protocol == CONF_PROXY_OFF || cidrs_equal(a, b)) &&
           splits_equal(bd, a->splits, a->num_splits, b->splits, b->num_splits);
}

/* Hosts, paths and headers as written (a reordering counts as a change: it
 * changes nothing a request sees, and costs one ROUTE_CHANGED). */
static bool route_equal(struct builder *bd, const struct conf_route *a, const struct conf_route *b)
{
    if (a->num_hosts != b->num_hosts || a->num_paths != b->num_paths ||
        a->num_headers != b->num_headers || a->strip_prefix != b->strip_prefix)
        return false;
    for (size_t i = 0; i < a->num_hosts; i++)
        if (!str_equal(a->hosts[i], b->hosts[i]))
            return false;
    for (size_t i = 0; i < a->num_paths; i++)
        if (a->paths[i].exact != b->paths[i].exact ||
            !str_equal(a->paths[i].path, b->paths[i].path))
            return false;
    for (size_t i = 0; i < a->num_headers; i++)
        if (!str_equal(a->headers[i].name, b->headers[i].name) ||
            !str_equal(a->headers[i].value, b->headers[i].value))
            return false;
    return splits_equal(bd, a->splits, a->num_splits, b->splits, b->num_splits);
}

static void diff_backends(struct builder *b, const struct conf_pool *op, const struct conf_pool *np)
{
    struct conf_index oi, ni;

    index_build(b, &oi, CONF_INDEX_FIELD(op->backends, name), op->num_backends);
    index_build(b, &ni, CONF_INDEX_FIELD(np->backends, name), np->num_backends);
    for (size_t i = 0; i < op->num_backends; i++) {
        const struct conf_backend *ob = &op->backends[i];
        size_t j = conf_index_find(&ni, ob->name);
        if (j == CONF_INDEX_NONE || !backend_address_equal(&ob->address, &np->backends[j].address))
            push(b, (struct conf_change){
                        .kind = CONF_BACKEND_REMOVED, .old_pool = op, .old_backend = ob});
    }
    for (size_t i = 0; i < np->num_backends; i++) {
        const struct conf_backend *nb = &np->backends[i];
        size_t j = conf_index_find(&oi, nb->name);
        const struct conf_backend *ob = j == CONF_INDEX_NONE ? NULL : &op->backends[j];
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
    conf_index_free(&oi);
    conf_index_free(&ni);
}

static void routes_removed(struct builder *b, const struct conf_listener *ol)
{
    for (size_t i = 0; i < ol->num_routes; i++)
        push(b, (struct conf_change){
                    .kind = CONF_ROUTE_REMOVED, .old_listener = ol, .old_route = &ol->routes[i]});
}

/* The routes of one listener name, old to new. */
static void diff_routes(struct builder *b, const struct conf_listener *ol,
                        const struct conf_listener *nl)
{
    struct conf_index oi, ni;

    if (!ol) {
        for (size_t i = 0; i < nl->num_routes; i++)
            push(b, (struct conf_change){
                        .kind = CONF_ROUTE_ADDED, .new_listener = nl, .new_route = &nl->routes[i]});
        return;
    }
    index_build(b, &oi, CONF_INDEX_FIELD(ol->routes, name), ol->num_routes);
    index_build(b, &ni, CONF_INDEX_FIELD(nl->routes, name), nl->num_routes);
    for (size_t i = 0; i < ol->num_routes; i++)
        if (conf_index_find(&ni, ol->routes[i].name) == CONF_INDEX_NONE)
            push(b, (struct conf_change){.kind = CONF_ROUTE_REMOVED,
                                         .old_listener = ol,
                                         .old_route = &ol->routes[i]});
    for (size_t i = 0; i < nl->num_routes; i++) {
        const struct conf_route *nr = &nl->routes[i];
        size_t j = conf_index_find(&oi, nr->name);
        if (j == CONF_INDEX_NONE)
            push(b, (struct conf_change){
                        .kind = CONF_ROUTE_ADDED, .new_listener = nl, .new_route = nr});
        else if (!route_equal(b, &ol->routes[j], nr))
            push(b, (struct conf_change){.kind = CONF_ROUTE_CHANGED,
                                         .old_listener = ol,
                                         .new_listener = nl,
                                         .old_route = &ol->routes[j],
                                         .new_route = nr});
    }
    conf_index_free(&oi);
    conf_index_free(&ni);
}

int conf_diff(const struct conf *old, const struct conf *new, struct conf_diff *out)
{
    static const struct conf none = {0};
    struct builder b = {.out = out};
    struct conf_index opi, npi, oli, nli;

    out->changes = NULL;
    out->count = 0;
    old = old ? old : &none;
    new = new ? new : &none;
    index_build(&b, &opi, CONF_INDEX_FIELD(old->pools, name), old->num_pools);
    index_build(&b, &npi, CONF_INDEX_FIELD(new->pools, name), new->num_pools);
    index_build(&b, &oli, CONF_INDEX_FIELD(old->listeners, name), old->num_listeners);
    index_build(&b, &nli, CONF_INDEX_FIELD(new->listeners, name), new->num_listeners);

    for (size_t i = 0; i < old->num_pools; i++) {
        const struct conf_pool *op = &old->pools[i];
        if (conf_index_find(&npi, op->name) != CONF_INDEX_NONE)
            continue;
        for (size_t j = 0; j < op->num_backends; j++)
            push(&b, (struct conf_change){.kind = CONF_BACKEND_REMOVED,
                                          .old_pool = op,
                                          .old_backend = &op->backends[j]});
        push(&b, (struct conf_change){.kind = CONF_POOL_REMOVED, .old_pool = op});
    }
    for (size_t i = 0; i < new->num_pools; i++) {
        const struct conf_pool *np = &new->pools[i];
        size_t j = conf_index_find(&opi, np->name);
        if (j == CONF_INDEX_NONE) {
            push(&b, (struct conf_change){.kind = CONF_POOL_ADDED, .new_pool = np});
            for (size_t k = 0; k < np->num_backends; k++)
                push(&b, (struct conf_change){.kind = CONF_BACKEND_ADDED,
                                              .new_pool = np,
                                              .new_backend = &np->backends[k]});
            continue;
        }
        const struct conf_pool *op = &old->pools[j];
        if (!pool_settings_equal(op, np))
            push(&b,
                 (struct conf_change){.kind = CONF_POOL_CHANGED, .old_pool = op, .new_pool = np});
        diff_backends(&b, op, np);
    }

    /* a listener is its name and its socket: a new bind is a new listener */
    for (size_t i = 0; i < old->num_listeners; i++) {
        const struct conf_listener *ol = &old->listeners[i];
        size_t j = conf_index_find(&nli, ol->name);
        if (j == CONF_INDEX_NONE)
            routes_removed(&b, ol);
        if (j == CONF_INDEX_NONE || !conf_address_same(&ol->bind, &new->listeners[j].bind))
            push(&b, (struct conf_change){.kind = CONF_LISTENER_REMOVED, .old_listener = ol});
    }
    for (size_t i = 0; i < new->num_listeners; i++) {
        const struct conf_listener *nl = &new->listeners[i];
        size_t j = conf_index_find(&oli, nl->name);
        const struct conf_listener *ol = j == CONF_INDEX_NONE ? NULL : &old->listeners[j];
        if (!ol || !conf_address_same(&ol->bind, &nl->bind))
            push(&b, (struct conf_change){.kind = CONF_LISTENER_ADDED, .new_listener = nl});
        else if (!listener_settings_equal(&b, ol, nl))
            push(&b, (struct conf_change){
                         .kind = CONF_LISTENER_SPLIT, .old_listener = ol, .new_listener = nl});
        diff_routes(&b, ol, nl);
    }

    conf_index_free(&opi);
    conf_index_free(&npi);
    conf_index_free(&oli);
    conf_index_free(&nli);
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
    case CONF_ROUTE_ADDED:
        return "route_added";
    case CONF_ROUTE_REMOVED:
        return "route_removed";
    case CONF_ROUTE_CHANGED:
        return "route_changed";
    }
    return "?";
}
