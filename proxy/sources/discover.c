/* DNS discovery on the event loop: one c-ares channel for the process,
 * driven by libev (ARES_OPT_SOCK_STATE_CB opens and closes an ev_io per
 * c-ares socket, one ev_timer follows ares_timeout()), and one record per
 * pool with `discover` that re-resolves every interval and turns each
 * answer into changes for the data plane (worker_apply_discovered). No
 * thread, no blocking getaddrinfo.
 *
 * A query outlives nothing: it points at its pool until the pool stops
 * caring (freed, re-pointed at another name, channel rebuilt), then it is
 * orphaned (dp NULL) and its answer, when c-ares delivers it, is dropped.
 *
 * What an answer does (DESIGN.md "Discovery and fleets"):
 *   - addresses listed: the pool's discovered backends become exactly
 *     those; one that is new is added (checking, with a health check), one
 *     no longer listed drains with the pool's deregistration_delay, reason
 *     dns;
 *   - a failure (timeout, refused, SERVFAIL...): nothing changes, ever; the
 *     last good answer stays in force for as long as DNS cannot answer
 *     (a DNS outage must never drain a fleet); /status says why;
 *   - an empty answer (no such name, no records): nothing changes for
 *     resolver.hold; one that lasts longer is believed and the pool
 *     empties (a Service scaled to zero). */
#include "discover.h"

#include <ares.h>
#include <arpa/inet.h>
#include <arpa/nameser.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../../conf/conf.h"
#include "../net/list.h"
#include "../base/buf.h"
#include "../base/log.h"
#include "../core/worker.h"

/* c-ares's defaults (5 s a try, 4 tries, the timeout doubling each round)
 * let one query run for over a minute, many intervals long. One second a
 * try and two tries (1 s + 2 s) bound a query at about 3 s: a DNS server on
 * the same network answers in milliseconds or not at all. */
#define QUERY_TIMEOUT_MS 1000
#define QUERY_TRIES 2

/* Addresses kept from one answer: far more than a DNS response over UDP
 * carries, and a bound on what a hostile answer can make us allocate. */
#define ANSWER_MAX 1024

/* "[" IPv6 "]:" port, NUL. */
#define ENTRY_NAME_LEN (INET6_ADDRSTRLEN + 9)

/* One discovered backend: ADDRESS:PORT and its socket address. */
struct entry {
    char name[ENTRY_NAME_LEN];
    char host[INET6_ADDRSTRLEN];
    uint16_t port;
    unsigned weight;
    struct sockaddr_storage sa;
    socklen_t sa_len;
};

struct answer {
    struct entry *e;
    size_t n, cap;
};

struct dsock;

/* One c-ares channel driven by a libev loop: discovery's, and one per batch
 * of names a reload resolves (discover_names_start). */
struct dchan {
    struct ev_loop *loop;
    ares_channel channel;
    bool ok;          /* <channel> exists */
    ev_timer timeout; /* c-ares's next timeout */
    struct dsock *socks;
};

/* A socket c-ares asked us to watch. */
struct dsock {
    struct dchan *ch;
    int fd;
    ev_io io;
    struct dsock *next;
};

struct query;

/* The backends that kept their address because their name did not
 * resolve, found by (pool, backend) through an open-addressing index. */
struct rerr_entry {
    char *pool, *backend;
    const char *why;
};

struct resolve_errors {
    struct rerr_entry *e;
    size_t n;
    size_t *slots; /* entry index + 1; 0 empty */
    size_t mask;   /* slots - 1 (a power of two, at least twice n) */
};

/* One pool with `discover`. */
struct dpool {
    struct discover *d;
    char *name;
    const struct conf_pool *cp; /* the pool in the current generation */
    struct answer cur;          /* the backends in force, sorted by name */
    bool first_done;            /* an answer or a failure came back */
    const char *last_error;     /* static; NULL when the last attempt succeeded */
    ev_tstamp resolved_at;      /* last good answer, 0 before the first */
    ev_tstamp empty_since;      /* first empty answer since the last good one, 0 if none */
    ev_timer timer;             /* the next resolution */
    struct query *q;            /* in flight, or NULL */
    bool seen;                  /* discover_configure: still discovering */
    struct dpool *next;
};

/* One resolution of a pool: the A/AAAA lookup, or the SRV query and one
 * A/AAAA lookup per target. */
struct query {
    struct dpool *dp;  /* NULL once orphaned */
    unsigned pending;  /* lookups not answered yet */
    int status;        /* the first failure, ARES_SUCCESS if none */
    struct answer ans; /* what the lookups found */
};

/* One A/AAAA lookup and what its addresses become. */
struct lookup {
    struct query *q;
    uint16_t port;
    unsigned weight;
};

