/* The fleet link. etcd is the one truth for the overrides: the API of any
 * instance writes its change (one txn, so a pool drain or a switch is all
 * or nothing), and every instance — the writer too — converges on what
 * the watch delivers: reconcile() moves the data plane from p->ov to the
 * overrides built from the mirror of etcd's keys. The writer applies its
 * change at once (its API reply shows it) and reconciles only once the
 * watch has caught up with its write, so it never flickers back.
 *
 * While etcd is unreachable nothing changes: the data plane keeps the
 * overrides last seen, mutations get 503 (fleet_writable), and the watch
 * resumes from the revision after the last one seen. */
#include "fleet.h"

#include <stdlib.h>
#include <string.h>

#include "../../health/backend.h"
#include "../net/list.h"
#include "../base/log.h"
#include "../core/balance.h"
#include "../core/listener.h"
#include "../core/fds.h"
#include "../core/upstream.h"
#include "../core/worker.h"
#include "etcd.h"
#include "../control/overrides.h"

/* A failed initial load is retried this often (the watch has its own
 * backoff once it exists). */
#define RANGE_RETRY_S 1.0

/* Outcomes remembered, by ticket modulo this: far more than the writes one
 * admin listener (32 connections) can have in flight. */
#define TICKETS 64

static const char why_down[] = "etcd is unreachable: the fleet's overrides cannot change now";
static const char why_loading[] = "the fleet's overrides are not loaded from etcd yet";

struct kv {
    char *key, *val;
};

struct instance {
    char *id;
    json_t *report; /* {"state", "rev", "pools": {POOL: busy}} */
};

struct ticket {
    struct fleet *f;
    unsigned long n;
    int outcome; /* fleet_write_outcome() */
};

struct fleet {
    struct process *p;
    struct etcd *e;
    struct conf_address *eps; /* a copy: the config may be reloaded away */
    size_t num_eps;
    char *prefix, *prefix_end, *ov_prefix, *inst_prefix, *id, *self_key;

    bool loaded;           /* the initial range arrived */
    bool loading;          /* a range is in flight */
    bool connected;        /* the watch is up */
    long long rev;         /* last revision seen */
    long long applied_rev; /* overrides applied up to this revision */
    long long write_rev;   /* revision of our last write */
    unsigned writes_pending;
    bool dirty; /* the mirror changed while a write of ours was pending */
    unsigned long issued;
    struct ticket tickets[TICKETS];

    struct kv *mirror; /* prefix/overrides/... as etcd has them */
    size_t num_mirror;
    struct instance *insts;
    size_t num_insts;

    long long lease;
    bool granting, publishing, keeping;
    char *published; /* last report put */
    ev_tstamp last_keepalive, next_range;
    uint64_t generation; /* the config generation last compared */
    bool leaving;
    void (*left)(void *ctx);
    void *left_ctx;
    ev_timer leave_timer;
    ev_timer tick;
};

/* ---- overrides <-> keys ---------------------------------------------------- */

static int kvs_add(struct kv **a, size_t *n, char *key, char *val)
{
    struct kv *k = realloc(*a, (*n + 1) * sizeof(**a));
    if (!k || !key || !val) {
        if (k)
            *a = k;
        free(key);
        free(val);
        return -1;
    }
    *a = k;
    k[*n] = (struct kv){key, val};
    (*n)++;
    return 0;
}

static void kvs_free(struct kv *a, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        free(a[i].key);
        free(a[i].val);
    }
    free(a);
}

static char *dump(json_t *v)
{
    char *s = v ? json_dumps(v, JSON_COMPACT | JSON_SORT_KEYS) : NULL;
    json_decref(v);
    return s;
}

static char *key_of(const struct fleet *f, const char *kind, const char *a, const char *b)
{
    struct hbuf h = {0};
    hbuf_printf(&h, "%s%s/%s%s%s", f->ov_prefix, kind, a, b ? "/" : "", b ? b : "");
    return h.data; /* NUL-terminated (hbuf), or NULL */
}

