/* Routes: each entry is a path shape, the methods it takes and the
 * handler. Order of checks for every mutation: shape (404) -> method (405
 * with Allow) -> caller (401/403) -> names (404) -> body (400). Nothing
 * changes before every check passed. */
#include "api.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../../conf/conf.h"
#include "../../health/backend.h"
#include "../base/hex.h"
#include "../base/log.h"
#include "../core/balance.h"
#include "../core/listener.h"
#include "../core/upstream.h"
#include "../core/worker.h"
#include "auth.h"
#include "../sources/fleet.h"
#include "../control/overrides.h"
#include "status.h"

#define SEGMENTS_MAX 4
#define SEGMENT_MAX 256
/* A split body names at most this many pools. */
#define SPLIT_MEMBERS_MAX 64
/* A wait without T waits this long (DESIGN: "A wait without T waits up to
 * 60 s"). */
#define WAIT_DEFAULT_MS 60000
/* How often a waiting drain looks at the connections left: short enough
 * that the answer follows the last close closely. */
#define WAIT_POLL_S 0.05

/* What an answer that comes later waits for. */
enum wait_kind {
    WAIT_DRAIN = 1, /* a pool drain with ?wait: its connections (polled) */
    WAIT_FLEET,     /* a fleet mutation's reply, held until etcd has the change */
    WAIT_SAVE,      /* a mutation's reply, held until the state file is on disk */
    WAIT_RELOAD,    /* POST /reload: the reload it asked for */
};

struct api_wait {
    enum wait_kind kind;
    struct process *p;
    struct pool *pool;
    ev_timer poll;
    ev_tstamp until;
    api_later_cb later;
    void *ctx;
    unsigned long ticket;
    struct api_reply held;       /* WAIT_FLEET, WAIT_SAVE */
    unsigned long long save_seq; /* WAIT_DRAIN: the state file save to wait for too (0: none) */
};

/* How long a held reply waits for etcd beyond its own call timeout
 * (ETCD_CALL_TIMEOUT_S, 2 s): the outcome always comes before. */
#define HOLD_MAX_S 5.0
/* A txn on a healthy etcd takes a few milliseconds. */
#define HOLD_POLL_S 0.002

struct route_args {
    char seg[SEGMENTS_MAX][SEGMENT_MAX];
    size_t n;
};

/* Splits "/a/b/c" into percent-decoded segments. -1: not a path we serve
 * (too many or too long segments, an empty one, a bad escape, a control
 * byte: names never hold those). */
static int split_path(const char *path, size_t len, struct route_args *a)
{
    size_t i = 0;
    a->n = 0;
    if (len == 0 || path[0] != '/')
        return -1;
    while (i < len) {
        i++; /* the '/' */
        if (a->n == SEGMENTS_MAX)
            return -1;
        char *out = a->seg[a->n];
        size_t o = 0;
        while (i < len && path[i] != '/') {
            int c = (unsigned char)path[i];
            if (c == '%') {
                int h = i + 2 < len ? hex_digit(path[i + 1]) : -1;
                int l = i + 2 < len ? hex_digit(path[i + 2]) : -1;
                if (h < 0 || l < 0)
                    return -1;
                c = h * 16 + l;
                i += 2;
            }
            if (c < 0x20 || c == 0x7f || o + 1 >= SEGMENT_MAX)
                return -1;
            out[o++] = (char)c;
            i++;
        }
        if (o == 0)
            return -1;
        out[o] = '\0';
        a->n++;
    }
    return 0;
}

enum route_id {
    R_BACKEND_DRAIN = 1,
    R_BACKEND_READY,
    R_BACKEND_WEIGHT,
    R_SPLIT,
    R_POOL_DRAIN,
    R_POOL_READY,
    R_RELOAD,
};

