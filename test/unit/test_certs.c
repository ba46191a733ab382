// links: usher_proxy_core
/* Certificate sets (proxy/core/certs.c) against certificates made at test
 * time: selection by SNI (exact, case, longest wildcard, one label, the
 * default's own names), strict_sni refusals and their reasons, the 421
 * rule, names and expiry, every loading error at its key's position, ALPN
 * through the switch, session resumption only under the certificate that
 * made the session (TLS 1.3 and 1.2), the set's lifetime through its
 * connections, and 2,000 certificates: the selection costs what it costs
 * with one. Handshakes are real, over a socketpair. */
#include <errno.h>
#include <time.h>

#include "proxy/core/certs.h"

#include "test/unit/check.h"
#include "test/unit/tlsfix.h"

static EVP_PKEY *ca_key, *leaf_key, *other_key;
static X509 *ca;
static char ca_pem[TLSFIX_PATH];

/* A leaf of the test CA written as <stem>.pem/.key (the shared leaf key). */
struct leaf {
    char cert[TLSFIX_PATH], key[TLSFIX_PATH];
    X509 *x;
};

static void leaf_make(struct leaf *l, const char *stem, const char *cn, const char *san, long days)
{
    l->x = tlsfix_cert(leaf_key, cn, san, days, ca, ca_key, false);
    tlsfix_write(stem, l->x, leaf_key, l->cert, l->key);
}

enum { DEFAULT, API, API2, WILD, WILDAPI, OTHER, CNONLY, IPONLY, NLEAVES };
static struct leaf leaves[NLEAVES];

/* ---- a config with one TLS listener ------------------------------------- */

static struct conf cf;
static struct conf_listener lis;
static struct conf_certificate entries[8];

static void conf_set(int dflt, const int *extra, size_t n, bool strict)
{
    memset(&cf, 0, sizeof(cf));
    memset(&lis, 0, sizeof(lis));
    cf.path = "usher.yaml";
    cf.listeners = &lis;
    cf.num_listeners = 1;
    lis.name = "secure";
    lis.protocol = CONF_PROTO_HTTP;
    lis.pos = (struct conf_pos){3, 5};
    lis.tls.enabled = true;
    lis.tls.cert = leaves[dflt].cert;
    lis.tls.key = leaves[dflt].key;
    lis.tls.strict_sni = strict;
    for (size_t i = 0; i < n; i++) {
        entries[i] = (struct conf_certificate){
            leaves[extra[i]].cert, leaves[extra[i]].key, {(unsigned)(10 + i), 11}};
    }
    lis.tls.certificates = n ? entries : NULL;
    lis.tls.num_certificates = n;
}

static char errors[8][1200];
static size_t num_errors;

static void on_error(void *arg, const char *msg)
{
    if (num_errors < 8)
        snprintf(errors[num_errors], sizeof(errors[0]), "%s", msg);
    num_errors++;
}

static struct cert_set *build(const char *alpn, size_t alpn_len)
{
    struct cert_set_params p = {.alpn = {(const unsigned char *)alpn, alpn_len}};
    struct cert_set *set = NULL;
    num_errors = 0;
    int rc = cert_set_build(&cf, 0, &p, &set, on_error, NULL);
    CHECK_INT(rc, set ? 0 : -1);
    return set;
}

/* ---- handshakes ------------------------------------------------------------ */

static SSL_CTX *client_ctx(int max_version)
{
    SSL_CTX *c = SSL_CTX_new(TLS_client_method());
    SSL_CTX_set_verify(c, SSL_VERIFY_PEER, NULL);
    SSL_CTX_load_verify_locations(c, ca_pem, NULL);
    if (max_version)
        SSL_CTX_set_max_proto_version(c, max_version);
    return c;
}

struct hs {
    SSL *client, *server;
    int fds[2];
    int rc;
};

/* A handshake with SNI <sni> (NULL: none) against <set>, offering
 * <session> (NULL: none) and ALPN <alpn>. */