/* Every override of <ov> as the key and value it has in etcd. */
static int ov_to_kvs(const struct fleet *f, const struct overrides *ov, struct kv **out, size_t *n)
{
    int rc = 0;
    for (size_t i = 0; i < ov->num_drains; i++) {
        const struct override_drain *d = &ov->drains[i];
        rc |= kvs_add(out, n, key_of(f, "drain", d->pool, d->backend),
                      dump(json_pack("{s:s,s:s,s:I}", "pool", d->pool, "backend", d->backend,
                                     "deadline_epoch_ms", (json_int_t)d->deadline_epoch_ms)));
    }
    for (size_t i = 0; i < ov->num_weights; i++) {
        const struct override_weight *w = &ov->weights[i];
        rc |= kvs_add(out, n, key_of(f, "weight", w->pool, w->backend),
                      dump(json_pack("{s:s,s:s,s:I}", "pool", w->pool, "backend", w->backend,
                                     "weight", (json_int_t)w->weight)));
    }
    for (size_t i = 0; i < ov->num_splits; i++) {
        const struct override_split *s = &ov->splits[i];
        json_t *arr = json_array();
        for (size_t k = 0; arr && k < s->n; k++)
            json_array_append_new(arr, json_pack("{s:s,s:I}", "pool", s->split[k].pool, "weight",
                                                 (json_int_t)s->split[k].weight));
        rc |= kvs_add(
            out, n, key_of(f, "split", s->listener, NULL),
            dump(arr ? json_pack("{s:s,s:o}", "listener", s->listener, "split", arr) : NULL));
    }
    return rc;
}

/* One value of prefix/overrides/ into <ov>; -1 (logged) if it is not ours. */
static int ov_add_value(struct overrides *ov, const char *key, const char *val)
{
    json_error_t jerr;
    json_t *v = json_loads(val, 0, &jerr);
    const char *pool = NULL, *backend = NULL, *listener = NULL;
    json_int_t num = 0;
    json_t *arr = NULL;
    int rc = -1;
    if (!v)
        goto out;
    if (!json_unpack(v, "{s:s,s:s,s:I}", "pool", &pool, "backend", &backend, "deadline_epoch_ms",
                     &num)) {
        rc = overrides_set_drain(ov, pool, backend, (long long)num);
    } else if (!json_unpack(v, "{s:s,s:s,s:I}", "pool", &pool, "backend", &backend, "weight",
                            &num) &&
               num >= 0 && num <= UINT32_MAX) {
        rc = overrides_set_weight(ov, pool, backend, (unsigned)num);
    } else if (!json_unpack(v, "{s:s,s:o}", "listener", &listener, "split", &arr) &&
               json_is_array(arr) && json_array_size(arr) <= 512) {
        size_t n = json_array_size(arr), i;
        struct conf_split *sp = calloc(n ? n : 1, sizeof(*sp));
        json_t *it;
        rc = sp ? 0 : -1;
        json_array_foreach(arr, i, it)
        {
            const char *pn;
            json_int_t w;
            if (!sp || json_unpack(it, "{s:s,s:I}", "pool", &pn, "weight", &w) || w < 0 ||
                w > UINT32_MAX) {
                rc = -1;
                break;
            }
            sp[i] = (struct conf_split){.pool = (char *)pn, .weight = (unsigned)w};
        }
        if (rc == 0)
            rc = overrides_set_split(ov, listener, sp, n);
        free(sp);
    }
out:
    if (rc < 0)
        log_kv(CONF_LOG_WARN, "fleet override ignored", LOG_STR("key", key),
               LOG_STR("reason", "not an usher override"));
    json_decref(v);
    return rc;
}

static struct overrides *mirror_overrides(const struct fleet *f)
{
    struct overrides *ov = overrides_new();
    for (size_t i = 0; ov && i < f->num_mirror; i++)
        ov_add_value(ov, f->mirror[i].key, f->mirror[i].val);
    return ov;
}

static struct kv *kv_find(struct kv *a, size_t n, const char *key)
{
    for (size_t i = 0; i < n; i++)
        if (!strcmp(a[i].key, key))
            return &a[i];
    return NULL;
}

static void mirror_put(struct fleet *f, char *key, char *val)
{
    struct kv *k = kv_find(f->mirror, f->num_mirror, key);
    if (k) {
        free(k->val);
        k->val = val;
        free(key);
        return;
    }
    kvs_add(&f->mirror, &f->num_mirror, key, val);
}

static void mirror_delete(struct fleet *f, const char *key)
{
    struct kv *k = kv_find(f->mirror, f->num_mirror, key);
    if (!k)
        return;
    free(k->key);
    free(k->val);
    *k = f->mirror[--f->num_mirror];
}

/* ---- applying -------------------------------------------------------------- */

static bool same_split(const struct override_split *a, const struct override_split *b)
{
    if (!a || !b || a->n != b->n)
        return false;
    for (size_t i = 0; i < a->n; i++)
        if (strcmp(a->split[i].pool, b->split[i].pool) || a->split[i].weight != b->split[i].weight)
            return false;
    return true;
}


