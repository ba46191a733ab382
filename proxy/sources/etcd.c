/* The etcd gateway client. Each exchange is one struct econn with an
 * explicit state; conn_drive() holds every transition. The HTTP/1.1 reply
 * is read by the house's response reader (proxy/base/h1resp.c, over
 * parser/); the JSON is jansson's. A unary reply is one JSON body; the
 * watch's is a chunked stream of JSON objects, one a line (grpc-gateway's
 * newline delimiter), however the chunks cut them. */
#include "etcd.h"

#include <errno.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../net/list.h"
#include "../net/net.h"
#include "../base/buf.h"
#include "../base/h1resp.h"
#include "../base/log.h"

/* A unary reply or one watch message larger than this is refused: a
 * fleet's overrides and instance reports are a few kilobytes. */
#define BODY_MAX (8 * 1024 * 1024)
/* Bytes read per readable event, so one busy stream cannot starve the loop. */
#define READ_PER_EVENT (64 * 1024)
/* The watch's connect and "created" bound (a live etcd answers at once). */
#define WATCH_OPEN_TIMEOUT_S 2.0

static const char err_connect[] = "cannot connect to etcd";
static const char err_timeout[] = "etcd did not answer in time";
static const char err_closed[] = "etcd closed the connection";
static const char err_http[] = "etcd replied with an HTTP error";
static const char err_proto[] = "etcd's reply is not valid HTTP";
static const char err_json[] = "etcd's reply is not valid JSON";
static const char err_too_large[] = "etcd's reply is too large";
static const char err_io[] = "read or write failed";
static const char err_nomem[] = "out of memory";
static const char err_reset[] = "watch reset";

enum conn_state {
    CONN_CONNECTING = 1,
    CONN_SENDING,
    CONN_HEAD,
    CONN_BODY,
    CONN_DONE,
};

struct econn {
    struct etcd *e;
    enum conn_state state;
    bool stream; /* the watch: a stream of JSON lines */
    int fd;
    ev_io io;
    ev_timer timer;
    struct hbuf out;
    size_t out_off;
    struct h1resp rd; /* the reply; its body (the stream: not yet a whole line) */
    etcd_reply_cb cb;
    void *ctx;
    struct list link; /* e->calls */
};

struct etcd {
    struct ev_loop *loop;
    const struct conf_address *eps;
    size_t num_eps, cur;
    struct list calls;

    /* the watch */
    bool watching;
    char *wkey, *wend;
    long long next_rev;
    struct etcd_watch_hooks hooks;
    struct econn *wconn;
    bool wup;
    bool in_stream_cb; /* a hook runs from the stream's read loop */
    bool wreset;       /* a hook asked to reset meanwhile */
    ev_timer retry;
    double backoff;
};

static const char *state_to_str(enum conn_state s)
{
    switch (s) {
    case CONN_CONNECTING:
        return "connecting";
    case CONN_SENDING:
        return "sending";
    case CONN_HEAD:
        return "head";
    case CONN_BODY:
        return "body";
    case CONN_DONE:
        return "done";
    }
    return "?";
}

const char *etcd_endpoint(const struct etcd *e)
{
    return e->eps[e->cur].text;
}

static void next_endpoint(struct etcd *e)
{
    if (e->num_eps > 1)
        e->cur = (e->cur + 1) % e->num_eps;
}

/* ---- helpers ------------------------------------------------------------- */

json_t *etcd_b64(const char *s, size_t n)
{
    char *out = malloc(4 * ((n + 2) / 3) + 1);
    if (!out)
        return NULL;
    EVP_EncodeBlock((unsigned char *)out, (const unsigned char *)s, (int)n);
    json_t *v = json_string(out);
    free(out);
    return v;
}

char *etcd_unb64(const json_t *v, size_t *n)
{
    const char *s = json_string_value(v);
    size_t len = s ? strlen(s) : 0;
    if (!s || len % 4)
        return NULL;
    char *out = malloc(len / 4 * 3 + 1);
    if (!out)
        return NULL;
    int got = len ? EVP_DecodeBlock((unsigned char *)out, (const unsigned char *)s, (int)len) : 0;
    if (got < 0) {
        free(out);
        return NULL;
    }
    /* EVP_DecodeBlock counts the padding as decoded zero bytes */
    if (len && s[len - 1] == '=')
        got--;
    if (len > 1 && s[len - 2] == '=')
        got--;
    out[got] = '\0';
    if (n)
        *n = (size_t)got;
    return out;
}

