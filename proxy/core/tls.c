#include "tls.h"

#include <errno.h>
#include <ev.h>
#include <openssl/err.h>
#include <openssl/x509.h>
#include <stdio.h>
#include <string.h>

#include "../net/net.h"
#include "../net/tlsclient.h"

/* ALPN wire format: length-prefixed protocol names, in usher's order of
 * preference (SSL_select_next_proto picks the first of ours the client
 * offers, whatever its own order). */
static const unsigned char alpn_http11[] = {8, 'h', 't', 't', 'p', '/', '1', '.', '1'};
static const unsigned char alpn_h2_http11[] = {2,   'h', '2', 8,   'h', 't', 't',
                                               'p', '/', '1', '.', '1'};

/* Picks h2 (when offered on this listener) or http/1.1 among what the
 * client offers; a client offering neither gets no ALPN answer and falls
 * back or fails on its own terms (RFC 7301 allows both). */
static int alpn_select(SSL *ssl, const unsigned char **out, unsigned char *out_len,
                       const unsigned char *in, unsigned int in_len, void *arg)
{
    const unsigned char *ours = arg ? alpn_h2_http11 : alpn_http11;
    unsigned int ours_len = arg ? sizeof(alpn_h2_http11) : sizeof(alpn_http11);
    unsigned char *sel = NULL;
    if (SSL_select_next_proto(&sel, out_len, ours, ours_len, in, in_len) !=
        OPENSSL_NPN_NEGOTIATED)
        return SSL_TLSEXT_ERR_NOACK;
    *out = sel;
    return SSL_TLSEXT_ERR_OK;
}

bool tls_alpn_is_h2(SSL *ssl)
{
    const unsigned char *p = NULL;
    unsigned int n = 0;
    SSL_get0_alpn_selected(ssl, &p, &n);
    return n == 2 && p[0] == 'h' && p[1] == '2';
}

static void openssl_reason(char *err, size_t cap, const char *what)
{
    unsigned long e = ERR_get_error();
    char buf[256];
    ERR_error_string_n(e, buf, sizeof(buf));
    snprintf(err, cap, "%s: %s", what, e ? buf : "unknown error");
    ERR_clear_error();
}

SSL_CTX *tls_context_new(const char *cert, const char *key, enum tls_alpn alpn, char *err,
                         size_t cap)
{
    SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
    if (!ctx) {
        openssl_reason(err, cap, "cannot create a TLS context");
        return NULL;
    }
    SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
    /* renegotiation is a CPU-exhaustion lever for clients and never needed */
    SSL_CTX_set_options(ctx, SSL_OP_NO_RENEGOTIATION | SSL_OP_CIPHER_SERVER_PREFERENCE);
    /* partial writes, and retries from a buffer that moved (compaction) */
    SSL_CTX_set_mode(ctx, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER |
                              SSL_MODE_RELEASE_BUFFERS);
    /* a record's header and body in one read(2), not two */
    SSL_CTX_set_read_ahead(ctx, 1);
    if (SSL_CTX_use_certificate_chain_file(ctx, cert) != 1) {
        openssl_reason(err, cap, "cannot load the certificate");
        goto fail;
    }
    if (SSL_CTX_use_PrivateKey_file(ctx, key, SSL_FILETYPE_PEM) != 1) {
        if (ERR_GET_REASON(ERR_peek_last_error()) == X509_R_KEY_VALUES_MISMATCH) {
            snprintf(err, cap, "the private key does not match the certificate");
            ERR_clear_error();
        } else {
            openssl_reason(err, cap, "cannot load the private key");
        }
        goto fail;
    }
    if (SSL_CTX_check_private_key(ctx) != 1) {
        openssl_reason(err, cap, "the private key does not match the certificate");
        goto fail;
    }
    /* the callback's argument says whether h2 is on offer (non-NULL) */
    static const char h2_offered;
    if (alpn != TLS_ALPN_NONE)
        SSL_CTX_set_alpn_select_cb(ctx, alpn_select,
                                   alpn == TLS_ALPN_H2_HTTP11 ? (void *)&h2_offered : NULL);
    return ctx;
fail:
    SSL_CTX_free(ctx);
    return NULL;
}

