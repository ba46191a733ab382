// links: usher_health
/* Health checks over a pool's TLS and with its PROXY header
 * (health/check.c), against a scripted TLS server thread on 127.0.0.1
 * with certificates made at test time: the context built from the pool's
 * conf and the one attached with backend_tls_set() (which wins, and
 * detaching goes back to the conf's), a verification failure as reason
 * "tls" with OpenSSL's words kept, the session resumed from one check to
 * the next, and the PROXY header (v1 UNKNOWN, v2 LOCAL) before the TLS
 * handshake. */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdatomic.h>
#include <sys/time.h>
#include <time.h>

#include "health/backend.h"
#include "health/check.h"
#include "proxy/net/tlsclient.h"

#include "test/unit/check.h"
#include "test/unit/tlsfix.h"

static struct ev_loop *loop;

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

#define RUN_UNTIL(cond, secs)                                                                      \
    do {                                                                                           \
        double end_ = now_s() + (secs);                                                            \
        while (!(cond) && now_s() < end_)                                                          \
            ev_run(loop, EVRUN_ONCE);                                                              \
    } while (0)

static void tick_cb(struct ev_loop *l, ev_timer *w, int revents)
{
}

/* ---- the server ------------------------------------------------------------ */

#define MAX_CONNS 64

struct server {
    int fd;
    uint16_t port;
    pthread_t thread;
    SSL_CTX *ctx;
    bool expect_proxy;
    atomic_bool stop;
    atomic_int conns, handshakes, resumed, requests;
    pthread_mutex_t lock;
    char proxy[MAX_CONNS][32]; /* the PROXY header of each connection, as bytes */
    size_t proxy_len[MAX_CONNS];
};

/* Reads exactly what a PROXY header is at the start of <fd> (v1 up to its
 * CRLF, v2 its 16 bytes and body) into <out>. */
static size_t read_proxy(int fd, char *out, size_t cap)
{
    size_t n = 0;
    while (n < cap) {
        ssize_t r = recv(fd, out + n, 1, 0);
        if (r <= 0)
            break;
        n++;
        if (out[0] == 'P' && n >= 2 && out[n - 2] == '\r' && out[n - 1] == '\n')
            break;
        if (out[0] == '\r' && n == 16) {
            size_t body = (size_t)(unsigned char)out[14] << 8 | (unsigned char)out[15];
            if (body == 0)
                break;
        }
    }
    return n;
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
        int i = atomic_fetch_add(&s->conns, 1);
        struct timeval tv = {.tv_sec = 2};
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
        if (s->expect_proxy && i < MAX_CONNS) {
            char buf[32];
            size_t n = read_proxy(fd, buf, sizeof(buf));
            pthread_mutex_lock(&s->lock);
            memcpy(s->proxy[i], buf, n);
            s->proxy_len[i] = n;
            pthread_mutex_unlock(&s->lock);
        }
        SSL *ssl = SSL_new(s->ctx);
        SSL_set_fd(ssl, fd);
        if (SSL_accept(ssl) == 1) {
            atomic_fetch_add(&s->handshakes, 1);
            if (SSL_session_reused(ssl))
                atomic_fetch_add(&s->resumed, 1);
            char req[1024];
            size_t len = 0;
            while (len + 1 < sizeof(req)) {
                int r = SSL_read(ssl, req + len, (int)(sizeof(req) - 1 - len));
                if (r <= 0)
                    break;
                len += (size_t)r;
                req[len] = '\0';
                if (strstr(req, "\r\n\r\n"))
                    break;
            }
            if (len && strncmp(req, "GET /healthz HTTP/1.1\r\n", 23) == 0) {
                atomic_fetch_add(&s->requests, 1);
                static const char ok[] =
                    "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok";
                SSL_write(ssl, ok, sizeof(ok) - 1);
            }
            SSL_shutdown(ssl);
        }
        SSL_free(ssl);
        ERR_clear_error();
        close(fd);
    }
}