char *etcd_prefix_end(const char *prefix)
{
    char *end = strdup(prefix);
    if (!end)
        return NULL;
    size_t n = strlen(end);
    /* prefixes are printable ("/usher/"), so the last byte never overflows */
    if (n)
        end[n - 1]++;
    return end;
}

long long etcd_int(const json_t *obj, const char *key, long long dflt)
{
    json_t *v = json_object_get(obj, key);
    if (json_is_integer(v))
        return (long long)json_integer_value(v);
    if (json_is_string(v))
        return strtoll(json_string_value(v), NULL, 10);
    return dflt;
}

/* ---- one exchange -------------------------------------------------------- */

static void conn_io_cb(struct ev_loop *loop, ev_io *w, int revents);
static void conn_timer_cb(struct ev_loop *loop, ev_timer *w, int revents);
static void watch_broken(struct etcd *e, const char *why);

static void conn_close(struct econn *c)
{
    ev_io_stop(c->e->loop, &c->io);
    ev_timer_stop(c->e->loop, &c->timer);
    if (c->fd >= 0)
        close(c->fd);
    c->fd = -1;
    hbuf_free(&c->out);
    h1resp_free(&c->rd);
    free(c);
}

/* Starts an exchange: POST <body> to <path>. NULL if the connect could not
 * even start (the endpoint moves on). */
static struct econn *conn_open(struct etcd *e, const char *path, const char *body, bool stream,
                               double timeout)
{
    struct econn *c = calloc(1, sizeof(*c));
    if (!c)
        return NULL;
    c->e = e;
    c->stream = stream;
    h1resp_init(&c->rd, HTTP1_METHOD_POST, BODY_MAX);
    const struct conf_address *ep = &e->eps[e->cur];
    int in_progress = 0, err = 0;
    c->fd = net_connect_start((const struct sockaddr *)&ep->sa, ep->sa_len, &in_progress, &err);
    if (c->fd < 0) {
        free(c);
        next_endpoint(e);
        return NULL;
    }
    size_t blen = strlen(body);
    if (hbuf_printf(&c->out,
                    "POST %s HTTP/1.1\r\nHost: %s\r\nContent-Type: application/json\r\n"
                    "Content-Length: %zu\r\nConnection: close\r\n\r\n",
                    path, ep->text, blen) < 0 ||
        hbuf_append(&c->out, body, blen) < 0) {
        conn_close(c);
        return NULL;
    }
    c->state = in_progress ? CONN_CONNECTING : CONN_SENDING;
    ev_io_init(&c->io, conn_io_cb, c->fd, EV_WRITE);
    ev_io_start(e->loop, &c->io);
    ev_timer_init(&c->timer, conn_timer_cb, timeout, 0.);
    if (timeout > 0)
        ev_timer_start(e->loop, &c->timer);
    return c;
}

/* The end of a unary exchange: the callback, then the free. */
static void call_finish(struct econn *c, const char *why)
{
    json_t *reply = NULL;
    if (!why && c->rd.status != 200)
        why = err_http;
    if (!why) {
        json_error_t jerr;
        reply = json_loadb(c->rd.body.data ? c->rd.body.data : "", c->rd.body.len, 0, &jerr);
        if (!reply)
            why = err_json;
    }
    if (why && why != err_http)
        next_endpoint(c->e);
    list_remove(&c->link);
    etcd_reply_cb cb = c->cb;
    void *ctx = c->ctx;
    conn_close(c);
    cb(ctx, reply, why);
    if (reply)
        json_decref(reply);
}

/* etcd's reason for what the reply reader refused (its own reason, more
 * precise, goes to the debug log). */
static const char *reply_error(const struct h1resp *rd)
{
    if (rd->error == h1resp_err_body_too_large)
        return err_too_large;
    if (rd->error == h1resp_err_closed_in_head || rd->error == h1resp_err_closed_in_body)
        return err_closed;
    if (rd->error == h1resp_err_nomem)
        return err_nomem;
    return err_proto;
}

