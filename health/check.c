/* Active health checks: one non-blocking attempt at a time per backend, on
 * the backend's event loop. An attempt is connect, the PROXY header
 * (send_proxy: LOCAL for v2, "PROXY UNKNOWN" for v1: a check carries no
 * client), the TLS handshake (pools[].tls: the pool's context, verified as
 * its connections are; a failure is reason "tls") (+ for http: send the
 * request, read the response head) under one timeout; it ends in exactly
 * one result handed to the done callback, after its watchers are stopped
 * and its socket closed, so nothing of it can fire or count again.
 *
 * Schedule: the next attempt starts hc_next_delay() (interval +-10%) after
 * the previous one ENDED. Measuring from the end means attempts never
 * overlap and a slow backend is never probed faster than it answers; the
 * price is that the period is interval + attempt duration, which on a
 * healthy backend is interval + a few ms. */
#include <errno.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "../parser/http1.h"
#include "../parser/proxyproto.h"
#include "backend.h"
#include "check.h"
#include "../proxy/net/io.h"
#include "../proxy/net/list.h"
#include "../proxy/net/net.h"
#include "../proxy/net/tlsclient.h"

/* Response-head buffer of an HTTP check. A health endpoint answers with a
 * short head; 4 KiB holds any sane one and bounds memory per backend. */
#define HC_BUF_SIZE 4096
/* Header fields accepted in a health-check response head. */
#define HC_MAX_HEADERS 64
/* +-10% per attempt: enough to spread backends checked in lockstep (same
 * interval, added by the same reload) within a few rounds. */
#define HC_JITTER 0.10
/* The first attempt starts within 50 ms: /ready waits for the first round,
 * so it must be quick, but not one SYN burst for a large fleet. */
#define HC_FIRST_SPREAD 0.050
/* Floor for an interval or timeout of 0 (the config should forbid it): a
 * zero timer would spin the loop. */
#define HC_MIN_PERIOD 0.001

const char hc_reason_ok[] = "ok";
const char hc_reason_503[] = "503";
const char hc_reason_none[] = "none";

static const char reason_refused[] = "refused";
static const char reason_timeout[] = "timeout";
static const char reason_reset[] = "reset";
static const char reason_closed[] = "closed";
static const char reason_bad_status[] = "bad status";
static const char reason_bad_response[] = "bad response";
static const char reason_head_too_large[] = "head too large";
static const char reason_unreachable[] = "unreachable";
static const char reason_socket_error[] = "socket error";
/* the handshake, the certificate's verification or a TLS record failed
 * (backend_check.tls_error has OpenSSL's words) */
static const char reason_tls[] = "tls";

static const char request_fmt[] = "GET %s HTTP/1.1\r\n"
                                  "Host: %s\r\n"
                                  "User-Agent: usher-health-check\r\n"
                                  "Connection: close\r\n"
                                  "\r\n";

static void timer_cb(struct ev_loop *loop, ev_timer *w, int revents);
static void io_cb(struct ev_loop *loop, ev_io *w, int revents);
static void watch(struct backend *b, unsigned events);

static ev_tstamp ms_to_s(conf_ms ms)
{
    return (ev_tstamp)ms / 1000.0;
}

/* Uniform in [0, 1) from the backend's own rand_r() state, so checks never
 * touch a process-wide random state. */
static double uniform(struct backend *b)
{
    return (double)rand_r(&b->rand_state) / ((double)RAND_MAX + 1.0);
}

static ev_tstamp interval_s(const struct backend *b)
{
    ev_tstamp i = ms_to_s(b->hc.interval);
    return i < HC_MIN_PERIOD ? HC_MIN_PERIOD : i;
}

ev_tstamp hc_first_delay(struct backend *b)
{
    ev_tstamp spread = interval_s(b);
    if (spread > HC_FIRST_SPREAD)
        spread = HC_FIRST_SPREAD;
    return spread * uniform(b);
}

ev_tstamp hc_next_delay(struct backend *b)
{
    return interval_s(b) * (1.0 - HC_JITTER + 2.0 * HC_JITTER * uniform(b));
}

