// links: usher_net
/* TLS to backends, the client side (proxy/net/tlsclient.c), against an
 * OpenSSL server on the other end of a socketpair, with certificates made
 * at test time: verification of the chain and of the name (sni, the host
 * name, an IP literal), the reasons of a failure, verify off, SNI sent or
 * not, mutual TLS, ALPN, sessions resumed per slot (TLS 1.3 tickets after
 * the handshake, TLS 1.2) and only through the context that made them,
 * loading errors, and a context outliving its last reference while a
 * connection uses it. */
#include <errno.h>

#include <ev.h>

#include "proxy/net/net.h"
#include "proxy/net/tlsclient.h"

#include "test/unit/check.h"
#include "test/unit/tlsfix.h"

static EVP_PKEY *ca_key, *rogue_key, *leaf_key, *client_key;
static X509 *ca, *rogue;
static char ca_pem[TLSFIX_PATH], rogue_pem[TLSFIX_PATH];
static char app_cert[TLSFIX_PATH], app_key[TLSFIX_PATH];
static char rogue_cert[TLSFIX_PATH], rogue_key_pem[TLSFIX_PATH];
static char client_cert[TLSFIX_PATH], client_key_pem[TLSFIX_PATH];

/* The backend: a server context, optionally asking for a client
 * certificate, optionally limited to TLS 1.2, selecting h2 when offered. */
static int alpn_h2(SSL *ssl, const unsigned char **out, unsigned char *outlen,
                   const unsigned char *in, unsigned int inlen, void *arg)
{
    unsigned char *sel = NULL;
    static const unsigned char ours[] = "\x02h2\x08http/1.1";
    if (SSL_select_next_proto(&sel, outlen, ours, sizeof(ours) - 1, in, inlen) !=
        OPENSSL_NPN_NEGOTIATED)
        return SSL_TLSEXT_ERR_NOACK;
    *out = sel;
    return SSL_TLSEXT_ERR_OK;
}

static SSL_CTX *server_ctx(const char *cert, const char *key, bool want_client, int max_version)
{
    SSL_CTX *s = SSL_CTX_new(TLS_server_method());
    SSL_CTX_use_certificate_chain_file(s, cert);
    SSL_CTX_use_PrivateKey_file(s, key, SSL_FILETYPE_PEM);
    if (want_client) {
        SSL_CTX_load_verify_locations(s, ca_pem, NULL);
        SSL_CTX_set_verify(s, SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT, NULL);
    }
    if (max_version)
        SSL_CTX_set_max_proto_version(s, max_version);
    SSL_CTX_set_alpn_select_cb(s, alpn_h2, NULL);
    SSL_CTX_set_session_id_context(s, (const unsigned char *)"t", 1);
    return s;
}

static struct tlsc_ctx *client(const char *ca_file, bool verify, const char *sni, bool with_cert,
                               const char *alpn)
{
    struct tlsc_params p = {.ca = ca_file, .verify = verify, .sni = sni};
    if (with_cert) {
        p.cert = client_cert;
        p.key = client_key_pem;
    }
    if (alpn) {
        p.alpn = alpn;
        p.alpn_len = strlen(alpn);
    }
    char err[512] = "";
    struct tlsc_ctx *c = tlsc_ctx_new(&p, err, sizeof(err));
    CHECK(c != NULL, "tlsc_ctx_new: %s", err);
    return c;
}

struct conn {
    int fds[2];
    SSL *c, *s;
    int rc; /* tlsc_handshake's last: 0, NET_ERROR */
    char err[256];
    int server_ok;
};

/* Connects through <ctx> to a server of <sctx> with host <host>. */
static void conn_run(struct conn *k, struct tlsc_ctx *ctx, SSL_CTX *sctx, const char *host,
                     struct tlsc_session *slot, const char *alpn)
{
    memset(k, 0, sizeof(*k));
    tlsfix_pair(k->fds);
    k->c = tlsc_conn_new(ctx, k->fds[0], host, slot, alpn, alpn ? strlen(alpn) : 0, k->err,
                         sizeof(k->err));
    CHECK(k->c != NULL, "tlsc_conn_new: %s", k->err);
    k->s = SSL_new(sctx);
    SSL_set_fd(k->s, k->fds[1]);
    SSL_set_accept_state(k->s);
    int cs = 0, ss = 0;
    k->rc = NET_AGAIN;
    for (int i = 0; k->c && i < 200 && (cs == 0 || ss == 0); i++) {
        if (cs == 0) {
            unsigned want = 0;
            int r = tlsc_handshake(k->c, &want, k->err, sizeof(k->err));
            if (r == 0)
                cs = 1;
            else if (r == NET_ERROR)
                cs = -1;
            else
                CHECK(want == EV_READ || want == EV_WRITE);
            k->rc = r;
        }
        if (ss == 0)
            ss = tlsfix_step(k->s, &tlsfix_server_reason);
    }
    k->server_ok = ss;
}