/* Matches the shape; fills *<allow> with the methods it takes. 0: none. */
static enum route_id match(const struct route_args *a, const char **allow)
{
    *allow = "POST";
    if (a->n == 4 && !strcmp(a->seg[0], "backends")) {
        if (!strcmp(a->seg[3], "drain"))
            return R_BACKEND_DRAIN;
        if (!strcmp(a->seg[3], "ready"))
            return R_BACKEND_READY;
        if (!strcmp(a->seg[3], "weight")) {
            *allow = "POST, DELETE";
            return R_BACKEND_WEIGHT;
        }
    }
    if (a->n == 3 && !strcmp(a->seg[0], "listeners") && !strcmp(a->seg[2], "split")) {
        *allow = "POST, DELETE";
        return R_SPLIT;
    }
    if (a->n == 3 && !strcmp(a->seg[0], "pools")) {
        if (!strcmp(a->seg[2], "drain"))
            return R_POOL_DRAIN;
        if (!strcmp(a->seg[2], "ready"))
            return R_POOL_READY;
    }
    if (a->n == 1 && !strcmp(a->seg[0], "reload"))
        return R_RELOAD;
    return 0;
}

bool api_owns_path(const char *path, size_t len)
{
    struct route_args a;
    const char *allow;
    return split_path(path, len, &a) == 0 && match(&a, &allow) != 0;
}

/* ---- replies ------------------------------------------------------------- */

static enum api_result fail(struct api_reply *r, int status, const char *why)
{
    r->status = status;
    hbuf_append_str(&r->body, "{\"error\":");
    log_json_str(&r->body, why);
    hbuf_append_str(&r->body, "}\n");
    return API_DONE;
}

static enum api_result fail_name(struct api_reply *r, const char *what, const char *name)
{
    char msg[512];
    snprintf(msg, sizeof(msg), "unknown %s '%s'", what, name);
    return fail(r, 404, msg);
}

/* ---- query --------------------------------------------------------------- */

/* The value of <key> in the query, into <out>; 1 found with a value, 0
 * found without one ("?wait"), -1 absent. */
static int query_get(const struct api_request *rq, const char *key, char *out, size_t cap)
{
    size_t kl = strlen(key);
    const char *q = rq->query, *end = rq->query ? rq->query + rq->query_len : NULL;
    while (q && q < end) {
        const char *amp = memchr(q, '&', (size_t)(end - q));
        const char *stop = amp ? amp : end;
        if ((size_t)(stop - q) >= kl && !memcmp(q, key, kl) && (q + kl == stop || q[kl] == '=')) {
            if (q + kl == stop || q + kl + 1 == stop)
                return 0;
            size_t vl = (size_t)(stop - (q + kl + 1));
            if (vl >= cap)
                vl = cap - 1;
            memcpy(out, q + kl + 1, vl);
            out[vl] = '\0';
            return 1;
        }
        q = amp ? amp + 1 : end;
    }
    return -1;
}

/* A duration query parameter: 0 with *<ms> (absent: <dflt>), -1 with a
 * 400 in <r>. */
static int query_duration(const struct api_request *rq, struct api_reply *r, const char *key,
                          conf_ms dflt, conf_ms *ms)
{
    char v[64];
    const char *why = NULL;
    int rc = query_get(rq, key, v, sizeof(v));
    *ms = dflt;
    if (rc <= 0)
        return 0;
    if (conf_parse_duration(v, ms, &why) < 0) {
        char msg[256];
        snprintf(msg, sizeof(msg), "%s: %s (a duration such as 30s or 250ms)", key,
                 why ? why : "invalid");
        fail(r, 400, msg);
        return -1;
    }
    return 0;
}

/* ---- bodies -------------------------------------------------------------- */

/* One member of a body {"name": N, ...}. */
struct body_member {
    const char *name; /* in the parsed document */
    unsigned value;
};

/* Longest member name taken (bytes): names are pool names and "weight"; a
 * longer one is refused rather than looked up. */
#define BODY_NAME_MAX 127

/* jansson's error, as a static reason for the 400. */
static const char *body_error(const json_error_t *e)
{
    switch (json_error_code(e)) {
    case json_error_duplicate_key:
        return "duplicate member name";
    case json_error_end_of_input_expected:
        return "trailing bytes after the object";
    case json_error_premature_end_of_input:
        return "the body ends before the JSON does";
    case json_error_invalid_utf8:
        return "the body is not valid UTF-8";
    case json_error_null_character:
    case json_error_null_byte_in_key:
        return "NUL in a string";
    case json_error_numeric_overflow:
        return "value out of range";
    case json_error_out_of_memory:
        return "out of memory";
    default:
        return "the body is not valid JSON";
    }
}

