/* The route table: host groups found through a host-name index, and the
 * routes of each group indexed by path.
 *
 * A group holds the routes that name one host key ("api.example.com", or
 * the wildcard "*.example.com"), or the routes without hosts. A route that
 * names several hosts is in several groups. One hash table, keyed by
 * (group, kind, text), maps each exact path and each prefix (without its
 * trailing '/') of each group to the routes that wrote it; "/" and "no
 * paths" are two lists in the group. Every list is sorted by the remaining
 * precedence, headers (more first) then written order, so the first route
 * of a list whose headers match is the answer for that host and path.
 *
 * Layout: a match reads the index slot of the host, the group and one path
 * entry per path tried, each one cache line (names, paths and short lists
 * are stored inline), then the route. With a thousand routes these lines
 * are in the L2 cache rather than L1; nothing else grows with the table. */
#include "route.h"

#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "../../parser/http1-t.h"
#include "hostidx.h"

/* FNV-1a, 32 bits (draft-eastlake-fnv), over a path as it is: paths
 * compare byte for byte. */
#define FNV_OFFSET 2166136261u
#define FNV_PRIME 16777619u

/* The path table is at most half full (short probe sequences). */
#define PATHS_MIN 16
/* The size of a cache line on the machines usher runs on (x86-64, arm64):
 * a group and a path entry are one each, so a match reads a handful of
 * lines whatever the size of the table. */
#define CACHE_LINE 64
/* Paths up to this long live in their entry. */
#define TEXT_INLINE 16
/* A list of up to this many routes lives in its owner. */
#define IDS_INLINE 2
/* Prefix lengths the group's bitmap tells apart; a prefix at least this
 * long sets the last bit, which then stands for "this long or longer". */
#define PREFIX_BITS 64

static const char R_HOST[] = "bad host";
static const char R_PATH[] = "bad path";
static const char R_HEADER[] = "bad header";

/* Route ids, sorted by headers (more first) then id. The first route's
 * data is kept here too when it asks for no header (the common case): the
 * answer is then found without reading the route. */
struct rlist {
    uint32_t n;
    bool first_plain; /* ids[0] has no headers: <first_data> is its data */
    union {
        uint32_t inl[IDS_INLINE]; /* n <= IDS_INLINE */
        uint32_t *ids;            /* otherwise, room for the next power of two */
    };
    void *first_data;
};

struct group;

/* The routes of one group and one path: an exact path or a prefix
 * (without its trailing '/'). One cache line. Its slot is found from the
 * group's address and the path alone, so it is read while the group's own
 * line is on its way. */
struct pentry {
    uint32_t hash;
    uint32_t len;
    const struct group *group; /* NULL: a free slot */
    bool exact;
    struct rlist routes;
    union {
        char text[TEXT_INLINE]; /* the path when it fits */
        char *long_text;        /* otherwise */
    };
};
_Static_assert(sizeof(struct pentry) == CACHE_LINE, "a path entry is one cache line");

/* The routes that name one host key, or the routes without hosts. One
 * cache line. */
struct group {
    uint64_t prefix_at;  /* bit L: a prefix of L bytes (see PREFIX_BITS) */
    uint32_t prefix_max; /* the longest prefix; 0: none but "/" */
    bool has_exact;
    struct rlist root; /* the routes with the prefix "/" */
    struct rlist any;  /* the routes without paths */
} __attribute__((aligned(CACHE_LINE)));
_Static_assert(sizeof(struct group) == CACHE_LINE, "a group is one cache line");

struct header {
    char *name, *value;
    size_t name_len, value_len;
};

struct croute {
    struct header *headers;
    size_t n_headers;
    void *data;
};

struct route_table {
    struct croute *routes;
    size_t n;
    struct hostidx *hosts; /* host key -> struct group */
    struct group **groups; /* every group, to free them */
    size_t n_groups;
    struct group *hostless; /* the routes without hosts; NULL if none */
    struct pentry *paths;   /* every group's paths */
    size_t paths_cap, paths_count;
};

static const uint32_t *rlist_ids(const struct rlist *l)
{
    return l->n <= IDS_INLINE ? l->inl : l->ids;
}

static const char *pentry_text(const struct pentry *e)
{
    return e->len > TEXT_INLINE ? e->long_text : e->text;
}

