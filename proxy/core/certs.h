/* Certificate sets of TLS listeners (DESIGN "Routes and certificates"):
 * a listener's `tls.cert` (the default) and `tls.certificates`, each with
 * its own server SSL_CTX, picked per handshake by the client's SNI name
 * through a host index (proxy/core/hostidx.c, one-label wildcards as
 * certificates mean them): the exact name, else the longest matching
 * wildcard, else the default. With `strict_sni` a name no certificate
 * covers, or no SNI at all, is refused with an unrecognized_name alert.
 * The cost of a handshake's selection does not depend on the number of
 * certificates: one pass over the name and one hash probe per label.
 *
 * A set is immutable once built and shared by every worker.
 *
 * Its lifetime is its default context's: the set lives in that SSL_CTX's
 * ex_data and is freed with it, so a set reference IS an SSL_CTX reference
 * (cert_set_ref = SSL_CTX_up_ref of cert_set_ctx(set)). Code that holds an
 * SSL_CTX per listener (tls_context_ref / tls_context_free,
 * tls_accept_new(ctx, fd)) holds the whole set without knowing it: every
 * connection's SSL keeps its initial context, hence its set, until it is
 * freed, so a reload that swaps a listener's set changes new handshakes
 * only.
 *
 * Which callback switches the context, and why: OpenSSL's client hello
 * callback (SSL_CTX_set_client_hello_cb), not the servername callback. The
 * client hello callback runs before OpenSSL looks at the session the
 * client offers (a TLS 1.2 session ID or ticket, a TLS 1.3 PSK); the
 * servername callback runs after resumption was decided (its manual page:
 * "it happens after session resumption has occurred"). Each certificate's
 * context has its own session ID context (the certificate's SHA-256), and
 * OpenSSL resumes a session only under the session ID context it was made
 * in, so switching first means: a session is resumed only by a handshake
 * that selected the same certificate again (a resumed handshake sends no
 * certificate, so resuming a session of certificate A for an SNI that
 * selects B would present A without ever showing it). Tickets are sealed
 * with the default context's keys (OpenSSL keeps the initial context as
 * the session context), one set of keys per set, shared by every worker.
 * A servername callback that only says "accepted" stays on every context:
 * OpenSSL acknowledges the SNI extension only through it.
 *
 * Names: a certificate covers the DNS names of its subjectAltName, as
 * written (wildcards included; IP addresses are not names SNI can carry).
 * Only a certificate without any DNS name in its subjectAltName is taken
 * by its subject's CN, when the CN is a host name (RFC 6125 section 6.4.4,
 * as OpenSSL's X509_check_host does). An entry of `tls.certificates` that
 * covers no name is a config error (SNI could never select it: surely the
 * wrong file); the default `tls.cert` may cover none (it serves whatever
 * no other certificate covers). When two certificates name the same host,
 * the first one written in `tls.certificates` wins, and any of them wins
 * over the default. */
#ifndef USHER_PROXY_CERTS_H
#define USHER_PROXY_CERTS_H

#include <openssl/ssl.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "../../conf/conf-t.h"
#include "tls.h"

struct cert_set;

/* "2027-01-05T12:00:00Z": RFC 3339, UTC, whole seconds. */
#define CERT_TIME_LEN sizeof("YYYY-MM-DDTHH:MM:SSZ")

/* One certificate of a set, as /status and the metrics show it. */
struct cert_info {
    char **names;                  /* the names it covers, as the certificate writes them */
    size_t num_names;              /* (0 only for a default that names no host) */
    bool names_from_cn;            /* no subjectAltName DNS name: names[] is the subject's CN */
    char not_after[CERT_TIME_LEN]; /* RFC 3339 UTC; usher_tls_certificate_expiry_seconds */
    int64_t not_after_unix;        /* the same as Unix time in seconds */
    const char *cert;              /* the PEM files it was loaded from (copies of the */
    const char *key;               /* conf's paths: a set outlives its generation) */
};

/* What a set is built with beside the config. */
struct cert_set_params {
    /* the ALPN protocols a handshake may select (wire format, server's
     * preference first; copied): "\x08http/1.1" for an http listener today,
     * "\x02h2\x08http/1.1" with HTTP/2; an empty list: no ALPN (tcp) */
    struct tls_alpn_list alpn;
};