static void hs_run(struct hs *h, const struct cert_set *set, SSL_CTX *cctx, const char *sni,
                   SSL_SESSION *session, const char *alpn, size_t alpn_len)
{
    tlsfix_pair(h->fds);
    h->client = SSL_new(cctx);
    SSL_set_fd(h->client, h->fds[0]);
    SSL_set_connect_state(h->client);
    if (sni)
        SSL_set_tlsext_host_name(h->client, sni);
    if (session)
        SSL_set_session(h->client, session);
    if (alpn)
        SSL_set_alpn_protos(h->client, (const unsigned char *)alpn, (unsigned)alpn_len);
    h->server = tls_accept_new(cert_set_ctx(set), h->fds[1]);
    h->rc = tlsfix_pump(h->client, h->server);
}

static void hs_end(struct hs *h)
{
    /* a client freed without close_notify loses its session (OpenSSL
     * marks it not resumable), as a browser's would */
    if (h->rc == 0)
        SSL_shutdown(h->client);
    SSL_free(h->client);
    SSL_free(h->server);
    close(h->fds[0]);
    close(h->fds[1]);
}

/* The index of the leaf the client was shown, or -1. */
static int shown(SSL *client, const int *candidates, size_t n)
{
    X509 *peer = SSL_get1_peer_certificate(client);
    int found = -1;
    for (size_t i = 0; peer && i < n; i++)
        if (X509_cmp(peer, leaves[candidates[i]].x) == 0)
            found = candidates[i];
    X509_free(peer);
    return found;
}

/* ---- the cases ------------------------------------------------------------- */

static const int extra_std[] = {API, WILD, WILDAPI, OTHER};
/* set index of each leaf in extra_std order: the default is 0 */
static long index_of(int leaf)
{
    if (leaf == DEFAULT)
        return 0;
    for (size_t i = 0; i < sizeof(extra_std) / sizeof(extra_std[0]); i++)
        if (extra_std[i] == leaf)
            return (long)i + 1;
    return -9;
}

static void test_selection(void)
{
    check_context = "selection";
    conf_set(DEFAULT, extra_std, 4, false);
    struct cert_set *set = build("\x08http/1.1", 9);
    if (!set)
        return;
    SSL_CTX *cctx = client_ctx(0);
    static const struct {
        const char *sni;
        int want;
    } cases[] = {
        {"api.example.com", API},     {"API.Example.COM", API},
        {"www.example.com", WILD},    {"x.api.example.com", WILDAPI},
        {"default.test", DEFAULT},    {"www.default.test", DEFAULT},
        {"unknown.test", DEFAULT},    {"example.com", DEFAULT},
        {"a.b.example.com", DEFAULT}, {NULL, DEFAULT},
        {"api.example.com.", API},    {"www.other.test", OTHER},
    };
    const int all[] = {DEFAULT, API, WILD, WILDAPI, OTHER};
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        const char *sni = cases[i].sni;
        CHECK_INTF(cert_set_select(set, sni, sni ? strlen(sni) : 0), index_of(cases[i].want),
                   "select %s", sni ? sni : "(none)");
        struct hs h;
        hs_run(&h, set, cctx, sni, NULL, NULL, 0);
        CHECK_INTF(h.rc, 0, "handshake %s", sni ? sni : "(none)");
        CHECK_INTF(shown(h.client, all, 5), cases[i].want, "shown for %s", sni ? sni : "(none)");
        CHECK_INT(cert_set_presented(h.server), index_of(cases[i].want));
        CHECK(cert_set_refusal(h.server) == NULL);
        hs_end(&h);
    }
    CHECK(!cert_set_strict(set));
    CHECK_UINT(cert_set_count(set), 5);
    CHECK(cert_set_of(cert_set_ctx(set)) == set);
    SSL_CTX_free(cctx);
    cert_set_free(set);
    check_context = NULL;
}