static uint32_t hash_path(const struct group *g, bool exact, const char *p, size_t len)
{
    uint32_t h = FNV_OFFSET;
    for (size_t i = 0; i < len; i++)
        h = (h ^ (unsigned char)p[i]) * FNV_PRIME;
    /* one table for every group: the group (its address, a multiple of
     * CACHE_LINE) and the kind are in the key; 0x9e3779b9 is 2^32 over the
     * golden ratio, Knuth's multiplicative hashing */
    uint32_t gk = (uint32_t)((uintptr_t)g / CACHE_LINE);
    return h ^ (gk * 2 + exact) * 0x9e3779b9u;
}

/* The finaliser of MurmurHash3: spreads FNV's low bits over the slots. */
static size_t slot_of(uint32_t h, size_t cap)
{
    h ^= h >> 16;
    h *= 0x85ebca6bu;
    h ^= h >> 13;
    h *= 0xc2b2ae35u;
    h ^= h >> 16;
    return h & (cap - 1);
}

static const struct pentry *path_find(const struct route_table *t, const struct group *g,
                                      const char *p, size_t len, bool exact)
{
    uint32_t h = hash_path(g, exact, p, len);
    for (size_t i = slot_of(h, t->paths_cap);; i = (i + 1) & (t->paths_cap - 1)) {
        const struct pentry *e = &t->paths[i];
        if (!e->group)
            return NULL;
        if (e->hash == h && e->group == g && e->len == len && e->exact == exact &&
            memcmp(pentry_text(e), p, len) == 0)
            return e;
    }
}

/* ---- building ------------------------------------------------------------- */

static int rlist_add(struct rlist *l, uint32_t id)
{
    /* a route's paths and hosts are added before the next route's, so a
     * route that reaches one list twice ("/v1" and "/v1/", hosts "a" and
     * "A") is its last element */
    if (l->n && rlist_ids(l)[l->n - 1] == id)
        return 0;
    if (l->n < IDS_INLINE) {
        l->inl[l->n++] = id;
        return 0;
    }
    if (l->n == IDS_INLINE || (l->n & (l->n - 1)) == 0) {
        /* full: the inline ids move out, or the array doubles */
        uint32_t *ids = malloc(2 * (size_t)l->n * sizeof(*ids));
        if (!ids)
            return -ENOMEM;
        memcpy(ids, rlist_ids(l), l->n * sizeof(*ids));
        if (l->n > IDS_INLINE)
            free(l->ids);
        l->ids = ids;
    }
    l->ids[l->n++] = id;
    return 0;
}

static void rlist_free(struct rlist *l)
{
    if (l->n > IDS_INLINE)
        free(l->ids);
}

/* Insertion sort by (headers descending, id ascending): lists are short
 * and built once. */
static void rlist_sort(struct rlist *l, const struct croute *routes)
{
    uint32_t *ids = (uint32_t *)rlist_ids(l);
    for (uint32_t i = 1; i < l->n; i++) {
        uint32_t id = ids[i], j = i;
        size_t nh = routes[id].n_headers;
        while (j > 0 && routes[ids[j - 1]].n_headers < nh) {
            ids[j] = ids[j - 1];
            j--;
        }
        ids[j] = id;
    }
    l->first_plain = l->n && routes[ids[0]].n_headers == 0;
    l->first_data = l->n ? routes[ids[0]].data : NULL;
}

static struct group *group_new(void)
{
    struct group *g = aligned_alloc(CACHE_LINE, sizeof(*g));
    if (g)
        memset(g, 0, sizeof(*g));
    return g;
}

static void group_free(struct group *g)
{
    if (!g)
        return;
    rlist_free(&g->root);
    rlist_free(&g->any);
    free(g);
}

static struct pentry *paths_new(size_t cap)
{
    struct pentry *tab = aligned_alloc(CACHE_LINE, cap * sizeof(*tab));
    if (tab)
        memset(tab, 0, cap * sizeof(*tab));
    return tab;
}

static int paths_grow(struct route_table *t)
{
    size_t cap = t->paths_cap * 2;
    struct pentry *tab = paths_new(cap);
    if (!tab)
        return -ENOMEM;
    for (size_t i = 0; i < t->paths_cap; i++) {
        if (!t->paths[i].group)
            continue;
        size_t j = slot_of(t->paths[i].hash, cap);
        while (tab[j].group)
            j = (j + 1) & (cap - 1);
        tab[j] = t->paths[i];
    }
    free(t->paths);
    t->paths = tab;
    t->paths_cap = cap;
    return 0;
}

