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

#include <nghttp2/nghttp2.h>

#include "../parser/http1.h"
#include "../parser/proxyproto.h"
#include "backend.h"
#include "check.h"
#include "grpcpb.h"
#include "../proxy/net/io.h"
#include "../proxy/net/list.h"
#include "../proxy/net/net.h"
#include "../proxy/net/tlsclient.h"

/* The body of a gRPC check's answer: a HealthCheckResponse is a few
 * bytes; anything longer is not one. */
#define HC_GRPC_BODY_MAX 1024

/* The gRPC health service's one method (health.proto). */
#define HC_GRPC_PATH "/grpc.health.v1.Health/Check"

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
const char hc_reason_not_serving[] = "not_serving";
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
static const char reason_grpc_error[] = "grpc error";         /* a grpc-status other than OK */
static const char reason_serving_status[] = "serving status"; /* UNKNOWN or SERVICE_UNKNOWN */
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
static void grpc_free(struct hc_grpc *g);
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
    case BACKEND_CHECK_GRPC:
        return "grpc";
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
    c->grpc = NULL;
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
    grpc_free(c->grpc);
    c->grpc = NULL;
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

/* ---- gRPC: grpc.health.v1.Health/Check over HTTP/2 ----------------------
 * One request per attempt on a minimal nghttp2 client session over the
 * check's connection (h2c, or TLS with ALPN h2 for an h2 pool): POST
 * HC_GRPC_PATH with a HealthCheckRequest for hc.service. SERVING is a
 * success, NOT_SERVING a drain (as a 503: reason not_serving), anything
 * else — another status, a gRPC error, a broken answer — a failure. */

struct hc_grpc {
    nghttp2_session *session;
    uint8_t *req; /* the framed HealthCheckRequest */
    size_t req_len, req_sent;
    int32_t stream_id;
    int status;      /* :status (0 until it came) */
    int grpc_status; /* -1 until grpc-status came, in the head (trailers-only) or trailers */
    bool grpc_type;  /* content-type application/grpc... */
    uint8_t body[HC_GRPC_BODY_MAX];
    size_t body_len;
    bool body_too_long;
    bool closed; /* the stream ended (close_code says how) */
    uint32_t close_code;
    const uint8_t *out; /* what mem_send gave, not written yet */
    size_t out_len;
};

static void grpc_free(struct hc_grpc *g)
{
    if (!g)
        return;
    nghttp2_session_del(g->session);
    free(g->req);
    free(g);
}

static bool slice_lit(const uint8_t *p, size_t n, const char *lit)
{
    size_t k = strlen(lit);
    return n == k && memcmp(p, lit, k) == 0;
}

/* A small non-negative decimal (a status); -1 if it is not one. */
static int small_int(const uint8_t *p, size_t n)
{
    if (n == 0 || n > 3)
        return -1;
    int v = 0;
    for (size_t i = 0; i < n; i++) {
        if (p[i] < '0' || p[i] > '9')
            return -1;
        v = v * 10 + (p[i] - '0');
    }
    return v;
}

static int grpc_on_header(nghttp2_session *session, const nghttp2_frame *frame, const uint8_t *name,
                          size_t namelen, const uint8_t *value, size_t valuelen, uint8_t flags,
                          void *user_data)
{
    struct hc_grpc *g = user_data;
    if (frame->hd.stream_id != g->stream_id)
        return 0;
    if (slice_lit(name, namelen, ":status"))
        g->status = small_int(value, valuelen);
    else if (slice_lit(name, namelen, "grpc-status"))
        g->grpc_status = small_int(value, valuelen);
    else if (slice_lit(name, namelen, "content-type"))
        g->grpc_type = valuelen >= 16 && memcmp(value, "application/grpc", 16) == 0;
    return 0;
}

static int grpc_on_data(nghttp2_session *session, uint8_t flags, int32_t stream_id,
                        const uint8_t *data, size_t len, void *user_data)
{
    struct hc_grpc *g = user_data;
    if (stream_id != g->stream_id)
        return 0;
    if (len > sizeof(g->body) - g->body_len) {
        g->body_too_long = true;
        return 0;
    }
    memcpy(g->body + g->body_len, data, len);
    g->body_len += len;
    return 0;
}