/* Reads <rq>'s body as the API takes it (README "Runtime API"): one JSON
 * object and nothing after it, no name twice, at most <cap> members, each
 * value an integer in 0..UINT32_MAX (not -1, 1.5, 1e3, "2" or null).
 * Returns 0 with *<doc> (decref it: the names point into it) and
 * <out>[0..*<n>), or -1 with *<why> a static reason. */
static int body_members(const struct api_request *rq, json_t **doc, struct body_member *out,
                        size_t cap, size_t *n, const char **why)
{
    json_error_t err;
    const char *name;
    json_t *v;
    *n = 0;
    *doc = json_loadb(rq->body ? rq->body : "", rq->body_len,
                      JSON_REJECT_DUPLICATES | JSON_DECODE_ANY, &err);
    if (!*doc) {
        *why = body_error(&err);
        return -1;
    }
    *why = NULL;
    if (!json_is_object(*doc))
        *why = "body is not a JSON object";
    json_object_foreach(*doc, name, v)
    {
        if (*n == cap)
            *why = "too many members";
        else if (strlen(name) > BODY_NAME_MAX)
            *why = "member name too long";
        else if (!json_is_integer(v) || json_integer_value(v) < 0)
            *why = "value must be a non-negative integer";
        else if (json_integer_value(v) > UINT32_MAX)
            *why = "value out of range";
        if (*why)
            break;
        out[(*n)++] = (struct body_member){.name = name, .value = (unsigned)json_integer_value(v)};
    }
    if (!*why)
        return 0;
    json_decref(*doc);
    *doc = NULL;
    *n = 0;
    return -1;
}

/* ---- lookups ------------------------------------------------------------- */

static struct pool *find_pool(struct process *p, const char *name)
{
    struct pool *pl = pool_find(p->w->pools, name);
    return pl && pl->conf ? pl : NULL;
}

/* ---- handlers ------------------------------------------------------------ */

static void admin_drain(struct process *p, struct server *s, conf_ms deadline)
{
    overrides_set_drain(p->ov, s->pool->name, s->hb->name,
                        overrides_epoch_ms() + (long long)deadline);
    if (s->hb->drain_reason != BACKEND_DRAIN_ADMIN)
        log_kv(CONF_LOG_INFO, "admin drain", LOG_STR("pool", s->pool->name),
               LOG_STR("backend", s->hb->name), LOG_UINT("deadline_ms", deadline),
               LOG_UINT("connections", s->hb->connections));
    backend_admin_drain(s->hb, deadline);
}

static void admin_ready(struct process *p, struct server *s)
{
    overrides_clear_drain(p->ov, s->pool->name, s->hb->name);
    if (backend_admin_ready(s->hb))
        log_kv(CONF_LOG_INFO, "admin ready", LOG_STR("pool", s->pool->name),
               LOG_STR("backend", s->hb->name));
}

