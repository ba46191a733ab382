// links: usher_health
/* The backend state machine, active health checks and deregistration
 * timers, against real sockets on 127.0.0.1 and a real libev loop. Each
 * scripted backend is a thread with a blocking accept() answering in the
 * current mode (200, 503, 500, close, reset, hang, slow...). */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include "health/backend.h"
#include "health/check.h"

#include "test/unit/check.h"

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static struct ev_loop *loop;

/* Drives the loop until <cond> holds or <secs> of wall time passed. A 5 ms
 * ticker (started in main) bounds each EVRUN_ONCE. */
#define RUN_UNTIL(cond, secs)                                                                      \
    do {                                                                                           \
        double end_ = now_s() + (secs);                                                            \
        while (!(cond) && now_s() < end_)                                                          \
            ev_run(loop, EVRUN_ONCE);                                                              \
    } while (0)

#define RUN_FOR(secs) RUN_UNTIL(false, secs)

static void tick_cb(struct ev_loop *l, ev_timer *w, int revents)
{
}

/* ---------------------------------------------------------------------------
 * Scripted backends */

enum srv_mode {
    SRV_200 = 1,
    SRV_503,
    SRV_500,
    SRV_CLOSE,   /* read the request, close without answering */
    SRV_RESET,   /* read the request, close with RST */
    SRV_HANG,    /* read the request, never answer (until the client closes) */
    SRV_SLOW200, /* answer 200 after 300 ms */
    SRV_BYTES,   /* answer 200 one byte at a time */
    SRV_CONT200, /* 100 Continue, then 200 */
    SRV_NOREAD,  /* tcp checks: accept, wait for the client to close */
};

struct server {
    int fd;
    uint16_t port;
    pthread_t thread;
    atomic_int mode;
    atomic_int accepted;
    atomic_bool stop;
    pthread_mutex_t lock;
    char first_request[512];
};

static void write_all(int fd, const char *s, size_t len)
{
    while (len > 0) {
        ssize_t n = send(fd, s, len, MSG_NOSIGNAL);
        if (n <= 0)
            return;
        s += n;
        len -= (size_t)n;
    }
}

static void answer(int fd, const char *status_line)
{
    char out[256];
    int n =
        snprintf(out, sizeof(out),
                 "HTTP/1.1 %s\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok", status_line);
    write_all(fd, out, (size_t)n);
}

/* Reads until the end of a request head, EOF or the 2 s receive timeout. */
static size_t read_head(int fd, char *buf, size_t cap)
{
    size_t len = 0;
    while (len + 1 < cap) {
        ssize_t n = recv(fd, buf + len, cap - 1 - len, 0);
        if (n <= 0)
            break;
        len += (size_t)n;
        buf[len] = '\0';
        if (strstr(buf, "\r\n\r\n"))
            break;
    }
    buf[len] = '\0';
    return len;
}

static void *server_main(void *arg)
{
    struct server *s = arg;

    for (;;) {
        int fd = accept(s->fd, NULL, NULL);
        if (fd < 0) {
            if (atomic_load(&s->stop))
                return NULL;
            if (errno == EINTR || errno == ECONNABORTED)
                continue;
            return NULL;
        }
        atomic_fetch_add(&s->accepted, 1);
        struct timeval tv = {.tv_sec = 2};
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));

        char req[512];
        int mode = atomic_load(&s->mode);
        if (mode != SRV_NOREAD) {
            read_head(fd, req, sizeof(req));
            pthread_mutex_lock(&s->lock);
            if (!s->first_request[0])
                snprintf(s->first_request, sizeof(s->first_request), "%s", req);
            pthread_mutex_unlock(&s->lock);
        }
        switch (mode) {
        case SRV_200:
            answer(fd, "200 OK");
            break;
        case SRV_503:
            answer(fd, "503 Service Unavailable");
            break;
        case SRV_500:
            answer(fd, "500 Internal Server Error");
            break;
        case SRV_CLOSE:
            break;
        case SRV_RESET: {
            struct linger lg = {.l_onoff = 1, .l_linger = 0};
            setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
            break;
        }
        case SRV_HANG:
        case SRV_NOREAD:
            /* Wait for the checker to give up and close (EOF), bounded by
             * SO_RCVTIMEO. */
            read_head(fd, req, sizeof(req));
            break;
        case SRV_SLOW200:
            usleep(300 * 1000);
            answer(fd, "200 OK");
            break;
        case SRV_BYTES: {
            static const char r[] =
                "HTTP/1.1 204 No Content\r\nX-A: b\r\nConnection: close\r\n\r\n";
            for (size_t i = 0; i + 1 < sizeof(r); i++) {
                write_all(fd, r + i, 1);
                usleep(500);
            }
            break;
        }
        case SRV_CONT200:
            write_all(fd, "HTTP/1.1 100 Continue\r\n\r\n", 25);
            usleep(20 * 1000);
            answer(fd, "200 OK");
            break;
        }
        close(fd);
    }
}

static int listen_any(uint16_t *port)
{
    struct sockaddr_in sin = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof(sin);
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);

    if (fd < 0 || bind(fd, (struct sockaddr *)&sin, sizeof(sin)) < 0 || listen(fd, 64) < 0 ||
        getsockname(fd, (struct sockaddr *)&sin, &len) < 0) {
        perror("listen_any");
        exit(2);
    }
    *port = ntohs(sin.sin_port);
    return fd;
}

static struct server *server_start(enum srv_mode mode)
{
    struct server *s = calloc(1, sizeof(*s));

    s->fd = listen_any(&s->port);
    atomic_init(&s->mode, mode);
    pthread_mutex_init(&s->lock, NULL);
    if (pthread_create(&s->thread, NULL, server_main, s) != 0) {
        perror("pthread_create");
        exit(2);
    }
    return s;
}