static int grpc_on_close(nghttp2_session *session, int32_t stream_id, uint32_t error_code,
                         void *user_data)
{
    struct hc_grpc *g = user_data;
    if (stream_id == g->stream_id) {
        g->closed = true;
        g->close_code = error_code;
    }
    return 0;
}

static ssize_t grpc_read_req(nghttp2_session *session, int32_t stream_id, uint8_t *buf,
                             size_t length, uint32_t *data_flags, nghttp2_data_source *source,
                             void *user_data)
{
    struct hc_grpc *g = user_data;
    size_t n = g->req_len - g->req_sent;
    if (n > length)
        n = length;
    memcpy(buf, g->req + g->req_sent, n);
    g->req_sent += n;
    if (g->req_sent == g->req_len)
        *data_flags |= NGHTTP2_DATA_FLAG_EOF;
    return (ssize_t)n;
}

/* The stream ended: what its answer says. */
static void grpc_done(struct backend *b)
{
    struct hc_grpc *g = b->check.grpc;
    int status = g->status;
    if (g->close_code != NGHTTP2_NO_ERROR) {
        finish(b, HC_FAILURE, reason_reset, status);
        return;
    }
    if (status != 200) {
        finish(b, HC_FAILURE, status > 0 ? reason_bad_status : reason_bad_response, status);
        return;
    }
    if (!g->grpc_type || g->grpc_status < 0) {
        finish(b, HC_FAILURE, reason_bad_response, status);
        return;
    }
    if (g->grpc_status != 0) {
        finish(b, HC_FAILURE, reason_grpc_error, status); /* UNIMPLEMENTED, NOT_FOUND... */
        return;
    }
    int serving = g->body_too_long ? -1 : grpcpb_health_response(g->body, g->body_len);
    if (serving == GRPCPB_SERVING)
        finish(b, HC_SUCCESS, hc_reason_ok, status);
    else if (serving == GRPCPB_NOT_SERVING)
        finish(b, HC_DRAINING, hc_reason_not_serving, status);
    else
        finish(b, HC_FAILURE, serving < 0 ? reason_bad_response : reason_serving_status, status);
}

/* Writes what the session has to send and reads what came, until the
 * socket would block or the answer is complete. */
static void grpc_step(struct backend *b)
{
    struct backend_check *c = &b->check;
    struct hc_grpc *g = c->grpc;
    unsigned want_w = 0, want_r = EV_READ;
    for (int progress = 1; progress;) {
        progress = 0;
        for (;;) {
            if (g->out_len == 0) {
                ssize_t n = nghttp2_session_mem_send(g->session, &g->out);
                if (n < 0) {
                    finish(b, HC_FAILURE, reason_bad_response, 0);
                    return;
                }
                if (n == 0)
                    break;
                g->out_len = (size_t)n;
            }
            want_w = 0;
            ssize_t n = c->io_ops->send(b, (const char *)g->out, g->out_len, &want_w);
            if (n == NET_AGAIN)
                break;
            if (n < 0) {
                finish(b, HC_FAILURE, io_reason(b), 0);
                return;
            }
            g->out += n;
            g->out_len -= (size_t)n;
        }
        char in[4096];
        ssize_t n = c->io_ops->recv(b, in, sizeof(in), &want_r);
        if (n == 0) {
            finish(b, HC_FAILURE, reason_closed, g->status);
            return;
        }
        if (n < 0 && n != NET_AGAIN) {
            finish(b, HC_FAILURE, io_reason(b), g->status);
            return;
        }
        if (n > 0) {
            if (nghttp2_session_mem_recv(g->session, (const uint8_t *)in, (size_t)n) < 0) {
                finish(b, HC_FAILURE, reason_bad_response, g->status);
                return;
            }
            progress = 1;
        }
        if (g->closed) {
            grpc_done(b);
            return;
        }
    }
    watch(b, want_r | (g->out_len ? want_w : 0));
}