static void test_strict(void)
{
    check_context = "strict_sni";
    const int extra[] = {API, WILD};
    conf_set(DEFAULT, extra, 2, true);
    struct cert_set *set = build(NULL, 0);
    if (!set)
        return;
    CHECK(cert_set_strict(set));
    SSL_CTX *cctx = client_ctx(0);
    static const struct {
        const char *sni;
        const char *refusal; /* NULL: accepted */
    } cases[] = {
        {"unknown.test", cert_refused_unknown_sni},
        {NULL, cert_refused_no_sni},
        {"example.com", cert_refused_unknown_sni},
        {"default.test", NULL},
        {"www.default.test", NULL},
        {"api.example.com", NULL},
        {"www.example.com", NULL},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        const char *sni = cases[i].sni;
        struct hs h;
        hs_run(&h, set, cctx, sni, NULL, NULL, 0);
        if (cases[i].refusal) {
            CHECK_INTF(h.rc, -2, "%s refused by the server", sni ? sni : "(none)");
            CHECK(cert_set_refusal(h.server) == cases[i].refusal, "reason for %s",
                  sni ? sni : "(none)");
            CHECK_INTF(tlsfix_client_reason, SSL_R_TLSV1_UNRECOGNIZED_NAME, "alert for %s",
                       sni ? sni : "(none)");
            CHECK_INT(cert_set_select(set, sni, sni ? strlen(sni) : 0), -1);
        } else {
            CHECK_INTF(h.rc, 0, "%s accepted", sni);
            CHECK(cert_set_refusal(h.server) == NULL);
        }
        hs_end(&h);
    }
    CHECK_STR(cert_refused_no_sni, "no_sni");
    CHECK_STR(cert_refused_unknown_sni, "unknown_sni");
    SSL_CTX_free(cctx);
    cert_set_free(set);
    check_context = NULL;
}

static void test_misdirected(void)
{
    check_context = "421";
    const int extra[] = {API, WILD, OTHER};
    conf_set(DEFAULT, extra, 3, false);
    struct cert_set *set = build(NULL, 0);
    if (!set)
        return;
    SSL_CTX *cctx = client_ctx(0);
    static const struct {
        const char *sni, *host;
        bool misdirected;
    } cases[] = {
        {"api.example.com", "api.example.com", false},
        {"api.example.com", "API.Example.com.:443", false},
        {"api.example.com", "www.example.com", true},
        {"api.example.com", "www.other.test:8443", true},
        {"api.example.com", "default.test", true},
        {"api.example.com", "unknown.test", false},
        {"a.example.com", "b.example.com", false},
        {"a.example.com", "other.test", true},
        {NULL, "default.test", false},
        {NULL, "www.default.test", false},
        {NULL, "api.example.com", true},
        {"unknown.test", "www.example.com", true},
        {"api.example.com", "[::1]:443", false},
        {"api.example.com", "", false},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct hs h;
        hs_run(&h, set, cctx, cases[i].sni, NULL, NULL, 0);
        CHECK_INT(h.rc, 0);
        CHECK(cert_set_misdirected(h.server, cases[i].host, strlen(cases[i].host)) ==
                  cases[i].misdirected,
              "SNI %s Host %s", cases[i].sni ? cases[i].sni : "(none)", cases[i].host);
        hs_end(&h);
    }
    CHECK_INT(cert_set_covering(set, "WWW.example.com:80", 18), 2);
    CHECK_INT(cert_set_covering(set, "nothing.test", 12), -1);
    /* an SSL of no set is never misdirected */
    SSL *plain = SSL_new(cctx);
    CHECK(!cert_set_misdirected(plain, "api.example.com", 15));
    CHECK_INT(cert_set_presented(plain), -1);
    SSL_free(plain);
    SSL_CTX_free(cctx);
    cert_set_free(set);
    check_context = NULL;
}

static void test_info(void)
{
    check_context = "info";
    const int extra[] = {API, WILD, CNONLY};
    conf_set(IPONLY, extra, 3, false);
    struct cert_set *set = build(NULL, 0);
    if (!set)
        return;
    const struct cert_info *d = cert_set_info(set, 0);
    CHECK_UINT(d->num_names, 0); /* the default may name no host */
    CHECK_STR(d->cert, leaves[IPONLY].cert);
    const struct cert_info *a = cert_set_info(set, 1);
    CHECK_UINT(a->num_names, 1);
    CHECK(a->num_names == 1 && strcmp(a->names[0], "api.example.com") == 0);
    CHECK(!a->names_from_cn);
    const struct cert_info *w = cert_set_info(set, 2);
    CHECK(w->num_names == 1 && strcmp(w->names[0], "*.example.com") == 0);
    const struct cert_info *c = cert_set_info(set, 3);
    CHECK(c->names_from_cn);
    CHECK(c->num_names == 1 && strcmp(c->names[0], "cn.test") == 0);
    CHECK_INT(cert_set_select(set, "cn.test", 7), 3);
    CHECK(cert_set_info(set, 4) == NULL);
    /* API was made for 21 days: not_after is then, to the second */
    time_t now = time(NULL);
    CHECK(a->not_after_unix > now + 21 * 86400 - 120 && a->not_after_unix <= now + 21 * 86400,
          "not_after_unix %lld", (long long)a->not_after_unix);
    char want[CERT_TIME_LEN];
    time_t t = (time_t)a->not_after_unix;
    struct tm tm;
    strftime(want, sizeof(want), "%Y-%m-%dT%H:%M:%SZ", gmtime_r(&t, &tm));
    CHECK_STR(a->not_after, want);
    CHECK_UINT(strlen(a->not_after), 20);
    cert_set_free(set);
    check_context = NULL;
}