static void server_stop(struct server *s)
{
    atomic_store(&s->stop, true);
    shutdown(s->fd, SHUT_RDWR); /* wakes the blocking accept() */
    pthread_join(s->thread, NULL);
    close(s->fd);
    pthread_mutex_destroy(&s->lock);
    free(s);
}

/* A port nobody listens on: bound once, then closed. */
static uint16_t refused_port(void)
{
    uint16_t port;
    int fd = listen_any(&port);
    close(fd);
    return port;
}

/* ---------------------------------------------------------------------------
 * Config and hooks */

struct tconf {
    struct conf_pool cp;
    struct conf_backend cb;
    char text[64];
    char path[32];
    char name[16];
};

static void tconf_init(struct tconf *t, uint16_t port, bool hc, enum conf_protocol proto,
                       conf_ms interval, conf_ms timeout, unsigned ht, unsigned ut, conf_ms dereg)
{
    struct sockaddr_in *sin = (struct sockaddr_in *)&t->cb.address.sa;

    memset(t, 0, sizeof(*t));
    snprintf(t->text, sizeof(t->text), "127.0.0.1:%u", port);
    snprintf(t->path, sizeof(t->path), "/healthz");
    snprintf(t->name, sizeof(t->name), "b1");
    t->cb.name = t->name;
    t->cb.address.text = t->text;
    t->cb.address.port = port;
    sin->sin_family = AF_INET;
    sin->sin_port = htons(port);
    sin->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    t->cb.address.sa_len = sizeof(*sin);
    t->cb.weight = 1;
    t->cp.name = "pool";
    t->cp.balance = CONF_BALANCE_ROUND_ROBIN;
    t->cp.deregistration_delay = dereg;
    t->cp.health_check.enabled = hc;
    t->cp.health_check.protocol = proto;
    t->cp.health_check.path = t->path;
    t->cp.health_check.interval = interval;
    t->cp.health_check.timeout = timeout;
    t->cp.health_check.healthy_threshold = ht;
    t->cp.health_check.unhealthy_threshold = ut;
    t->cp.health_check.expect_min = 200;
    t->cp.health_check.expect_max = 399;
    t->cp.backends = &t->cb;
    t->cp.num_backends = 1;
}

enum ev_kind { EVK_STATE = 1, EVK_EXPIRED, EVK_GONE };

struct rec {
    enum ev_kind kind;
    enum backend_state from, to;
    const char *reason;
    uint64_t checks_ok, checks_failed;
    unsigned success_streak, failure_streak;
    double at;
};

struct tctx {
    struct rec ev[256];
    int n;
    int expired, gone, states;
    bool release_on_expire; /* like the proxy: close what is left */
    bool free_on_gone;      /* like the proxy: unlink and free */
    struct backend *b;      /* set to NULL once freed */
};

/* Set around every call into health/ that the proxy would make: a hook
 * running then would re-enter the proxy. */
static bool in_proxy_call;
static int reentered;

static void record(struct tctx *c, enum ev_kind kind, struct backend *b, enum backend_state from,
                   const char *reason)
{
    if (in_proxy_call)
        reentered++;
    if (c->n >= (int)(sizeof(c->ev) / sizeof(c->ev[0])))
        return;
    c->ev[c->n++] = (struct rec){kind,
                                 from,
                                 b->state,
                                 reason,
                                 b->checks_ok,
                                 b->checks_failed,
                                 b->success_streak,
                                 b->failure_streak,
                                 now_s()};
}

static void on_state(struct backend *b, enum backend_state from, const char *reason, void *ctx)
{
    struct tctx *c = ctx;
    record(c, EVK_STATE, b, from, reason);
    c->states++;
}

static void on_expired(struct backend *b, void *ctx)
{
    struct tctx *c = ctx;
    record(c, EVK_EXPIRED, b, b->state, NULL);
    c->expired++;
    if (c->release_on_expire)
        while (b->connections > 0)
            backend_conn_release(b);
}

static void on_gone(struct backend *b, void *ctx)
{
    struct tctx *c = ctx;
    record(c, EVK_GONE, b, b->state, NULL);
    c->gone++;
    if (c->free_on_gone) {
        backend_free(b);
        c->b = NULL;
    }
}

static const struct backend_hooks hooks = {on_state, on_expired, on_gone, NULL};

/* Proxy-side calls, fenced so a synchronous hook is caught. */
#define PROXY(call)                                                                                \
    do {                                                                                           \
        in_proxy_call = true;                                                                      \
        call;                                                                                      \
        in_proxy_call = false;                                                                     \
    } while (0)

static struct backend *mk(struct tctx *c, struct tconf *t)
{
    struct backend *b;

    memset(c, 0, sizeof(*c));
    PROXY(b = backend_new(loop, &t->cp, &t->cb, &hooks, c));
    if (!b) {
        fprintf(stderr, "backend_new failed\n");
        exit(2);
    }
    c->b = b;
    return b;
}

static const struct rec *last_state(const struct tctx *c)
{
    for (int i = c->n - 1; i >= 0; i--)
        if (c->ev[i].kind == EVK_STATE)
            return &c->ev[i];
    return NULL;
}

static bool streq(const char *a, const char *b)
{
    return a && b && strcmp(a, b) == 0;
}

/* ---------------------------------------------------------------------------
 * Tests */