/* A request and its answer: the application bytes, and a TLS 1.3 ticket
 * the server sent after the handshake reaches the client's slot. Returns
 * what the client read (<0: tlsc_recv's error). */
static ssize_t conn_exchange(struct conn *k)
{
    unsigned want = 0;
    char buf[64];
    ssize_t n = tlsc_send(k->c, "ping", 4, &want);
    CHECK_INT(n, 4);
    for (int i = 0; i < 50; i++) {
        int r = SSL_read(k->s, buf, sizeof(buf));
        if (r > 0)
            break;
    }
    SSL_write(k->s, "pong", 4);
    ssize_t got = NET_AGAIN;
    for (int i = 0; i < 50 && got == NET_AGAIN; i++)
        got = tlsc_recv(k->c, buf, sizeof(buf), &want);
    return got;
}

static void conn_end(struct conn *k)
{
    tlsc_close(k->c);
    SSL_free(k->s);
    close(k->fds[0]);
    close(k->fds[1]);
}

static void test_verify(void)
{
    check_context = "verify";
    SSL_CTX *app = server_ctx(app_cert, app_key, false, 0);
    SSL_CTX *bad = server_ctx(rogue_cert, rogue_key_pem, false, 0);
    struct tlsc_ctx *by_host = client(ca_pem, true, NULL, false, NULL);
    struct tlsc_ctx *by_sni = client(ca_pem, true, "app.internal", false, NULL);
    struct tlsc_ctx *wrong_sni = client(ca_pem, true, "wrong.internal", false, NULL);
    struct tlsc_ctx *lax = client(NULL, false, NULL, false, NULL);
    CHECK(tlsc_ctx_verifies(by_host) && !tlsc_ctx_verifies(lax));
    static const struct {
        int ctx; /* 0 by_host, 1 by_sni, 2 wrong_sni, 3 lax */
        bool rogue;
        const char *host;
        const char *sni_seen; /* NULL: none */
        const char *fail;     /* NULL: verified */
    } cases[] = {
        {0, false, "localhost", "localhost", NULL},
        {0, false, "LOCALHOST", "LOCALHOST", NULL},
        {0, false, "127.0.0.1", NULL, NULL}, /* an IP: no SNI, the IP verified */
        {0, false, "::1", NULL, "certificate verify failed: IP address mismatch"},
        {0, false, "other.internal", "other.internal",
         "certificate verify failed: hostname mismatch"},
        {1, false, "127.0.0.1", "app.internal", NULL}, /* sni wins over the host */
        {2, false, "localhost", "wrong.internal", "certificate verify failed: hostname mismatch"},
        {0, true, "localhost", "localhost",
         "certificate verify failed: unable to get local issuer certificate"},
        {3, true, "localhost", "localhost", NULL}, /* verify: false */
        {3, false, "203.0.113.9", NULL, NULL},
    };
    struct tlsc_ctx *ctxs[] = {by_host, by_sni, wrong_sni, lax};
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct conn k;
        conn_run(&k, ctxs[cases[i].ctx], cases[i].rogue ? bad : app, cases[i].host, NULL, NULL);
        const char *seen = SSL_get_servername(k.s, TLSEXT_NAMETYPE_host_name);
        if (cases[i].sni_seen)
            CHECK(seen && strcmp(seen, cases[i].sni_seen) == 0, "case %zu: SNI %s", i,
                  seen ? seen : "(none)");
        else
            CHECK(seen == NULL, "case %zu: SNI %s sent for an IP", i, seen);
        if (cases[i].fail) {
            CHECK_INTF(k.rc, NET_ERROR, "case %zu", i);
            CHECK(strcmp(k.err, cases[i].fail) == 0, "case %zu: \"%s\", expected \"%s\"", i, k.err,
                  cases[i].fail);
        } else {
            CHECK_INTF(k.rc, 0, "case %zu: %s", i, k.err);
            CHECK_INTF(conn_exchange(&k), 4, "case %zu", i);
        }
        conn_end(&k);
    }
    for (size_t i = 0; i < 4; i++)
        tlsc_ctx_free(ctxs[i]);
    SSL_CTX_free(app);
    SSL_CTX_free(bad);
    check_context = NULL;
}