/* The connection is ready: the session, its SETTINGS and the one request. */
static void grpc_start(struct backend *b)
{
    struct backend_check *c = &b->check;
    const char *service = b->hc.service ? b->hc.service : "";
    size_t slen = strlen(service);
    nghttp2_session_callbacks *cb = NULL;
    struct hc_grpc *g = calloc(1, sizeof(*g));
    if (!g)
        goto fail;
    c->grpc = g;
    g->grpc_status = -1;
    g->req_len = GRPCPB_PREFIX_LEN + 1 + 10 + slen;
    if (!(g->req = malloc(g->req_len)))
        goto fail;
    int n = grpcpb_health_request(g->req, g->req_len, service, slen);
    if (n < 0 || nghttp2_session_callbacks_new(&cb) != 0)
        goto fail;
    g->req_len = (size_t)n;
    nghttp2_session_callbacks_set_on_header_callback(cb, grpc_on_header);
    nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cb, grpc_on_data);
    nghttp2_session_callbacks_set_on_stream_close_callback(cb, grpc_on_close);
    int rc = nghttp2_session_client_new(&g->session, cb, g);
    nghttp2_session_callbacks_del(cb);
    if (rc != 0)
        goto fail;
    nghttp2_settings_entry iv[] = {{NGHTTP2_SETTINGS_ENABLE_PUSH, 0}};
    const char *authority = b->address_text ? b->address_text : "";
    const char *scheme = c->ssl ? "https" : "http";
#define NV(n, v) {(uint8_t *)(n), (uint8_t *)(v), strlen(n), strlen(v), NGHTTP2_NV_FLAG_NONE}
    nghttp2_nv nv[] = {
        NV(":method", "POST"),
        NV(":scheme", scheme),
        NV(":authority", authority),
        NV(":path", HC_GRPC_PATH),
        NV("content-type", "application/grpc"),
        NV("te", "trailers"),
        NV("user-agent", "usher-health-check"),
    };
#undef NV
    nghttp2_data_provider dp = {.read_callback = grpc_read_req};
    if (nghttp2_submit_settings(g->session, NGHTTP2_FLAG_NONE, iv, 1) != 0 ||
        (g->stream_id = nghttp2_submit_request(g->session, NULL, nv, sizeof(nv) / sizeof(nv[0]),
                                               &dp, NULL)) < 0)
        goto fail;
    c->phase = BACKEND_CHECK_GRPC;
    grpc_step(b);
    return;
fail:
    /* out of memory: no result, as when usher could not even try */
    attempt_clear(b);
    hc_schedule(b, hc_next_delay(b));
}

/* The connection is ready for the check itself: a tcp check succeeded
 * (over TLS: the handshake completed, verified), an http check sends. */
static void app_start(struct backend *b)
{
    if (b->hc.protocol == CONF_PROTO_TCP) {
        finish(b, HC_SUCCESS, hc_reason_ok, 0);
        return;
    }
    if (b->hc.protocol == CONF_PROTO_GRPC) {
        grpc_start(b);
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

/* Declared in backend.h; defined here beside backend_tls_params, for the
 * same reason (backend.c calls into this file, never the other way). */
struct tlsc_ctx *backend_tls_ctx(struct backend *b, char *err, size_t cap)
{
    struct tlsc_ctx *c = __atomic_load_n(&b->tls, __ATOMIC_ACQUIRE);
    if (c)
        return c;
    struct tlsc_params p;
    backend_tls_params(&b->tls_conf, b->protocol, &p);
    if (!(c = tlsc_ctx_new(&p, err, cap)))
        return NULL;
    /* two workers may build it at once: the first one kept wins */
    struct tlsc_ctx *none = NULL;
    if (!__atomic_compare_exchange_n(&b->tls, &none, c, false, __ATOMIC_ACQ_REL,
                                     __ATOMIC_ACQUIRE)) {
        tlsc_ctx_free(c);
        return none;
    }
    return c;
}

/* The pool's TLS context: the one attached (backend_tls_set), else one
 * built here from the pool's conf, kept until its settings change. NULL
 * with tls_error set when the files do not load. */
static struct tlsc_ctx *tls_context(struct backend *b)
{
    return backend_tls_ctx(b, b->check.tls_error, sizeof(b->check.tls_error));
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
    /* an http check speaks HTTP/1.1 whatever the pool offers (h2); a grpc
     * one the pool's h2 */
    bool http = b->hc.protocol == CONF_PROTO_HTTP;
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
    if (b->hc.protocol == CONF_PROTO_HTTP && request_build(b) < 0)
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
    case BACKEND_CHECK_GRPC:
        grpc_step(b);
        return;
    case BACKEND_CHECK_IDLE:
        watch(b, 0);
        return;
    }
}