static void test_first_success(void)
{
    struct server *s = server_start(SRV_200);
    struct tconf t;
    struct tctx c;
    char want[256];

    tconf_init(&t, s->port, true, CONF_PROTO_HTTP, 100, 500, 2, 3, 1000);
    struct backend *b = mk(&c, &t);
    double t0 = now_s();
    CHECK(b->state == BACKEND_CHECKING, "state %s", backend_state_str(b->state));
    CHECK(!b->checked_once, "checked_once before any check");
    CHECK(!backend_in_rotation(b), "checking is not in rotation");

    RUN_UNTIL(b->state == BACKEND_HEALTHY, 2.0);
    CHECK(b->state == BACKEND_HEALTHY, "state %s", backend_state_str(b->state));
    CHECK(now_s() - t0 < 0.5, "first check took %.3fs", now_s() - t0);
    CHECK(c.states == 1, "%d transitions", c.states);
    CHECK(c.n >= 1 && c.ev[0].from == BACKEND_CHECKING && streq(c.ev[0].reason, "ok") &&
              c.ev[0].checks_ok == 1,
          "first success: checking -> healthy");
    CHECK(b->checked_once && b->last_status == 200 && streq(b->last_result, "ok") &&
              b->last_check_at > 0,
          "bookkeeping status=%d", b->last_status);
    CHECK(backend_in_rotation(b), "healthy is in rotation");

    snprintf(want, sizeof(want),
             "GET /healthz HTTP/1.1\r\nHost: 127.0.0.1:%u\r\nUser-Agent: usher-health-check\r\n"
             "Connection: close\r\n\r\n",
             s->port);
    pthread_mutex_lock(&s->lock);
    CHECK(strcmp(s->first_request, want) == 0, "request was [%s]", s->first_request);
    pthread_mutex_unlock(&s->lock);

    /* Weight 0: healthy but no new traffic. */
    t.cb.weight = 0;
    int rc;
    PROXY(rc = backend_reconfigure(b, &t.cp, &t.cb));
    CHECK(rc == 0 && !backend_in_rotation(b) && b->state == BACKEND_HEALTHY, "weight 0");

    backend_free(b);
    server_stop(s);
}

static void test_thresholds(void)
{
    struct server *s = server_start(SRV_200);
    struct tconf t;
    struct tctx c;

    tconf_init(&t, s->port, true, CONF_PROTO_HTTP, 50, 500, 2, 3, 1000);
    struct backend *b = mk(&c, &t);
    RUN_UNTIL(b->state == BACKEND_HEALTHY, 2.0);
    CHECK(b->state == BACKEND_HEALTHY, "healthy first");

    /* healthy -> unhealthy after exactly unhealthy_threshold failures */
    uint64_t failed0 = b->checks_failed;
    atomic_store(&s->mode, SRV_500);
    RUN_UNTIL(b->failure_streak == 2, 3.0);
    CHECK(b->failure_streak == 2 && b->state == BACKEND_HEALTHY, "still healthy after 2 failures");
    RUN_UNTIL(b->state == BACKEND_UNHEALTHY, 3.0);
    const struct rec *r = last_state(&c);
    CHECK(r && r->from == BACKEND_HEALTHY && r->to == BACKEND_UNHEALTHY, "healthy -> unhealthy");
    CHECK(r && r->checks_failed - failed0 == 3 && r->failure_streak == 3,
          "left after %llu failures", r ? (unsigned long long)(r->checks_failed - failed0) : 0ULL);
    CHECK(r && streq(r->reason, "bad status"), "reason %s", r ? r->reason : "-");
    CHECK(b->last_status == 500, "last_status %d", b->last_status);
    CHECK(!backend_in_rotation(b), "unhealthy not in rotation");

    /* unhealthy -> healthy after exactly healthy_threshold successes */
    uint64_t ok0 = b->checks_ok;
    int n0 = c.states;
    atomic_store(&s->mode, SRV_200);
    RUN_UNTIL(b->state == BACKEND_HEALTHY, 3.0);
    r = last_state(&c);
    CHECK(c.states == n0 + 1, "one transition");
    CHECK(r && r->from == BACKEND_UNHEALTHY && r->to == BACKEND_HEALTHY &&
              r->checks_ok - ok0 == 2 && r->success_streak == 2 && streq(r->reason, "ok"),
          "unhealthy -> healthy after 2 successes");

    backend_free(b);
    server_stop(s);
}

static void test_refused(void)
{
    struct tconf t;
    struct tctx c;

    tconf_init(&t, refused_port(), true, CONF_PROTO_HTTP, 50, 500, 2, 2, 1000);
    struct backend *b = mk(&c, &t);
    RUN_UNTIL(b->checks_failed >= 1, 2.0);
    CHECK(b->state == BACKEND_CHECKING && b->checked_once, "one failure: still checking");
    RUN_UNTIL(b->state == BACKEND_UNHEALTHY, 2.0);
    const struct rec *r = last_state(&c);
    CHECK(r && r->from == BACKEND_CHECKING && streq(r->reason, "refused") && r->checks_failed == 2,
          "checking -> unhealthy on refused after 2");
    CHECK(c.states == 1, "%d transitions", c.states);
    backend_free(b);
}

