#include "upstream.h"

#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <unistd.h>

#include "../health/backend.h"
#include "client.h"
#include "io_watch.h"
#include "list.h"
#include "log.h"

static struct backend_conns *conns_of(struct backend *b)
{
    return b->proxy_data;
}

int upstream_backend_attach(struct backend *b, struct pool *p)
{
    struct backend_conns *bc = calloc(1, sizeof(*bc));
    if (!bc)
        return -1;
    list_init(&bc->idle);
    list_init(&bc->active);
    bc->pool = p;
    b->proxy_data = bc;
    return 0;
}

void upstream_backend_detach(struct backend *b)
{
    free(b->proxy_data);
    b->proxy_data = NULL;
}

void upstream_want(struct upstream *u, unsigned events)
{
    io_watch(u->w->loop, &u->io, u->fd, &u->io_events, events);
}

static void upstream_io_cb(struct ev_loop *loop, ev_io *io, int revents)
{
    struct upstream *u = container_of(io, struct upstream, io);
    if (u->state == UPSTREAM_IDLE) {
        /* a pooled connection must stay silent: data or EOF means the
         * backend closed it (or broke the protocol), so it is never reused */
        upstream_close(u);
        return;
    }
    client_upstream_event(u->client, (unsigned)revents);
}

static void idle_timeout_cb(struct ev_loop *loop, ev_timer *t, int revents)
{
    upstream_close(container_of(t, struct upstream, idle_timer));
}

struct upstream *upstream_connect(struct worker *w, struct backend *b, struct client *c, int *err)
{
    int fd = socket(b->addr.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        *err = errno;
        return NULL;
    }
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    if (connect(fd, (struct sockaddr *)&b->addr, b->addr_len) < 0 && errno != EINPROGRESS) {
        *err = errno;
        close(fd);
        return NULL;
    }
    struct upstream *u = calloc(1, sizeof(*u));
    if (!u) {
        *err = ENOMEM;
        close(fd);
        return NULL;
    }
    u->w = w;
    u->backend = b;
    u->fd = fd;
    u->state = UPSTREAM_CONNECTING;
    u->client = c;
    ev_io_init(&u->io, upstream_io_cb, fd, 0);
    ev_timer_init(&u->idle_timer, idle_timeout_cb, 0., 0.);
    list_append(&conns_of(b)->active, &u->pool_link);
    backend_conn_acquire(b);
    upstream_want(u, EV_WRITE);
    return u;
}

struct upstream *upstream_take_idle(struct backend *b, struct client *c)
{
    struct backend_conns *bc = conns_of(b);
    if (list_empty(&bc->idle))
        return NULL;
    /* the most recently used one: least likely to have been closed by a
     * backend's own keep-alive timeout */
    struct upstream *u = container_of(bc->idle.prev, struct upstream, pool_link);
    list_remove(&u->pool_link);
    bc->idle_count--;
    list_append(&bc->active, &u->pool_link);
    ev_timer_stop(u->w->loop, &u->idle_timer);
    u->state = UPSTREAM_ACTIVE;
    u->client = c;
    return u;
}

void upstream_release(struct upstream *u, bool reusable)
{
    struct backend *b = u->backend;
    struct backend_conns *bc = conns_of(b);
    const struct conf *conf = u->w->conf;
    if (!reusable || !backend_in_rotation(b) ||
        bc->idle_count >= conf->limits.backend_idle_connections || u->w->state >= WORKER_DRAINING) {
        upstream_close(u);
        return;
    }
    list_remove(&u->pool_link);
    list_append(&bc->idle, &u->pool_link);
    bc->idle_count++;
    u->state = UPSTREAM_IDLE;
    u->client = NULL;
    upstream_want(u, EV_READ);
    ev_timer_set(&u->idle_timer, (double)conf->timeouts.backend_idle / 1000.0, 0.);
    ev_timer_start(u->w->loop, &u->idle_timer);
}

void upstream_close(struct upstream *u)
{
    struct backend *b = u->backend;
    if (u->state == UPSTREAM_IDLE)
        conns_of(b)->idle_count--;
    list_remove(&u->pool_link);
    upstream_want(u, 0);
    ev_timer_stop(u->w->loop, &u->idle_timer);
    close(u->fd);
    free(u);
    backend_conn_release(b);
}

void upstream_close_idle(struct backend *b)
{
    struct backend_conns *bc = conns_of(b);
    struct list *pos, *tmp;
    list_for_each_safe (pos, tmp, &bc->idle) {
        upstream_close(container_of(pos, struct upstream, pool_link));
    }
}
