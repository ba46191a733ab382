/* TLS to backends, the client side. A struct tlsc_ctx lives in its
 * SSL_CTX's ex_data and dies with it: its reference count is the SSL_CTX's
 * own, so every SSL made from it keeps it alive without a second count.
 *
 * Session resumption, per backend: the slot holds one box {session, the
 * SSL_CTX that made it}. The new-session callback (SSL_CTX_sess_set_new_cb,
 * which OpenSSL calls when a session becomes resumable: at the end of a
 * TLS 1.2 handshake, or when a TLS 1.3 NewSessionTicket arrives after the
 * handshake, inside a later SSL_read) swaps a new box in. A connect takes
 * the box out (an atomic exchange: the taker owns it, so no reader can see
 * it freed), offers the session if the box is from the same context, and
 * puts it back unless a newer box arrived meanwhile. Two connects at the
 * same moment: the second sees an empty slot and makes a full handshake,
 * which is all it costs. */
#include "tlsclient.h"

#include <arpa/inet.h>
#include <errno.h>
#include <ev.h>
#include <openssl/err.h>
#include <openssl/x509v3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "net.h"

struct tlsc_ctx {
    SSL_CTX *ssl;
    bool verify;
    char *sni; /* NULL: each connection's host */
};

/* What a slot holds. */
struct box {
    SSL_SESSION *sess;
    SSL_CTX *ctx; /* referenced: a session is offered through its own context only */
};

/* OpenSSL's ex_data indexes, registered once per process (the only state
 * this module keeps outside its objects; read-only once registered). */
static CRYPTO_ONCE once = CRYPTO_ONCE_STATIC_INIT;
static int ctx_index = -1; /* SSL_CTX -> its struct tlsc_ctx (freed with it) */
static int ssl_index = -1; /* SSL -> its backend's struct tlsc_session */
static int err_index = -1; /* SSL -> OpenSSL's reason of its last TLS error (static text) */

static void ctx_ex_free(void *parent, void *ptr, CRYPTO_EX_DATA *ad, int idx, long argl, void *argp)
{
    struct tlsc_ctx *c = ptr;
    if (!c)
        return;
    free(c->sni);
    free(c);
}

static void indexes_init(void)
{
    ctx_index = SSL_CTX_get_ex_new_index(0, NULL, NULL, NULL, ctx_ex_free);
    ssl_index = SSL_get_ex_new_index(0, NULL, NULL, NULL, NULL);
    err_index = SSL_get_ex_new_index(0, NULL, NULL, NULL, NULL);
}

static bool indexes_ready(void)
{
    return CRYPTO_THREAD_run_once(&once, indexes_init) && ctx_index >= 0 && ssl_index >= 0 &&
           err_index >= 0;
}

/* OpenSSL's reason for the last error, without the numeric code. */
static const char *openssl_reason(void)
{
    unsigned long e = ERR_peek_last_error();
    const char *r = e ? ERR_reason_error_string(e) : NULL;
    return r ? r : "unknown error";
}

static int readable(const char *path, char *err, size_t cap)
{
    FILE *f = fopen(path, "r");
    if (!f) {
        snprintf(err, cap, "cannot read %s: %s", path, strerror(errno));
        return -1;
    }
    fclose(f);
    return 0;
}

int tlsc_load_cert_key(SSL_CTX *ctx, const char *cert, const char *key, char *err, size_t cap)
{
    if (readable(cert, err, cap) < 0)
        return -1;
    ERR_clear_error();
    if (SSL_CTX_use_certificate_chain_file(ctx, cert) != 1) {
        snprintf(err, cap, "no certificate in %s (bad PEM?): %s", cert, openssl_reason());
        goto fail;
    }
    if (readable(key, err, cap) < 0)
        return -1;
    if (SSL_CTX_use_PrivateKey_file(ctx, key, SSL_FILETYPE_PEM) != 1) {
        if (ERR_GET_REASON(ERR_peek_last_error()) == X509_R_KEY_VALUES_MISMATCH)
            snprintf(err, cap,
                     "the private key does not match the certificate: key %s, certificate %s", key,
                     cert);
        else
            snprintf(err, cap, "no private key in %s (bad PEM?): %s", key, openssl_reason());
        goto fail;
    }
    if (SSL_CTX_check_private_key(ctx) != 1) {
        snprintf(err, cap, "the private key does not match the certificate: key %s, certificate %s",
                 key, cert);
        goto fail;
    }
    ERR_clear_error();
    return 0;
fail:
    ERR_clear_error();
    return -1;
}