struct discover {
    struct ev_loop *loop;
    struct worker *w;
    struct dchan ch;
    char *servers_key; /* the nameservers the channel was made with ("" = resolv.conf) */
    conf_ms hold;
    struct dpool *pools;
    struct resolve_errors rerr; /* the static names the last reload could not resolve */
};

static const char err_no_channel[] = "the resolver could not be initialised";
static const char err_no_memory[] = "out of memory";

/* ---- c-ares on libev ------------------------------------------------------- */

static void arm_timeout(struct dchan *ch)
{
    struct timeval tv, *t;

    ev_timer_stop(ch->loop, &ch->timeout);
    if (!ch->ok)
        return;
    t = ares_timeout(ch->channel, NULL, &tv);
    if (!t)
        return;
    ev_timer_set(&ch->timeout, (double)t->tv_sec + (double)t->tv_usec / 1e6, 0.);
    ev_timer_start(ch->loop, &ch->timeout);
}

/* c-ares may close the socket (and so free <ds> through sock_state_cb)
 * inside ares_process_fd: nothing of <ds> is used after it. */
static void sock_io_cb(struct ev_loop *loop, ev_io *io, int revents)
{
    struct dsock *ds = container_of(io, struct dsock, io);
    struct dchan *ch = ds->ch;
    int fd = ds->fd;

    ares_process_fd(ch->channel, (revents & EV_READ) ? fd : ARES_SOCKET_BAD,
                    (revents & EV_WRITE) ? fd : ARES_SOCKET_BAD);
    arm_timeout(ch);
}

static void timeout_cb(struct ev_loop *loop, ev_timer *t, int revents)
{
    struct dchan *ch = container_of(t, struct dchan, timeout);

    ares_process_fd(ch->channel, ARES_SOCKET_BAD, ARES_SOCKET_BAD);
    arm_timeout(ch);
}

static void sock_state_cb(void *data, ares_socket_t fd, int readable, int writable)
{
    struct dchan *ch = data;
    struct dsock **pp = &ch->socks, *ds;

    while (*pp && (*pp)->fd != fd)
        pp = &(*pp)->next;
    ds = *pp;
    if (!readable && !writable) {
        if (!ds)
            return;
        ev_io_stop(ch->loop, &ds->io);
        *pp = ds->next;
        free(ds);
        return;
    }
    if (!ds) {
        ds = calloc(1, sizeof(*ds));
        if (!ds)
            return; /* the query times out instead */
        ds->ch = ch;
        ds->fd = fd;
        ev_init(&ds->io, sock_io_cb);
        ds->next = ch->socks;
        ch->socks = ds;
    }
    ev_io_stop(ch->loop, &ds->io);
    ev_io_set(&ds->io, fd, (readable ? EV_READ : 0) | (writable ? EV_WRITE : 0));
    ev_io_start(ch->loop, &ds->io);
}

/* A DNS socket must not leak into a process usher execs. */
static int sock_created(ares_socket_t fd, int type, void *data)
{
    int flags = fcntl(fd, F_GETFD);
    if (flags >= 0)
        fcntl(fd, F_SETFD, flags | FD_CLOEXEC);
    return 0;
}

/* ---- answers ---------------------------------------------------------------- */

static int answer_add(struct answer *a, const struct sockaddr *sa, uint16_t port, unsigned weight)
{
    struct entry e = {.port = port, .weight = weight};

    if (sa->sa_family == AF_INET) {
        struct sockaddr_in *in = (struct sockaddr_in *)&e.sa;
        memcpy(in, sa, sizeof(*in));
        in->sin_port = htons(port);
        e.sa_len = sizeof(*in);
        inet_ntop(AF_INET, &in->sin_addr, e.host, sizeof(e.host));
        snprintf(e.name, sizeof(e.name), "%s:%u", e.host, (unsigned)port);
    } else if (sa->sa_family == AF_INET6) {
        struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)&e.sa;
        memcpy(in6, sa, sizeof(*in6));
        in6->sin6_port = htons(port);
        e.sa_len = sizeof(*in6);
        inet_ntop(AF_INET6, &in6->sin6_addr, e.host, sizeof(e.host));
        snprintf(e.name, sizeof(e.name), "[%s]:%u", e.host, (unsigned)port);
    } else {
        return 0;
    }
    for (size_t i = 0; i < a->n; i++)
        if (strcmp(a->e[i].name, e.name) == 0)
            return 0; /* the same address from two records or socket types */
    if (a->n == ANSWER_MAX)
        return 0;
    if (a->n == a->cap) {
        size_t cap = a->cap ? a->cap * 2 : 8;
        struct entry *n = realloc(a->e, cap * sizeof(*n));
        if (!n)
            return -1;
        a->e = n;
        a->cap = cap;
    }
    a->e[a->n++] = e;
    return 0;
}

static void answer_free(struct answer *a)
{
    free(a->e);
    a->e = NULL;
    a->n = a->cap = 0;
}