static void not_applied(const char *kind, const char *a, const char *b)
{
    log_kv(CONF_LOG_WARN, "fleet override not applied", LOG_STR("kind", kind), LOG_STR("name", a),
           LOG_STR("backend", b ? b : ""), LOG_STR("reason", "the config has no such name"));
}

/* Moves the data plane from p->ov to <target> (owned from here on), one
 * change per difference, and makes <target> p->ov. */
static void reconcile(struct fleet *f, struct overrides *target)
{
    struct process *p = f->p;
    struct worker *w = p->w;
    struct overrides *cur = p->ov;
    long long now = overrides_epoch_ms();

    for (size_t i = 0; i < cur->num_drains; i++) {
        struct override_drain *d = &cur->drains[i];
        bool kept = false;
        for (size_t k = 0; k < target->num_drains && !kept; k++)
            kept = !strcmp(target->drains[k].pool, d->pool) &&
                   !strcmp(target->drains[k].backend, d->backend);
        struct server *s = kept ? NULL : worker_find_server(w, d->pool, d->backend);
        if (s && backend_admin_ready(s->hb))
            log_kv(CONF_LOG_INFO, "fleet ready", LOG_STR("pool", d->pool),
                   LOG_STR("backend", d->backend));
    }
    for (size_t i = 0; i < target->num_drains; i++) {
        struct override_drain *d = &target->drains[i];
        struct server *s = worker_find_server(w, d->pool, d->backend);
        if (!s) {
            not_applied("drain", d->pool, d->backend);
            continue;
        }
        if (s->hb->drain_reason == BACKEND_DRAIN_ADMIN)
            continue;
        long long left = d->deadline_epoch_ms - now;
        log_kv(CONF_LOG_INFO, "fleet drain", LOG_STR("pool", d->pool),
               LOG_STR("backend", d->backend), LOG_INT("deadline_ms", left > 0 ? left : 0));
        backend_admin_drain(s->hb, (conf_ms)(left > 0 ? left : 0));
    }
    for (size_t i = 0; i < cur->num_weights; i++) {
        struct override_weight *o = &cur->weights[i];
        struct server *s = overrides_find_weight(target, o->pool, o->backend)
                               ? NULL
                               : worker_find_server(w, o->pool, o->backend);
        if (s) {
            server_override_weight(s, false, 0);
            log_kv(CONF_LOG_INFO, "fleet weight cleared", LOG_STR("pool", o->pool),
                   LOG_STR("backend", o->backend));
        }
    }
    for (size_t i = 0; i < target->num_weights; i++) {
        struct override_weight *o = &target->weights[i];
        const struct override_weight *was = overrides_find_weight(cur, o->pool, o->backend);
        struct server *s = worker_find_server(w, o->pool, o->backend);
        if (!s) {
            not_applied("weight", o->pool, o->backend);
            continue;
        }
        if (was && was->weight == o->weight && s->weight_overridden)
            continue;
        server_override_weight(s, true, o->weight);
        log_kv(CONF_LOG_INFO, "fleet weight", LOG_STR("pool", o->pool),
               LOG_STR("backend", o->backend), LOG_UINT("weight", o->weight));
    }
    for (size_t i = 0; i < cur->num_splits; i++) {
        struct override_split *o = &cur->splits[i];
        struct listener *l = overrides_find_split(target, o->listener)
                                 ? NULL
                                 : worker_listener_named(w, o->listener);
        if (l) {
            listener_clear_split(l);
            log_kv(CONF_LOG_INFO, "fleet split cleared", LOG_STR("listener", o->listener));
        }
    }
    for (size_t i = 0; i < target->num_splits; i++) {
        struct override_split *o = &target->splits[i];
        if (same_split(o, overrides_find_split(cur, o->listener)))
            continue;
        struct listener *l = worker_listener_named(w, o->listener);
        const char *unknown = NULL;
        if (!l || listener_override_split(l, o->split, o->n, &unknown) < 0) {
            not_applied("split", o->listener, unknown);
            continue;
        }
        struct hbuf lf = {0};
        listener_split_text(l, &lf);
        log_kv(CONF_LOG_INFO, "fleet split", LOG_STR("listener", o->listener),
               LOG_STR("split", lf.data ? lf.data : ""), LOG_INT("revision", f->applied_rev));
        hbuf_free(&lf);
        worker_split_overridden(w, l);
    }
    p->ov = target;
    overrides_free(cur);
}

/* Reconciles with the mirror unless a write of ours is not back yet. */
static void maybe_reconcile(struct fleet *f)
{
    if (!f->dirty || f->writes_pending || f->applied_rev < f->write_rev)
        return;
    struct overrides *t = mirror_overrides(f);
    if (!t)
        return;
    f->dirty = false;
    reconcile(f, t);
}