static enum api_result backend_route(struct process *p, enum route_id id,
                                     const struct api_request *rq, const struct route_args *a,
                                     struct api_reply *r)
{
    struct pool *pl = find_pool(p, a->seg[1]);
    if (!pl)
        return fail_name(r, "pool", a->seg[1]);
    struct server *s = worker_pool_server(pl, a->seg[2]);
    if (!s)
        return fail_name(r, "backend", a->seg[2]);
    if (id == R_BACKEND_DRAIN) {
        conf_ms deadline;
        if (query_duration(rq, r, "deadline", pl->conf->deregistration_delay, &deadline) < 0)
            return API_DONE;
        admin_drain(p, s, deadline);
    } else if (id == R_BACKEND_READY) {
        admin_ready(p, s);
    } else if (rq->method == HTTP1_METHOD_DELETE) {
        overrides_clear_weight(p->ov, pl->name, s->hb->name);
        server_override_weight(s, false, 0);
        log_kv(CONF_LOG_INFO, "admin weight cleared", LOG_STR("pool", pl->name),
               LOG_STR("backend", s->hb->name), LOG_UINT("weight", s->hb->weight));
    } else {
        struct body_member m[2];
        size_t n;
        const char *why;
        json_t *doc;
        if (body_members(rq, &doc, m, 2, &n, &why) < 0)
            return fail(r, 400, why);
        bool shape = n == 1 && strcmp(m[0].name, "weight") == 0;
        unsigned weight = shape ? m[0].value : 0;
        json_decref(doc);
        if (!shape)
            return fail(r, 400, "the body must be {\"weight\": N}");
        if (overrides_set_weight(p->ov, pl->name, s->hb->name, weight) < 0)
            return fail(r, 500, "out of memory");
        server_override_weight(s, true, weight);
        log_kv(CONF_LOG_INFO, "admin weight", LOG_STR("pool", pl->name),
               LOG_STR("backend", s->hb->name), LOG_UINT("weight", weight),
               LOG_UINT("weight_configured", s->hb->weight));
    }
    overrides_save(p);
    r->status = 200;
    status_backend_json(&r->body, p, s);
    hbuf_append_str(&r->body, "\n");
    return API_DONE;
}

static enum api_result split_route(struct process *p, const struct api_request *rq,
                                   const struct route_args *a, struct api_reply *r)
{
    struct listener *l = worker_listener_named(p->w, a->seg[1]);
    if (!l)
        return fail_name(r, "listener", a->seg[1]);
    if (rq->method == HTTP1_METHOD_DELETE) {
        overrides_clear_split(p->ov, l->name);
        listener_clear_split(l);
        log_kv(CONF_LOG_INFO, "admin split cleared", LOG_STR("listener", l->name));
    } else {
        struct body_member m[SPLIT_MEMBERS_MAX];
        struct conf_split sp[SPLIT_MEMBERS_MAX];
        size_t n;
        const char *why, *unknown = NULL;
        json_t *doc;
        if (body_members(rq, &doc, m, SPLIT_MEMBERS_MAX, &n, &why) < 0)
            return fail(r, 400, why);
        if (n == 0) {
            json_decref(doc);
            return fail(r, 400, "the body must name at least one pool: {\"pool\": weight, ...}");
        }
        for (size_t i = 0; i < n; i++) /* both calls below only read the names */
            sp[i] = (struct conf_split){.pool = (char *)m[i].name, .weight = m[i].value};
        if (listener_override_split(l, sp, n, &unknown) < 0) {
            char msg[256];
            snprintf(msg, sizeof(msg), "pool '%s' is not in listener '%s'", unknown, l->name);
            json_decref(doc);
            return fail(r, 400, msg);
        }
        int rc = overrides_set_split(p->ov, l->name, sp, n);
        json_decref(doc); /* the names are copied now (or the set failed) */
        if (rc < 0)
            return fail(r, 500, "out of memory");
        struct hbuf lf = {0};
        listener_split_text(l, &lf);
        log_kv(CONF_LOG_INFO, "admin split", LOG_STR("listener", l->name),
               LOG_STR("split", lf.data ? lf.data : ""));
        hbuf_free(&lf);
        worker_split_overridden(p->w, l);
    }
    overrides_save(p);
    r->status = 200;
    status_listener_json(&r->body, p, l);
    hbuf_append_str(&r->body, "\n");
    return API_DONE;
}

static unsigned pool_connections(const struct pool *pl)
{
    unsigned n = 0;
    for (size_t i = 0; i < pl->num_servers; i++)
        n += pl->servers[i]->hb->connections;
    return n;
}

static void drained_reply(struct process *p, struct pool *pl, struct api_reply *r)
{
    unsigned n = pool_connections(pl);
    bool fleet_busy = fleet_pool_busy(p->fleet, pl->name); /* another instance */
    r->status = 200;
    hbuf_printf(&r->body,
                "{\"drained\":%s,\"connections\":%u,\"pool\":", n || fleet_busy ? "false" : "true",
                n);
    status_pool_json(&r->body, p, pl);
    hbuf_append_str(&r->body, "}\n");
}