static void test_mutual(void)
{
    check_context = "mutual TLS";
    SSL_CTX *strict = server_ctx(app_cert, app_key, true, 0);
    SSL_CTX *strict12 = server_ctx(app_cert, app_key, true, TLS1_2_VERSION);
    struct tlsc_ctx *with = client(ca_pem, true, "app.internal", true, NULL);
    struct tlsc_ctx *without = client(ca_pem, true, "app.internal", false, NULL);
    struct conn k;
    conn_run(&k, with, strict, "127.0.0.1", NULL, NULL);
    CHECK_INTF(k.rc, 0, "%s", k.err);
    X509 *peer = SSL_get1_peer_certificate(k.s);
    CHECK(peer != NULL, "the server saw our certificate");
    X509_free(peer);
    CHECK_INT(conn_exchange(&k), 4);
    conn_end(&k);
    /* TLS 1.3: the client's handshake ends before the server judged its
     * (missing) certificate; the refusal comes as an alert on the read */
    conn_run(&k, without, strict, "127.0.0.1", NULL, NULL);
    CHECK_INT(k.rc, 0);
    CHECK_INT(conn_exchange(&k), NET_ERROR);
    CHECK(tlsc_error(k.c) && strstr(tlsc_error(k.c), "certificate required"), "%s",
          tlsc_error(k.c) ? tlsc_error(k.c) : "(none)");
    conn_end(&k);
    /* TLS 1.2: the handshake itself fails */
    conn_run(&k, without, strict12, "127.0.0.1", NULL, NULL);
    CHECK_INT(k.rc, NET_ERROR);
    CHECK(strncmp(k.err, "handshake failed: ", 18) == 0, "%s", k.err);
    conn_end(&k);
    tlsc_ctx_free(with);
    tlsc_ctx_free(without);
    SSL_CTX_free(strict);
    SSL_CTX_free(strict12);
    check_context = NULL;
}

static void alpn_of(SSL *ssl, char *out, size_t cap)
{
    const unsigned char *p;
    unsigned n;
    tlsc_alpn_selected(ssl, &p, &n);
    snprintf(out, cap, "%.*s", (int)n, p ? (const char *)p : "");
}

static void test_alpn(void)
{
    check_context = "alpn";
    SSL_CTX *app = server_ctx(app_cert, app_key, false, 0);
    struct tlsc_ctx *h2 = client(ca_pem, true, "app.internal", false, TLSC_ALPN_H2);
    struct tlsc_ctx *h11 = client(ca_pem, true, "app.internal", false, TLSC_ALPN_HTTP11);
    struct tlsc_ctx *none = client(ca_pem, true, "app.internal", false, NULL);
    char got[32];
    struct conn k;
    conn_run(&k, h2, app, "127.0.0.1", NULL, NULL);
    alpn_of(k.c, got, sizeof(got));
    CHECK_STR(got, "h2");
    conn_end(&k);
    conn_run(&k, h2, app, "127.0.0.1", NULL, TLSC_ALPN_HTTP11); /* a health check's */
    alpn_of(k.c, got, sizeof(got));
    CHECK_STR(got, "http/1.1");
    conn_end(&k);
    conn_run(&k, h11, app, "127.0.0.1", NULL, NULL);
    alpn_of(k.c, got, sizeof(got));
    CHECK_STR(got, "http/1.1");
    conn_end(&k);
    conn_run(&k, none, app, "127.0.0.1", NULL, NULL);
    alpn_of(k.c, got, sizeof(got));
    CHECK_STR(got, "");
    conn_end(&k);
    tlsc_ctx_free(h2);
    tlsc_ctx_free(h11);
    tlsc_ctx_free(none);
    SSL_CTX_free(app);
    check_context = NULL;
}

