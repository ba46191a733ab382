/* The client connection below its muxes: the timer, the io watcher, the
 * plain close and the lingering close (see conn.h). */
#include "conn.h"

#include <unistd.h>

#include "../net/io.h"
#include "fds.h"

/* After usher shut its write side, what the client still sends is read and
 * dropped this long (or until it closes), so the close sends no RST that
 * would destroy a response still in flight (nginx lingering_timeout). */
#define LINGER_S 1.0

/* ... and at most this many bytes: 256 KiB covers what a client pipelined
 * or had in flight of a body (a few socket buffers) when the response went
 * out; a client still uploading past it gets the close (and its RST) after
 * the response had that much time to arrive. Apache's lingering close reads
 * for 2 s per 512 bytes; nginx bounds time only. */
#define LINGER_MAX_BYTES (256u * 1024u)

static ev_tstamp now_of(const struct client *c)
{
    return ev_now(c->w->loop);
}

bool conn_closing(const struct client *c)
{
    return c->w->state >= WORKER_DRAIN_DELAY || c->listener->closed ||
           __atomic_load_n(&worker_first(c->w)->stop_signalled, __ATOMIC_RELAXED);
}

/* The states below any mux have their own deadline; the others are the
 * mux's to say. */
static ev_tstamp deadline_of(const struct client *c)
{
    switch (c->state) {
    case CLIENT_TLS_HANDSHAKE:
        return c->last_activity + ms_to_s(c->w->conf->timeouts.client_header);
    case CLIENT_LINGERING:
        return c->linger_until;
    case CLIENT_CLOSED:
        return NO_DEADLINE;
    default:
        return c->mux->deadline(c);
    }
}

/* A timer already due earlier is left alone: its callback recomputes the
 * deadline and re-arms, so most transitions cost no timer-heap operation
 * (libev "Be smart about timeouts", method 3). */
void conn_arm_timer(struct client *c)
{
    if (c->state == CLIENT_CLOSED)
        return;
    ev_tstamp deadline = deadline_of(c);
    if (deadline == NO_DEADLINE || (c->timer_at > 0 && c->timer_at <= deadline))
        return;
    ev_tstamp now = now_of(c);
    double left = deadline - now;
    if (left < 0.001)
        left = 0.001;
    ev_timer_stop(c->w->loop, &c->timer);
    ev_timer_set(&c->timer, left, 0.);
    ev_timer_start(c->w->loop, &c->timer);
    c->timer_at = now + left;
}

void conn_set_state(struct client *c, enum client_state s)
{
    c->state = s;
    c->last_activity = now_of(c);
    conn_arm_timer(c);
}

void conn_want(struct client *c, unsigned events)
{
    io_watch(c->w->loop, &c->io, c->down.fd, &c->io_events, events);
}

static void timer_cb(struct ev_loop *loop, ev_timer *t, int revents)
{
    struct client *c = container_of(t, struct client, timer);
    c->timer_at = 0;
    ev_tstamp deadline = deadline_of(c);
    if (deadline == NO_DEADLINE)
        return; /* armed for a state since left */
    if (ev_now(loop) < deadline) {
        conn_arm_timer(c);
        return;
    }
    switch (c->state) {
    case CLIENT_TLS_HANDSHAKE:
    case CLIENT_LINGERING:
        conn_close(c);
        return;
    case CLIENT_CLOSED:
        return;
    default:
        c->mux->timeout(c);
        return;
    }
}

void conn_init(struct client *c)
{
    ev_timer_init(&c->timer, timer_cb, 0., 0.);
}

void conn_close(struct client *c)
{
    if (c->state == CLIENT_CLOSED)
        return;
    struct worker *w = c->w;
    if (c->mux)
        c->mux->release(c);
    conn_want(c, 0);
    ev_timer_stop(w->loop, &c->timer);
    c->down.tp->release(&c->down);
    close(c->down.fd);
    c->down.fd = -1;
    buf_put(&w->bufs_in, c->down.buf);
    c->down.buf = NULL;
    if (c->state == CLIENT_LINGERING)
        w->num_lingering--;
    c->state = CLIENT_CLOSED;
    /* the worker frees it and looks at the counts at its next safe point */
    w->num_clients--;
    worker_fds_add(w, -1);
    c->listener->connections--;
    list_remove(&c->link);
    list_append(&w->closed, &c->link);
    ev_prepare_start(w->loop, &w->reaper);
}

enum step conn_finish(struct client *c)
{
    c->down.tp->shutdown_write(&c->down);
    c->linger_bytes = 0;
    if (c->down.eof || side_discard(&c->down, LINGER_MAX_BYTES, &c->linger_bytes)) {
        conn_close(c);
        return STEP_CLOSED;
    }
    c->linger_until = now_of(c) + LINGER_S;
    c->w->num_lingering++;
    conn_set_state(c, CLIENT_LINGERING);
    conn_want(c, EV_READ);
    /* a drain waits for no lingering connection: let it look again */
    ev_prepare_start(c->w->loop, &c->w->reaper);
    return STEP_BLOCKED;
}

enum step conn_on_lingering(struct client *c)
{
    if (side_discard(&c->down, LINGER_MAX_BYTES, &c->linger_bytes)) {
        conn_close(c);
        return STEP_CLOSED;
    }
    return STEP_BLOCKED;
}