/* Adds route <id> to group <g> under the path <p>[0..<len>) of kind <exact>. */
static int group_add_path(struct route_table *t, struct group *g, const char *p, size_t len,
                          bool exact, uint32_t id)
{
    struct pentry *e = (struct pentry *)path_find(t, g, p, len, exact);
    if (!e) {
        if ((t->paths_count + 1) * 2 > t->paths_cap && paths_grow(t) < 0)
            return -ENOMEM;
        uint32_t h = hash_path(g, exact, p, len);
        size_t i = slot_of(h, t->paths_cap);
        while (t->paths[i].group)
            i = (i + 1) & (t->paths_cap - 1);
        e = &t->paths[i];
        char *text = e->text;
        if (len > TEXT_INLINE) {
            text = e->long_text = malloc(len);
            if (!text)
                return -ENOMEM;
        }
        memcpy(text, p, len);
        e->len = (uint32_t)len;
        e->hash = h;
        e->exact = exact;
        e->group = g;
        t->paths_count++;
        if (exact) {
            g->has_exact = true;
        } else {
            if (len > g->prefix_max)
                g->prefix_max = (uint32_t)len;
            g->prefix_at |= 1ull << (len < PREFIX_BITS ? len : PREFIX_BITS - 1);
        }
    }
    return rlist_add(&e->routes, id);
}

/* Files route <id> (spec <s>) in group <g>. */
static int group_add_route(struct route_table *t, struct group *g, const struct route_spec *s,
                           uint32_t id)
{
    if (s->n_paths == 0)
        return rlist_add(&g->any, id);
    for (size_t i = 0; i < s->n_paths; i++) {
        const char *p = s->paths[i].text;
        size_t len = strlen(p);
        if (s->paths[i].exact) {
            if (group_add_path(t, g, p, len, true, id) < 0)
                return -ENOMEM;
            continue;
        }
        /* "/v1/" and "/v1" are one prefix: stored as "/v1" */
        if (p[len - 1] == '/')
            len--;
        if (len == 0 ? rlist_add(&g->root, id) < 0 : group_add_path(t, g, p, len, false, id) < 0)
            return -ENOMEM;
    }
    return 0;
}

/* Sorts every list by the precedence after host and path. */
static void sort_lists(struct route_table *t)
{
    for (size_t i = 0; i < t->paths_cap; i++)
        if (t->paths[i].group)
            rlist_sort(&t->paths[i].routes, t->routes);
    for (size_t i = 0; i < t->n_groups; i++) {
        rlist_sort(&t->groups[i]->root, t->routes);
        rlist_sort(&t->groups[i]->any, t->routes);
    }
}

static char *dup_lower(const char *s, size_t len)
{
    char *d = malloc(len + 1);
    if (!d)
        return NULL;
    for (size_t i = 0; i < len; i++)
        d[i] = s[i] >= 'A' && s[i] <= 'Z' ? (char)(s[i] + ('a' - 'A')) : s[i];
    d[len] = '\0';
    return d;
}

static int copy_headers(struct croute *r, const struct route_spec *s)
{
    if (!s->n_headers)
        return 0;
    r->headers = calloc(s->n_headers, sizeof(*r->headers));
    if (!r->headers)
        return -ENOMEM;
    r->n_headers = s->n_headers;
    for (size_t i = 0; i < s->n_headers; i++) {
        struct header *h = &r->headers[i];
        h->name_len = strlen(s->headers[i].name);
        h->value_len = strlen(s->headers[i].value);
        h->name = dup_lower(s->headers[i].name, h->name_len);
        h->value = malloc(h->value_len + 1);
        if (!h->name || !h->value)
            return -ENOMEM;
        memcpy(h->value, s->headers[i].value, h->value_len + 1);
    }
    return 0;
}

/* What the table cannot take; the config rejects all of it first. */
static const char *spec_problem(const struct route_spec *s)
{
    for (size_t i = 0; i < s->n_hosts; i++)
        if (!s->hosts[i] || !s->hosts[i][0])
            return R_HOST;
    for (size_t i = 0; i < s->n_paths; i++)
        if (!s->paths[i].text || s->paths[i].text[0] != '/')
            return R_PATH;
    for (size_t i = 0; i < s->n_headers; i++)
        if (!s->headers[i].name || !s->headers[i].name[0] || !s->headers[i].value)
            return R_HEADER;
    return NULL;
}