/* ---- instances ------------------------------------------------------------- */

static void inst_put(struct fleet *f, const char *id, const char *val)
{
    json_error_t jerr;
    json_t *r = json_loads(val, 0, &jerr);
    if (!r)
        return;
    for (size_t i = 0; i < f->num_insts; i++)
        if (!strcmp(f->insts[i].id, id)) {
            json_decref(f->insts[i].report);
            f->insts[i].report = r;
            return;
        }
    struct instance *a = realloc(f->insts, (f->num_insts + 1) * sizeof(*a));
    char *dup = strdup(id);
    if (!a || !dup) {
        if (a)
            f->insts = a;
        free(dup);
        json_decref(r);
        return;
    }
    f->insts = a;
    a[f->num_insts++] = (struct instance){dup, r};
    log_kv(CONF_LOG_INFO, "fleet instance joined", LOG_STR("instance", id));
}

static void inst_delete(struct fleet *f, const char *id)
{
    for (size_t i = 0; i < f->num_insts; i++)
        if (!strcmp(f->insts[i].id, id)) {
            log_kv(CONF_LOG_INFO, "fleet instance left", LOG_STR("instance", id));
            free(f->insts[i].id);
            json_decref(f->insts[i].report);
            f->insts[i] = f->insts[--f->num_insts];
            return;
        }
}

static void insts_clear(struct fleet *f)
{
    for (size_t i = 0; i < f->num_insts; i++) {
        free(f->insts[i].id);
        json_decref(f->insts[i].report);
    }
    free(f->insts);
    f->insts = NULL;
    f->num_insts = 0;
}

/* ---- etcd events ----------------------------------------------------------- */

/* One key/value of the prefix, from the range or a PUT event. */
static void take_kv(struct fleet *f, json_t *kv, bool deleted)
{
    size_t kl = 0;
    char *key = etcd_unb64(json_object_get(kv, "key"), &kl);
    char *val = deleted ? NULL : etcd_unb64(json_object_get(kv, "value"), NULL);
    if (!key || (!deleted && !val))
        goto out;
    size_t ol = strlen(f->ov_prefix), il = strlen(f->inst_prefix);
    if (!strncmp(key, f->ov_prefix, ol)) {
        if (deleted)
            mirror_delete(f, key);
        else {
            mirror_put(f, key, val);
            key = val = NULL;
        }
        f->dirty = true;
    } else if (!strncmp(key, f->inst_prefix, il)) {
        if (deleted)
            inst_delete(f, key + il);
        else
            inst_put(f, key + il, val);
    }
out:
    free(key);
    free(val);
}

static void watch_up(void *ctx)
{
    struct fleet *f = ctx;
    f->connected = true;
    log_kv(CONF_LOG_INFO, "fleet connected", LOG_STR("endpoint", etcd_endpoint(f->e)),
           LOG_INT("revision", f->rev));
}

static void watch_down(void *ctx, const char *why)
{
    struct fleet *f = ctx;
    if (f->connected)
        log_kv(CONF_LOG_WARN, "fleet disconnected", LOG_STR("reason", why),
               LOG_STR("action", "serving with the overrides last seen; mutations get 503"),
               LOG_INT("revision", f->rev));
    f->connected = false;
}

static void start_range(struct fleet *f);

static void watch_result(void *ctx, json_t *res)
{
    struct fleet *f = ctx;
    const char *resync = NULL;
    long long hr = etcd_int(json_object_get(res, "header"), "revision", 0);
    if (etcd_int(res, "compact_revision", 0) > 0 || json_is_true(json_object_get(res, "canceled")))
        resync = "the revisions missed are compacted away";
    else if (json_is_true(json_object_get(res, "created")) && hr < f->rev)
        resync = "etcd is behind the revision last seen (its data was replaced)";
    if (resync) {
        /* the watch cannot replay what we missed: load it all again */
        log_kv(CONF_LOG_WARN, "fleet resync", LOG_STR("reason", resync),
               LOG_INT("revision", f->rev), LOG_INT("etcd_revision", hr));
        f->connected = false;
        f->loaded = false;
        start_range(f);
        return;
    }
    json_t *evs = json_object_get(res, "events"), *ev;
    size_t i;
    json_array_foreach(evs, i, ev)
    {
        json_t *kv = json_object_get(ev, "kv");
        const char *type = json_string_value(json_object_get(ev, "type"));
        long long r = etcd_int(kv, "mod_revision", 0);
        if (r > f->rev)
            f->rev = r;
        size_t kl = 0;
        char *key = etcd_unb64(json_object_get(kv, "key"), &kl);
        bool ov = key && !strncmp(key, f->ov_prefix, strlen(f->ov_prefix));
        free(key);
        take_kv(f, kv, type && !strcmp(type, "DELETE"));
        if (ov && r > f->applied_rev)
            f->applied_rev = r;
    }
    if (hr > f->rev)
        f->rev = hr;
    maybe_reconcile(f);
}