static void test_errors(void)
{
    check_context = "errors";
    char garbage[TLSFIX_PATH];
    tlsfix_write_text("garbage.pem",
                      "-----BEGIN CERTIFICATE-----\nnot a certificate\n-----END CERTIFICATE-----\n",
                      garbage);
    const int extra[] = {API, WILD, IPONLY};
    conf_set(DEFAULT, extra, 3, false);
    entries[0].key = leaves[OTHER].key; /* a key of no certificate here: other_key */
    entries[1].cert = garbage;
    lis.tls.cert = "/nonexistent/usher-test.pem";
    struct cert_set *set = NULL;
    num_errors = 0;
    CHECK_INT(cert_set_build(&cf, 0, NULL, &set, on_error, NULL), -1);
    CHECK(set == NULL);
    CHECK_UINT(num_errors, 4);
    char want[1200];
    snprintf(want, sizeof(want),
             "usher.yaml:10:11: listeners[0].tls.certificates[0]: the private "
             "key does not match the certificate: key %s, certificate %s",
             leaves[OTHER].key, leaves[API].cert);
    CHECK_STR(errors[0], want);
    snprintf(want, sizeof(want),
             "usher.yaml:11:11: listeners[0].tls.certificates[1]: no certificate in %s (bad PEM?)",
             garbage);
    CHECK(strncmp(errors[1], want, strlen(want)) == 0, "got %s", errors[1]);
    snprintf(want, sizeof(want),
             "usher.yaml:12:11: listeners[0].tls.certificates[2]: %s names no host (no "
             "subjectAltName DNS name, no host name as CN): no SNI can select it",
             leaves[IPONLY].cert);
    CHECK_STR(errors[2], want);
    CHECK_STR(errors[3], "usher.yaml:3:5: listeners[0].tls: cannot read "
                         "/nonexistent/usher-test.pem: No such file or directory");
    /* a missing key file */
    conf_set(DEFAULT, NULL, 0, false);
    lis.tls.key = "/nonexistent/usher-test.key";
    num_errors = 0;
    CHECK_INT(cert_set_build(&cf, 0, NULL, &set, on_error, NULL), -1);
    CHECK_UINT(num_errors, 1);
    CHECK_STR(errors[0], "usher.yaml:3:5: listeners[0].tls: cannot read "
                         "/nonexistent/usher-test.key: No such file or directory");
    check_context = NULL;
}

static void test_alpn(void)
{
    check_context = "alpn";
    conf_set(DEFAULT, extra_std, 4, false);
    static const char both[] = "\x02h2\x08http/1.1";
    static const char h11[] = "\x08http/1.1";
    static const char h2[] = "\x02h2";
    struct cert_set *set = build(both, sizeof(both) - 1);
    struct cert_set *old = build(h11, sizeof(h11) - 1);
    struct cert_set *none = build(NULL, 0);
    if (!set || !old || !none)
        return;
    SSL_CTX *cctx = client_ctx(0);
    static const char offer[] = "\x08http/1.1\x02h2"; /* the client prefers http/1.1 */
    const struct {
        struct cert_set *set;
        const char *sni, *offer;
        size_t offer_len;
        const char *want;
    } cases[] = {
        {set, "api.example.com", offer, sizeof(offer) - 1, "h2"}, /* the server's order */
        {set, NULL, offer, sizeof(offer) - 1, "h2"},
        {set, "www.other.test", h11, sizeof(h11) - 1, "http/1.1"},
        {old, "api.example.com", offer, sizeof(offer) - 1, "http/1.1"},
        {old, "api.example.com", h2, sizeof(h2) - 1, ""},
        {none, "api.example.com", offer, sizeof(offer) - 1, ""},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct hs h;
        hs_run(&h, cases[i].set, cctx, cases[i].sni, NULL, cases[i].offer, cases[i].offer_len);
        CHECK_INT(h.rc, 0);
        const unsigned char *p = NULL;
        unsigned n = 0;
        SSL_get0_alpn_selected(h.client, &p, &n);
        char got[32] = "";
        snprintf(got, sizeof(got), "%.*s", (int)n, p ? (const char *)p : "");
        CHECK_STR(got, cases[i].want);
        hs_end(&h);
    }
    SSL_CTX_free(cctx);
    cert_set_free(set);
    cert_set_free(old);
    cert_set_free(none);
    check_context = NULL;
}