/* Receives one error of cert_set_build(): "file:line:column: key: reason"
 * (the config file as conf->path names it). */
typedef void (*cert_error_fn)(void *arg, const char *message);

/* Why cert_set_refusal() says a strict_sni handshake was refused: the
 * `reason` label of usher_tls_handshake_errors_total. */
extern const char cert_refused_no_sni[];      /* "no_sni": the client sent no SNI */
extern const char cert_refused_unknown_sni[]; /* "unknown_sni": no certificate covers it */

/* Builds the set of listener <li> of <conf> (which must have tls): loads
 * every certificate and key (the default first, then tls.certificates in
 * order), reads their names and expiry, indexes the names. Blocks on file
 * reads, logs nothing, touches no global state: meant for the reload's
 * background thread. Every problem is handed to <error> (<arg>) at the
 * position of its key: "listeners[0].tls" for the default pair (at the
 * listener), "listeners[0].tls.certificates[2]" for another: a file that
 * cannot be read, no PEM certificate or key in it, a key that does not
 * match its certificate, an entry of tls.certificates that names no host.
 * Returns 0 with *<out> set (one reference), or -1 after reporting
 * (nothing kept). */
int cert_set_build(const struct conf *conf, size_t li, const struct cert_set_params *params,
                   struct cert_set **out, cert_error_fn error, void *arg);

/* Another reference to <set> (a listener, a snapshot). Returns <set>;
 * NULL is allowed. Same as SSL_CTX_up_ref(cert_set_ctx(set)). */
struct cert_set *cert_set_ref(struct cert_set *set);

/* Drops a reference; the last one (also the last SSL_free of a connection
 * it served) frees the set and every context of it, on whichever thread
 * that is. NULL is allowed. Same as SSL_CTX_free(cert_set_ctx(set)). */
void cert_set_free(struct cert_set *set);

/* The default certificate's context: accept with it (tls_accept_new), the
 * handshake switches to the certificate the SNI name picks. Borrowed (take
 * tls_context_ref() to keep it; that keeps the set). */
SSL_CTX *cert_set_ctx(const struct cert_set *set);

/* The set a context of it belongs to (any of its certificates' contexts,
 * as SSL_get_SSL_CTX() returns), or NULL for a context of no set.
 * Borrowed. */
struct cert_set *cert_set_of(const SSL_CTX *ctx);

/* The number of certificates of <set>, the default included (>= 1). */
size_t cert_set_count(const struct cert_set *set);

/* Certificate <i> of <set>: 0 is the default, then tls.certificates in
 * order (the order /status lists them in). */
const struct cert_info *cert_set_info(const struct cert_set *set, size_t i);

/* True if the set refuses names it does not cover (strict_sni). */
bool cert_set_strict(const struct cert_set *set);

/* The certificate a handshake with SNI <name>[0..<len>) gets (<name> NULL:
 * no SNI): its index, or -1 when strict_sni refuses it. Exactly what the
 * handshake does (the callback calls it); one trailing dot is ignored. */
long cert_set_select(const struct cert_set *set, const char *name, size_t len);

/* The certificate whose names cover the host of a request's Host or
 * :authority value <host>[0..<len>) (normalised here with
 * route_host_normalize: port and a trailing dot removed, case ignored):
 * its index, or -1 when none does (the default counts only by its own
 * names). */
long cert_set_covering(const struct cert_set *set, const char *host, size_t len);

/* The index of the certificate the handshake of <ssl> presented, or -1
 * when <ssl> does not come from a set (or its handshake has not picked
 * one yet). */
long cert_set_presented(const SSL *ssl);

/* DESIGN's 421 rule, for a request on the TLS connection <ssl> with Host
 * <host>[0..<len>): true when a certificate covers that host and it is not
 * the one this connection presented (the client reused the connection for
 * a host another certificate serves: HTTP/2 connection coalescing). False
 * for a host no certificate covers, and for a connection of no set. */
bool cert_set_misdirected(const SSL *ssl, const char *host, size_t len);

/* After a failed handshake of <ssl>: cert_refused_no_sni or
 * cert_refused_unknown_sni when strict_sni refused it, else NULL (the
 * handshake failed for another reason). */
const char *cert_set_refusal(const SSL *ssl);

#endif