static void test_resumption(int version)
{
    check_context = version == TLS1_2_VERSION ? "resumption TLS 1.2" : "resumption TLS 1.3";
    SSL_CTX *app = server_ctx(app_cert, app_key, false, version);
    struct tlsc_ctx *c = client(ca_pem, true, "app.internal", false, NULL);
    struct tlsc_session a = {0}, b = {0};
    struct conn k;
    CHECK(!tlsc_session_held(&a));
    conn_run(&k, c, app, "127.0.0.1", &a, NULL);
    CHECK_INT(k.rc, 0);
    CHECK(!tlsc_resumed(k.c));
    CHECK_INT(conn_exchange(&k), 4); /* a TLS 1.3 ticket comes with the answer */
    conn_end(&k);
    CHECK(tlsc_session_held(&a), "backend a's slot holds a session");
    CHECK(!tlsc_session_held(&b));
    for (int i = 0; i < 3; i++) {
        conn_run(&k, c, app, "127.0.0.1", &a, NULL);
        CHECK_INT(k.rc, 0);
        CHECK(tlsc_resumed(k.c), "round %d resumed", i);
        CHECK_INT(conn_exchange(&k), 4);
        conn_end(&k);
    }
    /* another backend: its own slot, a full handshake */
    conn_run(&k, c, app, "127.0.0.1", &b, NULL);
    CHECK(!tlsc_resumed(k.c));
    CHECK_INT(conn_exchange(&k), 4);
    conn_end(&k);
    CHECK(tlsc_session_held(&b));
    /* a new context (a reload: the CA or verify may have changed): the
     * old session is never offered through it, and is dropped */
    struct tlsc_ctx *c2 = client(ca_pem, true, "app.internal", false, NULL);
    conn_run(&k, c2, app, "127.0.0.1", &a, NULL);
    CHECK_INT(k.rc, 0);
    CHECK(!tlsc_resumed(k.c), "a session of another context was resumed");
    CHECK_INT(conn_exchange(&k), 4);
    conn_end(&k);
    conn_run(&k, c2, app, "127.0.0.1", &a, NULL);
    CHECK(tlsc_resumed(k.c), "the new context's own session");
    conn_end(&k);
    /* a failed handshake stores nothing */
    tlsc_session_clear(&a);
    struct tlsc_ctx *wrong = client(ca_pem, true, "wrong.internal", false, NULL);
    conn_run(&k, wrong, app, "127.0.0.1", &a, NULL);
    CHECK_INT(k.rc, NET_ERROR);
    conn_end(&k);
    CHECK(!tlsc_session_held(&a));
    tlsc_session_clear(&a);
    tlsc_session_clear(&b);
    tlsc_ctx_free(c);
    tlsc_ctx_free(c2);
    tlsc_ctx_free(wrong);
    SSL_CTX_free(app);
    check_context = NULL;
}

static void test_errors(void)
{
    check_context = "loading errors";
    char garbage[TLSFIX_PATH], err[2048];
    tlsfix_write_text("garbage.pem", "not a PEM file\n", garbage);
    struct tlsc_params p = {.ca = "/nonexistent/ca.pem", .verify = true};
    CHECK(tlsc_ctx_new(&p, err, sizeof(err)) == NULL);
    CHECK_STR(err, "cannot read /nonexistent/ca.pem: No such file or directory");
    p.ca = garbage;
    CHECK(tlsc_ctx_new(&p, err, sizeof(err)) == NULL);
    char want[2048];
    snprintf(want, sizeof(want), "no CA certificate in %s (bad PEM?)", garbage);
    CHECK(strncmp(err, want, strlen(want)) == 0, "%s", err);
    p.verify = false; /* a CA file is checked even without verification */
    CHECK(tlsc_ctx_new(&p, err, sizeof(err)) == NULL);
    p = (struct tlsc_params){.ca = ca_pem, .verify = true, .cert = client_cert, .key = app_key};
    CHECK(tlsc_ctx_new(&p, err, sizeof(err)) == NULL);
    snprintf(want, sizeof(want),
             "the private key does not match the certificate: key %s, certificate %s", app_key,
             client_cert);
    CHECK_STR(err, want);
    p.cert = garbage;
    CHECK(tlsc_ctx_new(&p, err, sizeof(err)) == NULL);
    snprintf(want, sizeof(want), "no certificate in %s (bad PEM?)", garbage);
    CHECK(strncmp(err, want, strlen(want)) == 0, "%s", err);
    p.cert = client_cert;
    p.key = garbage;
    CHECK(tlsc_ctx_new(&p, err, sizeof(err)) == NULL);
    snprintf(want, sizeof(want), "no private key in %s (bad PEM?)", garbage);
    CHECK(strncmp(err, want, strlen(want)) == 0, "%s", err);
    /* the system's store, when no CA is named */
    p = (struct tlsc_params){.verify = true};
    struct tlsc_ctx *sys = tlsc_ctx_new(&p, err, sizeof(err));
    CHECK(sys != NULL, "%s", err);
    tlsc_ctx_free(sys);
    /* verifying with no name at all */
    struct tlsc_ctx *c = client(ca_pem, true, NULL, false, NULL);
    int fds[2];
    tlsfix_pair(fds);
    CHECK(tlsc_conn_new(c, fds[0], NULL, NULL, NULL, 0, err, sizeof(err)) == NULL);
    CHECK_STR(err, "no name to verify the certificate against (set tls.sni)");
    close(fds[0]);
    close(fds[1]);
    tlsc_ctx_free(c);
    check_context = NULL;
}

