#include "listener.h"

#include <errno.h>
#include <limits.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "client.h"
#include "log.h"
#include "tls.h"
#include "worker.h"

/* Connections taken per readiness event: enough to drain a burst in one
 * pass, bounded so accepting cannot starve established connections. */
#define ACCEPT_BATCH 64

/* Kernel accept queue; SOMAXCONN caps it anyway. */
#define LISTEN_BACKLOG 4096

/* After EMFILE/ENFILE, accepting pauses this long instead of spinning on a
 * readable socket that cannot be accepted. */
#define ACCEPT_RETRY_S 0.1

/* No TCP_DEFER_ACCEPT: it would save a wakeup per connection, but the
 * connections it holds back are invisible to accept() and would be reset
 * when a drain closes the listener. */

/* Accepts up to <max> queued connections. <drain>: the listener is about to
 * close, so take everything regardless of max_connections: what stays in
 * the kernel queue would be reset by the close. */
static void accept_batch(struct listener *l, unsigned max, bool drain)
{
    struct worker *w = l->w;
    struct ev_loop *loop = w->loop;
    for (unsigned i = 0; i < max; i++) {
        if (!drain && w->num_clients >= w->max_clients) {
            if (!w->accept_limited) {
                w->accept_limited = true;
                w->stats.accept_paused++;
                log_warn("accept paused", "reason=max_connections connections=%u", w->num_clients);
                worker_accept_pause(w);
            }
            return;
        }
        struct sockaddr_storage sa;
        socklen_t len = sizeof(sa);
        int fd = accept4(l->fd, (struct sockaddr *)&sa, &len, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno == EINTR || errno == ECONNABORTED)
                continue;
            if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM) {
                w->stats.accept_paused++;
                log_warn("accept paused", "reason=\"%s\" retry_ms=%d", strerror(errno),
                         (int)(ACCEPT_RETRY_S * 1000));
                worker_accept_pause(w);
                ev_timer_set(&w->accept_retry, ACCEPT_RETRY_S, 0.);
                ev_timer_start(loop, &w->accept_retry);
            }
            return; /* EAGAIN: the queue is empty */
        }
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
        l->accepted_total++;
        client_accept(l, fd, &sa);
    }
}

static void accept_cb(struct ev_loop *loop, ev_io *io, int revents)
{
    accept_batch(container_of(io, struct listener, io), ACCEPT_BATCH, false);
}

struct listener *listener_open(struct worker *w, const struct conf_listener *cl, const char **err)
{
    struct listener *l = calloc(1, sizeof(*l));
    if (!l || !(l->name = strdup(cl->name)) || !(l->bind_text = strdup(cl->bind.text))) {
        if (l)
            free(l->name);
        free(l);
        *err = "out of memory";
        return NULL;
    }
    l->w = w;
    l->fd = socket(cl->bind.sa.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (l->fd < 0) {
        *err = "socket failed";
        goto fail;
    }
    int one = 1;
    setsockopt(l->fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    if (bind(l->fd, (const struct sockaddr *)&cl->bind.sa, cl->bind.sa_len) < 0) {
        *err = "bind failed";
        goto fail;
    }
    if (listen(l->fd, LISTEN_BACKLOG) < 0) {
        *err = "listen failed";
        goto fail;
    }
    ev_io_init(&l->io, accept_cb, l->fd, EV_READ);
    if (listener_configure(l, cl) < 0) {
        *err = cl->tls.enabled ? "cannot load its certificate" : "out of memory";
        goto fail;
    }
    return l;
fail:;
    int saved = errno;
    if (l->fd >= 0)
        close(l->fd);
    free(l->name);
    free(l->bind_text);
    free(l);
    errno = saved;
    return NULL;
}

int listener_configure(struct listener *l, const struct conf_listener *cl)
{
    SSL_CTX *tls_ctx = NULL;
    if (cl->tls.enabled) {
        char err[256];
        tls_ctx = tls_context_new(cl->tls.cert, cl->tls.key, cl->protocol == CONF_PROTO_HTTP, err,
                                  sizeof(err));
        if (!tls_ctx) {
            log_error("tls failed", "listener=%s reason=\"%s\"", cl->name, err);
            return -1;
        }
    }
    struct split_slot *slots = calloc(cl->num_splits ? cl->num_splits : 1, sizeof(*slots));
    if (!slots) {
        tls_context_free(tls_ctx);
        return -1;
    }
    /* open TLS connections keep a reference to the context they started with */
    tls_context_free(l->tls_ctx);
    l->tls_ctx = tls_ctx;
    for (size_t i = 0; i < cl->num_splits; i++) {
        slots[i].pool = worker_find_pool(l->w, cl->splits[i].pool);
        slots[i].weight = cl->splits[i].weight;
        /* keep the smooth round-robin position of pools that stay */
        for (size_t j = 0; j < l->num_slots; j++)
            if (l->slots[j].pool == slots[i].pool)
                slots[i].current = l->slots[j].current;
    }
    free(l->slots);
    l->slots = slots;
    l->num_slots = cl->num_splits;
    l->conf = cl;
    l->protocol = cl->protocol;
    l->tls = cl->tls.enabled;
    return 0;
}

void listener_resume(struct listener *l)
{
    if (l->closed || l->accepting)
        return;
    ev_io_start(l->w->loop, &l->io);
    l->accepting = true;
}

void listener_pause(struct listener *l)
{
    if (!l->accepting)
        return;
    ev_io_stop(l->w->loop, &l->io);
    l->accepting = false;
}

void listener_close(struct listener *l)
{
    if (l->closed)
        return;
    /* a client whose handshake completed has been told "connected": serve
     * it rather than reset it with the close */
    accept_batch(l, UINT_MAX, true);
    listener_pause(l);
    close(l->fd);
    l->fd = -1;
    l->closed = true;
}

void listener_free(struct listener *l)
{
    if (!l)
        return;
    listener_close(l);
    free(l->slots);
    tls_context_free(l->tls_ctx);
    free(l->name);
    free(l->bind_text);
    free(l);
}

int listener_check_tls(const struct conf *conf, char *msg, size_t cap)
{
    for (size_t i = 0; i < conf->num_listeners; i++) {
        const struct conf_listener *cl = &conf->listeners[i];
        if (!cl->tls.enabled)
            continue;
        char err[256];
        SSL_CTX *ctx = tls_context_new(cl->tls.cert, cl->tls.key, 1, err, sizeof(err));
        if (!ctx) {
            snprintf(msg, cap, "%s:%u:%u: listeners[%zu].tls: %s", conf->path, cl->pos.line,
                     cl->pos.column, i, err);
            return -1;
        }
        tls_context_free(ctx);
    }
    return 0;
}