/* A new group, registered in <t> (which frees it). */
static struct group *add_group(struct route_table *t)
{
    struct group **groups = realloc(t->groups, (t->n_groups + 1) * sizeof(*groups));
    if (!groups)
        return NULL;
    t->groups = groups;
    struct group *g = group_new();
    if (g)
        t->groups[t->n_groups++] = g;
    return g;
}

/* The group of host key <key>, created if new. */
static int host_group(struct route_table *t, const char *key, struct group **out)
{
    size_t len = strlen(key);
    struct group *g = hostidx_get(t->hosts, key, len);
    if (!g) {
        g = add_group(t);
        if (!g)
            return -ENOMEM;
        int rc = hostidx_add(t->hosts, key, len, g);
        if (rc < 0)
            return rc; /* -EINVAL: not a host name; <t> frees the group */
    }
    *out = g;
    return 0;
}

int route_table_build(const struct route_spec *specs, size_t n, struct route_table **out,
                      size_t *bad, const char **reason)
{
    const char *why = NULL;
    size_t bad_id = 0;
    int rc = -ENOMEM;
    struct route_table *t;

    *out = NULL;
    if (n > UINT32_MAX)
        return -EINVAL; /* route ids are 32 bits */
    t = calloc(1, sizeof(*t));
    if (!t)
        return -ENOMEM;
    t->hosts = hostidx_new(HOSTIDX_WILDCARD_ANY_DEPTH);
    t->routes = calloc(n ? n : 1, sizeof(*t->routes));
    t->paths = paths_new(PATHS_MIN);
    t->paths_cap = PATHS_MIN;
    if (!t->hosts || !t->routes || !t->paths)
        goto fail;
    t->n = n;

    for (size_t i = 0; i < n; i++) {
        const struct route_spec *s = &specs[i];
        bad_id = i;
        why = spec_problem(s);
        if (why) {
            rc = -EINVAL;
            goto fail;
        }
        t->routes[i].data = s->data;
        if (copy_headers(&t->routes[i], s) < 0)
            goto fail;
        if (s->n_hosts == 0) {
            if (!t->hostless && !(t->hostless = add_group(t)))
                goto fail;
            if (group_add_route(t, t->hostless, s, (uint32_t)i) < 0)
                goto fail;
        }
        for (size_t h = 0; h < s->n_hosts; h++) {
            struct group *g;
            rc = host_group(t, s->hosts[h], &g);
            if (rc < 0) {
                why = rc == -EINVAL ? R_HOST : NULL;
                goto fail;
            }
            rc = -ENOMEM;
            if (group_add_route(t, g, s, (uint32_t)i) < 0)
                goto fail;
        }
    }
    sort_lists(t);
    *out = t;
    return 0;

fail:
    if (rc == -EINVAL) {
        if (bad)
            *bad = bad_id;
        if (reason)
            *reason = why;
    }
    route_table_free(t);
    return rc;
}

void route_table_free(struct route_table *t)
{
    if (!t)
        return;
    for (size_t i = 0; t->routes && i < t->n; i++) {
        for (size_t j = 0; j < t->routes[i].n_headers; j++) {
            free(t->routes[i].headers[j].name);
            free(t->routes[i].headers[j].value);
        }
        free(t->routes[i].headers);
    }
    free(t->routes);
    for (size_t i = 0; i < t->n_groups; i++)
        group_free(t->groups[i]);
    free(t->groups);
    for (size_t i = 0; t->paths && i < t->paths_cap; i++) {
        rlist_free(&t->paths[i].routes);
        if (t->paths[i].group && t->paths[i].len > TEXT_INLINE)
            free(t->paths[i].long_text);
    }
    free(t->paths);
    hostidx_free(t->hosts);
    free(t);
}

size_t route_table_count(const struct route_table *t)
{
    return t->n;
}

/* ---- matching ------------------------------------------------------------- */

static bool headers_match(const struct croute *r, const struct route_request *req)
{
    for (size_t i = 0; i < r->n_headers; i++) {
        const struct header *h = &r->headers[i];
        if (!req->has_header ||
            !req->has_header(req->ctx, h->name, h->name_len, h->value, h->value_len))
            return false;
    }
    return true;
}