static int entry_cmp(const void *a, const void *b)
{
    return strcmp(((const struct entry *)a)->name, ((const struct entry *)b)->name);
}

/* The entry of sorted <a> named <name>, or NULL. */
static const struct entry *answer_find(const struct answer *a, const char *name)
{
    struct entry key;

    if (!a->n)
        return NULL;
    snprintf(key.name, sizeof(key.name), "%s", name);
    return bsearch(&key, a->e, a->n, sizeof(*a->e), entry_cmp);
}

/* <kind>: CONF_BACKEND_ADDED, or CONF_BACKEND_WEIGHT for a listed one whose
 * SRV weight changed. */
static int apply_added(struct dpool *dp, const struct entry *e, enum conf_change_kind kind)
{
    struct conf_backend cb = {.name = (char *)e->name, .weight = e->weight};
    struct conf_change ch = {.kind = kind, .new_pool = dp->cp, .new_backend = &cb};

    cb.address.text = (char *)e->name;
    cb.address.host = (char *)e->host;
    cb.address.port = e->port;
    cb.address.sa = e->sa;
    cb.address.sa_len = e->sa_len;
    return worker_apply_discovered(dp->d->w, &ch);
}

/* <from> gives the delay: the pool in force, or the one it had. */
static void apply_removed(struct dpool *dp, const struct entry *e, const struct conf_pool *from)
{
    struct conf_backend cb = {.name = (char *)e->name};
    struct conf_change ch = {.kind = CONF_BACKEND_REMOVED, .old_pool = from, .old_backend = &cb};

    worker_apply_discovered(dp->d->w, &ch);
}

static void drain_all(struct dpool *dp, const struct conf_pool *from)
{
    for (size_t i = 0; i < dp->cur.n; i++)
        apply_removed(dp, &dp->cur.e[i], from);
    answer_free(&dp->cur);
}

/* An answer that lists addresses: the pool's discovered backends become
 * exactly those. <ans> passes to the pool. */
static void answer_good(struct dpool *dp, struct answer *ans)
{
    size_t added = 0, removed = 0;
    bool recovered = dp->last_error != NULL;

    qsort(ans->e, ans->n, sizeof(*ans->e), entry_cmp);
    for (size_t i = 0; i < dp->cur.n; i++)
        if (!answer_find(ans, dp->cur.e[i].name)) {
            apply_removed(dp, &dp->cur.e[i], dp->cp);
            removed++;
        }
    for (size_t i = 0; i < ans->n;) {
        const struct entry *e = &ans->e[i];
        const struct entry *had = answer_find(&dp->cur, e->name);
        if (had) {
            if (had->weight != e->weight)
                apply_added(dp, e, CONF_BACKEND_WEIGHT);
            i++;
            continue;
        }
        if (apply_added(dp, e, CONF_BACKEND_ADDED) < 0) {
            /* not in force: left out, so the next answer tries again */
            memmove(&ans->e[i], &ans->e[i + 1], (ans->n - i - 1) * sizeof(*ans->e));
            ans->n--;
            continue;
        }
        added++;
        i++;
    }
    answer_free(&dp->cur);
    dp->cur = *ans;
    *ans = (struct answer){0};
    dp->last_error = NULL;
    dp->resolved_at = ev_now(dp->d->loop);
    dp->empty_since = 0;
    if (added || removed || recovered || !dp->first_done)
        log_kv(CONF_LOG_INFO, "discover answer", LOG_STR("pool", dp->name),
               LOG_STR("dns", dp->cp->discover.dns), LOG_UINT("addresses", dp->cur.n),
               LOG_UINT("added", added), LOG_UINT("removed", removed));
}

/* A failure or an empty answer (<empty>): nothing changes, except that an
 * empty answer lasting longer than hold is believed. */
static void answer_bad(struct dpool *dp, const char *why, bool empty)
{
    ev_tstamp now = ev_now(dp->d->loop);
    double hold_s = (double)dp->d->hold / 1000.0;

    if (why != dp->last_error)
        log_kv(CONF_LOG_WARN, "discover failed", LOG_STR("pool", dp->name),
               LOG_STR("dns", dp->cp->discover.dns), LOG_STR("error", why),
               LOG_UINT("holding", dp->cur.n), LOG_UINT("hold_ms", dp->d->hold));
    dp->last_error = why;
    if (!empty)
        return;
    if (dp->empty_since == 0)
        dp->empty_since = now;
    if (dp->cur.n == 0 || now - dp->empty_since < hold_s)
        return;
    log_kv(CONF_LOG_WARN, "discover emptied", LOG_STR("pool", dp->name),
           LOG_STR("dns", dp->cp->discover.dns), LOG_STR("error", why),
           LOG_UINT("removed", dp->cur.n), LOG_UINT("hold_ms", dp->d->hold));
    drain_all(dp, dp->cp);
}