static void test_503_drain_expires(void)
{
    struct server *s = server_start(SRV_200);
    struct tconf t;
    struct tctx c;

    tconf_init(&t, s->port, true, CONF_PROTO_HTTP, 50, 500, 2, 3, 300);
    struct backend *b = mk(&c, &t);
    c.release_on_expire = true;
    RUN_UNTIL(b->state == BACKEND_HEALTHY, 2.0);
    PROXY(backend_conn_acquire(b));

    atomic_store(&s->mode, SRV_503);
    uint64_t done0 = b->checks_ok + b->checks_failed;
    RUN_UNTIL(b->state == BACKEND_DRAINING, 2.0);
    double t_drain = now_s();
    const struct rec *r = last_state(&c);
    CHECK(r && r->from == BACKEND_HEALTHY && streq(r->reason, "503"), "healthy -> draining");
    CHECK(b->checks_ok + b->checks_failed == done0 + 1, "draining on the first 503");
    CHECK(b->drain_reason == BACKEND_DRAIN_503, "reason %s",
          backend_drain_reason_str(b->drain_reason));
    CHECK(b->drain_deadline > 0 && ev_is_active(&b->drain_timer), "drain timer running");
    CHECK(!backend_in_rotation(b), "draining not in rotation");
    CHECK(b->last_status == 503, "status %d", b->last_status);

    RUN_UNTIL(c.expired == 1, 2.0);
    double waited = now_s() - t_drain;
    CHECK(c.expired == 1, "drain_expired fired");
    CHECK(waited > 0.2 && waited < 0.8, "expired after %.3fs, delay 0.3s", waited);
    CHECK(b->connections == 0 && b->drain_deadline == 0, "connections closed by the proxy");
    CHECK(b->state == BACKEND_DRAINING && c.gone == 0, "still draining, never gone");

    /* Keeps answering 503: stays draining, no flapping. */
    RUN_FOR(0.3);
    CHECK(b->state == BACKEND_DRAINING && b->failure_streak == 0, "503s keep it draining");

    atomic_store(&s->mode, SRV_200);
    uint64_t ok0 = b->checks_ok;
    RUN_UNTIL(b->state == BACKEND_HEALTHY, 2.0);
    r = last_state(&c);
    CHECK(r && r->from == BACKEND_DRAINING && r->checks_ok - ok0 == 2 && streq(r->reason, "ok"),
          "draining(503) -> healthy after healthy_threshold");
    CHECK(b->drain_reason == BACKEND_DRAIN_NONE && b->drain_deadline == 0, "drain over");
    backend_free(b);
    server_stop(s);
}

/* The runtime API's drain: held whatever checks say, a deadline and a
 * record, cleared only by backend_admin_ready (never a 503 or removal
 * drain), kept across a reconfigure. */
static void test_admin_drain(void)
{
    struct server *s = server_start(SRV_200);
    struct tconf t;
    struct tctx c;

    tconf_init(&t, s->port, true, CONF_PROTO_HTTP, 50, 500, 1, 1, 300);
    struct backend *b = mk(&c, &t);
    c.release_on_expire = true;
    RUN_UNTIL(b->state == BACKEND_HEALTHY, 2.0);
    PROXY(backend_conn_acquire(b));
    double t0 = now_s();
    PROXY(backend_admin_drain(b, 250));
    CHECK(b->state == BACKEND_DRAINING && b->drain_reason == BACKEND_DRAIN_ADMIN,
          "drained at once: %s", backend_state_str(b->state));
    CHECK(!backend_in_rotation(b), "not in rotation");
    CHECK(b->drain_started_at > 0 && b->drain_until > b->drain_started_at, "drain record set");
    CHECK(streq(backend_drain_reason_str(b->drain_reason), "admin"), "reason name");
    double until = b->drain_until;
    PROXY(backend_admin_drain(b, 60000));
    CHECK(b->drain_until == until, "a second admin drain changes nothing");
    RUN_UNTIL(c.expired == 1, 2.0);
    CHECK(c.expired == 1 && now_s() - t0 > 0.2, "deadline expired the connections");
    uint64_t ok0 = b->checks_ok;
    RUN_UNTIL(b->checks_ok >= ok0 + 3, 2.0);
    CHECK(b->state == BACKEND_DRAINING && b->success_streak >= 3,
          "passing checks do not end an admin drain (streak %u)", b->success_streak);
    CHECK(reentered == 0, "no hook from inside a proxy call");
    /* a reload that keeps it does not end it either */
    PROXY(backend_reconfigure(b, &t.cp, &t.cb));
    CHECK(b->drain_reason == BACKEND_DRAIN_ADMIN, "reconfigure keeps the admin drain");
    bool was;
    PROXY(was = backend_admin_ready(b));
    CHECK(was && b->state == BACKEND_HEALTHY && b->drain_started_at == 0,
          "ready: healthy again (last check passed)");
    PROXY(was = backend_admin_ready(b));
    CHECK(!was && b->state == BACKEND_HEALTHY, "ready again: nothing to clear");
    /* a 503 drain is not the API's to end */
    atomic_store(&s->mode, SRV_503);
    RUN_UNTIL(b->state == BACKEND_DRAINING, 2.0);
    PROXY(was = backend_admin_ready(b));
    CHECK(!was && b->drain_reason == BACKEND_DRAIN_503, "ready leaves a 503 drain");
    /* an admin drain over a 503 one keeps the record's start */
    double started = b->drain_started_at;
    PROXY(backend_admin_drain(b, 1000));
    CHECK(b->drain_reason == BACKEND_DRAIN_ADMIN && b->drain_started_at == started,
          "503 -> admin keeps the start");
    atomic_store(&s->mode, SRV_200);
    RUN_FOR(0.3);
    CHECK(b->drain_reason == BACKEND_DRAIN_ADMIN, "healthy checks do not end it");
    /* removal wins over an admin drain; the API cannot revive it */
    PROXY(backend_remove(b, 100));
    CHECK(backend_removed(b), "removed");
    PROXY(was = backend_admin_ready(b));
    CHECK(!was && backend_removed(b), "ready leaves a removal drain");
    PROXY(backend_admin_drain(b, 100));
    CHECK(backend_removed(b), "an admin drain does not replace a removal");
    RUN_FOR(0.05);
    backend_free(b);
    server_stop(s);
}