static void wait_poll_cb(struct ev_loop *loop, ev_timer *t, int revents)
{
    struct api_wait *wt = container_of(t, struct api_wait, poll);
    bool busy = pool_connections(wt->pool) > 0 || fleet_pool_busy(wt->p->fleet, wt->pool->name);
    if (busy && ev_now(loop) < wt->until)
        return;
    /* the drain it answers for is on disk first, however long the wait */
    if (!overrides_save_settled(wt->p->ov, wt->save_seq))
        return;
    ev_timer_stop(loop, t);
    struct api_reply r = {0};
    drained_reply(wt->p, wt->pool, &r);
    api_later_cb later = wt->later;
    void *ctx = wt->ctx;
    free(wt);
    later(ctx, &r);
}

void api_wait_cancel(struct api_wait *wt)
{
    if (!wt)
        return;
    switch (wt->kind) {
    case WAIT_DRAIN:
        ev_timer_stop(wt->p->loop, &wt->poll);
        break;
    case WAIT_FLEET:
        ev_timer_stop(wt->p->loop, &wt->poll);
        hbuf_free(&wt->held.body);
        break;
    case WAIT_SAVE:
        overrides_save_unwait(wt->p->ov, wt);
        hbuf_free(&wt->held.body);
        break;
    case WAIT_RELOAD:
        if (wt->p->reload_cancel)
            wt->p->reload_cancel(wt->p, wt);
        break;
    }
    free(wt);
}

static enum api_result pool_route(struct process *p, enum route_id id, const struct api_request *rq,
                                  const struct route_args *a, struct api_reply *r,
                                  api_later_cb later, void *ctx, struct api_wait **wait)
{
    struct pool *pl = find_pool(p, a->seg[1]);
    if (!pl)
        return fail_name(r, "pool", a->seg[1]);
    if (id == R_POOL_READY) {
        for (size_t i = 0; i < pl->num_servers; i++)
            if (!backend_removed(pl->servers[i]->hb))
                admin_ready(p, pl->servers[i]);
        overrides_save(p);
        r->status = 200;
        status_pool_json(&r->body, p, pl);
        hbuf_append_str(&r->body, "\n");
        return API_DONE;
    }
    conf_ms deadline, wait_ms;
    char v[8];
    if (query_duration(rq, r, "deadline", pl->conf->deregistration_delay, &deadline) < 0 ||
        query_duration(rq, r, "wait", WAIT_DEFAULT_MS, &wait_ms) < 0)
        return API_DONE;
    bool waiting = query_get(rq, "wait", v, sizeof(v)) >= 0;
    for (size_t i = 0; i < pl->num_servers; i++)
        if (!backend_removed(pl->servers[i]->hb))
            admin_drain(p, pl->servers[i], deadline);
    overrides_save(p);
    bool busy = pool_connections(pl) > 0 || fleet_pool_busy(p->fleet, pl->name);
    if (!waiting || !busy || !later) {
        drained_reply(p, pl, r);
        return API_DONE;
    }
    struct api_wait *wt = calloc(1, sizeof(*wt));
    if (!wt)
        return fail(r, 500, "out of memory");
    wt->kind = WAIT_DRAIN;
    wt->p = p;
    wt->pool = pl; /* a pool outlives its removal from the config */
    wt->until = ev_now(p->loop) + (double)wait_ms / 1000.0;
    wt->later = later;
    wt->ctx = ctx;
    ev_timer_init(&wt->poll, wait_poll_cb, WAIT_POLL_S, WAIT_POLL_S);
    ev_timer_start(p->loop, &wt->poll);
    *wait = wt;
    return API_LATER;
}