static struct server *server_start(const char *cert, const char *key, bool expect_proxy)
{
    struct server *s = calloc(1, sizeof(*s));
    struct sockaddr_in sin = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof(sin);
    s->fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (s->fd < 0 || bind(s->fd, (struct sockaddr *)&sin, sizeof(sin)) < 0 ||
        listen(s->fd, 64) < 0 || getsockname(s->fd, (struct sockaddr *)&sin, &len) < 0) {
        perror("listen");
        exit(2);
    }
    s->port = ntohs(sin.sin_port);
    s->ctx = SSL_CTX_new(TLS_server_method());
    SSL_CTX_use_certificate_chain_file(s->ctx, cert);
    SSL_CTX_use_PrivateKey_file(s->ctx, key, SSL_FILETYPE_PEM);
    s->expect_proxy = expect_proxy;
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
    shutdown(s->fd, SHUT_RDWR);
    pthread_join(s->thread, NULL);
    close(s->fd);
    SSL_CTX_free(s->ctx);
    pthread_mutex_destroy(&s->lock);
    free(s);
}

/* ---- a pool with tls ----------------------------------------------------------- */

struct tconf {
    struct conf_pool cp;
    struct conf_backend cb;
    char text[64];
};

static char ca_pem[TLSFIX_PATH], rogue_pem[TLSFIX_PATH];

static void tconf_init(struct tconf *t, uint16_t port, const char *ca, enum conf_proxy_protocol pp)
{
    struct sockaddr_in *sin = (struct sockaddr_in *)&t->cb.address.sa;
    memset(t, 0, sizeof(*t));
    snprintf(t->text, sizeof(t->text), "127.0.0.1:%u", port);
    t->cb.name = "b1";
    t->cb.address.text = t->text;
    t->cb.address.host = "127.0.0.1";
    t->cb.address.port = port;
    sin->sin_family = AF_INET;
    sin->sin_port = htons(port);
    sin->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    t->cb.address.sa_len = sizeof(*sin);
    t->cb.weight = 1;
    t->cp.name = "pool";
    t->cp.protocol = CONF_POOL_HTTP1;
    t->cp.send_proxy = pp;
    t->cp.tls = (struct conf_pool_tls){
        .enabled = true, .ca = (char *)ca, .verify = true, .sni = "app.internal"};
    t->cp.balance = CONF_BALANCE_ROUND_ROBIN;
    t->cp.deregistration_delay = 1000;
    t->cp.health_check = (struct conf_health_check){.enabled = true,
                                                    .protocol = CONF_PROTO_HTTP,
                                                    .path = "/healthz",
                                                    .interval = 30,
                                                    .timeout = 1000,
                                                    .healthy_threshold = 1,
                                                    .unhealthy_threshold = 1,
                                                    .expect_min = 200,
                                                    .expect_max = 399};
    t->cp.backends = &t->cb;
    t->cp.num_backends = 1;
}

static void on_state(struct backend *b, enum backend_state from, const char *reason, void *ctx)
{
}

static const struct backend_hooks hooks = {on_state, NULL, NULL, NULL};

static uint64_t checks(const struct backend *b)
{
    return b->checks_ok + b->checks_failed;
}

/* Waits for the next <n> checks of <b> to end. */
static void next_checks(struct backend *b, unsigned n)
{
    uint64_t want = checks(b) + n;
    RUN_UNTIL(checks(b) >= want, 5.0);
    CHECK(checks(b) >= want, "%u more checks", n);
}

static struct tlsc_ctx *ctx_with(const char *ca)
{
    struct tlsc_params p = {.ca = ca, .verify = true, .sni = "app.internal"};
    char err[512];
    struct tlsc_ctx *c = tlsc_ctx_new(&p, err, sizeof(err));
    CHECK(c != NULL, "%s", err);
    return c;
}

static char app_cert[TLSFIX_PATH], app_key[TLSFIX_PATH];