static void test_503_early_completion(void)
{
    struct server *s = server_start(SRV_200);
    struct tconf t;
    struct tctx c;

    tconf_init(&t, s->port, true, CONF_PROTO_HTTP, 50, 500, 2, 3, 10000);
    struct backend *b = mk(&c, &t);
    RUN_UNTIL(b->state == BACKEND_HEALTHY, 2.0);
    PROXY(backend_conn_acquire(b));
    PROXY(backend_conn_acquire(b));
    atomic_store(&s->mode, SRV_503);
    RUN_UNTIL(b->state == BACKEND_DRAINING, 2.0);
    double left = b->drain_deadline - ev_now(loop);
    CHECK(left > 9.0 && left <= 10.01, "deadline in %.3fs", left);
    PROXY(backend_conn_release(b));
    CHECK(ev_is_active(&b->drain_timer), "one connection left: still waiting");
    PROXY(backend_conn_release(b));
    CHECK(!ev_is_active(&b->drain_timer) && b->drain_deadline == 0, "last release ends the drain");
    PROXY(backend_conn_release(b)); /* unbalanced: ignored */
    CHECK(b->connections == 0, "no wrap-around");
    RUN_FOR(0.3);
    CHECK(c.expired == 0 && c.gone == 0 && b->state == BACKEND_DRAINING, "nothing more happens");
    backend_free(b);

    /* A 503 drain with no connections completes at once. */
    tconf_init(&t, s->port, true, CONF_PROTO_HTTP, 50, 500, 2, 3, 10000);
    b = mk(&c, &t);
    RUN_UNTIL(b->state == BACKEND_DRAINING, 2.0);
    CHECK(b->state == BACKEND_DRAINING && c.ev[0].from == BACKEND_CHECKING,
          "checking -> draining on 503");
    CHECK(!ev_is_active(&b->drain_timer) && b->drain_deadline == 0, "no connections: done");
    backend_free(b);
    server_stop(s);
}

/* A worker thread's release of the last connection: the drain completes
 * on the backend's loop at its next iteration, not on the releasing thread. */
static void *release_from_thread(void *arg)
{
    backend_conn_release(arg);
    return NULL;
}

static void test_release_from_another_thread(void)
{
    struct server *s = server_start(SRV_200);
    struct tconf t;
    struct tctx c;

    tconf_init(&t, s->port, true, CONF_PROTO_HTTP, 50, 500, 2, 3, 10000);
    struct backend *b = mk(&c, &t);
    RUN_UNTIL(b->state == BACKEND_HEALTHY, 2.0);
    PROXY(backend_conn_acquire(b));
    atomic_store(&s->mode, SRV_503);
    RUN_UNTIL(b->state == BACKEND_DRAINING, 2.0);
    CHECK(ev_is_active(&b->drain_timer), "draining with a connection");
    pthread_t th;
    CHECK(pthread_create(&th, NULL, release_from_thread, b) == 0, "thread started");
    pthread_join(th, NULL);
    CHECK(b->connections == 0 && ev_is_active(&b->drain_timer),
          "released, the drain ends on the loop's thread, not the releasing one");
    RUN_UNTIL(!ev_is_active(&b->drain_timer), 1.0);
    CHECK(b->drain_deadline == 0 && c.expired == 0, "completed early at the next iteration");
    backend_free(b);
    server_stop(s);
}

static void test_503_then_failures(void)
{
    struct server *s = server_start(SRV_200);
    struct tconf t;
    struct tctx c;

    tconf_init(&t, s->port, true, CONF_PROTO_HTTP, 50, 500, 2, 3, 10000);
    struct backend *b = mk(&c, &t);
    RUN_UNTIL(b->state == BACKEND_HEALTHY, 2.0);
    PROXY(backend_conn_acquire(b));
    atomic_store(&s->mode, SRV_503);
    RUN_UNTIL(b->state == BACKEND_DRAINING, 2.0);
    ev_tstamp deadline = b->drain_deadline;

    atomic_store(&s->mode, SRV_500);
    uint64_t f0 = b->checks_failed;
    RUN_UNTIL(b->state == BACKEND_UNHEALTHY, 3.0);
    const struct rec *r = last_state(&c);
    CHECK(r && r->from == BACKEND_DRAINING && r->checks_failed - f0 == 3,
          "draining -> unhealthy after unhealthy_threshold");
    CHECK(ev_is_active(&b->drain_timer) && b->drain_deadline == deadline,
          "the drain episode keeps running");
    CHECK(b->drain_reason == BACKEND_DRAIN_NONE, "not draining any more");

    /* 503 from unhealthy: draining again, the running episode is kept. */
    atomic_store(&s->mode, SRV_503);
    RUN_UNTIL(b->state == BACKEND_DRAINING, 2.0);
    r = last_state(&c);
    CHECK(r && r->from == BACKEND_UNHEALTHY && streq(r->reason, "503"), "unhealthy -> draining");
    CHECK(b->drain_deadline == deadline, "episode not extended");
    PROXY(backend_conn_release(b));
    CHECK(!ev_is_active(&b->drain_timer), "released");
    backend_free(b);
    server_stop(s);
}