static void range_reply(void *ctx, json_t *reply, const char *why)
{
    struct fleet *f = ctx;
    f->loading = false;
    if (!reply) {
        log_kv(CONF_LOG_WARN, "fleet load failed", LOG_STR("endpoint", etcd_endpoint(f->e)),
               LOG_STR("reason", why), LOG_STR("action", "retrying"));
        f->next_range = ev_now(f->p->loop) + RANGE_RETRY_S;
        return;
    }
    kvs_free(f->mirror, f->num_mirror);
    f->mirror = NULL;
    f->num_mirror = 0;
    insts_clear(f);
    json_t *kvs = json_object_get(reply, "kvs"), *kv;
    size_t i;
    json_array_foreach(kvs, i, kv) take_kv(f, kv, false);
    f->rev = etcd_int(json_object_get(reply, "header"), "revision", 0);
    f->applied_rev = f->rev;
    if (f->write_rev > f->rev)
        f->write_rev = f->rev; /* etcd's history restarted below our last write */
    f->dirty = true;
    f->loaded = true;
    log_kv(CONF_LOG_INFO, "fleet loaded", LOG_INT("revision", f->rev),
           LOG_UINT("overrides", f->num_mirror), LOG_UINT("instances", f->num_insts));
    maybe_reconcile(f);
    const struct etcd_watch_hooks hooks = {
        .up = watch_up, .result = watch_result, .down = watch_down, .ctx = f};
    etcd_watch(f->e, f->prefix, f->prefix_end, f->rev + 1, &hooks);
}

static void start_range(struct fleet *f)
{
    json_t *body = json_pack("{s:o,s:o}", "key", etcd_b64(f->prefix, strlen(f->prefix)),
                             "range_end", etcd_b64(f->prefix_end, strlen(f->prefix_end)));
    if (etcd_call(f->e, "/v3/kv/range", body, range_reply, f) == 0)
        f->loading = true;
}

/* ---- writes ---------------------------------------------------------------- */

static void txn_reply(void *ctx, json_t *reply, const char *why)
{
    struct ticket *t = ctx;
    struct fleet *f = t->f;
    t->outcome = reply ? 1 : -1;
    f->writes_pending--;
    if (reply) {
        long long r = etcd_int(json_object_get(reply, "header"), "revision", 0);
        if (r > f->write_rev)
            f->write_rev = r;
    } else {
        /* etcd did not confirm it (it may still apply it, after a
         * timeout): go back to what the mirror says, and follow the watch
         * from there, so no instance keeps what etcd does not have */
        log_kv(CONF_LOG_ERROR, "fleet write failed", LOG_STR("reason", why),
               LOG_STR("action", "following what etcd has"));
        f->dirty = true;
        etcd_watch_reset(f->e, why);
    }
    maybe_reconcile(f);
}

static json_t *op(const char *kind, const char *key, const char *val)
{
    json_t *req = json_pack("{s:o}", "key", etcd_b64(key, strlen(key)));
    if (req && val)
        json_object_set_new(req, "value", etcd_b64(val, strlen(val)));
    return json_pack("{s:o}", kind, req);
}

/* A write that could not even be sent: a ticket that failed at once (the
 * API answers 503), and the data plane back to what etcd has. */
static int write_not_sent(struct fleet *f)
{
    f->issued++;
    f->tickets[f->issued % TICKETS] = (struct ticket){.f = f, .n = f->issued, .outcome = -1};
    log_kv(CONF_LOG_ERROR, "fleet write failed", LOG_STR("reason", "out of memory"),
           LOG_STR("action", "following what etcd has"));
    f->dirty = true;
    maybe_reconcile(f);
    return -1;
}

/* p->ov_store: the API changed p->ov (and the data plane); writes the
 * difference from etcd's keys as one txn. */