const char *hc_phase_str(enum backend_check_phase p)
{
    switch (p) {
    case BACKEND_CHECK_IDLE:
        return "idle";
    case BACKEND_CHECK_CONNECTING:
        return "connecting";
    case BACKEND_CHECK_PROXY:
        return "proxy header";
    case BACKEND_CHECK_HANDSHAKE:
        return "handshake";
    case BACKEND_CHECK_SENDING:
        return "sending";
    case BACKEND_CHECK_READING:
        return "reading";
    }
    return "unknown";
}

static const char *errno_reason(int err)
{
    switch (err) {
    case ECONNREFUSED:
        return reason_refused;
    case ECONNRESET:
    case EPIPE:
        return reason_reset;
    case ETIMEDOUT:
        return reason_timeout;
    case EHOSTUNREACH:
    case ENETUNREACH:
    case EHOSTDOWN:
    case ENETDOWN:
        return reason_unreachable;
    default:
        return reason_socket_error;
    }
}

/* ---- transports ---------------------------------------------------------
 * Every read and write of an attempt goes through one of these: the socket
 * itself or TLS over it. Each returns a count (> 0; recv: 0 on a close),
 * NET_AGAIN with *<want> the events to wait for, or NET_ERROR with errno
 * set for a socket error and 0 for a TLS one. */
struct hc_transport {
    ssize_t (*send)(struct backend *b, const char *p, size_t n, unsigned *want);
    ssize_t (*recv)(struct backend *b, char *p, size_t n, unsigned *want);
};

static ssize_t plain_send(struct backend *b, const char *p, size_t n, unsigned *want)
{
    for (;;) {
        ssize_t r = send(b->check.fd, p, n, MSG_NOSIGNAL);
        if (r >= 0)
            return r;
        if (errno == EINTR)
            continue;
        if (errno == EAGAIN || errno == EWOULDBLOCK) {
            *want = EV_WRITE;
            return NET_AGAIN;
        }
        return NET_ERROR;
    }
}

static ssize_t plain_recv(struct backend *b, char *p, size_t n, unsigned *want)
{
    for (;;) {
        ssize_t r = recv(b->check.fd, p, n, 0);
        if (r >= 0)
            return r;
        if (errno == EINTR)
            continue;
        if (errno == EAGAIN || errno == EWOULDBLOCK) {
            *want = EV_READ;
            return NET_AGAIN;
        }
        return NET_ERROR;
    }
}

static ssize_t tls_send(struct backend *b, const char *p, size_t n, unsigned *want)
{
    return tlsc_send(b->check.ssl, p, n, want);
}

static ssize_t tls_recv(struct backend *b, char *p, size_t n, unsigned *want)
{
    return tlsc_recv(b->check.ssl, p, n, want);
}

static const struct hc_transport plain_ops = {plain_send, plain_recv};
static const struct hc_transport tls_ops = {tls_send, tls_recv};

/* Why a read or write failed: the socket's errno, else TLS (its reason
 * kept in tls_error). Call right after the failure. */
static const char *io_reason(struct backend *b)
{
    if (errno)
        return errno_reason(errno);
    const char *r = b->check.ssl ? tlsc_error(b->check.ssl) : NULL;
    snprintf(b->check.tls_error, sizeof(b->check.tls_error), "%s",
             r ? r : "TLS error after the handshake");
    return reason_tls;
}

void hc_init(struct backend *b, hc_done_cb done)
{
    struct backend_check *c = &b->check;

    c->done = done;
    c->fd = -1;
    c->in_progress = false;
    c->phase = BACKEND_CHECK_IDLE;
    c->buf = NULL;
    c->buf_len = 0;
    c->sent = 0;
    c->pre_len = c->pre_sent = 0;
    c->ssl = NULL;
    c->io_ops = &plain_ops;
    c->tls_error[0] = '\0';
    ev_init(&c->io, io_cb);
    c->io_events = 0;
    ev_init(&c->timer, timer_cb);
}

/* Ends the attempt in progress without a result. */
static void attempt_clear(struct backend *b)
{
    struct backend_check *c = &b->check;

    watch(b, 0);
    ev_timer_stop(b->loop, &c->timer);
    tlsc_close(c->ssl); /* close_notify if it can go at once, never waits */
    c->ssl = NULL;
    c->io_ops = &plain_ops;
    c->pre_len = c->pre_sent = 0;
    if (c->fd >= 0)
        close(c->fd);
    c->fd = -1;
    free(c->buf);
    c->buf = NULL;
    c->buf_len = 0;
    c->sent = 0;
    c->in_progress = false;
    c->phase = BACKEND_CHECK_IDLE;
}