/* The reply to POST /reload, from its outcome. */
static void reload_reply(struct process *p, int rc, const struct reload_outcome *out,
                         struct api_reply *r)
{
    if (rc == 0) {
        r->status = 200;
        hbuf_printf(&r->body, "{\"result\":\"ok\",\"generation\":%llu,\"changes\":[",
                    (unsigned long long)p->w->generation);
        if (out->changes.len)
            hbuf_append(&r->body, out->changes.data, out->changes.len);
        hbuf_append_str(&r->body, "]}\n");
        return;
    }
    r->status = 422;
    hbuf_append_str(&r->body, "{\"result\":\"error\",\"generation\":");
    hbuf_printf(&r->body, "%llu,\"errors\":[", (unsigned long long)p->w->generation);
    for (size_t i = 0; i < out->errors.count; i++) {
        if (i)
            hbuf_append_str(&r->body, ",");
        log_json_str(&r->body, out->errors.messages[i]);
    }
    hbuf_append_str(&r->body, "]}\n");
}

/* The reload this request asked for ended. */
static void reload_answered(void *ctx, int rc, const struct reload_outcome *out)
{
    struct api_wait *wt = ctx;
    struct api_reply r = {0};
    reload_reply(wt->p, rc, out, &r);
    api_later_cb later = wt->later;
    void *later_ctx = wt->ctx;
    free(wt);
    later(later_ctx, &r);
}

/* The reload runs off the loop (parse and certificates on the background
 * thread, names resolved without blocking): the answer comes when it
 * ended, from reload_answered. */
static enum api_result reload_route(struct process *p, struct api_reply *r, api_later_cb later,
                                    void *ctx, struct api_wait **wait)
{
    if (p->w->state >= WORKER_DRAIN_DELAY)
        return fail(r, 409, "usher is draining: reload ignored");
    if (!later || !p->reload)
        return fail(r, 500, "this caller cannot wait for a reload");
    struct api_wait *wt = calloc(1, sizeof(*wt));
    if (!wt)
        return fail(r, 500, "out of memory");
    wt->kind = WAIT_RELOAD;
    wt->p = p;
    wt->later = later;
    wt->ctx = ctx;
    if (p->reload(p, reload_answered, wt) < 0) {
        free(wt);
        return fail(r, 500, "out of memory");
    }
    *wait = wt;
    return API_LATER;
}

static void hold_poll_cb(struct ev_loop *loop, ev_timer *t, int revents)
{
    struct api_wait *wt = container_of(t, struct api_wait, poll);
    int outcome = fleet_write_outcome(wt->p->fleet, wt->ticket);
    if (outcome == 0 && ev_now(loop) < wt->until)
        return;
    ev_timer_stop(loop, t);
    struct api_reply r = wt->held;
    if (outcome != 1) {
        hbuf_free(&r.body);
        r = (struct api_reply){0};
        fail(&r, 503, "etcd did not confirm the change: every instance follows what etcd has");
    }
    api_later_cb later = wt->later;
    void *ctx = wt->ctx;
    free(wt);
    later(ctx, &r);
}

/* A fleet mutation answered 200: the answer waits until etcd has the
 * change, and becomes a 503 if etcd refused it (a switch never half
 * happens). */
static enum api_result hold(struct process *p, struct api_reply *r, unsigned long ticket,
                            api_later_cb later, void *ctx, struct api_wait **wait)
{
    if (fleet_write_outcome(p->fleet, ticket) == 1)
        return API_DONE;
    struct api_wait *wt = calloc(1, sizeof(*wt));
    if (!wt)
        return API_DONE;
    wt->kind = WAIT_FLEET;
    wt->p = p;
    wt->ticket = ticket;
    wt->held = *r;
    *r = (struct api_reply){0};
    wt->until = ev_now(p->loop) + HOLD_MAX_S;
    wt->later = later;
    wt->ctx = ctx;
    ev_timer_init(&wt->poll, hold_poll_cb, HOLD_POLL_S, HOLD_POLL_S);
    ev_timer_start(p->loop, &wt->poll);
    *wait = wt;
    return API_LATER;
}

static void save_settled_cb(void *ctx)
{
    struct api_wait *wt = ctx;
    struct api_reply r = wt->held;
    api_later_cb later = wt->later;
    void *later_ctx = wt->ctx;
    free(wt);
    later(later_ctx, &r);
}