/* The watch: hands each complete line of the body to the hooks. */
static int stream_lines(struct econn *c)
{
    struct etcd *e = c->e;
    struct hbuf *body = &c->rd.body;
    size_t off = 0;
    int rc = NET_OK;
    while (rc == NET_OK && off < body->len) {
        char *nl = memchr(body->data + off, '\n', body->len - off);
        if (!nl)
            break;
        size_t ll = (size_t)(nl - (body->data + off));
        json_error_t jerr;
        json_t *msg = ll ? json_loadb(body->data + off, ll, 0, &jerr) : NULL;
        off += ll + 1;
        if (!ll)
            continue;
        json_t *res = json_object_get(msg, "result");
        if (!msg || !res) {
            json_decref(msg);
            rc = NET_ERROR;
            break;
        }
        json_t *evs = json_object_get(res, "events");
        size_t i;
        json_t *ev;
        json_array_foreach(evs, i, ev)
        {
            long long r = etcd_int(json_object_get(ev, "kv"), "mod_revision", 0);
            if (r >= e->next_rev)
                e->next_rev = r + 1;
        }
        e->in_stream_cb = true;
        if (json_is_true(json_object_get(res, "created")) && !e->wup) {
            e->wup = true;
            e->backoff = ETCD_BACKOFF_MIN_S;
            ev_timer_stop(e->loop, &c->timer);
            log_kv(CONF_LOG_INFO, "etcd watch up", LOG_STR("endpoint", etcd_endpoint(e)),
                   LOG_INT("from_revision", e->next_rev));
            e->hooks.up(e->hooks.ctx);
        }
        if (!e->wreset)
            e->hooks.result(e->hooks.ctx, res);
        e->in_stream_cb = false;
        json_decref(msg);
        if (e->wreset)
            rc = NET_ERROR;
    }
    h1resp_body_take(&c->rd, off);
    return rc;
}

/* Every transition of an exchange. */
static void conn_drive(struct econn *c, int revents)
{
    struct etcd *e = c->e;
    const char *why = NULL;
    int err = 0;
    if (c->state == CONN_CONNECTING) {
        int rc = net_connect_result(c->fd, &err);
        if (rc == NET_AGAIN)
            return;
        if (rc != NET_OK) {
            why = err_connect;
            goto fail;
        }
        c->state = CONN_SENDING;
    }
    if (c->state == CONN_SENDING) {
        while (c->out_off < c->out.len) {
            ssize_t n = write(c->fd, c->out.data + c->out_off, c->out.len - c->out_off);
            if (n < 0 && (errno == EAGAIN || errno == EINTR))
                return;
            if (n <= 0) {
                why = err_connect;
                goto fail;
            }
            c->out_off += (size_t)n;
        }
        c->state = CONN_HEAD;
        ev_io_stop(e->loop, &c->io);
        ev_io_set(&c->io, c->fd, EV_READ);
        ev_io_start(e->loop, &c->io);
        return;
    }
    if (!(revents & EV_READ))
        return;
    bool eof = false;
    int rc = H1RESP_AGAIN;
    for (size_t got = 0; got < READ_PER_EVENT && rc == H1RESP_AGAIN;) {
        char buf[16384];
        ssize_t n = read(c->fd, buf, sizeof(buf));
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && errno == EAGAIN)
            break;
        if (n < 0) {
            why = err_io;
            goto fail;
        }
        if (n == 0) {
            eof = true;
            break;
        }
        rc = h1resp_feed(&c->rd, buf, (size_t)n);
        got += (size_t)n;
    }
    if (eof && rc == H1RESP_AGAIN)
        rc = h1resp_eof(&c->rd);
    if (rc == H1RESP_ERROR) {
        why = reply_error(&c->rd);
        goto fail;
    }
    if (!c->rd.have_head)
        return;
    c->state = CONN_BODY;
    if (c->stream) {
        if (c->rd.status != 200) {
            why = err_http;
            goto fail;
        }
        if (stream_lines(c) < 0) {
            why = e->wreset ? err_reset : err_json;
            goto fail;
        }
        if (rc == H1RESP_DONE || eof) {
            why = err_closed;
            goto fail;
        }
        return;
    }
    if (rc == H1RESP_DONE) {
        c->state = CONN_DONE;
        call_finish(c, NULL);
    }
    return;
fail:
    log_kv(CONF_LOG_DEBUG, "etcd exchange failed", LOG_STR("state", state_to_str(c->state)),
           LOG_STR("reason", why), LOG_STR("reply", c->rd.error ? c->rd.error : ""),
           LOG_STR("error", err ? strerror(err) : ""));
    if (c->stream)
        watch_broken(e, why);
    else
        call_finish(c, why);
}

static void conn_io_cb(struct ev_loop *loop, ev_io *w, int revents)
{
    conn_drive(container_of(w, struct econn, io), revents);
}

static void conn_timer_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    struct econn *c = container_of(w, struct econn, timer);
    if (c->stream)
        watch_broken(c->e, err_timeout);
    else
        call_finish(c, c->fd < 0 ? err_connect : err_timeout);
}

/* ---- unary calls ----------------------------------------------------------- */