void hc_schedule(struct backend *b, ev_tstamp delay)
{
    struct backend_check *c = &b->check;

    if (!b->hc.enabled || c->in_progress)
        return;
    ev_timer_stop(b->loop, &c->timer);
    ev_timer_set(&c->timer, delay < 0 ? 0 : delay, 0.);
    ev_timer_start(b->loop, &c->timer);
}

void hc_stop(struct backend *b)
{
    attempt_clear(b);
}

bool hc_running(const struct backend *b)
{
    return b->check.in_progress || ev_is_active(&b->check.timer);
}

/* The attempt ended: tear it down first (so it cannot fire or count again),
 * arm the next one, then hand the single result to the state machine. */
static void finish(struct backend *b, enum hc_outcome outcome, const char *reason, int status)
{
    attempt_clear(b);
    hc_schedule(b, hc_next_delay(b));
    b->check.done(b, outcome, reason, status);
}

static void watch(struct backend *b, unsigned events)
{
    io_watch(b->loop, &b->check.io, b->check.fd, &b->check.io_events, events);
}

/* Builds the request into c->buf (sending phase). Returns 0 or -1 (ENOMEM). */
static int request_build(struct backend *b)
{
    struct backend_check *c = &b->check;
    const char *path = b->hc.path && b->hc.path[0] ? b->hc.path : "/";
    const char *host = b->address_text ? b->address_text : "";
    int n = snprintf(NULL, 0, request_fmt, path, host);
    /* The same buffer later holds the response head. */
    size_t size = (size_t)n + 1 > HC_BUF_SIZE ? (size_t)n + 1 : HC_BUF_SIZE;

    if (n < 0)
        return -1;
    c->buf = malloc(size);
    if (!c->buf)
        return -1;
    snprintf(c->buf, size, request_fmt, path, host);
    c->buf_len = (size_t)n;
    c->sent = 0;
    return 0;
}

/* Classifies a complete final response head. */
static void response_done(struct backend *b, int status)
{
    if (status == 503)
        finish(b, HC_DRAINING, hc_reason_503, status);
    else if (status >= (int)b->hc.expect_min && status <= (int)b->hc.expect_max)
        finish(b, HC_SUCCESS, hc_reason_ok, status);
    else
        finish(b, HC_FAILURE, reason_bad_status, status);
}

/* Parses what was read so far. Returns HTTP1_AGAIN if more bytes are
 * needed, HTTP1_OK once the attempt was finished. */
static int response_parse(struct backend *b)
{
    struct backend_check *c = &b->check;
    struct http1_header headers[HC_MAX_HEADERS];
    const struct http1_limits lim = {
        .max_head_bytes = HC_BUF_SIZE,
        .max_headers = HC_MAX_HEADERS,
        .max_uri_bytes = HC_BUF_SIZE,
    };

    for (;;) {
        struct http1_response res;
        int r;

        memset(&res, 0, sizeof(res));
        res.msg.headers = headers;
        r = http1_parse_response(c->buf, c->buf_len, &lim, HTTP1_METHOD_GET, &res);
        if (r == HTTP1_AGAIN) {
            if (c->buf_len >= HC_BUF_SIZE) {
                finish(b, HC_FAILURE, reason_head_too_large, 0);
                return HTTP1_OK;
            }
            return HTTP1_AGAIN;
        }
        if (r != HTTP1_OK) {
            finish(b, HC_FAILURE, reason_bad_response, 0);
            return HTTP1_OK;
        }
        /* An interim 1xx (e.g. 100, 103) precedes the real answer; 101
         * would switch protocols, which a health check never asked for. */
        if (res.status >= 100 && res.status < 200 && res.status != 101 && res.msg.head_len > 0 &&
            res.msg.head_len <= c->buf_len) {
            memmove(c->buf, c->buf + res.msg.head_len, c->buf_len - res.msg.head_len);
            c->buf_len -= res.msg.head_len;
            continue;
        }
        response_done(b, res.status);
        return HTTP1_OK;
    }
}