static void query_result(struct dpool *dp, int status, struct answer *ans)
{
    if (status == ARES_ECANCELLED || status == ARES_EDESTRUCTION)
        return; /* we stopped it: it says nothing about DNS */
    if (status == ARES_SUCCESS && ans->n == 0)
        status = ARES_ENODATA;
    if (status == ARES_SUCCESS)
        answer_good(dp, ans);
    else
        answer_bad(dp, ares_strerror(status), status == ARES_ENOTFOUND || status == ARES_ENODATA);
    dp->first_done = true;
}

/* One lookup of <q> ended; the last one delivers the result. */
static void query_step(struct query *q)
{
    if (--q->pending > 0)
        return;
    if (q->dp) {
        q->dp->q = NULL;
        query_result(q->dp, q->status, &q->ans);
    }
    answer_free(&q->ans);
    free(q);
}

static void query_fail(struct query *q, int status)
{
    if (q->status == ARES_SUCCESS)
        q->status = status;
}

static void addr_cb(void *arg, int status, int timeouts, struct ares_addrinfo *res)
{
    struct lookup *lk = arg;
    struct query *q = lk->q;

    if (status == ARES_SUCCESS && res) {
        for (struct ares_addrinfo_node *n = res->nodes; n; n = n->ai_next)
            if (answer_add(&q->ans, n->ai_addr, lk->port, lk->weight) < 0)
                query_fail(q, ARES_ENOMEM);
    } else {
        query_fail(q, status);
    }
    if (res)
        ares_freeaddrinfo(res);
    free(lk);
    query_step(q);
}

/* Starts an A/AAAA lookup of <host> for <q> (counted in q->pending). */
static void lookup_start(struct discover *d, struct query *q, const char *host, uint16_t port,
                         unsigned weight)
{
    struct ares_addrinfo_hints hints = {.ai_family = AF_UNSPEC,
                                        .ai_socktype = SOCK_STREAM,
                                        /* order is ours (sorted by name); no
                                         * probing connects */
                                        .ai_flags = ARES_AI_NOSORT};
    struct lookup *lk = calloc(1, sizeof(*lk));

    q->pending++;
    if (!lk) {
        query_fail(q, ARES_ENOMEM);
        query_step(q);
        return;
    }
    lk->q = q;
    lk->port = port;
    lk->weight = weight;
    ares_getaddrinfo(d->ch.channel, host, NULL, &hints, addr_cb, lk);
}

/* SRV (RFC 2782): only the targets of the lowest priority value are used
 * (the others are backups); a record's weight becomes the backend's
 * (0, "rarely", becomes 1: usher's 0 means "no traffic"). */
static void srv_cb(void *arg, int status, int timeouts, unsigned char *abuf, int alen)
{
    struct query *q = arg;
    struct ares_srv_reply *srv = NULL;

    if (status == ARES_SUCCESS && q->dp) {
        int rc = ares_parse_srv_reply(abuf, alen, &srv);
        if (rc != ARES_SUCCESS) {
            query_fail(q, rc);
        } else if (!srv) {
            query_fail(q, ARES_ENODATA);
        } else {
            unsigned short best = srv->priority;
            for (struct ares_srv_reply *r = srv; r; r = r->next)
                if (r->priority < best)
                    best = r->priority;
            /* each lookup is counted before it starts: one answered at
             * once cannot end the query while the SRV step still holds it */
            for (struct ares_srv_reply *r = srv; r; r = r->next)
                if (r->priority == best)
                    lookup_start(q->dp->d, q, r->host, r->port, r->weight ? r->weight : 1);
            ares_free_data(srv);
        }
    } else if (status != ARES_SUCCESS) {
        query_fail(q, status);
    }
    query_step(q);
}

/* ---- pools ------------------------------------------------------------------ */

/* The in-flight query of <dp>, if any, no longer reports to it. */
static void orphan(struct dpool *dp)
{
    if (dp->q) {
        dp->q->dp = NULL;
        dp->q = NULL;
    }
}

static void resolve(struct dpool *dp)
{
    struct discover *d = dp->d;
    const struct conf_discover *di = &dp->cp->discover;
    struct query *q;

    if (dp->q)
        return; /* the previous one is still out: c-ares bounds it */
    if (!d->ch.ok) {
        answer_bad(dp, err_no_channel, false);
        dp->first_done = true;
        return;
    }
    q = calloc(1, sizeof(*q));
    if (!q) {
        answer_bad(dp, err_no_memory, false);
        dp->first_done = true;
        return;
    }
    q->dp = dp;
    dp->q = q;
    /* the query holds itself until every lookup below has been issued */
    q->pending = 1;
    if (di->srv) {
        q->pending++;
        ares_query(d->ch.channel, di->dns, ns_c_in, ns_t_srv, srv_cb, q);
    } else {
        lookup_start(d, q, di->dns, di->port, 1);
    }
    query_step(q);
    arm_timeout(&d->ch);
}