static int fleet_store(struct process *p)
{
    struct fleet *f = p->fleet;
    struct kv *now = NULL;
    size_t n = 0;
    if (ov_to_kvs(f, p->ov, &now, &n) < 0) {
        kvs_free(now, n);
        return write_not_sent(f);
    }
    json_t *ops = json_array();
    for (size_t i = 0; ops && i < n; i++) {
        struct kv *m = kv_find(f->mirror, f->num_mirror, now[i].key);
        if (!m || strcmp(m->val, now[i].val))
            json_array_append_new(ops, op("request_put", now[i].key, now[i].val));
    }
    for (size_t i = 0; ops && i < f->num_mirror; i++)
        if (!kv_find(now, n, f->mirror[i].key))
            json_array_append_new(ops, op("request_delete_range", f->mirror[i].key, NULL));
    kvs_free(now, n);
    if (!ops)
        return write_not_sent(f);
    if (json_array_size(ops) == 0) {
        json_decref(ops);
        return 0;
    }
    size_t nops = json_array_size(ops);
    struct ticket *t = &f->tickets[(f->issued + 1) % TICKETS];
    *t = (struct ticket){.f = f, .n = f->issued + 1, .outcome = 0};
    if (etcd_call(f->e, "/v3/kv/txn", json_pack("{s:o}", "success", ops), txn_reply, t) < 0)
        return write_not_sent(f);
    f->issued++;
    f->writes_pending++;
    log_kv(CONF_LOG_INFO, "fleet write", LOG_UINT("keys", nops));
    return 0;
}

/* ---- lease and report ---------------------------------------------------- */

/* What this instance tells the fleet: its state, the overrides revision
 * it applied, and the requests still running on the pools a wait may be
 * about — those no listener sends traffic to and those with a backend
 * draining. The pools in use are left out, so a busy fleet does not put
 * a new revision every tick. */
static char *report(const struct fleet *f)
{
    struct worker *w = f->p->w;
    json_t *pools = json_object();
    for (struct pool *pl = w->pools; pools && pl; pl = pl->next) {
        bool draining = false;
        for (size_t i = 0; i < pl->num_servers && !draining; i++)
            draining = pl->servers[i]->hb->state == BACKEND_DRAINING;
        if (worker_pool_in_use(w, pl) && !draining)
            continue;
        unsigned busy = 0;
        for (size_t i = 0; i < pl->num_servers; i++) {
            const struct server *s = pl->servers[i];
            struct server_totals t;
            server_totals(s, &t);
            unsigned b = s->hb->connections > t.idle ? s->hb->connections - t.idle : 0;
            unsigned inflight = server_inflight(s);
            busy += b > inflight ? b : inflight;
        }
        if (busy)
            json_object_set_new(pools, pl->name, json_integer(busy));
    }
    return dump(json_pack("{s:s,s:I,s:o}", "state", worker_state_str(w->state), "rev",
                          (json_int_t)f->applied_rev, "pools", pools));
}

static void grant_reply(void *ctx, json_t *reply, const char *why)
{
    struct fleet *f = ctx;
    f->granting = false;
    long long id = reply ? etcd_int(reply, "ID", 0) : 0;
    if (!id) {
        log_kv(CONF_LOG_WARN, "fleet lease not granted", LOG_STR("reason", why ? why : "no ID"));
        return;
    }
    f->lease = id;
    f->last_keepalive = ev_now(f->p->loop);
    free(f->published);
    f->published = NULL; /* republish under the new lease */
    log_kv(CONF_LOG_INFO, "fleet lease", LOG_INT("lease", id), LOG_INT("ttl_s", FLEET_LEASE_TTL_S));
}

static void keepalive_reply(void *ctx, json_t *reply, const char *why)
{
    struct fleet *f = ctx;
    f->keeping = false;
    if (!reply) {
        etcd_watch_reset(f->e, why);
        return;
    }
    if (etcd_int(json_object_get(reply, "result"), "TTL", 0) <= 0) {
        log_kv(CONF_LOG_WARN, "fleet lease expired", LOG_INT("lease", f->lease),
               LOG_STR("action", "granting a new one"));
        f->lease = 0;
    }
}

static void put_reply(void *ctx, json_t *reply, const char *why)
{
    struct fleet *f = ctx;
    f->publishing = false;
    if (!reply) {
        free(f->published);
        f->published = NULL;
        etcd_watch_reset(f->e, why);
    }
}

/* The link is made at startup: a reload that changes `fleet` says so. */
static void check_conf(struct fleet *f)
{
    const struct worker *w = f->p->w;
    if (w->generation == f->generation)
        return;
    f->generation = w->generation;
    const struct conf *c = w->conf;
    bool same = c->fleet.enabled && !strcmp(c->fleet.prefix, f->prefix) &&
                !strcmp(c->fleet.instance, f->id) && c->fleet.num_etcd == f->num_eps;
    for (size_t i = 0; same && i < f->num_eps; i++)
        same = !strcmp(c->fleet.etcd[i].text, f->eps[i].text);
    if (!same)
        log_kv(CONF_LOG_WARN, "fleet config changed",
               LOG_STR("action", "kept the running fleet link: restart usher to apply"));
}

