/* TLS to backends, the client side (OpenSSL): one context per pool
 * (pools[].tls), one session slot per backend, and the non-blocking
 * handshake and I/O of one connection. It sits on the bottom floor so that
 * both users may call it: health checks (health/check.c) and the data
 * plane's upstream connections (proxy/core). No logging, no global state
 * beyond OpenSSL's once-registered ex_data indexes; a context may be built
 * on any thread (the reload's background job) and used from every thread.
 *
 * How a backend connection uses it:
 *   ctx  = tlsc_ctx_new(&params, err, cap)          once per pool and config
 *   ssl  = tlsc_conn_new(ctx, fd, host, &slot, ...)  after the TCP connect
 *                                                    (and after a PROXY header)
 *   tlsc_handshake(ssl, &want, err, cap) until 0     NET_AGAIN: wait for <want>
 *   tlsc_send / tlsc_recv                            the application bytes
 *   tlsc_close(ssl), then close(fd)
 * A handshake or verification failure is a connect failure: the reason in
 * <err> ("certificate verify failed: hostname mismatch") is OpenSSL's, for
 * one log line per backend and state change. */
#ifndef USHER_NET_TLSCLIENT_H
#define USHER_NET_TLSCLIENT_H

#include <openssl/ssl.h>
#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

#include "tlsclient-t.h"

/* Builds a pool's client context: TLS 1.2 and 1.3, verification as
 * <p>->verify says (chain against <p>->ca or the system's trust store, and
 * the name per connection), the client certificate if given, ALPN if given,
 * client-side session caching into the connections' slots. Reads files:
 * meant for a background thread. Returns the context (one reference), or
 * NULL with a reason in <err> (<cap> bytes) naming the file: "ca
 * /etc/x.pem: cannot read: No such file or directory". */
struct tlsc_ctx *tlsc_ctx_new(const struct tlsc_params *p, char *err, size_t cap);

/* Takes another reference to <c> (a connection, a backend, a snapshot).
 * Returns <c>; NULL is allowed. */
struct tlsc_ctx *tlsc_ctx_ref(struct tlsc_ctx *c);

/* Drops a reference to <c>; the last one frees it. NULL is allowed. */
void tlsc_ctx_free(struct tlsc_ctx *c);

/* True if <c> verifies the backend's certificate. */
bool tlsc_ctx_verifies(const struct tlsc_ctx *c);

/* Starts the TLS client side on the connected socket <fd>: SNI and the
 * name checked are <c>'s sni, else <host> (the backend address's host:
 * a DNS name, or an IP literal, which is then checked against the
 * certificate's IP addresses and no SNI is sent). <slot> (NULL: no
 * resumption) offers the backend's last session and receives the new one,
 * also a TLS 1.3 ticket that arrives after the handshake. <alpn> (wire
 * format) replaces the context's ALPN list for this connection (a health
 * check speaking HTTP/1.1 on an h2 pool); NULL keeps it. Returns the SSL
 * (it holds its own reference to <c>), or NULL with the reason in <err>. */
SSL *tlsc_conn_new(struct tlsc_ctx *c, int fd, const char *host, struct tlsc_session *slot,
                   const char *alpn, size_t alpn_len, char *err, size_t cap);

/* Steps the handshake. Returns 0 when done (verified if the context
 * verifies), NET_AGAIN with *<want> the libev events to wait for, or
 * NET_ERROR with the reason in <err>: "certificate verify failed:
 * hostname mismatch", "handshake failed: tlsv1 alert unknown ca",
 * "connection closed during the handshake"... errno is kept when the
 * socket itself failed (ECONNRESET...), 0 otherwise. */
int tlsc_handshake(SSL *ssl, unsigned *want, char *err, size_t cap);

/* True if the handshake resumed the backend's last session. */
bool tlsc_resumed(const SSL *ssl);

/* The protocol ALPN selected (<len> 0: none). */
void tlsc_alpn_selected(const SSL *ssl, const unsigned char **proto, unsigned *len);

/* Reads up to <n> bytes: the count (> 0), 0 on a close (clean or not),
 * NET_AGAIN with *<want> set, or NET_ERROR (errno kept for a socket
 * error, 0 for a TLS one: an alert, a bad record). */
ssize_t tlsc_recv(SSL *ssl, char *p, size_t n, unsigned *want);

/* Writes up to <n> bytes: the count (> 0), NET_AGAIN with *<want> set, or
 * NET_ERROR (errno as for tlsc_recv). */
ssize_t tlsc_send(SSL *ssl, const char *p, size_t n, unsigned *want);

/* After tlsc_recv or tlsc_send failed with errno 0: OpenSSL's reason
 * ("tlsv13 alert certificate required": the backend refused our client
 * certificate after a TLS 1.3 handshake that looked complete), or NULL. */
const char *tlsc_error(const SSL *ssl);

/* Sends close_notify when the handshake completed (best effort, never
 * blocks) and frees <ssl>; the caller closes the socket. NULL is fine. */
void tlsc_close(SSL *ssl);

/* Empties <slot> (a backend is freed, or its pool's TLS settings
 * changed). Call when no connection can store into it anymore. */
void tlsc_session_clear(struct tlsc_session *slot);

/* True if <slot> holds a session (tests, /status). */
bool tlsc_session_held(const struct tlsc_session *slot);

/* Loads the certificate chain <cert> and its private key <key> (PEM
 * files) into <ctx> and checks that they match. Shared by this client side
 * (mutual TLS) and the server side (proxy/core/certs.c). Returns 0, or -1
 * with a reason in <err> that names the file: "cannot read cert.pem: No
 * such file or directory", "no certificate in cert.pem (bad PEM?): no start
 * line", "the private key does not match the certificate: key key.pem,
 * certificate cert.pem". */
int tlsc_load_cert_key(SSL_CTX *ctx, const char *cert, const char *key, char *err, size_t cap);

#endif