static void test_removed_gone(void)
{
    struct tconf t;
    struct tctx c;

    /* no connections: gone at the next safe point, never inside the call */
    tconf_init(&t, refused_port(), false, CONF_PROTO_HTTP, 50, 500, 2, 3, 1000);
    struct backend *b = mk(&c, &t);
    c.free_on_gone = true;
    CHECK(b->state == BACKEND_HEALTHY && b->checked_once && !hc_running(b), "no check: healthy");
    PROXY(backend_remove(b, 1000));
    CHECK(c.gone == 0 && c.states == 0, "nothing synchronous");
    CHECK(b->state == BACKEND_DRAINING && b->drain_reason == BACKEND_DRAIN_REMOVED &&
              !backend_in_rotation(b),
          "removed: draining");
    double t0 = now_s();
    RUN_UNTIL(c.gone == 1, 1.0);
    CHECK(c.gone == 1 && now_s() - t0 < 0.1, "gone at once");
    CHECK(c.n == 2 && c.ev[0].kind == EVK_STATE && c.ev[0].from == BACKEND_HEALTHY &&
              c.ev[0].to == BACKEND_DRAINING && streq(c.ev[0].reason, "removed") &&
              c.ev[1].kind == EVK_GONE,
          "state_changed(removed) then gone");
    CHECK(c.b == NULL, "freed in gone");

    /* with connections: checks stop, gone once the last one is released */
    struct server *s = server_start(SRV_200);
    tconf_init(&t, s->port, true, CONF_PROTO_HTTP, 50, 500, 2, 3, 10000);
    b = mk(&c, &t);
    c.free_on_gone = true;
    RUN_UNTIL(b->state == BACKEND_HEALTHY, 2.0);
    PROXY(backend_conn_acquire(b));
    PROXY(backend_conn_acquire(b));
    PROXY(backend_remove(b, 10000));
    CHECK(!hc_running(b), "checks stopped");
    CHECK(ev_is_active(&b->drain_timer) && b->drain_deadline > ev_now(loop) + 9, "drain timer");
    RUN_FOR(0.05);
    int accepted = atomic_load(&s->accepted);
    RUN_FOR(0.3);
    CHECK(atomic_load(&s->accepted) == accepted, "no check of a removed backend");
    CHECK(c.gone == 0 && c.states == 2, "removed reported, not gone");
    PROXY(backend_conn_release(b));
    RUN_FOR(0.05);
    CHECK(c.gone == 0, "one connection left");
    PROXY(backend_conn_release(b));
    CHECK(c.gone == 0 && c.b, "gone deferred");
    RUN_UNTIL(c.gone == 1, 1.0);
    CHECK(c.gone == 1 && c.b == NULL, "gone after the last release");

    /* delay passes: drain_expired first, the proxy closes, then gone */
    tconf_init(&t, s->port, true, CONF_PROTO_HTTP, 50, 500, 2, 3, 10000);
    b = mk(&c, &t);
    c.free_on_gone = true;
    c.release_on_expire = true;
    RUN_UNTIL(b->state == BACKEND_HEALTHY, 2.0);
    PROXY(backend_conn_acquire(b));
    t0 = now_s();
    PROXY(backend_remove(b, 200));
    RUN_UNTIL(c.gone == 1, 2.0);
    CHECK(c.gone == 1 && c.expired == 1, "expired and gone");
    CHECK(c.n >= 3 && c.ev[c.n - 2].kind == EVK_EXPIRED && c.ev[c.n - 1].kind == EVK_GONE,
          "drain_expired before gone");
    CHECK(c.ev[c.n - 2].at - t0 > 0.15 && c.ev[c.n - 2].at - t0 < 0.6, "expired after %.3fs",
          c.ev[c.n - 2].at - t0);

    /* removing a 503-draining backend keeps the earlier deadline */
    atomic_store(&s->mode, SRV_503);
    tconf_init(&t, s->port, true, CONF_PROTO_HTTP, 50, 500, 2, 3, 5000);
    b = mk(&c, &t);
    c.free_on_gone = true;
    PROXY(backend_conn_acquire(b));
    RUN_UNTIL(b->state == BACKEND_DRAINING, 2.0);
    ev_tstamp deadline = b->drain_deadline;
    PROXY(backend_remove(b, 60000));
    CHECK(b->drain_deadline == deadline && b->drain_reason == BACKEND_DRAIN_REMOVED,
          "deadline kept on removal");
    RUN_FOR(0.05);
    const struct rec *r = last_state(&c);
    CHECK(r && r->from == BACKEND_DRAINING && streq(r->reason, "removed"),
          "drain reason change reported");
    PROXY(backend_conn_release(b));
    RUN_UNTIL(c.gone == 1, 1.0);
    CHECK(c.gone == 1, "gone");
    server_stop(s);
}

static void test_readded(void)
{
    struct server *s = server_start(SRV_200);
    struct tconf t;
    struct tctx c;
    int rc;

    tconf_init(&t, s->port, true, CONF_PROTO_HTTP, 50, 500, 2, 3, 10000);
    struct backend *b = mk(&c, &t);
    RUN_UNTIL(b->state == BACKEND_HEALTHY, 2.0);
    PROXY(backend_conn_acquire(b));
    PROXY(backend_remove(b, 10000));
    RUN_FOR(0.1);
    int accepted = atomic_load(&s->accepted);
    PROXY(rc = backend_reconfigure(b, &t.cp, &t.cb));
    CHECK(rc == 0, "reconfigure");
    CHECK(b->state == BACKEND_HEALTHY && b->drain_reason == BACKEND_DRAIN_NONE &&
              backend_in_rotation(b),
          "re-added: healthy at once (last check ok)");
    CHECK(!ev_is_active(&b->drain_timer) && b->drain_deadline == 0 && b->connections == 1,
          "drain cancelled, connections kept");
    RUN_FOR(0.4);
    CHECK(c.gone == 0 && c.expired == 0, "never gone");
    CHECK(atomic_load(&s->accepted) > accepted, "checks restarted");
    const struct rec *r = last_state(&c);
    CHECK(c.states == 3 && r && r->from == BACKEND_DRAINING && streq(r->reason, "re-added"),
          "re-added reported (%d transitions)", c.states);
    PROXY(backend_conn_release(b));

    /* removed and re-added before the loop ran: nothing to report */
    int n0 = c.states;
    PROXY(backend_remove(b, 10000));
    PROXY(rc = backend_reconfigure(b, &t.cp, &t.cb));
    RUN_FOR(0.1);
    CHECK(c.states == n0 && c.gone == 0 && b->state == BACKEND_HEALTHY, "no net change");
    backend_free(b);

    /* last check failed: re-added into checking */
    atomic_store(&s->mode, SRV_500);
    tconf_init(&t, s->port, true, CONF_PROTO_HTTP, 50, 500, 2, 1, 10000);
    b = mk(&c, &t);
    RUN_UNTIL(b->state == BACKEND_UNHEALTHY, 2.0);
    PROXY(backend_remove(b, 10000));
    PROXY(rc = backend_reconfigure(b, &t.cp, &t.cb));
    CHECK(b->state == BACKEND_CHECKING, "re-added after a failure: %s",
          backend_state_str(b->state));
    atomic_store(&s->mode, SRV_200);
    RUN_UNTIL(b->state == BACKEND_HEALTHY, 2.0);
    CHECK(b->state == BACKEND_HEALTHY, "checking -> healthy");
    CHECK(c.gone == 0, "not gone");

    /* health check removed by a reload: healthy for good */
    atomic_store(&s->mode, SRV_500);
    RUN_UNTIL(b->state == BACKEND_UNHEALTHY, 2.0);
    t.cp.health_check.enabled = false;
    PROXY(rc = backend_reconfigure(b, &t.cp, &t.cb));
    CHECK(b->state == BACKEND_HEALTHY && !hc_running(b), "no health check: healthy");
    RUN_FOR(0.05);
    const struct rec *r2 = last_state(&c);
    CHECK(r2 && r2->from == BACKEND_UNHEALTHY && streq(r2->reason, "no health check"), "reported");
    backend_free(b);
    server_stop(s);
}