/* The last reference to a context dropped while a connection uses it,
 * and a slot outliving both (ASan tells). */
static void test_lifetime(void)
{
    check_context = "lifetime";
    SSL_CTX *app = server_ctx(app_cert, app_key, false, 0);
    struct tlsc_ctx *c = client(ca_pem, true, "app.internal", false, NULL);
    struct tlsc_session slot = {0};
    struct conn k;
    memset(&k, 0, sizeof(k));
    tlsfix_pair(k.fds);
    k.c =
        tlsc_conn_new(tlsc_ctx_ref(c), k.fds[0], "127.0.0.1", &slot, NULL, 0, k.err, sizeof(k.err));
    tlsc_ctx_free(c);
    tlsc_ctx_free(c); /* the reload dropped it: the connection holds it */
    k.s = SSL_new(app);
    SSL_set_fd(k.s, k.fds[1]);
    SSL_set_accept_state(k.s);
    int done = 0;
    for (int i = 0; i < 200 && done != 1; i++) {
        unsigned want;
        done = tlsc_handshake(k.c, &want, k.err, sizeof(k.err)) == 0;
        tlsfix_step(k.s, &tlsfix_server_reason);
    }
    CHECK_INT(done, 1);
    CHECK_INT(conn_exchange(&k), 4);
    conn_end(&k);
    CHECK(tlsc_session_held(&slot)); /* it holds the context too, until cleared */
    tlsc_session_clear(&slot);
    SSL_CTX_free(app);
    check_context = NULL;
}

int main(void)
{
    ca_key = tlsfix_key();
    rogue_key = tlsfix_key();
    leaf_key = tlsfix_key();
    client_key = tlsfix_key();
    ca = tlsfix_cert(ca_key, "usher test CA", NULL, 3650, NULL, NULL, true);
    rogue = tlsfix_cert(rogue_key, "usher rogue CA", NULL, 3650, NULL, NULL, true);
    tlsfix_write("ca", ca, NULL, ca_pem, NULL);
    tlsfix_write("rogue-ca", rogue, NULL, rogue_pem, NULL);
    X509 *app = tlsfix_cert(leaf_key, "app.internal", "DNS:app.internal,DNS:localhost,IP:127.0.0.1",
                            30, ca, ca_key, false);
    tlsfix_write("app", app, leaf_key, app_cert, app_key);
    X509 *bad = tlsfix_cert(leaf_key, "app.internal", "DNS:app.internal,DNS:localhost,IP:127.0.0.1",
                            30, rogue, rogue_key, false);
    tlsfix_write("rogue", bad, leaf_key, rogue_cert, rogue_key_pem);
    X509 *cl = tlsfix_cert(client_key, "usher-client", NULL, 30, ca, ca_key, false);
    tlsfix_write("client", cl, client_key, client_cert, client_key_pem);

    test_verify();
    test_mutual();
    test_alpn();
    test_resumption(TLS1_3_VERSION);
    test_resumption(TLS1_2_VERSION);
    test_errors();
    test_lifetime();

    X509_free(app);
    X509_free(bad);
    X509_free(cl);
    X509_free(ca);
    X509_free(rogue);
    EVP_PKEY_free(ca_key);
    EVP_PKEY_free(rogue_key);
    EVP_PKEY_free(leaf_key);
    EVP_PKEY_free(client_key);
    tlsfix_cleanup();
    return check_report("test_tlsclient");
}