static void pool_timer_cb(struct ev_loop *loop, ev_timer *t, int revents)
{
    resolve(container_of(t, struct dpool, timer));
}

/* Resolves now, then every interval. */
static void pool_schedule(struct dpool *dp)
{
    ev_timer_stop(dp->d->loop, &dp->timer);
    ev_timer_set(&dp->timer, 0., (double)dp->cp->discover.interval / 1000.0);
    ev_timer_start(dp->d->loop, &dp->timer);
}

static void pool_free(struct dpool *dp)
{
    orphan(dp);
    ev_timer_stop(dp->d->loop, &dp->timer);
    answer_free(&dp->cur);
    free(dp->name);
    free(dp);
}

static struct dpool *pool_find(const struct discover *d, const char *name)
{
    for (struct dpool *dp = d->pools; dp; dp = dp->next)
        if (strcmp(dp->name, name) == 0)
            return dp;
    return NULL;
}

static bool same_query(const struct conf_discover *a, const struct conf_discover *b)
{
    return strcmp(a->dns, b->dns) == 0 && a->port == b->port && a->srv == b->srv;
}

/* ---- the channel ------------------------------------------------------------ */

/* "host:port,host:port" of the configured nameservers: what tells a reload
 * that changed them. NULL on allocation failure. */
static char *servers_key(const struct conf *nc)
{
    size_t len = 1;
    char *key;

    for (size_t i = 0; i < nc->resolver.num_nameservers; i++)
        len += strlen(nc->resolver.nameservers[i].text) + 1;
    key = malloc(len);
    if (!key)
        return NULL;
    key[0] = '\0';
    for (size_t i = 0; i < nc->resolver.num_nameservers; i++) {
        if (i)
            strcat(key, ",");
        strcat(key, nc->resolver.nameservers[i].text);
    }
    return key;
}

static void chan_init(struct dchan *ch, struct ev_loop *loop)
{
    memset(ch, 0, sizeof(*ch));
    ch->loop = loop;
    ev_init(&ch->timeout, timeout_cb);
}

/* Destroys the channel: every query still out is called back with
 * ARES_EDESTRUCTION (its owner dropped it first, or ignores that). */
static void chan_close(struct dchan *ch)
{
    if (ch->ok)
        ares_destroy(ch->channel);
    ch->ok = false;
    ev_timer_stop(ch->loop, &ch->timeout);
    while (ch->socks) {
        struct dsock *ds = ch->socks;
        ch->socks = ds->next;
        ev_io_stop(ch->loop, &ds->io);
        free(ds);
    }
}

static int set_servers(struct dchan *ch, const struct conf *nc)
{
    size_t n = nc->resolver.num_nameservers;
    struct ares_addr_port_node *list = calloc(n, sizeof(*list));
    int rc;

    if (!list)
        return ARES_ENOMEM;
    for (size_t i = 0; i < n; i++) {
        const struct conf_address *a = &nc->resolver.nameservers[i];
        struct ares_addr_port_node *s = &list[i];
        s->next = i + 1 < n ? &list[i + 1] : NULL;
        s->family = a->sa.ss_family;
        if (s->family == AF_INET)
            s->addr.addr4 = ((const struct sockaddr_in *)&a->sa)->sin_addr;
        else
            memcpy(&s->addr.addr6, &((const struct sockaddr_in6 *)&a->sa)->sin6_addr,
                   sizeof(s->addr.addr6));
        s->udp_port = s->tcp_port = a->port;
    }
    rc = ares_set_servers_ports(ch->channel, list);
    free(list);
    return rc;
}

/* Opens the channel the way discovery resolves: <nc>'s
 * resolver.nameservers (/etc/resolv.conf without them, or with <system>),
 * QUERY_TIMEOUT_MS a try, QUERY_TRIES tries. Returns ARES_SUCCESS or the
 * c-ares error (the channel is then closed). */
static int chan_open(struct dchan *ch, const struct conf *nc, bool system)
{
    struct ares_options o = {0};
    int mask = ARES_OPT_SOCK_STATE_CB | ARES_OPT_TIMEOUTMS | ARES_OPT_TRIES;
    int rc;

    o.sock_state_cb = sock_state_cb;
    o.sock_state_cb_data = ch;
    o.timeout = QUERY_TIMEOUT_MS;
    o.tries = QUERY_TRIES;
    rc = ares_init_options(&ch->channel, &o, mask);
    if (rc == ARES_SUCCESS) {
        ch->ok = true;
        ares_set_socket_callback(ch->channel, sock_created, NULL);
        if (!system && nc->resolver.num_nameservers)
            rc = set_servers(ch, nc);
    }
    if (rc != ARES_SUCCESS)
        chan_close(ch);
    return rc;
}