/* The client's last session, as a client cache would keep it. */
static SSL_SESSION *last_session;

static int keep_session(SSL *ssl, SSL_SESSION *sess)
{
    SSL_SESSION_free(last_session);
    last_session = sess;
    return 1;
}

/* A handshake, then a few bytes each way (a TLS 1.3 ticket arrives after
 * the handshake). Returns 1 if the session was resumed, 0 if not, -1 if
 * the handshake failed; *<leaf> the certificate shown (the resumed
 * session's for a resumption). */
static int resume_once(const struct cert_set *set, SSL_CTX *cctx, const char *sni, int *leaf)
{
    struct hs h;
    SSL_SESSION *offer = last_session;
    if (offer)
        SSL_SESSION_up_ref(offer);
    hs_run(&h, set, cctx, sni, offer, NULL, 0);
    SSL_SESSION_free(offer);
    int rc = -1;
    if (h.rc == 0) {
        char buf[16];
        SSL_write(h.server, "ping", 4);
        SSL_write(h.client, "pong", 4);
        SSL_read(h.client, buf, sizeof(buf));
        SSL_read(h.server, buf, sizeof(buf));
        rc = SSL_session_reused(h.client);
        const int all[] = {DEFAULT, API, WILD, WILDAPI, OTHER};
        *leaf = shown(h.client, all, 5);
        CHECK_INT(cert_set_presented(h.server), index_of(*leaf));
    }
    ERR_clear_error();
    hs_end(&h);
    return rc;
}

static void test_resumption(int version)
{
    check_context = version == TLS1_2_VERSION ? "resumption TLS 1.2" : "resumption TLS 1.3";
    conf_set(DEFAULT, extra_std, 4, false);
    struct cert_set *set = build(NULL, 0);
    if (!set)
        return;
    SSL_CTX *cctx = client_ctx(version);
    SSL_CTX_set_session_cache_mode(cctx, SSL_SESS_CACHE_CLIENT | SSL_SESS_CACHE_NO_INTERNAL_STORE);
    SSL_CTX_sess_set_new_cb(cctx, keep_session);
    int leaf = -1;
    CHECK_INT(resume_once(set, cctx, "api.example.com", &leaf), 0);
    CHECK_INT(leaf, API);
    CHECK(last_session != NULL, "a session to resume");
    /* the same certificate again: resumed */
    CHECK_INT(resume_once(set, cctx, "api.example.com", &leaf), 1);
    CHECK_INT(leaf, API);
    /* another certificate's name with api's session: a full handshake
     * that shows the other certificate (never api's session under it) */
    CHECK_INT(resume_once(set, cctx, "www.other.test", &leaf), 0);
    CHECK_INT(leaf, OTHER);
    /* and the default's, from other's session */
    CHECK_INT(resume_once(set, cctx, "unknown.test", &leaf), 0);
    CHECK_INT(leaf, DEFAULT);
    CHECK_INT(resume_once(set, cctx, "default.test", &leaf), 1);
    CHECK_INT(leaf, DEFAULT);
    /* a session of another set (a reload): a full handshake */
    struct cert_set *next = build(NULL, 0);
    if (next) {
        CHECK_INT(resume_once(next, cctx, "default.test", &leaf), 0);
        cert_set_free(next);
    }
    SSL_SESSION_free(last_session);
    last_session = NULL;
    SSL_CTX_free(cctx);
    cert_set_free(set);
    check_context = NULL;
}