/* A mutation that saved the state file: its reply waits until the file
 * is on disk (or the write failed, logged: the change is in force either
 * way, as it was before the file was written off the loop), so a caller
 * that got its answer can count on a restart keeping it. */
static enum api_result hold_save(struct process *p, struct api_reply *r, unsigned long long seq,
                                 api_later_cb later, void *ctx, struct api_wait **wait)
{
    if (!later)
        return API_DONE;
    struct api_wait *wt = calloc(1, sizeof(*wt));
    if (!wt)
        return API_DONE;
    wt->kind = WAIT_SAVE;
    wt->p = p;
    wt->held = *r;
    wt->later = later;
    wt->ctx = ctx;
    if (overrides_save_wait(p->ov, seq, save_settled_cb, wt) != 0) {
        free(wt); /* settled already, or no memory to wait: answer now */
        return API_DONE;
    }
    *r = (struct api_reply){0};
    *wait = wt;
    return API_LATER;
}

static enum api_result dispatch(struct process *p, const struct api_request *rq,
                                struct api_reply *r, api_later_cb later, void *ctx,
                                struct api_wait **wait);

enum api_result api_handle(struct process *p, const struct api_request *rq, struct api_reply *r,
                           api_later_cb later, void *ctx, struct api_wait **wait)
{
    unsigned long t0 = p->fleet ? fleet_writes_issued(p->fleet) : 0;
    unsigned long long s0 = overrides_save_issued(p->ov);
    enum api_result res = dispatch(p, rq, r, later, ctx, wait);
    if (res == API_DONE && p->fleet && later && r->status == 200 &&
        fleet_writes_issued(p->fleet) != t0)
        return hold(p, r, fleet_writes_issued(p->fleet), later, ctx, wait);
    unsigned long long s1 = overrides_save_issued(p->ov);
    if (s1 != s0 && res == API_DONE)
        return hold_save(p, r, s1, later, ctx, wait);
    if (s1 != s0 && res == API_LATER && *wait && (*wait)->kind == WAIT_DRAIN)
        (*wait)->save_seq = s1;
    return res;
}

static enum api_result dispatch(struct process *p, const struct api_request *rq,
                                struct api_reply *r, api_later_cb later, void *ctx,
                                struct api_wait **wait)
{
    struct route_args a;
    const char *allow = NULL, *why = NULL;
    if (split_path(rq->path, rq->path_len, &a) < 0)
        return API_NOT_MINE;
    enum route_id id = match(&a, &allow);
    if (!id)
        return API_NOT_MINE;
    bool ok_method = rq->method == HTTP1_METHOD_POST ||
                     (rq->method == HTTP1_METHOD_DELETE && strstr(allow, "DELETE"));
    if (!ok_method) {
        r->allow = allow;
        return fail(r, 405, "method not allowed");
    }
    int deny = auth_check(p, rq->authz, rq->authz_len, rq->peer, rq->peer_len, &why);
    if (deny) {
        log_kv(CONF_LOG_WARN, "admin refused", LOG_INT("status", deny), LOG_STR("reason", why));
        return fail(r, deny, why);
    }
    /* a fleet's change must reach etcd, or it would half happen: one
     * instance switched, the others not */
    if (p->fleet && id != R_RELOAD && !fleet_writable(p->fleet, &why)) {
        log_kv(CONF_LOG_WARN, "admin refused", LOG_INT("status", 503), LOG_STR("reason", why));
        return fail(r, 503, why);
    }
    switch (id) {
    case R_BACKEND_DRAIN:
    case R_BACKEND_READY:
    case R_BACKEND_WEIGHT:
        return backend_route(p, id, rq, &a, r);
    case R_SPLIT:
        return split_route(p, rq, &a, r);
    case R_POOL_DRAIN:
    case R_POOL_READY:
        return pool_route(p, id, rq, &a, r, later, ctx, wait);
    case R_RELOAD:
        return reload_route(p, r, later, ctx, wait);
    }
    return API_NOT_MINE;
}