static void response_read(struct backend *b)
{
    struct backend_check *c = &b->check;

    for (;;) {
        unsigned want = 0;
        ssize_t n = c->io_ops->recv(b, c->buf + c->buf_len, HC_BUF_SIZE - c->buf_len, &want);

        if (n > 0) {
            c->buf_len += (size_t)n;
            if (response_parse(b) != HTTP1_AGAIN)
                return;
            continue;
        }
        if (n == 0) {
            finish(b, HC_FAILURE, reason_closed, 0);
            return;
        }
        if (n == NET_AGAIN) {
            watch(b, want); /* TLS may need to write to read on */
            return;
        }
        finish(b, HC_FAILURE, io_reason(b), 0);
        return;
    }
}

static void request_send(struct backend *b)
{
    struct backend_check *c = &b->check;

    while (c->sent < c->buf_len) {
        unsigned want = 0;
        ssize_t n = c->io_ops->send(b, c->buf + c->sent, c->buf_len - c->sent, &want);

        if (n > 0) {
            c->sent += (size_t)n;
            continue;
        }
        if (n == NET_AGAIN) {
            watch(b, want);
            return;
        }
        finish(b, HC_FAILURE, io_reason(b), 0);
        return;
    }
    c->phase = BACKEND_CHECK_READING;
    c->buf_len = 0;
    watch(b, EV_READ);
}

/* The connection is ready for the check itself: a tcp check succeeded
 * (over TLS: the handshake completed, verified), an http check sends. */
static void app_start(struct backend *b)
{
    if (b->hc.protocol == CONF_PROTO_TCP) {
        finish(b, HC_SUCCESS, hc_reason_ok, 0);
        return;
    }
    b->check.phase = BACKEND_CHECK_SENDING;
    request_send(b);
}

static void handshake_step(struct backend *b)
{
    struct backend_check *c = &b->check;
    unsigned want = 0;
    int rc = tlsc_handshake(c->ssl, &want, c->tls_error, sizeof(c->tls_error));

    if (rc == NET_AGAIN) {
        watch(b, want);
        return;
    }
    if (rc < 0) {
        finish(b, HC_FAILURE, errno ? errno_reason(errno) : reason_tls, 0);
        return;
    }
    app_start(b);
}

/* Declared in backend.h; defined here, by its first user, since backend.c
 * calls into this file and never the other way. */
void backend_tls_params(const struct conf_pool_tls *t, enum conf_pool_protocol protocol,
                        struct tlsc_params *out)
{
    *out = (struct tlsc_params){
        .ca = t->ca, .verify = t->verify, .sni = t->sni, .cert = t->cert, .key = t->key};
    if (protocol == CONF_POOL_H2) {
        out->alpn = TLSC_ALPN_H2;
        out->alpn_len = sizeof(TLSC_ALPN_H2) - 1;
    } else {
        out->alpn = TLSC_ALPN_HTTP11;
        out->alpn_len = sizeof(TLSC_ALPN_HTTP11) - 1;
    }
}

/* The pool's TLS context: the one attached (backend_tls_set), else one
 * built here from the pool's conf, kept until its settings change. NULL
 * with tls_error set when the files do not load. */
static struct tlsc_ctx *tls_context(struct backend *b)
{
    if (b->tls)
        return b->tls;
    struct tlsc_params p;
    backend_tls_params(&b->tls_conf, b->protocol, &p);
    b->tls = tlsc_ctx_new(&p, b->check.tls_error, sizeof(b->check.tls_error));
    return b->tls;
}

/* After the PROXY header (if any): TLS for a pool with tls, then the check. */
static void transport_start(struct backend *b)
{
    struct backend_check *c = &b->check;

    if (!b->tls_conf.enabled) {
        app_start(b);
        return;
    }
    struct tlsc_ctx *ctx = tls_context(b);
    /* an http check speaks HTTP/1.1 whatever the pool offers (h2) */
    bool http = b->hc.protocol != CONF_PROTO_TCP;
    const char *alpn = http ? TLSC_ALPN_HTTP11 : NULL;
    size_t alpn_len = http ? sizeof(TLSC_ALPN_HTTP11) - 1 : 0;
    c->ssl = ctx ? tlsc_conn_new(ctx, c->fd, b->host, &b->tls_session, alpn, alpn_len, c->tls_error,
                                 sizeof(c->tls_error))
                 : NULL;
    if (!c->ssl) {
        finish(b, HC_FAILURE, reason_tls, 0);
        return;
    }
    c->io_ops = &tls_ops;
    c->phase = BACKEND_CHECK_HANDSHAKE;
    handshake_step(b);
}