static void box_free(struct box *b)
{
    if (!b)
        return;
    SSL_SESSION_free(b->sess);
    SSL_CTX_free(b->ctx);
    free(b);
}

/* A session became resumable on a connection with a slot: it replaces the
 * slot's. Returns 1: the reference OpenSSL handed over is kept. */
static int new_session_cb(SSL *ssl, SSL_SESSION *sess)
{
    struct tlsc_session *slot = SSL_get_ex_data(ssl, ssl_index);
    if (!slot || !SSL_SESSION_is_resumable(sess))
        return 0;
    struct box *b = malloc(sizeof(*b));
    if (!b)
        return 0;
    b->sess = sess;
    b->ctx = SSL_get_SSL_CTX(ssl);
    SSL_CTX_up_ref(b->ctx);
    box_free(__atomic_exchange_n((struct box **)&slot->box, b, __ATOMIC_ACQ_REL));
    return 1;
}

struct tlsc_ctx *tlsc_ctx_new(const struct tlsc_params *p, char *err, size_t cap)
{
    if (!indexes_ready()) {
        snprintf(err, cap, "cannot initialise OpenSSL");
        return NULL;
    }
    struct tlsc_ctx *c = calloc(1, sizeof(*c));
    SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
    if (!c || !ctx || SSL_CTX_set_ex_data(ctx, ctx_index, c) != 1) {
        snprintf(err, cap, "cannot create a TLS context: %s", openssl_reason());
        free(c);
        SSL_CTX_free(ctx);
        ERR_clear_error();
        return NULL;
    }
    /* from here on the SSL_CTX owns <c>: freeing it frees both */
    c->ssl = ctx;
    c->verify = p->verify;
    if (p->sni && !(c->sni = strdup(p->sni))) {
        snprintf(err, cap, "out of memory");
        goto fail;
    }
    SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
    /* renegotiation buys a backend nothing and costs us a code path */
    SSL_CTX_set_options(ctx, SSL_OP_NO_RENEGOTIATION);
    /* partial writes, and retries from a buffer that moved (compaction) */
    SSL_CTX_set_mode(ctx, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER |
                              SSL_MODE_RELEASE_BUFFERS);
    /* sessions go to the backends' slots, never to a cache of the context
     * (which would be keyed by nothing we control) */
    SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_CLIENT | SSL_SESS_CACHE_NO_INTERNAL_STORE);
    SSL_CTX_sess_set_new_cb(ctx, new_session_cb);
    SSL_CTX_set_verify(ctx, p->verify ? SSL_VERIFY_PEER : SSL_VERIFY_NONE, NULL);
    /* a CA file is loaded even with verify: false, so a bad one is found
     * now rather than on the day verification is turned on */
    if (p->ca) {
        if (readable(p->ca, err, cap) < 0)
            goto fail;
        ERR_clear_error();
        if (SSL_CTX_load_verify_locations(ctx, p->ca, NULL) != 1) {
            snprintf(err, cap, "no CA certificate in %s (bad PEM?): %s", p->ca, openssl_reason());
            goto fail;
        }
    } else if (p->verify && SSL_CTX_set_default_verify_paths(ctx) != 1) {
        snprintf(err, cap, "cannot load the system's trust store: %s", openssl_reason());
        goto fail;
    }
    if (p->cert && p->key && tlsc_load_cert_key(ctx, p->cert, p->key, err, cap) < 0)
        goto fail;
    /* SSL_CTX_set_alpn_protos returns 0 on success */
    if (p->alpn && p->alpn_len &&
        SSL_CTX_set_alpn_protos(ctx, (const unsigned char *)p->alpn, (unsigned)p->alpn_len) != 0) {
        snprintf(err, cap, "cannot set ALPN: %s", openssl_reason());
        goto fail;
    }
    ERR_clear_error();
    return c;