static void channel_close(struct discover *d)
{
    for (struct dpool *dp = d->pools; dp; dp = dp->next)
        orphan(dp);
    chan_close(&d->ch); /* orphaned callbacks: dropped */
    free(d->servers_key);
    d->servers_key = NULL;
}

static int channel_open(struct discover *d, const struct conf *nc, char *key)
{
    const char *servers = key[0] ? key : "/etc/resolv.conf";
    int rc = chan_open(&d->ch, nc, false);

    if (rc != ARES_SUCCESS) {
        log_kv(CONF_LOG_ERROR, "discover resolver failed", LOG_STR("error", ares_strerror(rc)),
               LOG_STR("nameservers", servers));
        channel_close(d); /* the next reload tries again */
        free(key);
        return -1;
    }
    log_kv(CONF_LOG_INFO, "discover resolver", LOG_STR("nameservers", servers),
           LOG_UINT("hold_ms", nc->resolver.hold), LOG_STR("c_ares", ares_version(NULL)));
    d->servers_key = key;
    return 0;
}

/* ---- the module ------------------------------------------------------------- */

struct discover *discover_new(struct ev_loop *loop, struct worker *w)
{
    struct discover *d = calloc(1, sizeof(*d));

    if (!d)
        return NULL;
    if (ares_library_init(ARES_LIB_INIT_ALL) != ARES_SUCCESS) {
        free(d);
        return NULL;
    }
    d->loop = loop;
    d->w = w;
    chan_init(&d->ch, loop);
    return d;
}

int discover_configure(struct discover *d, const struct conf *nc)
{
    bool any = false;
    int rc = 0;
    char *key;

    for (size_t i = 0; i < nc->num_pools; i++)
        any = any || nc->pools[i].discover.enabled;
    d->hold = nc->resolver.hold;

    /* pools that stopped discovering drain what they found */
    for (struct dpool **pp = &d->pools; *pp;) {
        struct dpool *dp = *pp;
        const struct conf_pool *np = conf_find_pool(nc, dp->name);
        if (np && np->discover.enabled) {
            pp = &dp->next;
            continue;
        }
        log_kv(CONF_LOG_INFO, "discover stopped", LOG_STR("pool", dp->name),
               LOG_UINT("removed", dp->cur.n));
        drain_all(dp, np ? np : dp->cp);
        *pp = dp->next;
        pool_free(dp);
    }

    key = any ? servers_key(nc) : NULL;
    if (any && !key)
        return -1;
    bool rebuilt = false;
    if (!any || !d->servers_key || strcmp(key, d->servers_key) != 0) {
        channel_close(d);
        if (any) {
            rebuilt = true;
            if (channel_open(d, nc, key) < 0)
                rc = -1;
        }
    } else {
        free(key);
    }

    for (size_t i = 0; i < nc->num_pools; i++) {
        const struct conf_pool *cp = &nc->pools[i];
        if (!cp->discover.enabled)
            continue;
        struct dpool *dp = pool_find(d, cp->name);
        if (!dp) {
            dp = calloc(1, sizeof(*dp));
            if (!dp || !(dp->name = strdup(cp->name))) {
                free(dp);
                rc = -1;
                continue;
            }
            dp->d = d;
            dp->cp = cp;
            ev_init(&dp->timer, pool_timer_cb);
            dp->next = d->pools;
            d->pools = dp;
            log_kv(CONF_LOG_INFO, "discover started", LOG_STR("pool", cp->name),
                   LOG_STR("dns", cp->discover.dns), LOG_BOOL("srv", cp->discover.srv),
                   LOG_UINT("port", cp->discover.port),
                   LOG_UINT("interval_ms", cp->discover.interval));
            pool_schedule(dp);
            continue;
        }
        bool requery = rebuilt || !same_query(&dp->cp->discover, &cp->discover);
        bool retime = dp->cp->discover.interval != cp->discover.interval;
        dp->cp = cp;
        if (requery) {
            orphan(dp);
            dp->empty_since = 0; /* a new question: its answers start a new count */
        }
        if (requery || retime)
            pool_schedule(dp);
    }
    return rc;
}

bool discover_first_round_done(const struct discover *d)
{
    for (const struct dpool *dp = d ? d->pools : NULL; dp; dp = dp->next)
        if (!dp->first_done)
            return false;
    return true;
}