int etcd_call(struct etcd *e, const char *path, json_t *body, etcd_reply_cb cb, void *ctx)
{
    char *text = body ? json_dumps(body, JSON_COMPACT) : NULL;
    json_decref(body);
    if (!text)
        return -1;
    struct econn *c = conn_open(e, path, text, false, ETCD_CALL_TIMEOUT_S);
    free(text);
    if (!c) {
        /* no socket at all: still report from the loop, as promised */
        c = calloc(1, sizeof(*c));
        if (!c)
            return -1;
        c->e = e;
        c->fd = -1;
        c->state = CONN_DONE;
        ev_io_init(&c->io, conn_io_cb, -1, 0);
        ev_timer_init(&c->timer, conn_timer_cb, 0., 0.);
        ev_timer_start(e->loop, &c->timer);
    }
    c->cb = cb;
    c->ctx = ctx;
    list_append(&e->calls, &c->link);
    return 0;
}

/* ---- the watch ------------------------------------------------------------- */

static void watch_open(struct etcd *e)
{
    json_t *kb = etcd_b64(e->wkey, strlen(e->wkey));
    json_t *eb = etcd_b64(e->wend, strlen(e->wend));
    json_t *req = json_pack("{s:{s:o,s:o,s:I}}", "create_request", "key", kb, "range_end", eb,
                            "start_revision", (json_int_t)e->next_rev);
    char *text = req ? json_dumps(req, JSON_COMPACT) : NULL;
    json_decref(req);
    e->wup = false;
    e->wreset = false;
    e->wconn = text ? conn_open(e, "/v3/watch", text, true, WATCH_OPEN_TIMEOUT_S) : NULL;
    free(text);
    if (!e->wconn)
        watch_broken(e, err_connect);
}

static void retry_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    struct etcd *e = container_of(w, struct etcd, retry);
    if (e->watching && !e->wconn)
        watch_open(e);
}

/* The stream is gone: tell the owner (once per stream that was up), try
 * again after the backoff, from the next revision, on the next endpoint. */
static void watch_broken(struct etcd *e, const char *why)
{
    bool was_up = e->wup;
    if (e->wconn)
        conn_close(e->wconn);
    e->wconn = NULL;
    e->wup = false;
    next_endpoint(e);
    ev_timer_stop(e->loop, &e->retry);
    ev_timer_set(&e->retry, e->backoff, 0.);
    ev_timer_start(e->loop, &e->retry);
    if (was_up)
        log_kv(CONF_LOG_WARN, "etcd watch down", LOG_STR("reason", why),
               LOG_INT("resume_revision", e->next_rev));
    e->backoff = e->backoff * 2 > ETCD_BACKOFF_MAX_S ? ETCD_BACKOFF_MAX_S : e->backoff * 2;
    e->hooks.down(e->hooks.ctx, why);
}

int etcd_watch(struct etcd *e, const char *key, const char *range_end, long long start_rev,
               const struct etcd_watch_hooks *hooks)
{
    char *k = strdup(key), *r = strdup(range_end);
    if (!k || !r) {
        free(k);
        free(r);
        return -1;
    }
    if (e->wconn)
        conn_close(e->wconn);
    e->wconn = NULL;
    ev_timer_stop(e->loop, &e->retry);
    free(e->wkey);
    free(e->wend);
    e->wkey = k;
    e->wend = r;
    e->next_rev = start_rev;
    e->hooks = *hooks;
    e->watching = true;
    e->backoff = ETCD_BACKOFF_MIN_S;
    watch_open(e);
    return 0;
}

void etcd_watch_reset(struct etcd *e, const char *why)
{
    if (!e->watching)
        return;
    if (e->in_stream_cb) {
        e->wreset = true; /* the read loop breaks the stream after the hook */
        return;
    }
    if (e->wconn)
        watch_broken(e, why);
}

/* ---- the client ------------------------------------------------------------ */

struct etcd *etcd_new(struct ev_loop *loop, const struct conf_address *eps, size_t n)
{
    struct etcd *e = calloc(1, sizeof(*e));
    if (!e)
        return NULL;
    e->loop = loop;
    e->eps = eps;
    e->num_eps = n;
    e->backoff = ETCD_BACKOFF_MIN_S;
    list_init(&e->calls);
    ev_timer_init(&e->retry, retry_cb, 0., 0.);
    return e;
}

void etcd_free(struct etcd *e)
{
    if (!e)
        return;
    while (!list_empty(&e->calls)) {
        struct econn *c = container_of(e->calls.next, struct econn, link);
        list_remove(&c->link);
        conn_close(c);
    }
    if (e->wconn)
        conn_close(e->wconn);
    ev_timer_stop(e->loop, &e->retry);
    free(e->wkey);
    free(e->wend);
    free(e);
}
