#include "listener.h"

#include <errno.h>
#include <limits.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "../net/net.h"
#include "balance.h"
#include "../base/log.h"
#include "../base/metrics.h"
#include "h2conf.h"
#include "tls.h"

/* Connections taken per readiness event: enough to drain a burst in one
 * pass, bounded so accepting cannot starve established connections. */
#define ACCEPT_BATCH 64

/* No TCP_DEFER_ACCEPT: it would save a wakeup per connection, but the
 * connections it holds back are invisible to accept() and would be reset
 * when a drain closes the listener. */

/* Accepts up to <max> queued connections, handing each to the owner. The
 * owner may pause the listener from its callback (max_connections): the
 * batch then stops. <drain>: the listener is about to close, so take
 * everything regardless: what stays in the kernel queue would be reset by
 * the close. */
static void accept_batch(struct listener *l, unsigned max, bool drain)
{
    for (unsigned i = 0; i < max && (drain || l->accepting); i++) {
        struct sockaddr_storage sa;
        socklen_t len = sizeof(sa);
        int fd = accept4(l->fd, (struct sockaddr *)&sa, &len, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno == EINTR || errno == ECONNABORTED)
                continue;
            if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM) {
                listener_pause(l);
                l->ops->accept_failed(l, errno);
            }
            return; /* EAGAIN: the queue is empty */
        }
        /* TCP_NODELAY comes from the listening socket (net_listen) */
        l->accepted_total++;
        l->ops->accepted(l, fd, &sa);
    }
}

static void accept_cb(struct ev_loop *loop, ev_io *io, int revents)
{
    accept_batch(container_of(io, struct listener, io), ACCEPT_BATCH, false);
}

struct listener *listener_open(struct ev_loop *loop, const struct conf_listener *cl, int fd,
                               struct ssl_ctx_st *tls_ctx, const struct listener_ops *ops,
                               void *owner, const char **err)
{
    struct listener *l = calloc(1, sizeof(*l));
    if (!l || !(l->name = strdup(cl->name)) || !(l->bind_text = strdup(cl->bind.text))) {
        if (l)
            free(l->name);
        free(l);
        *err = "out of memory";
        return NULL;
    }
    l->loop = loop;
    l->ops = ops;
    l->owner = owner;
    l->conf = cl;
    l->protocol = cl->protocol;
    l->tls = cl->tls.enabled;
    l->http2 = h2_enabled(cl);
    l->tls_ctx = tls_ctx;
    if (fd >= 0) {
        if (net_adopt_listener(fd, err) < 0) {
            l->fd = -1;
            goto fail;
        }
        l->fd = fd;
    } else {
        l->fd = net_listen((const struct sockaddr *)&cl->bind.sa, cl->bind.sa_len, err);
        if (l->fd < 0)
            goto fail;
    }
    ev_io_init(&l->io, accept_cb, l->fd, EV_READ);
    return l;
fail:;
    int saved = errno;
    if (l->fd >= 0)
        close(l->fd);
    free(l->name);
    free(l->bind_text);
    free(l);
    errno = saved;
    return NULL; /* <tls_ctx> stays the caller's */
}

int listener_configure(struct listener *l, const struct conf_listener *cl, struct pool *pools,
                       struct ssl_ctx_st *tls_ctx)
{
    struct split_slot *slots = calloc(cl->num_splits ? cl->num_splits : 1, sizeof(*slots));
    if (!slots)
        return -1;
    for (size_t i = 0; i < cl->num_splits; i++) {
        slots[i].pool = pool_find(pools, cl->splits[i].pool);
        slots[i].weight = cl->splits[i].weight;
        /* keep the smooth round-robin position of pools that stay */
        for (size_t j = 0; j < l->num_slots; j++)
            if (l->slots[j].pool == slots[i].pool)
                slots[i].current = l->slots[j].current;
    }
    free(l->slots);
    l->slots = slots;
    l->num_slots = cl->num_splits;
    l->split_overridden = false; /* the process applies its overrides again */
    if (tls_ctx != l->tls_ctx) {
        /* open TLS connections keep a reference to the context they started with */
        tls_context_free(l->tls_ctx);
        l->tls_ctx = tls_ctx;
    }
    l->conf = cl;
    l->protocol = cl->protocol;
    l->tls = cl->tls.enabled;
    l->http2 = h2_enabled(cl);
    return 0;
}

