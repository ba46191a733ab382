/* Client connections: accept, the TLS handshake, the choice of protocol,
 * and the drain entry points. Once the protocol is known a mux drives the
 * connection — mux_h1.c (HTTP/1.1 and TCP mode) or mux_h2.c (HTTP/2) — and the exchanges it
 * carries (exchange.c); the connection's timer, watcher and closes are in
 * conn.c. */
#include "client.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../net/net.h"
#include "../base/log.h"
#include "conn.h"
#include "fds.h"
#include "mux_h1.h"
#include "mux_h2.h"
#include "tls.h"

const char *client_state_str(enum client_state s)
{
    switch (s) {
    case CLIENT_TLS_HANDSHAKE:
        return "tls_handshake";
    case CLIENT_IDLE:
        return "idle";
    case CLIENT_READING_HEAD:
        return "reading_head";
    case CLIENT_EXCHANGE:
        return "exchange";
    case CLIENT_H2:
        return "h2";
    case CLIENT_LINGERING:
        return "lingering";
    case CLIENT_CLOSED:
        return "closed";
    }
    return "unknown";
}

static bool is_tcp_mode(const struct client *c)
{
    return c->listener->protocol == CONF_PROTO_TCP;
}

/* The handshake is done: the protocol the client and usher agreed on
 * takes the connection. */
static void start_protocol(struct client *c)
{
    if (is_tcp_mode(c))
        mux_h1_start_tcp(c);
    else if (c->down.ssl && c->listener->http2 && tls_alpn_is_h2(c->down.ssl))
        mux_h2_start(c);
    else
        mux_h1_start(c); /* on a plain listener, the h2c preface turns it into HTTP/2 */
}

static void on_handshake(struct client *c)
{
    int rc = tls_handshake(c->down.ssl, &c->down.tls_want);
    if (rc == NET_AGAIN) {
        conn_want(c, c->down.tls_want ? c->down.tls_want : EV_READ);
        return;
    }
    if (rc < 0) {
        log_debug("tls handshake failed", "client=%s listener=%s", c->peer, c->listener->name);
        conn_close(c);
        return;
    }
    c->down.tls_want = 0;
    c->down.readable = true; /* the first request may already sit decrypted in TLS */
    start_protocol(c);
}

static void client_io_cb(struct ev_loop *loop, ev_io *io, int revents)
{
    struct client *c = container_of(io, struct client, io);
    if ((revents & EV_READ) ||
        (c->down.ssl && (revents & EV_WRITE) && c->down.tls_want == EV_WRITE))
        c->down.readable = true;
    switch (c->state) {
    case CLIENT_TLS_HANDSHAKE:
        on_handshake(c);
        return;
    case CLIENT_CLOSED:
        return;
    default:
        c->mux->drive(c);
        return;
    }
}

static void format_peer(char *out, size_t cap, const struct sockaddr_storage *sa)
{
    if (sa->ss_family == AF_INET6)
        inet_ntop(AF_INET6, &((const struct sockaddr_in6 *)sa)->sin6_addr, out, (socklen_t)cap);
    else if (sa->ss_family == AF_INET)
        inet_ntop(AF_INET, &((const struct sockaddr_in *)sa)->sin_addr, out, (socklen_t)cap);
    else
        snprintf(out, cap, "unix");
}

struct client *client_accept(struct worker *w, struct listener *l, int fd,
                             const struct sockaddr_storage *sa)
{
    struct client *c = calloc(1, sizeof(*c));
    if (!c) {
        close(fd);
        return NULL;
    }
    c->w = w;
    c->listener = l;
    side_attach(&c->down, fd, &transport_plain);
    format_peer(c->peer, sizeof(c->peer), sa);
    ev_io_init(&c->io, client_io_cb, fd, 0);
    conn_init(c);
    list_append(&w->clients, &c->link);
    w->num_clients++;
    worker_fds_add(w, 1);
    l->connections++;
    c->head_started_at = ev_now(w->loop);

    if (l->tls_ctx) {
        c->down.ssl = tls_accept_new(l->tls_ctx, fd);
        if (!c->down.ssl) {
            conn_close(c);
            return c;
        }
        c->down.tp = &transport_tls;
        conn_set_state(c, CLIENT_TLS_HANDSHAKE);
        on_handshake(c);
        return c;
    }
    start_protocol(c);
    return c;
}

void client_close(struct client *c)
{
    conn_close(c);
}

void client_free(struct client *c)
{
    if (c->mux)
        c->mux->free(c);
    free(c);
}

bool client_is_idle(const struct client *c)
{
    switch (c->state) {
    case CLIENT_LINGERING:
        return true;
    case CLIENT_TLS_HANDSHAKE:
    case CLIENT_CLOSED:
        return false;
    default:
        return c->mux->is_idle(c);
    }
}

bool client_spread_candidate(const struct client *c)
{
    return mux_h1_between_requests(c) || mux_h2_spread_candidate(c);
}

void client_shutdown_idle(struct client *c, ev_tstamp close_at)
{
    switch (c->state) {
    case CLIENT_TLS_HANDSHAKE: /* its first request is served with Connection: close */
    case CLIENT_LINGERING:
    case CLIENT_CLOSED:
        return;
    default:
        c->mux->shutdown_idle(c, close_at);
        return;
    }
}

void client_tunnel_deadline(struct client *c, ev_tstamp deadline)
{
    if (c->mux && c->state != CLIENT_CLOSED && c->state != CLIENT_LINGERING)
        c->mux->tunnel_deadline(c, deadline);
}