static void tick_cb(struct ev_loop *loop, ev_timer *t, int revents)
{
    struct fleet *f = container_of(t, struct fleet, tick);
    ev_tstamp now = ev_now(loop);
    check_conf(f);
    if (!f->loaded) {
        if (!f->loading && now >= f->next_range)
            start_range(f);
        return;
    }
    if (!f->connected)
        return;
    if (!f->lease) {
        if (!f->granting &&
            etcd_call(f->e, "/v3/lease/grant", json_pack("{s:i}", "TTL", FLEET_LEASE_TTL_S),
                      grant_reply, f) == 0)
            f->granting = true;
        return;
    }
    if (!f->keeping && now - f->last_keepalive >= FLEET_KEEPALIVE_S &&
        etcd_call(f->e, "/v3/lease/keepalive", json_pack("{s:I}", "ID", (json_int_t)f->lease),
                  keepalive_reply, f) == 0) {
        f->keeping = true;
        f->last_keepalive = now;
    }
    if (f->publishing)
        return;
    char *r = report(f);
    if (!r || (f->published && !strcmp(r, f->published))) {
        free(r);
        return;
    }
    json_t *body = json_pack("{s:o,s:o,s:I}", "key", etcd_b64(f->self_key, strlen(f->self_key)),
                             "value", etcd_b64(r, strlen(r)), "lease", (json_int_t)f->lease);
    if (etcd_call(f->e, "/v3/kv/put", body, put_reply, f) == 0) {
        f->publishing = true;
        free(f->published);
        f->published = r;
    } else {
        free(r);
    }
}

/* ---- the process's view ---------------------------------------------------- */

bool fleet_writable(const struct fleet *f, const char **why)
{
    if (!f->loaded) {
        *why = f->connected ? why_loading : why_down;
        return false;
    }
    if (!f->connected) {
        *why = why_down;
        return false;
    }
    return true;
}

unsigned long fleet_writes_issued(const struct fleet *f)
{
    return f->issued;
}

int fleet_write_outcome(const struct fleet *f, unsigned long ticket)
{
    const struct ticket *t = &f->tickets[ticket % TICKETS];
    return t->n == ticket ? t->outcome : -1;
}

bool fleet_pool_busy(const struct fleet *f, const char *pool)
{
    if (!f)
        return false;
    if (f->writes_pending)
        return true;
    for (size_t i = 0; i < f->num_insts; i++) {
        const struct instance *in = &f->insts[i];
        if (!strcmp(in->id, f->id))
            continue; /* our own counts are the live ones, not the report */
        if (etcd_int(in->report, "rev", 0) < f->write_rev)
            return true;
        if (json_integer_value(json_object_get(json_object_get(in->report, "pools"), pool)) > 0)
            return true;
    }
    return false;
}

static bool synced(const struct fleet *f)
{
    if (f->writes_pending)
        return false;
    for (size_t i = 0; i < f->num_insts; i++)
        if (strcmp(f->insts[i].id, f->id) && etcd_int(f->insts[i].report, "rev", 0) < f->write_rev)
            return false;
    return true;
}

void fleet_status_json(struct hbuf *o, const struct fleet *f)
{
    if (!f) {
        hbuf_append_str(o, "null");
        return;
    }
    hbuf_printf(o, "{\"connected\":%s,\"revision\":%lld,\"instance\":",
                f->connected && f->loaded ? "true" : "false", f->rev);
    log_json_str(o, f->id);
    hbuf_append_str(o, ",\"endpoint\":");
    log_json_str(o, etcd_endpoint(f->e));
    hbuf_printf(o, ",\"synced\":%s,\"instances\":[", synced(f) ? "true" : "false");
    for (size_t i = 0; i < f->num_insts; i++) {
        const struct instance *in = &f->insts[i];
        json_t *pools = json_object_get(in->report, "pools");
        char *ps = pools ? json_dumps(pools, JSON_COMPACT | JSON_SORT_KEYS) : NULL;
        hbuf_append_str(o, i ? ",{\"id\":" : "{\"id\":");
        log_json_str(o, in->id);
        hbuf_append_str(o, ",\"state\":");
        log_json_str(o, json_string_value(json_object_get(in->report, "state")) ?: "unknown");
        hbuf_printf(o, ",\"revision\":%lld,\"self\":%s,\"pools\":%s}",
                    etcd_int(in->report, "rev", 0), strcmp(in->id, f->id) ? "false" : "true",
                    ps ? ps : "{}");
        free(ps);
    }
    hbuf_append_str(o, "]}");
}