struct tls_alpn_list tls_alpn_wire(enum tls_alpn alpn)
{
    switch (alpn) {
    case TLS_ALPN_HTTP11:
        return (struct tls_alpn_list){alpn_http11, sizeof(alpn_http11)};
    case TLS_ALPN_H2_HTTP11:
        return (struct tls_alpn_list){alpn_h2_http11, sizeof(alpn_h2_http11)};
    case TLS_ALPN_NONE:
        break;
    }
    return (struct tls_alpn_list){NULL, 0};
}

/* The first protocol of the server's list that the client offers. */
static int alpn_select_list(SSL *ssl, const unsigned char **out, unsigned char *out_len,
                            const unsigned char *in, unsigned int in_len, void *arg)
{
    const struct tls_alpn_list *a = arg;
    unsigned char *sel = NULL;
    if (SSL_select_next_proto(&sel, out_len, a->list, (unsigned)a->len, in, in_len) !=
        OPENSSL_NPN_NEGOTIATED)
        return SSL_TLSEXT_ERR_NOACK;
    *out = sel;
    return SSL_TLSEXT_ERR_OK;
}

SSL_CTX *tls_server_context_new(const char *cert, const char *key, const struct tls_alpn_list *alpn,
                                char *err, size_t cap)
{
    SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
    if (!ctx) {
        openssl_reason(err, cap, "cannot create a TLS context");
        return NULL;
    }
    SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
    /* renegotiation is a CPU-exhaustion lever for clients and never needed */
    SSL_CTX_set_options(ctx, SSL_OP_NO_RENEGOTIATION | SSL_OP_CIPHER_SERVER_PREFERENCE);
    /* partial writes, and retries from a buffer that moved (compaction) */
    SSL_CTX_set_mode(ctx, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER |
                              SSL_MODE_RELEASE_BUFFERS);
    /* a record's header and body in one read(2), not two */
    SSL_CTX_set_read_ahead(ctx, 1);
    if (tlsc_load_cert_key(ctx, cert, key, err, cap) < 0) {
        SSL_CTX_free(ctx);
        return NULL;
    }
    if (alpn && alpn->list && alpn->len)
        SSL_CTX_set_alpn_select_cb(ctx, alpn_select_list, (void *)alpn);
    return ctx;
}

void tls_context_free(SSL_CTX *ctx)
{
    SSL_CTX_free(ctx);
}

SSL_CTX *tls_context_ref(SSL_CTX *ctx)
{
    if (ctx)
        SSL_CTX_up_ref(ctx);
    return ctx;
}

SSL *tls_accept_new(SSL_CTX *ctx, int fd)
{
    SSL *ssl = SSL_new(ctx);
    if (!ssl)
        return NULL;
    if (SSL_set_fd(ssl, fd) != 1) {
        SSL_free(ssl);
        return NULL;
    }
    SSL_set_accept_state(ssl);
    return ssl;
}

void tls_close(SSL *ssl)
{
    if (!ssl)
        return;
    if (SSL_is_init_finished(ssl))
        SSL_shutdown(ssl);
    SSL_free(ssl);
    ERR_clear_error();
}

/* Maps an SSL_* result to AGAIN (with the events to wait for) or ERROR. */
static int classify(SSL *ssl, int ret, unsigned *want)
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
    case SSL_ERROR_SYSCALL:
        ERR_clear_error();
        /* EOF without close_notify is an abrupt close, not a fault */
        return errno == 0 ? 0 : NET_ERROR;
    default:
        ERR_clear_error();
        return NET_ERROR;
    }
}

int tls_handshake(SSL *ssl, unsigned *want)
{
    *want = 0;
    errno = 0;
    int ret = SSL_do_handshake(ssl);
    if (ret == 1)
        return 0;
    int rc = classify(ssl, ret, want);
    return rc == 0 ? NET_ERROR : rc;
}

ssize_t tls_recv(SSL *ssl, char *p, size_t n, unsigned *want)
{
    *want = 0;
    errno = 0;
    size_t got = 0;
    int ret = SSL_read_ex(ssl, p, n, &got);
    if (ret == 1)
        return (ssize_t)got;
    return classify(ssl, ret, want);
}

ssize_t tls_send(SSL *ssl, const char *p, size_t n, unsigned *want)
{
    *want = 0;
    errno = 0;
    size_t put = 0;
    int ret = SSL_write_ex(ssl, p, n, &put);
    if (ret == 1)
        return (ssize_t)put;
    int rc = classify(ssl, ret, want);
    if (rc == NET_AGAIN)
        return 0;
    return NET_ERROR;
}