static void override_one(struct listener *l, const struct conf_split *split, size_t n)
{
    for (size_t i = 0; i < l->num_slots; i++) {
        l->slots[i].weight = 0;
        for (size_t k = 0; k < n; k++)
            if (l->slots[i].pool && !strcmp(l->slots[i].pool->name, split[k].pool))
                l->slots[i].weight = split[k].weight;
    }
    l->split_overridden = true;
}

int listener_override_split(struct listener *l, const struct conf_split *split, size_t n,
                            const char **unknown)
{
    for (size_t k = 0; k < n; k++) {
        size_t i = 0;
        while (i < l->num_slots &&
               !(l->slots[i].pool && !strcmp(l->slots[i].pool->name, split[k].pool)))
            i++;
        if (i == l->num_slots) {
            *unknown = split[k].pool;
            return -1;
        }
    }
    for (; l; l = l->next_replica)
        override_one(l, split, n);
    return 0;
}

void listener_clear_split(struct listener *l)
{
    for (; l; l = l->next_replica) {
        l->split_overridden = false;
        if (!l->conf)
            continue;
        for (size_t i = 0; i < l->num_slots && i < l->conf->num_splits; i++)
            l->slots[i].weight = l->conf->splits[i].weight;
    }
}

void listener_split_text(const struct listener *l, struct hbuf *out)
{
    for (size_t i = 0; i < l->num_slots; i++)
        hbuf_printf(out, "%s%s=%u", i ? "," : "",
                    l->slots[i].pool ? l->slots[i].pool->name : "?", l->slots[i].weight);
}

void listener_totals(const struct listener *l, struct listener_totals *t)
{
    memset(t, 0, sizeof(*t));
    for (; l; l = l->next_replica) {
        t->connections += l->connections;
        t->h2_connections += l->h2_connections;
        t->accepted += l->accepted_total;
        for (int i = 0; i < STATUS_CLASSES; i++) {
            t->responses[i] += l->responses[i];
            t->h2_responses[i] += l->h2_responses[i];
        }
        t->bytes_in += l->bytes_in;
        t->bytes_out += l->bytes_out;
        metrics_histogram_add(&t->duration, &l->duration);
    }
}

void listener_resume(struct listener *l)
{
    if (l->closed || l->accepting)
        return;
    ev_io_start(l->loop, &l->io);
    l->accepting = true;
}

void listener_pause(struct listener *l)
{
    if (!l->accepting)
        return;
    ev_io_stop(l->loop, &l->io);
    l->accepting = false;
}

static void close_socket(struct listener *l)
{
    listener_pause(l);
    close(l->fd);
    l->fd = -1;
    l->closed = true;
}

void listener_release(struct listener *l)
{
    if (!l->closed)
        close_socket(l);
}

void listener_close(struct listener *l)
{
    if (l->closed)
        return;
    /* a client whose handshake completed has been told "connected": serve
     * it rather than reset it with the close */
    accept_batch(l, UINT_MAX, true);
    close_socket(l);
}

void listener_free(struct listener *l)
{
    if (!l)
        return;
    listener_release(l); /* a prepared listener of a failed reload: nothing is accepted */
    free(l->slots);
    tls_context_free(l->tls_ctx);
    free(l->name);
    free(l->bind_text);
    free(l);
}

int listener_tls_prepare(const struct conf *conf, struct ssl_ctx_st **ctxs, char *msg, size_t cap)
{
    for (size_t i = 0; i < conf->num_listeners; i++)
        ctxs[i] = NULL;
    for (size_t i = 0; i < conf->num_listeners; i++) {
        const struct conf_listener *cl = &conf->listeners[i];
        if (!cl->tls.enabled)
            continue;
        char err[256];
        enum tls_alpn alpn = cl->protocol != CONF_PROTO_HTTP ? TLS_ALPN_NONE
                             : h2_enabled(cl)               ? TLS_ALPN_H2_HTTP11
                                                            : TLS_ALPN_HTTP11;
        ctxs[i] = tls_context_new(cl->tls.cert, cl->tls.key, alpn, err, sizeof(err));
        if (!ctxs[i]) {
            snprintf(msg, cap, "%s:%u:%u: listeners[%zu].tls: %s", conf->path, cl->pos.line,
                     cl->pos.column, i, err);
            listener_tls_release(ctxs, conf->num_listeners);
            return -1;
        }
    }
    return 0;
}

void listener_tls_release(struct ssl_ctx_st **ctxs, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        tls_context_free(ctxs[i]);
        ctxs[i] = NULL;
    }
}