/* A connection keeps the set it started with, after every other
 * reference is gone (ASan tells if anything is freed early or leaks). */
static void test_lifetime(void)
{
    check_context = "lifetime";
    conf_set(DEFAULT, extra_std, 4, false);
    struct cert_set *set = build(NULL, 0);
    if (!set)
        return;
    SSL_CTX *cctx = client_ctx(0);
    struct hs h;
    tlsfix_pair(h.fds);
    h.client = SSL_new(cctx);
    SSL_set_fd(h.client, h.fds[0]);
    SSL_set_connect_state(h.client);
    SSL_set_tlsext_host_name(h.client, "www.other.test");
    h.server = tls_accept_new(cert_set_ctx(set), h.fds[1]);
    struct cert_set *extra = cert_set_ref(set);
    cert_set_free(set);   /* the reload swapped it */
    cert_set_free(extra); /* and every listener let go */
    CHECK_INT(tlsfix_pump(h.client, h.server), 0);
    CHECK_INT(cert_set_presented(h.server), 4);
    CHECK(cert_set_misdirected(h.server, "api.example.com", 15));
    CHECK(cert_set_of(SSL_get_SSL_CTX(h.server)) != NULL);
    hs_end(&h); /* the last reference: the set goes */
    SSL_CTX_free(cctx);
    check_context = NULL;
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Nanoseconds per selection of <names> (the best of 5 rounds, so a busy
 * machine's pauses do not count). */
static double select_ns(const struct cert_set *set, char (*names)[64], size_t n)
{
    double best = 1e30;
    long sink = 0;
    for (int round = 0; round < 5; round++) {
        double t0 = now_s();
        for (int rep = 0; rep < 20; rep++)
            for (size_t i = 0; i < n; i++)
                sink += cert_set_select(set, names[i], strlen(names[i]));
        double ns = (now_s() - t0) * 1e9 / (20.0 * (double)n);
        if (ns < best)
            best = ns;
    }
    CHECK(sink != 12345); /* keeps the loop */
    return best;
}

/* 2,000 certificates, one name each (and every tenth a wildcard): a
 * handshake picks the right one, and a selection costs what it costs in a
 * set of one (an index, not a scan: a scan of 2,000 would be hundreds of
 * times slower). */
#define SCALE 2000
static void test_scale(void)
{
    check_context = "2000 certificates";
    static struct conf_certificate many[SCALE];
    static char paths[SCALE][2][TLSFIX_PATH];
    double t0 = now_s();
    for (int i = 0; i < SCALE; i++) {
        char stem[32], san[96];
        snprintf(stem, sizeof(stem), "scale-%d", i);
        if (i % 10 == 9)
            snprintf(san, sizeof(san), "DNS:*.w%d.scale.test", i);
        else
            snprintf(san, sizeof(san), "DNS:host-%d.scale.test", i);
        X509 *x = tlsfix_cert(leaf_key, NULL, san, 30, ca, ca_key, false);
        tlsfix_write(stem, x, NULL, paths[i][0], NULL);
        X509_free(x);
        snprintf(paths[i][1], TLSFIX_PATH, "%s", leaves[DEFAULT].key); /* the shared leaf key */
        many[i] = (struct conf_certificate){paths[i][0], paths[i][1], {(unsigned)i + 10, 7}};
    }
    double made = now_s() - t0;
    conf_set(DEFAULT, NULL, 0, true);
    lis.tls.certificates = many;
    lis.tls.num_certificates = SCALE;
    t0 = now_s();
    struct cert_set *big = build(NULL, 0);
    double built = now_s() - t0;
    fprintf(stderr, "test_certs: %d certificates made in %.2f s, loaded in %.2f s\n", SCALE, made,
            built);
    conf_set(DEFAULT, NULL, 0, true);
    struct cert_set *one = build(NULL, 0);
    if (!big || !one)
        return;
    CHECK_UINT(cert_set_count(big), SCALE + 1);
    /* what clients ask for: every certificate's name, some unknown */
    static char names[SCALE][64];
    for (int i = 0; i < SCALE; i++) {
        if (i % 10 == 9)
            snprintf(names[i], sizeof(names[i]), "a.w%d.scale.test", i);
        else if (i % 10 == 3)
            snprintf(names[i], sizeof(names[i]), "nobody-%d.scale.test", i);
        else
            snprintf(names[i], sizeof(names[i]), "host-%d.scale.test", i);
    }
    for (int i = 0; i < SCALE; i++) {
        long want = i % 10 == 3 ? -1 : i + 1;
        if (cert_set_select(big, names[i], strlen(names[i])) != want) {
            CHECK_INTF(cert_set_select(big, names[i], strlen(names[i])), want, "%s", names[i]);
            break;
        }
    }
    SSL_CTX *cctx = client_ctx(0);
    for (int i = 0; i < SCALE; i += 197) {
        if (i % 10 == 3)
            continue;
        struct hs h;
        hs_run(&h, big, cctx, names[i], NULL, NULL, 0);
        CHECK_INTF(h.rc, 0, "%.63s", names[i]);
        CHECK_INTF(cert_set_presented(h.server), i + 1, "%.63s", names[i]);
        X509 *peer = SSL_get1_peer_certificate(h.client);
        CHECK(peer && X509_check_host(peer, names[i], 0, 0, NULL) == 1, "%s", names[i]);
        X509_free(peer);
        hs_end(&h);
    }
    SSL_CTX_free(cctx);
    double ns_big = select_ns(big, names, SCALE);
    double ns_one = select_ns(one, names, SCALE);
    fprintf(stderr, "test_certs: selection %.0f ns with %d certificates, %.0f ns with one\n",
            ns_big, SCALE, ns_one);
    /* the same work per name whatever the set's size; a linear scan
     * would be two orders of magnitude slower. Generous for a busy box. */
    CHECK(ns_big < 10 * ns_one + 2000, "%.0f ns vs %.0f ns", ns_big, ns_one);
    cert_set_free(big);
    cert_set_free(one);
    check_context = NULL;
}

int main(void)
{
    ca_key = tlsfix_key();
    leaf_key = tlsfix_key();
    other_key = tlsfix_key();
    ca = tlsfix_cert(ca_key, "usher test CA", NULL, 3650, NULL, NULL, true);
    tlsfix_write("ca", ca, NULL, ca_pem, NULL);
    leaf_make(&leaves[DEFAULT], "default", "default.test", "DNS:default.test,DNS:www.default.test",
              20);
    leaf_make(&leaves[API], "api", "api.example.com", "DNS:api.example.com", 21);
    leaf_make(&leaves[API2], "api2", "api.example.com", "DNS:api.example.com", 41);
    leaf_make(&leaves[WILD], "wild", NULL, "DNS:*.example.com", 22);
    leaf_make(&leaves[WILDAPI], "wild-api", NULL, "DNS:*.api.example.com", 23);
    leaf_make(&leaves[OTHER], "other", "other.test", "DNS:other.test,DNS:www.other.test", 24);
    leaf_make(&leaves[CNONLY], "cn-only", "cn.test", NULL, 25);
    leaf_make(&leaves[IPONLY], "ip-only", "usher test", "IP:127.0.0.1", 26);
    /* OTHER's key is another key: a pair that does not match */
    tlsfix_write("other", leaves[OTHER].x, other_key, leaves[OTHER].cert, leaves[OTHER].key);
    X509 *ox = tlsfix_cert(other_key, "other.test", "DNS:other.test,DNS:www.other.test", 24, ca,
                           ca_key, false);
    X509_free(leaves[OTHER].x);
    leaves[OTHER].x = ox;
    tlsfix_write("other", ox, other_key, leaves[OTHER].cert, leaves[OTHER].key);

    test_selection();
    test_strict();
    test_misdirected();
    test_info();
    test_errors();
    test_alpn();
    test_resumption(TLS1_3_VERSION);
    test_resumption(TLS1_2_VERSION);
    test_lifetime();
    test_scale();

    for (int i = 0; i < NLEAVES; i++)
        X509_free(leaves[i].x);
    X509_free(ca);
    EVP_PKEY_free(ca_key);
    EVP_PKEY_free(leaf_key);
    EVP_PKEY_free(other_key);
    tlsfix_cleanup();
    return check_report("test_certs");
}