fail:
    ERR_clear_error();
    SSL_CTX_free(ctx); /* frees <c> too */
    return NULL;
}

struct tlsc_ctx *tlsc_ctx_ref(struct tlsc_ctx *c)
{
    if (c)
        SSL_CTX_up_ref(c->ssl);
    return c;
}

void tlsc_ctx_free(struct tlsc_ctx *c)
{
    if (c)
        SSL_CTX_free(c->ssl);
}

bool tlsc_ctx_verifies(const struct tlsc_ctx *c)
{
    return c && c->verify;
}

static bool is_ip_literal(const char *host)
{
    unsigned char buf[sizeof(struct in6_addr)];
    return inet_pton(AF_INET, host, buf) == 1 || inet_pton(AF_INET6, host, buf) == 1;
}

/* Offers the slot's session if it came from <ctx>. */
static void session_offer(SSL *ssl, SSL_CTX *ctx, struct tlsc_session *slot)
{
    struct box **where = (struct box **)&slot->box;
    struct box *b = __atomic_exchange_n(where, NULL, __ATOMIC_ACQ_REL);
    if (!b)
        return;
    if (b->ctx != ctx || !SSL_SESSION_is_resumable(b->sess)) {
        box_free(b); /* made under other settings: never resumed */
        return;
    }
    SSL_set_session(ssl, b->sess); /* takes its own reference */
    struct box *expected = NULL;
    if (!__atomic_compare_exchange_n(where, &expected, b, false, __ATOMIC_ACQ_REL,
                                     __ATOMIC_ACQUIRE))
        box_free(b); /* a newer session arrived meanwhile: it stays */
}

SSL *tlsc_conn_new(struct tlsc_ctx *c, int fd, const char *host, struct tlsc_session *slot,
                   const char *alpn, size_t alpn_len, char *err, size_t cap)
{
    SSL *ssl = SSL_new(c->ssl);
    if (!ssl || SSL_set_fd(ssl, fd) != 1) {
        snprintf(err, cap, "cannot create a TLS connection: %s", openssl_reason());
        goto fail;
    }
    SSL_set_connect_state(ssl);
    const char *name = c->sni ? c->sni : host;
    bool ip = !c->sni && host && is_ip_literal(host);
    /* RFC 6066 section 3: an IP literal is never sent as SNI */
    if (name && !ip && SSL_set_tlsext_host_name(ssl, name) != 1) {
        snprintf(err, cap, "cannot send the server name %s: %s", name, openssl_reason());
        goto fail;
    }
    if (c->verify) {
        int ok;
        if (ip) {
            ok = X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(ssl), host);
        } else if (name) {
            /* "*.example.com" covers one label, as RFC 6125 section 6.4.3 says */
            SSL_set_hostflags(ssl, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
            ok = SSL_set1_host(ssl, name);
        } else {
            snprintf(err, cap, "no name to verify the certificate against (set tls.sni)");
            goto fail;
        }
        if (ok != 1) {
            snprintf(err, cap, "cannot verify the name %s: %s", name ? name : "?",
                     openssl_reason());
            goto fail;
        }
    }
    if (alpn && alpn_len &&
        SSL_set_alpn_protos(ssl, (const unsigned char *)alpn, (unsigned)alpn_len) != 0) {
        snprintf(err, cap, "cannot set ALPN: %s", openssl_reason());
        goto fail;
    }
    if (slot) {
        SSL_set_ex_data(ssl, ssl_index, slot);
        session_offer(ssl, c->ssl, slot);
    }
    ERR_clear_error();
    return ssl;
fail:
    ERR_clear_error();
    SSL_free(ssl);
    return NULL;
}

/* Why a handshake failed, in OpenSSL's words. Keeps errno. */
static void failure_reason(SSL *ssl, int ssl_err, char *err, size_t cap)
{
    int saved = errno;
    long v = SSL_get_verify_result(ssl);
    unsigned long e = ERR_peek_error();
    if ((SSL_get_verify_mode(ssl) & SSL_VERIFY_PEER) && v != X509_V_OK) {
        snprintf(err, cap, "certificate verify failed: %s", X509_verify_cert_error_string(v));
        saved = 0;
    } else if (e) {
        const char *r = ERR_reason_error_string(e);
        snprintf(err, cap, "handshake failed: %s", r ? r : "unknown error");
        saved = 0;
    } else if (ssl_err == SSL_ERROR_SYSCALL && saved) {
        snprintf(err, cap, "handshake failed: %s", strerror(saved));
    } else {
        snprintf(err, cap, "connection closed during the handshake");
        saved = 0;
    }
    ERR_clear_error();
    errno = saved;
}