bool discover_status_json(const struct discover *d, const char *pool, struct hbuf *o)
{
    const struct dpool *dp = d ? pool_find(d, pool) : NULL;

    if (!dp)
        return false;
    hbuf_append_str(o, "{\"dns\":");
    log_json_str(o, dp->cp->discover.dns);
    hbuf_append_str(o, ",\"addresses\":[");
    for (size_t i = 0; i < dp->cur.n; i++) {
        if (i)
            hbuf_append_str(o, ",");
        log_json_str(o, dp->cur.e[i].name);
    }
    hbuf_append_str(o, "],\"last_error\":");
    if (dp->last_error)
        log_json_str(o, dp->last_error);
    else if (!dp->first_done)
        log_json_str(o, "not resolved yet");
    else
        hbuf_append_str(o, "null");
    hbuf_append_str(o, ",\"resolved_age_ms\":");
    if (dp->resolved_at > 0)
        hbuf_printf(o, "%.0f", (ev_now(d->loop) - dp->resolved_at) * 1000.0);
    else
        hbuf_append_str(o, "null");
    hbuf_append_str(o, "}");
    return true;
}

static void rerr_clear(struct resolve_errors *r)
{
    for (size_t i = 0; i < r->n; i++) {
        free(r->e[i].pool);
        free(r->e[i].backend);
    }
    free(r->e);
    free(r->slots);
    memset(r, 0, sizeof(*r));
}

/* FNV-1a over "pool\0backend". */
static size_t rerr_hash(const char *pool, const char *backend)
{
    uint64_t h = 1469598103934665603ull;
    for (const char *s = pool;; s++) {
        h = (h ^ (unsigned char)*s) * 1099511628211ull;
        if (!*s)
            break;
    }
    for (const char *s = backend; *s; s++)
        h = (h ^ (unsigned char)*s) * 1099511628211ull;
    return (size_t)h;
}

int discover_set_resolve_errors(struct discover *d, const struct discover_resolve_error *errs,
                                size_t n)
{
    struct resolve_errors *r = &d->rerr;
    rerr_clear(r);
    if (n == 0)
        return 0;
    size_t cap = 4;
    while (cap < 2 * n)
        cap *= 2;
    r->e = calloc(n, sizeof(*r->e));
    r->slots = calloc(cap, sizeof(*r->slots));
    if (!r->e || !r->slots) {
        rerr_clear(r);
        return -1;
    }
    r->mask = cap - 1;
    for (size_t i = 0; i < n; i++) {
        struct rerr_entry *e = &r->e[r->n];
        e->pool = strdup(errs[i].pool);
        e->backend = strdup(errs[i].backend);
        e->why = errs[i].why;
        if (!e->pool || !e->backend) {
            free(e->pool);
            free(e->backend);
            rerr_clear(r);
            return -1;
        }
        size_t k = rerr_hash(e->pool, e->backend) & r->mask;
        while (r->slots[k])
            k = (k + 1) & r->mask;
        r->slots[k] = ++r->n;
    }
    return 0;
}

const char *discover_resolve_error(const struct discover *d, const char *pool, const char *backend)
{
    const struct resolve_errors *r = d ? &d->rerr : NULL;
    if (!r || r->n == 0)
        return NULL;
    for (size_t k = rerr_hash(pool, backend) & r->mask; r->slots[k]; k = (k + 1) & r->mask) {
        const struct rerr_entry *e = &r->e[r->slots[k] - 1];
        if (strcmp(e->pool, pool) == 0 && strcmp(e->backend, backend) == 0)
            return e->why;
    }
    return NULL;
}

/* ---- a batch of names --------------------------------------------------------
 * Its own channel, so a reload's lookups never wait behind (or cancel)
 * discovery's, and one ares_destroy drops whatever is still out when the
 * time is up. */

struct name_result {
    bool done;
    int status; /* ARES_SUCCESS, ARES_ETIMEOUT (our bound), or c-ares's */
    struct sockaddr_storage sa;
    socklen_t len;
};

struct name_lookup {
    struct discover_names *b;
    size_t i;
};

struct discover_names {
    struct dchan ch;
    size_t n, pending;
    struct name_result *res;
    ev_timer deadline; /* the bound on the whole batch */
    ev_timer finish;   /* calls <done> from a callback of its own */
    bool finished;     /* no answer counts any more */
    void (*done)(void *ctx);
    void *ctx;
};

static const char why_timed_out[] = "timed out";

static void names_finish(struct discover_names *b)
{
    if (b->finished)
        return;
    b->finished = true;
    ev_timer_stop(b->ch.loop, &b->deadline);
    ev_timer_start(b->ch.loop, &b->finish);
}