/* send_proxy: the header goes first, in the clear, before any TLS. */
static void proxy_send(struct backend *b)
{
    struct backend_check *c = &b->check;

    while (c->pre_sent < c->pre_len) {
        unsigned want = 0;
        ssize_t n = plain_send(b, c->pre + c->pre_sent, c->pre_len - c->pre_sent, &want);
        if (n > 0) {
            c->pre_sent += (size_t)n;
            continue;
        }
        if (n == NET_AGAIN) {
            watch(b, want);
            return;
        }
        finish(b, HC_FAILURE, errno_reason(errno), 0);
        return;
    }
    transport_start(b);
}

static void connected(struct backend *b)
{
    b->check.phase = BACKEND_CHECK_PROXY;
    proxy_send(b);
}

/* The header a check starts with under send_proxy: a check carries no
 * client, so v2 says LOCAL and v1 "PROXY UNKNOWN" (DESIGN "PROXY protocol
 * and TLS to backends"). */
static void proxy_header_build(struct backend *b)
{
    struct backend_check *c = &b->check;
    int n = 0;

    if (b->send_proxy == CONF_PROXY_V1)
        n = proxyproto_write_v1(c->pre, sizeof(c->pre), NULL, NULL);
    else if (b->send_proxy == CONF_PROXY_V2)
        n = proxyproto_write_v2((uint8_t *)c->pre, sizeof(c->pre), NULL, NULL);
    c->pre_len = n > 0 ? (size_t)n : 0;
    c->pre_sent = 0;
}

static void attempt_start(struct backend *b)
{
    struct backend_check *c = &b->check;
    ev_tstamp timeout = ms_to_s(b->hc.timeout);

    int in_progress = 0, err = 0;
    if (b->hc.protocol != CONF_PROTO_TCP && request_build(b) < 0)
        goto fail;
    c->tls_error[0] = '\0';
    proxy_header_build(b);
    c->fd = net_connect_start((const struct sockaddr *)&b->addr, b->addr_len, &in_progress, &err);
    if (c->fd < 0 && (err == EMFILE || err == ENFILE || err == ENOBUFS || err == ENOMEM))
        goto fail;
    c->in_progress = true;
    c->phase = BACKEND_CHECK_CONNECTING;
    /* One timeout covers connect, send and the response head. */
    ev_timer_set(&c->timer, timeout < HC_MIN_PERIOD ? HC_MIN_PERIOD : timeout, 0.);
    ev_timer_start(b->loop, &c->timer);
    if (c->fd < 0) {
        finish(b, HC_FAILURE, errno_reason(err), 0);
        return;
    }
    if (!in_progress) {
        connected(b);
        return;
    }
    watch(b, EV_WRITE);
    return;

fail:
    /* usher itself could not try (out of fds or memory): that says nothing
     * about the backend, and counting it as a failure would take a whole
     * fleet out of rotation at once. No result; try again next interval. */
    attempt_clear(b);
    hc_schedule(b, hc_next_delay(b));
}

static void timer_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    struct backend *b = container_of(w, struct backend, check.timer);

    if (b->check.in_progress)
        finish(b, HC_FAILURE, reason_timeout, 0);
    else
        attempt_start(b);
}

static void io_cb(struct ev_loop *loop, ev_io *w, int revents)
{
    struct backend *b = container_of(w, struct backend, check.io);
    struct backend_check *c = &b->check;
    int err = 0;

    switch (c->phase) {
    case BACKEND_CHECK_CONNECTING:
        switch (net_connect_result(c->fd, &err)) {
        case NET_AGAIN:
            return;
        case NET_ERROR:
            finish(b, HC_FAILURE, errno_reason(err), 0);
            return;
        }
        connected(b);
        return;
    case BACKEND_CHECK_PROXY:
        proxy_send(b);
        return;
    case BACKEND_CHECK_HANDSHAKE:
        handshake_step(b);
        return;
    case BACKEND_CHECK_SENDING:
        request_send(b);
        return;
    case BACKEND_CHECK_READING:
        response_read(b);
        return;
    case BACKEND_CHECK_IDLE:
        watch(b, 0);
        return;
    }
}