static void test_conf_and_attached_contexts(void)
{
    check_context = "contexts";
    struct server *s = server_start(app_cert, app_key, false);
    struct tconf t;
    tconf_init(&t, s->port, rogue_pem, CONF_PROXY_OFF);
    struct backend *b = backend_new(loop, &t.cp, &t.cb, &hooks, NULL);
    /* built from the conf: the rogue CA verifies nothing */
    next_checks(b, 2);
    CHECK_STR(b->last_result, "tls");
    CHECK_STR(b->check.tls_error,
              "certificate verify failed: unable to get local issuer certificate");
    CHECK_INT(atomic_load(&s->requests), 0);
    /* the pool's context attached: it wins over the conf's */
    struct tlsc_ctx *good = ctx_with(ca_pem);
    backend_tls_set(b, good);
    tlsc_ctx_free(good); /* the backend holds its own reference */
    next_checks(b, 3);
    CHECK_STR(b->last_result, "ok");
    CHECK_STR(b->check.tls_error, "");
    CHECK_INT(b->state, BACKEND_HEALTHY);
    CHECK(atomic_load(&s->requests) >= 2);
    /* resumed from one check to the next */
    CHECK(tlsc_session_held(&b->tls_session));
    int hs = atomic_load(&s->handshakes), res = atomic_load(&s->resumed);
    CHECK(hs >= 3 && res >= hs - 2, "%d handshakes, %d resumed", hs, res);
    /* detached: back to the conf's (rogue) context */
    backend_tls_set(b, NULL);
    next_checks(b, 2);
    CHECK_STR(b->last_result, "tls");
    /* a reload with the right CA in the conf */
    struct tconf t2;
    tconf_init(&t2, s->port, ca_pem, CONF_PROXY_OFF);
    CHECK_INT(backend_reconfigure(b, &t2.cp, &t2.cb), 0);
    next_checks(b, 2);
    CHECK_STR(b->last_result, "ok");
    backend_free(b);
    server_stop(s);
    check_context = NULL;
}

static void test_proxy_header_before_tls(enum conf_proxy_protocol pp, const char *want,
                                         size_t want_len)
{
    check_context = pp == CONF_PROXY_V1 ? "send_proxy v1" : "send_proxy v2";
    struct server *s = server_start(app_cert, app_key, true);
    struct tconf t;
    tconf_init(&t, s->port, ca_pem, pp);
    struct backend *b = backend_new(loop, &t.cp, &t.cb, &hooks, NULL);
    next_checks(b, 2);
    CHECK_STR(b->last_result, "ok");
    int n = atomic_load(&s->conns);
    CHECK(n >= 2);
    pthread_mutex_lock(&s->lock);
    for (int i = 0; i < n && i < MAX_CONNS; i++)
        CHECK(s->proxy_len[i] == want_len && memcmp(s->proxy[i], want, want_len) == 0,
              "connection %d: %zu bytes", i, s->proxy_len[i]);
    pthread_mutex_unlock(&s->lock);
    backend_free(b);
    server_stop(s);
    check_context = NULL;
}

int main(void)
{
    loop = ev_loop_new(EVFLAG_AUTO);
    ev_timer tick;
    ev_timer_init(&tick, tick_cb, 0.005, 0.005);
    ev_timer_start(loop, &tick);

    EVP_PKEY *ca_key = tlsfix_key(), *rogue_key = tlsfix_key(), *leaf_key = tlsfix_key();
    X509 *ca = tlsfix_cert(ca_key, "usher test CA", NULL, 3650, NULL, NULL, true);
    X509 *rogue = tlsfix_cert(rogue_key, "usher rogue CA", NULL, 3650, NULL, NULL, true);
    X509 *app = tlsfix_cert(leaf_key, "app.internal", "DNS:app.internal", 30, ca, ca_key, false);
    tlsfix_write("ca", ca, NULL, ca_pem, NULL);
    tlsfix_write("rogue", rogue, NULL, rogue_pem, NULL);
    tlsfix_write("app", app, leaf_key, app_cert, app_key);

    test_conf_and_attached_contexts();
    static const char v1[] = "PROXY UNKNOWN\r\n";
    static const char v2[] = "\r\n\r\n\0\r\nQUIT\n\x20\x00\x00\x00";
    test_proxy_header_before_tls(CONF_PROXY_V1, v1, sizeof(v1) - 1);
    test_proxy_header_before_tls(CONF_PROXY_V2, v2, 16);

    X509_free(app);
    X509_free(ca);
    X509_free(rogue);
    EVP_PKEY_free(ca_key);
    EVP_PKEY_free(rogue_key);
    EVP_PKEY_free(leaf_key);
    ev_timer_stop(loop, &tick);
    ev_loop_destroy(loop);
    tlsfix_cleanup();
    return check_report("test_health_tls");
}