/* The first route of <l> whose headers match. */
static bool try_list(const struct route_table *t, const struct rlist *l,
                     const struct route_request *req, size_t prefix_len, struct route_match *m)
{
    if (l->first_plain) {
        m->index = rlist_ids(l)[0];
        m->data = l->first_data;
        m->prefix_len = prefix_len;
        return true;
    }
    const uint32_t *ids = rlist_ids(l);
    for (uint32_t i = 0; i < l->n; i++) {
        const struct croute *r = &t->routes[ids[i]];
        if (headers_match(r, req)) {
            m->index = ids[i];
            m->data = r->data;
            m->prefix_len = prefix_len;
            return true;
        }
    }
    return false;
}

/* True if group <g> may have a prefix <len> bytes long. */
static bool prefix_len_used(const struct group *g, size_t len)
{
    return g->prefix_at >> (len < PREFIX_BITS ? len : PREFIX_BITS - 1) & 1;
}

/* The best route of group <g> for the path <p>[0..<len>) (no query). */
static bool group_match(const struct route_table *t, const struct group *g,
                        const struct route_request *req, const char *p, size_t len,
                        struct route_match *m)
{
    const struct pentry *e;
    if (g->has_exact && (e = path_find(t, g, p, len, true)) && try_list(t, &e->routes, req, len, m))
        return true;
    /* prefixes, longest first: the whole path, then every '/' boundary,
     * only up to the group's longest prefix and at lengths it has */
    size_t i = len < g->prefix_max ? len : g->prefix_max;
    for (; i > 0; i--) {
        if ((i == len || p[i] == '/') && prefix_len_used(g, i) &&
            (e = path_find(t, g, p, i, false)) && try_list(t, &e->routes, req, i, m))
            return true;
    }
    if (g->root.n && try_list(t, &g->root, req, 0, m))
        return true;
    return g->any.n && try_list(t, &g->any, req, 0, m);
}

int route_match(const struct route_table *t, const struct route_request *req, struct route_match *m)
{
    const char *p = req->path;
    size_t len = 0;
    bool empty;

    if (p) {
        const char *q = memchr(p, '?', req->path_len);
        len = q ? (size_t)(q - p) : req->path_len;
    }
    /* an absolute-form target without a path is forwarded as "/" */
    empty = len == 0;
    if (empty) {
        p = "/";
        len = 1;
    }

    if (req->host_len && hostidx_count(t->hosts)) {
        const char *host;
        size_t hlen = route_host_normalize(req->host, req->host_len, &host);
        struct hostidx_iter it;
        const struct group *g;
        hostidx_iter_init(&it, t->hosts, host, hlen);
        while ((g = hostidx_iter_next(&it)) != NULL)
            if (group_match(t, g, req, p, len, m))
                goto found;
    }
    if (t->hostless && group_match(t, t->hostless, req, p, len, m))
        goto found;
    return ROUTE_NO_MATCH;

found:
    if (empty)
        m->prefix_len = 0; /* nothing of the client's path to strip */
    return 0;
}

/* ---- helpers -------------------------------------------------------------- */

size_t route_host_normalize(const char *host, size_t len, const char **out)
{
    *out = host;
    if (len && host[0] == '[') {
        /* RFC 3986 section 3.2.2: an IP literal is in brackets, and the
         * colons inside are not a port */
        const char *rb = memchr(host, ']', len);
        return rb ? (size_t)(rb - host) + 1 : len;
    }
    const char *colon = memchr(host, ':', len);
    if (colon)
        len = (size_t)(colon - host);
    /* RFC 1034 section 3.1: "a.example." is the absolute form of a.example */
    if (len && host[len - 1] == '.')
        len--;
    return len;
}

bool route_strip_prefix(const char *path, size_t len, size_t prefix_len, const char **rest,
                        size_t *rest_len)
{
    if (prefix_len > len)
        prefix_len = len;
    *rest = path + prefix_len;
    *rest_len = len - prefix_len;
    return *rest_len == 0 || (*rest)[0] != '/';
}

bool route_http1_has_header(void *ctx, const char *name, size_t name_len, const char *value,
                            size_t value_len)
{
    const struct http1_message *msg = ctx;
    for (size_t i = 0; i < msg->num_headers; i++) {
        const struct http1_header *f = &msg->headers[i];
        if (f->name.len != name_len || f->value.len != value_len ||
            memcmp(f->value.ptr, value, value_len) != 0)
            continue;
        size_t j = 0;
        while (j < name_len) {
            char c = f->name.ptr[j];
            if (c >= 'A' && c <= 'Z')
                c = (char)(c + ('a' - 'A'));
            if (c != name[j])
                break;
            j++;
        }
        if (j == name_len)
            return true;
    }
    return false;
}
