/* The process lifecycle: graceful drain on SIGTERM/SIGINT and in-process
 * reload on SIGHUP (DESIGN.md "The process drain", "The reload"). */
#include "lifecycle.h"

#include <errno.h>
#include <signal.h>
#include <string.h>

#include "../conf/conf.h"
#include "client.h"
#include "list.h"
#include "listener.h"
#include "log.h"
#include "worker.h"

/* Drain progress is logged this often. */
#define DRAIN_TICK_S 1.0

static const char *signal_name(int signum)
{
    switch (signum) {
    case SIGTERM:
        return "SIGTERM";
    case SIGINT:
        return "SIGINT";
    case SIGHUP:
        return "SIGHUP";
    }
    return "signal";
}

static void stop_loop(struct worker *w, int exit_code)
{
    w->exit_code = exit_code;
    w->state = WORKER_STOPPED;
    ev_timer_stop(w->loop, &w->drain_timer);
    ev_break(w->loop, EVBREAK_ALL);
}

static void check_drained(struct worker *w)
{
    if (w->state != WORKER_DRAINING || w->num_clients > 0)
        return;
    log_info("shutdown drained", "connections=0 exit_code=0");
    stop_loop(w, 0);
}

void lifecycle_connection_closed(struct worker *w)
{
    check_drained(w);
}

/* Step 3: no new connections; idle keep-alive connections go now, the ones
 * with a request in progress close after answering it. */
static void close_listeners(struct worker *w)
{
    for (struct listener *l = w->listeners; l; l = l->next)
        listener_close(l);
    w->state = WORKER_DRAINING;
    w->drain_deadline = ev_now(w->loop) + (double)w->conf->shutdown.timeout / 1000.0;
    log_info("shutdown listeners closed", "connections=%u timeout_ms=%llu", w->num_clients,
             (unsigned long long)w->conf->shutdown.timeout);

    unsigned before = w->num_clients;
    struct list *pos, *tmp;
    list_for_each_safe (pos, tmp, &w->clients) {
        client_shutdown_idle(container_of(pos, struct client, link));
    }
    log_info("shutdown idle connections closed", "closed=%u connections=%u",
             before - w->num_clients, w->num_clients);

    ev_timer_stop(w->loop, &w->drain_timer);
    ev_timer_set(&w->drain_timer, DRAIN_TICK_S, DRAIN_TICK_S);
    ev_timer_start(w->loop, &w->drain_timer);
    check_drained(w);
}

static void drain_timer_cb(struct ev_loop *loop, ev_timer *t, int revents)
{
    struct worker *w = container_of(t, struct worker, drain_timer);
    if (w->state == WORKER_DRAIN_DELAY) {
        close_listeners(w);
        return;
    }
    if (w->state != WORKER_DRAINING)
        return;
    if (ev_now(loop) + 0.0005 >= w->drain_deadline) {
        log_warn("shutdown timeout", "closing=%u exit_code=1", w->num_clients);
        w->state = WORKER_STOPPED; /* these closes must not read as a clean drain */
        struct list *pos, *tmp;
        list_for_each_safe (pos, tmp, &w->clients) {
            client_close(container_of(pos, struct client, link));
        }
        stop_loop(w, 1);
        return;
    }
    log_info("shutdown progress", "connections=%u remaining_ms=%.0f", w->num_clients,
             (w->drain_deadline - ev_now(loop)) * 1000.0);
    /* land exactly on the deadline rather than up to a tick after it */
    double left = w->drain_deadline - ev_now(loop);
    if (left < DRAIN_TICK_S) {
        ev_timer_stop(loop, t);
        ev_timer_set(t, left, DRAIN_TICK_S);
        ev_timer_start(loop, t);
    }
}

static void on_stop_signal(struct ev_loop *loop, ev_signal *s, int revents)
{
    struct worker *w = s->data;
    if (w->state >= WORKER_DRAIN_DELAY) {
        log_warn("shutdown forced", "signal=%s connections=%u exit_code=1", signal_name(s->signum),
                 w->num_clients);
        stop_loop(w, 1);
        return;
    }
    conf_ms delay = w->conf->shutdown.drain_delay;
    log_info("shutdown started", "signal=%s drain_delay_ms=%llu timeout_ms=%llu connections=%u",
             signal_name(s->signum), (unsigned long long)delay,
             (unsigned long long)w->conf->shutdown.timeout, w->num_clients);
    w->state = WORKER_DRAIN_DELAY;
    if (delay == 0) {
        close_listeners(w);
        return;
    }
    ev_timer_set(&w->drain_timer, (double)delay / 1000.0, 0.);
    ev_timer_start(loop, &w->drain_timer);
}

static void on_reload_signal(struct ev_loop *loop, ev_signal *s, int revents)
{
    struct worker *w = s->data;
    if (w->state >= WORKER_DRAIN_DELAY) {
        log_warn("reload ignored", "reason=draining");
        return;
    }
    lifecycle_reload(w);
}

void lifecycle_start(struct worker *w)
{
    signal(SIGPIPE, SIG_IGN);
    ev_signal_init(&w->sig_term, on_stop_signal, SIGTERM);
    ev_signal_init(&w->sig_int, on_stop_signal, SIGINT);
    ev_signal_init(&w->sig_hup, on_reload_signal, SIGHUP);
    w->sig_term.data = w->sig_int.data = w->sig_hup.data = w;
    ev_signal_start(w->loop, &w->sig_term);
    ev_signal_start(w->loop, &w->sig_int);
    ev_signal_start(w->loop, &w->sig_hup);
    ev_timer_init(&w->drain_timer, drain_timer_cb, 0., 0.);
}

void lifecycle_stop(struct worker *w)
{
    ev_signal_stop(w->loop, &w->sig_term);
    ev_signal_stop(w->loop, &w->sig_int);
    ev_signal_stop(w->loop, &w->sig_hup);
    ev_timer_stop(w->loop, &w->drain_timer);
}
