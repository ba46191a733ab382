/* TLS termination for client connections (OpenSSL). */
#ifndef USHER_PROXY_TLS_H
#define USHER_PROXY_TLS_H

#include <openssl/ssl.h>
#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

/* The application protocols a listener offers by ALPN. */
enum tls_alpn {
    TLS_ALPN_NONE = 0,   /* TCP mode: no ALPN answer */
    TLS_ALPN_HTTP11,     /* http/1.1 only (http2: false) */
    TLS_ALPN_H2_HTTP11,  /* h2 first, then http/1.1 (http2: auto) */
};

/* Builds a server context from a PEM certificate chain and private key:
 * TLS 1.2 and later, no renegotiation, the ALPN choice <alpn>. Returns the
 * context, or NULL with a reason in <err> (<cap> bytes). */
SSL_CTX *tls_context_new(const char *cert, const char *key, enum tls_alpn alpn, char *err,
                         size_t cap);

/* True if the handshake of <ssl> (done) chose h2 by ALPN. */
bool tls_alpn_is_h2(SSL *ssl);

/* An ALPN list a server accepts: protocol names in wire format
 * (length-prefixed, "\x02h2\x08http/1.1"), in the server's order of
 * preference. */
struct tls_alpn_list {
    const unsigned char *list;
    size_t len;
};

/* The wire-format list of an ALPN choice (TLS_ALPN_NONE: empty), static. */
struct tls_alpn_list tls_alpn_wire(enum tls_alpn alpn);

/* Builds a server context with the settings of tls_context_new (TLS 1.2
 * and later, no renegotiation) for the PEM certificate chain <cert> and
 * key <key>. <alpn> (NULL or empty: no ALPN) is what ALPN may select, the
 * first of its protocols the client offers; it is not copied and must
 * outlive the context (proxy/core/certs.c keeps it in the set). Returns
 * the context, or NULL with a reason naming the file in <err>. */
SSL_CTX *tls_server_context_new(const char *cert, const char *key, const struct tls_alpn_list *alpn,
                                char *err, size_t cap);

/* Drops a reference to <ctx> (connections hold their own). NULL is fine. */
void tls_context_free(SSL_CTX *ctx);

/* Another holder of <ctx> (a worker's listener on the same socket): it
 * stays until every holder freed it. Returns <ctx>. */
SSL_CTX *tls_context_ref(SSL_CTX *ctx);

/* Creates the TLS state of an accepted socket <fd>. NULL on failure. */
SSL *tls_accept_new(SSL_CTX *ctx, int fd);

/* Sends close_notify (best effort, never blocks) and frees <ssl>. */
void tls_close(SSL *ssl);

/* Steps the handshake. Returns 0 when done, NET_AGAIN with *<want> set
 * to the libev events it waits for, or NET_ERROR. */
int tls_handshake(SSL *ssl, unsigned *want);

/* Reads up to <n> bytes: returns the count (> 0), 0 on a clean or abrupt
 * close, NET_AGAIN with *<want> set, or NET_ERROR. */
ssize_t tls_recv(SSL *ssl, char *p, size_t n, unsigned *want);

/* Writes up to <n> bytes: returns the count (>= 0; 0 with *<want> set when
 * the socket is full), or NET_ERROR. */
ssize_t tls_send(SSL *ssl, const char *p, size_t n, unsigned *want);

#endif