static void name_cb(void *arg, int status, int timeouts, struct ares_addrinfo *res)
{
    struct name_lookup *lk = arg;
    struct discover_names *b = lk->b;
    struct name_result *r = &b->res[lk->i];

    free(lk);
    if (!r->done && !b->finished) {
        const struct ares_addrinfo_node *pick = NULL;
        for (const struct ares_addrinfo_node *nd = res ? res->nodes : NULL; nd; nd = nd->ai_next) {
            if (nd->ai_family != AF_INET && nd->ai_family != AF_INET6)
                continue;
            if (!pick || (pick->ai_family != AF_INET && nd->ai_family == AF_INET))
                pick = nd; /* IPv4 first, as conf_load()'s getaddrinfo pick */
        }
        r->done = true;
        r->status = status == ARES_SUCCESS && !pick ? ARES_ENODATA : status;
        if (r->status == ARES_SUCCESS && pick->ai_addrlen <= sizeof(r->sa)) {
            memcpy(&r->sa, pick->ai_addr, pick->ai_addrlen);
            r->len = (socklen_t)pick->ai_addrlen;
        } else if (r->status == ARES_SUCCESS) {
            r->status = ARES_EBADRESP;
        }
        if (--b->pending == 0)
            names_finish(b);
    }
    if (res)
        ares_freeaddrinfo(res);
}

static void names_deadline_cb(struct ev_loop *loop, ev_timer *t, int revents)
{
    struct discover_names *b = container_of(t, struct discover_names, deadline);
    for (size_t i = 0; i < b->n; i++)
        if (!b->res[i].done) {
            b->res[i].done = true;
            b->res[i].status = ARES_ETIMEOUT;
        }
    names_finish(b);
    chan_close(&b->ch); /* what is still out calls back now, and counts for nothing */
}

static void names_finish_cb(struct ev_loop *loop, ev_timer *t, int revents)
{
    struct discover_names *b = container_of(t, struct discover_names, finish);
    b->done(b->ctx);
}

struct discover_names *discover_names_start(struct ev_loop *loop, const struct conf *nc,
                                            bool system, const char *const *hosts, size_t n,
                                            conf_ms timeout_ms, void (*done)(void *ctx), void *ctx,
                                            const char **why)
{
    struct discover_names *b = calloc(1, sizeof(*b));
    *why = err_no_memory;
    if (!b || !(b->res = calloc(n ? n : 1, sizeof(*b->res)))) {
        free(b);
        return NULL;
    }
    /* counted: startup resolves before discovery initialised the library */
    int rc = ares_library_init(ARES_LIB_INIT_ALL);
    if (rc != ARES_SUCCESS) {
        *why = ares_strerror(rc);
        free(b->res);
        free(b);
        return NULL;
    }
    chan_init(&b->ch, loop);
    b->n = n;
    b->done = done;
    b->ctx = ctx;
    ev_timer_init(&b->deadline, names_deadline_cb, (double)timeout_ms / 1000.0, 0.);
    ev_timer_init(&b->finish, names_finish_cb, 0., 0.);
    rc = chan_open(&b->ch, nc, system);
    if (rc != ARES_SUCCESS) {
        *why = ares_strerror(rc);
        ares_library_cleanup();
        free(b->res);
        free(b);
        return NULL;
    }
    ev_timer_start(loop, &b->deadline);
    /* counted up front: an answer given at once (/etc/hosts) cannot finish
     * the batch while lookups are still being issued */
    b->pending = n + 1;
    /* no sorting: the pick is ours (IPv4 first), and c-ares's sort would
     * probe each answer with a connect */
    struct ares_addrinfo_hints hints = {
        .ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM, .ai_flags = ARES_AI_NOSORT};
    for (size_t i = 0; i < n; i++) {
        struct name_lookup *lk = calloc(1, sizeof(*lk));
        if (!lk) {
            b->res[i] = (struct name_result){.done = true, .status = ARES_ENOMEM};
            b->pending--;
            continue;
        }
        lk->b = b;
        lk->i = i;
        ares_getaddrinfo(b->ch.channel, hosts[i], NULL, &hints, name_cb, lk);
    }
    if (--b->pending == 0)
        names_finish(b);
    arm_timeout(&b->ch);
    return b;
}

int discover_names_result(const struct discover_names *b, size_t i, struct sockaddr_storage *sa,
                          socklen_t *len, const char **why)
{
    const struct name_result *r = &b->res[i];
    if (r->done && r->status == ARES_SUCCESS) {
        memcpy(sa, &r->sa, sizeof(*sa));
        *len = r->len;
        return 0;
    }
    *why = !r->done || r->status == ARES_ETIMEOUT ? why_timed_out : ares_strerror(r->status);
    return -1;
}

void discover_names_free(struct discover_names *b)
{
    if (!b)
        return;
    b->finished = true;
    ev_timer_stop(b->ch.loop, &b->deadline);
    ev_timer_stop(b->ch.loop, &b->finish);
    chan_close(&b->ch); /* callbacks of what is out run here, and count for nothing */
    ares_library_cleanup();
    free(b->res);
    free(b);
}

void discover_free(struct discover *d)
{
    if (!d)
        return;
    rerr_clear(&d->rerr);
    channel_close(d);
    while (d->pools) {
        struct dpool *dp = d->pools;
        d->pools = dp->next;
        pool_free(dp);
    }
    ares_library_cleanup();
    free(d);
}
