/* TLS to backends, the client side: types only (tlsclient.h has the
 * functions), so a struct that embeds a session slot (health's struct
 * backend) does not pull in OpenSSL. */
#ifndef USHER_NET_TLSCLIENT_T_H
#define USHER_NET_TLSCLIENT_T_H

#include <stdbool.h>
#include <stddef.h>

/* ALPN lists in wire format (length-prefixed names), for tlsc_params.alpn
 * and tlsc_conn_new: what a pool's protocol offers. */
#define TLSC_ALPN_H2 "\x02h2"
#define TLSC_ALPN_HTTP11 "\x08http/1.1"

/* What a pool's `tls` says, as plain values (proxy/net knows no conf):
 * the caller maps conf_pool_tls and the pool's protocol onto it. Strings
 * are copied where kept; they need not outlive tlsc_ctx_new(). */
struct tlsc_params {
    const char *ca;   /* PEM trust anchors; NULL: the system's default store */
    bool verify;      /* check the chain and the name (sni, else each connection's host) */
    const char *sni;  /* server name sent and verified; NULL: the connection's host when it
                         is a DNS name, none for an IP literal (then the IP is verified) */
    const char *cert; /* client certificate chain (PEM) for mutual TLS, with <key>; */
    const char *key;  /* NULL both: none */
    const char *alpn; /* protocols offered (wire format, e.g. TLSC_ALPN_H2); NULL: no ALPN */
    size_t alpn_len;
};

/* A pool's client context: immutable once built, reference counted
 * (atomically: any thread may take or drop a reference). Opaque. */
struct tlsc_ctx;

/* A backend's last TLS session, offered on its next connect (resumption):
 * zero-initialised it is empty. Lock-free: every thread connecting to the
 * backend (workers, the health checks' loop) shares it. A session is only
 * offered through the context that made it, so a reload that changes a
 * pool's CA or verify never resumes a session verified under the old
 * settings. Must outlive every connection made with it (tlsc_conn_new). */
struct tlsc_session {
    void *box; /* atomic; internal */
};

#endif