/* ---- leaving ---------------------------------------------------------------- */

static void left(struct fleet *f, const char *how)
{
    ev_timer_stop(f->p->loop, &f->leave_timer);
    void (*cb)(void *) = f->left;
    f->left = NULL;
    if (!cb)
        return;
    log_kv(CONF_LOG_INFO, "fleet left", LOG_STR("instance", f->id), LOG_STR("how", how));
    cb(f->left_ctx);
}

static void revoke_reply(void *ctx, json_t *reply, const char *why)
{
    struct fleet *f = ctx;
    left(f, reply ? "lease revoked" : "lease left to expire");
}

static void leave_timer_cb(struct ev_loop *loop, ev_timer *t, int revents)
{
    left(container_of(t, struct fleet, leave_timer), "lease left to expire");
}

int fleet_leave(struct fleet *f, void (*done)(void *ctx), void *ctx)
{
    if (f->leaving || !f->lease || !f->connected)
        return -1;
    if (etcd_call(f->e, "/v3/lease/revoke", json_pack("{s:I}", "ID", (json_int_t)f->lease),
                  revoke_reply, f) < 0)
        return -1;
    f->leaving = true;
    f->left = done;
    f->left_ctx = ctx;
    ev_timer_stop(f->p->loop, &f->tick); /* nothing more to publish */
    ev_timer_init(&f->leave_timer, leave_timer_cb, FLEET_LEAVE_MAX_S, 0.);
    ev_timer_start(f->p->loop, &f->leave_timer);
    return 0;
}

/* ---- start and stop -------------------------------------------------------- */

static char *join(const char *a, const char *b)
{
    struct hbuf h = {0};
    hbuf_printf(&h, "%s%s", a, b);
    return h.data;
}

void fleet_stop(struct process *p)
{
    struct fleet *f = p->fleet;
    if (!f)
        return;
    ev_timer_stop(p->loop, &f->tick);
    ev_timer_stop(p->loop, &f->leave_timer);
    etcd_free(f->e);
    kvs_free(f->mirror, f->num_mirror);
    insts_clear(f);
    for (size_t i = 0; i < f->num_eps; i++)
        free(f->eps[i].text);
    free(f->eps);
    free(f->prefix);
    free(f->prefix_end);
    free(f->ov_prefix);
    free(f->inst_prefix);
    free(f->id);
    free(f->self_key);
    free(f->published);
    free(f);
    p->fleet = NULL;
    p->ov_store = NULL;
}

int fleet_start(struct process *p)
{
    const struct conf *c = p->w->conf;
    if (!c->fleet.enabled)
        return 0;
    struct fleet *f = calloc(1, sizeof(*f));
    if (!f)
        return -1;
    p->fleet = f;
    f->p = p;
    f->eps = calloc(c->fleet.num_etcd, sizeof(*f->eps));
    if (!f->eps)
        goto fail;
    for (size_t i = 0; i < c->fleet.num_etcd; i++) {
        f->eps[i] = c->fleet.etcd[i];
        f->eps[i].host = NULL;
        f->eps[i].text = strdup(c->fleet.etcd[i].text);
        f->num_eps++;
        if (!f->eps[i].text)
            goto fail;
    }
    f->prefix = strdup(c->fleet.prefix);
    f->prefix_end = etcd_prefix_end(c->fleet.prefix);
    f->ov_prefix = join(c->fleet.prefix, "overrides/");
    f->inst_prefix = join(c->fleet.prefix, "instances/");
    f->id = strdup(c->fleet.instance);
    f->self_key = f->inst_prefix ? join(f->inst_prefix, c->fleet.instance) : NULL;
    f->e = etcd_new(p->loop, f->eps, f->num_eps);
    if (!f->prefix || !f->prefix_end || !f->ov_prefix || !f->id || !f->self_key || !f->e)
        goto fail;
    p->ov_store = fleet_store;
    f->generation = p->w->generation;
    log_kv(CONF_LOG_INFO, "fleet starting", LOG_STR("instance", f->id),
           LOG_STR("prefix", f->prefix), LOG_STR("endpoint", etcd_endpoint(f->e)),
           LOG_UINT("endpoints", f->num_eps));
    ev_timer_init(&f->tick, tick_cb, FLEET_TICK_S, FLEET_TICK_S);
    ev_timer_init(&f->leave_timer, leave_timer_cb, FLEET_LEAVE_MAX_S, 0.);
    ev_timer_start(p->loop, &f->tick);
    start_range(f);
    return 0;
fail:
    fleet_stop(p);
    return -1;
}