/* An address that left its DNS answer: drains like a removal, with its own
 * reason, comes back like a re-added backend, and is gone once drained. */
static void test_removed_dns(void)
{
    struct server *s = server_start(SRV_200);
    struct tconf t;
    struct tctx c;
    int rc;

    CHECK(streq(backend_drain_reason_str(BACKEND_DRAIN_DNS), "dns"), "reason name");
    tconf_init(&t, s->port, true, CONF_PROTO_HTTP, 50, 500, 2, 3, 10000);
    struct backend *b = mk(&c, &t);
    c.free_on_gone = true;
    RUN_UNTIL(b->state == BACKEND_HEALTHY, 2.0);
    PROXY(backend_conn_acquire(b));
    PROXY(backend_remove_dns(b, 10000));
    CHECK(b->state == BACKEND_DRAINING && b->drain_reason == BACKEND_DRAIN_DNS &&
              backend_removed(b) && !backend_in_rotation(b) && !hc_running(b),
          "vanished from DNS: draining, reason dns, checks stopped");
    CHECK(ev_is_active(&b->drain_timer) && b->drain_deadline > ev_now(loop) + 9, "drain timer");
    RUN_FOR(0.05);
    const struct rec *r = last_state(&c);
    CHECK(r && r->from == BACKEND_HEALTHY && r->to == BACKEND_DRAINING && streq(r->reason, "dns"),
          "state_changed(dns)");

    /* back in the next answer while still draining: a normal backend again */
    PROXY(rc = backend_reconfigure(b, &t.cp, &t.cb));
    CHECK(rc == 0 && b->state == BACKEND_HEALTHY && b->drain_reason == BACKEND_DRAIN_NONE &&
              b->connections == 1 && !ev_is_active(&b->drain_timer),
          "re-listed: healthy, connections kept");

    /* gone again, then gone for good once its last connection ends */
    PROXY(backend_remove_dns(b, 10000));
    RUN_FOR(0.05);
    CHECK(c.gone == 0, "draining while a connection is left");
    PROXY(backend_conn_release(b));
    RUN_UNTIL(c.gone == 1, 1.0);
    CHECK(c.gone == 1 && c.b == NULL, "gone after the last release");
    server_stop(s);
}

static void test_tcp(void)
{
    struct server *s = server_start(SRV_NOREAD);
    struct tconf t;
    struct tctx c;

    tconf_init(&t, s->port, true, CONF_PROTO_TCP, 50, 500, 2, 2, 1000);
    struct backend *b = mk(&c, &t);
    RUN_UNTIL(b->state == BACKEND_HEALTHY, 2.0);
    CHECK(b->state == BACKEND_HEALTHY && b->last_status == 0 && streq(b->last_result, "ok"),
          "tcp connect: healthy");
    RUN_FOR(0.2);
    CHECK(b->checks_ok >= 2 && b->checks_failed == 0, "tcp checks keep passing");
    backend_free(b);
    server_stop(s);

    tconf_init(&t, refused_port(), true, CONF_PROTO_TCP, 50, 500, 2, 2, 1000);
    b = mk(&c, &t);
    RUN_UNTIL(b->state == BACKEND_UNHEALTHY, 2.0);
    CHECK(b->state == BACKEND_UNHEALTHY && streq(b->last_result, "refused"), "tcp refused");
    backend_free(b);
}

static void test_timeouts(void)
{
    struct server *s = server_start(SRV_HANG);
    struct tconf t;
    struct tctx c;

    tconf_init(&t, s->port, true, CONF_PROTO_HTTP, 50, 100, 2, 2, 1000);
    struct backend *b = mk(&c, &t);
    double t0 = now_s();
    RUN_UNTIL(b->state == BACKEND_UNHEALTHY, 3.0);
    const struct rec *r = last_state(&c);
    CHECK(r && streq(r->reason, "timeout") && r->checks_failed == 2, "unhealthy after 2 timeouts");
    CHECK(now_s() - t0 < 0.6, "timeouts do not hang (%.3fs)", now_s() - t0);
    RUN_FOR(0.5);
    uint64_t results = b->checks_ok + b->checks_failed;
    int accepted = atomic_load(&s->accepted);
    /* one result per attempt: never more results than connections */
    CHECK(results <= (uint64_t)accepted && results + 1 >= (uint64_t)accepted,
          "results %llu, attempts %d", (unsigned long long)results, accepted);
    CHECK(b->checks_ok == 0, "no success");

    /* answers after the timeout: still a timeout, the late 200 never counts */
    atomic_store(&s->mode, SRV_SLOW200);
    uint64_t f0 = b->checks_failed;
    RUN_FOR(1.0);
    CHECK(b->checks_ok == 0 && b->checks_failed > f0 && b->state == BACKEND_UNHEALTHY,
          "slow answers are timeouts (ok=%llu)", (unsigned long long)b->checks_ok);
    CHECK(streq(b->last_result, "timeout"), "last %s", b->last_result);
    backend_free(b);
    server_stop(s);
}