int tlsc_handshake(SSL *ssl, unsigned *want, char *err, size_t cap)
{
    *want = 0;
    ERR_clear_error(); /* SSL_get_error() reads the queue: only this call's errors */
    errno = 0;
    int ret = SSL_do_handshake(ssl);
    if (ret == 1)
        return 0;
    int e = SSL_get_error(ssl, ret);
    switch (e) {
    case SSL_ERROR_WANT_READ:
        *want = EV_READ;
        return NET_AGAIN;
    case SSL_ERROR_WANT_WRITE:
        *want = EV_WRITE;
        return NET_AGAIN;
    default:
        failure_reason(ssl, e, err, cap);
        return NET_ERROR;
    }
}

bool tlsc_resumed(const SSL *ssl)
{
    return SSL_session_reused(ssl) == 1;
}

void tlsc_alpn_selected(const SSL *ssl, const unsigned char **proto, unsigned *len)
{
    *proto = NULL;
    *len = 0;
    SSL_get0_alpn_selected(ssl, proto, len);
}

/* Maps an SSL_* result to AGAIN (with the events to wait for), 0 (a
 * close) or ERROR. */
static ssize_t classify(SSL *ssl, int ret, unsigned *want)
{
    switch (SSL_get_error(ssl, ret)) {
    case SSL_ERROR_WANT_READ:
        *want = EV_READ;
        return NET_AGAIN;
    case SSL_ERROR_WANT_WRITE:
        *want = EV_WRITE;
        return NET_AGAIN;
    case SSL_ERROR_ZERO_RETURN:
        return 0;
    case SSL_ERROR_SYSCALL: {
        int saved = errno;
        ERR_clear_error();
        errno = saved;
        /* EOF without close_notify is an abrupt close, not a fault */
        return saved == 0 ? 0 : NET_ERROR;
    }
    default: {
        /* OpenSSL's reason strings are static: kept for tlsc_error() */
        unsigned long e = ERR_peek_error();
        const char *r = e ? ERR_reason_error_string(e) : NULL;
        SSL_set_ex_data(ssl, err_index, (void *)(r ? r : "unknown error"));
        ERR_clear_error();
        errno = 0;
        return NET_ERROR;
    }
    }
}

const char *tlsc_error(const SSL *ssl)
{
    return err_index < 0 ? NULL : SSL_get_ex_data(ssl, err_index);
}

ssize_t tlsc_recv(SSL *ssl, char *p, size_t n, unsigned *want)
{
    *want = 0;
    ERR_clear_error();
    errno = 0;
    size_t got = 0;
    int ret = SSL_read_ex(ssl, p, n, &got);
    if (ret == 1)
        return (ssize_t)got;
    return classify(ssl, ret, want);
}

ssize_t tlsc_send(SSL *ssl, const char *p, size_t n, unsigned *want)
{
    *want = 0;
    ERR_clear_error();
    errno = 0;
    size_t put = 0;
    int ret = SSL_write_ex(ssl, p, n, &put);
    if (ret == 1)
        return (ssize_t)put;
    ssize_t rc = classify(ssl, ret, want);
    return rc == 0 ? NET_ERROR : rc; /* a close while writing is a failure */
}

void tlsc_close(SSL *ssl)
{
    if (!ssl)
        return;
    if (SSL_is_init_finished(ssl))
        SSL_shutdown(ssl);
    SSL_free(ssl);
    ERR_clear_error();
}

void tlsc_session_clear(struct tlsc_session *slot)
{
    box_free(__atomic_exchange_n((struct box **)&slot->box, NULL, __ATOMIC_ACQ_REL));
}

bool tlsc_session_held(const struct tlsc_session *slot)
{
    return __atomic_load_n((struct box *const *)&slot->box, __ATOMIC_ACQUIRE) != NULL;
}