static void test_failure_kinds(void)
{
    static const struct {
        enum srv_mode mode;
        const char *reason;
        bool ok;
    } cases[] = {
        {SRV_CLOSE, "closed", false},
        {SRV_RESET, "reset", false},
        {SRV_BYTES, "ok", true},
        {SRV_CONT200, "ok", true},
    };

    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct server *s = server_start(cases[i].mode);
        struct tconf t;
        struct tctx c;

        tconf_init(&t, s->port, true, CONF_PROTO_HTTP, 50, 1000, 2, 1, 1000);
        struct backend *b = mk(&c, &t);
        RUN_UNTIL(b->checks_ok + b->checks_failed >= 1, 2.0);
        CHECK(streq(b->last_result, cases[i].reason), "mode %d: reason %s, want %s", cases[i].mode,
              b->last_result, cases[i].reason);
        CHECK(b->state == (cases[i].ok ? BACKEND_HEALTHY : BACKEND_UNHEALTHY), "mode %d: %s",
              cases[i].mode, backend_state_str(b->state));
        backend_free(b);
        server_stop(s);
    }
}

static void test_jitter(void)
{
    struct tconf t;
    struct tctx c;

    tconf_init(&t, refused_port(), true, CONF_PROTO_HTTP, 1000, 500, 2, 3, 1000);
    struct backend *b = mk(&c, &t);
    struct backend *b2 = mk(&c, &t);
    double lo = 1e9, hi = 0, flo = 1e9, fhi = 0;
    int same = 0;

    for (int i = 0; i < 10000; i++) {
        double d = hc_next_delay(b);
        double f = hc_first_delay(b);
        if (d < lo)
            lo = d;
        if (d > hi)
            hi = d;
        if (f < flo)
            flo = f;
        if (f > fhi)
            fhi = f;
        if (hc_next_delay(b2) == d)
            same++;
    }
    CHECK(lo >= 0.9 && hi <= 1.1, "next delay in [%.4f, %.4f]", lo, hi);
    CHECK(lo < 0.91 && hi > 1.09, "next delay spread [%.4f, %.4f]", lo, hi);
    CHECK(flo >= 0 && fhi < 0.05 && fhi > 0.04, "first delay in [%.4f, %.4f]", flo, fhi);
    CHECK(same < 100, "two backends draw independently (%d equal)", same);
    backend_free(b);
    backend_free(b2);

    /* an interval shorter than the first-check spread bounds it */
    tconf_init(&t, refused_port(), true, CONF_PROTO_HTTP, 20, 500, 2, 3, 1000);
    b = mk(&c, &t);
    fhi = 0;
    for (int i = 0; i < 1000; i++) {
        double f = hc_first_delay(b);
        if (f > fhi)
            fhi = f;
    }
    CHECK(fhi < 0.02, "first delay %.4f within the interval", fhi);
    backend_free(b);
}

static void test_strings(void)
{
    CHECK(streq(backend_state_str(BACKEND_CHECKING), "checking") &&
              streq(backend_state_str(BACKEND_HEALTHY), "healthy") &&
              streq(backend_state_str(BACKEND_UNHEALTHY), "unhealthy") &&
              streq(backend_state_str(BACKEND_DRAINING), "draining"),
          "state names");
    CHECK(streq(backend_drain_reason_str(BACKEND_DRAIN_503), "health_503") &&
              streq(backend_drain_reason_str(BACKEND_DRAIN_REMOVED), "removed") &&
              streq(backend_drain_reason_str(BACKEND_DRAIN_NONE), "none"),
          "drain reason names");
    CHECK(streq(hc_phase_str(BACKEND_CHECK_READING), "reading"), "phase names");
}

int main(void)
{
    static const struct {
        const char *name;
        void (*fn)(void);
    } tests[] = {
        {"strings", test_strings},
        {"first_success", test_first_success},
        {"thresholds", test_thresholds},
        {"refused", test_refused},
        {"503_drain_expires", test_503_drain_expires},
        {"503_early_completion", test_503_early_completion},
        {"release_from_another_thread", test_release_from_another_thread},
        {"admin_drain", test_admin_drain},
        {"503_then_failures", test_503_then_failures},
        {"removed_gone", test_removed_gone},
        {"readded", test_readded},
        {"removed_dns", test_removed_dns},
        {"tcp", test_tcp},
        {"timeouts", test_timeouts},
        {"failure_kinds", test_failure_kinds},
        {"jitter", test_jitter},
    };
    ev_timer tick;

    loop = ev_loop_new(EVFLAG_AUTO);
    if (!loop) {
        fprintf(stderr, "ev_loop_new failed\n");
        return 2;
    }
    ev_timer_init(&tick, tick_cb, 0.005, 0.005);
    ev_timer_start(loop, &tick);

    for (size_t i = 0; i < sizeof(tests) / sizeof(tests[0]); i++) {
        int before = failures;
        double t0 = now_s();
        tests[i].fn();
        printf("%-22s %s (%.2fs)\n", tests[i].name, failures == before ? "ok" : "FAILED",
               now_s() - t0);
    }
    CHECK(reentered == 0, "%d hooks ran inside a proxy call", reentered);

    ev_timer_stop(loop, &tick);
    ev_loop_destroy(loop);
    return check_report("test_backend");
}
