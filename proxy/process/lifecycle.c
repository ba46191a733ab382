/* The process lifecycle: startup, readiness, the graceful drain on
 * SIGTERM/SIGINT and the reload on SIGHUP (DESIGN.md "The process drain",
 * "The reload"). The only writer of the worker's state. */
#include "lifecycle.h"

#include <signal.h>
#include <stdlib.h>
#include <string.h>

#include "../../conf/conf.h"
#include "../base/log.h"
#include "../core/worker.h"
#include "admin.h"
#include "auth.h"
#include "fleet.h"
#include "overrides.h"
#include "reload.h"

/* Drain progress is logged this often. */
#define DRAIN_TICK_S 1.0

/* How often readiness is re-evaluated while the first health round runs. */
#define READY_POLL_S 0.02

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

static void break_loop(void *ctx)
{
    struct process *p = ctx;
    ev_break(p->loop, EVBREAK_ALL);
}

static void stop_loop(struct process *p, int exit_code)
{
    p->exit_code = exit_code;
    p->w->state = WORKER_STOPPED;
    ev_timer_stop(p->loop, &p->drain_timer);
    /* a fleet member leaves the instance list first (bounded) */
    if (p->fleet && fleet_leave(p->fleet, break_loop, p) == 0)
        return;
    ev_break(p->loop, EVBREAK_ALL);
}

/* The worker's hook, at its safe point: step 4, exit at the last connection. */
static void on_clients_closed(struct worker *w, void *ctx)
{
    struct process *p = ctx;
    if (w->state != WORKER_DRAINING || worker_busy_clients(w) > 0)
        return;
    log_info("shutdown drained", "connections=0 exit_code=0");
    stop_loop(p, 0);
}

/* Step 3: no new connections; idle keep-alive connections go now, the ones
 * with a request in progress close after answering it. */
static void close_listeners(struct process *p)
{
    struct worker *w = p->w;
    worker_close_listeners(w);
    w->state = WORKER_DRAINING;
    p->drain_deadline = ev_now(p->loop) + (double)w->conf->shutdown.timeout / 1000.0;
    log_info("shutdown listeners closed", "connections=%u timeout_ms=%llu", w->num_clients,
             (unsigned long long)w->conf->shutdown.timeout);

    unsigned before = worker_busy_clients(w);
    worker_shutdown_idle(w);
    log_info("shutdown idle connections closed", "closed=%u connections=%u",
             before - worker_busy_clients(w), worker_busy_clients(w));

    ev_timer_stop(p->loop, &p->drain_timer);
    ev_timer_set(&p->drain_timer, DRAIN_TICK_S, DRAIN_TICK_S);
    ev_timer_start(p->loop, &p->drain_timer);
    on_clients_closed(w, p);
}

static void drain_timer_cb(struct ev_loop *loop, ev_timer *t, int revents)
{
    struct process *p = container_of(t, struct process, drain_timer);
    struct worker *w = p->w;
    if (w->state == WORKER_DRAIN_DELAY) {
        close_listeners(p);
        return;
    }
    if (w->state != WORKER_DRAINING)
        return;
    if (ev_now(loop) + 0.0005 >= p->drain_deadline) {
        log_warn("shutdown timeout", "closing=%u exit_code=1", worker_busy_clients(w));
        w->state = WORKER_STOPPED; /* these closes must not read as a clean drain */
        worker_close_clients(w);
        stop_loop(p, 1);
        return;
    }
    log_info("shutdown progress", "connections=%u remaining_ms=%.0f", worker_busy_clients(w),
             (p->drain_deadline - ev_now(loop)) * 1000.0);
    /* land exactly on the deadline rather than up to a tick after it */
    double left = p->drain_deadline - ev_now(loop);
    if (left < DRAIN_TICK_S) {
        ev_timer_stop(loop, t);
        ev_timer_set(t, left, DRAIN_TICK_S);
        ev_timer_start(loop, t);
    }
}

static void on_stop_signal(struct ev_loop *loop, ev_signal *s, int revents)
{
    struct process *p = s->data;
    struct worker *w = p->w;
    if (w->state >= WORKER_DRAIN_DELAY) {
        log_warn("shutdown forced", "signal=%s connections=%u exit_code=1", signal_name(s->signum),
                 w->num_clients);
        stop_loop(p, 1);
        return;
    }
    conf_ms delay = w->conf->shutdown.drain_delay;
    log_info("shutdown started", "signal=%s drain_delay_ms=%llu timeout_ms=%llu connections=%u",
             signal_name(s->signum), (unsigned long long)delay,
             (unsigned long long)w->conf->shutdown.timeout, w->num_clients);
    ev_timer_stop(loop, &p->ready_timer);
    w->state = WORKER_DRAIN_DELAY;
    if (delay == 0) {
        close_listeners(p);
        return;
    }
    ev_timer_set(&p->drain_timer, (double)delay / 1000.0, 0.);
    ev_timer_start(loop, &p->drain_timer);
}

static void on_reload_signal(struct ev_loop *loop, ev_signal *s, int revents)
{
    struct process *p = s->data;
    if (p->w->state >= WORKER_DRAIN_DELAY) {
        log_warn("reload ignored", "reason=draining");
        return;
    }
    reload_run(p, NULL);
}

static void ready_poll_cb(struct ev_loop *loop, ev_timer *t, int revents)
{
    struct process *p = container_of(t, struct process, ready_timer);
    struct worker *w = p->w;
    if (w->state != WORKER_STARTING || !worker_first_round_done(w))
        return;
    ev_timer_stop(loop, t);
    w->state = WORKER_RUNNING;
    log_info("ready", "generation=%llu", (unsigned long long)w->generation);
}

struct process *process_new(struct ev_loop *loop, struct conf *conf)
{
    struct process *p = calloc(1, sizeof(*p));
    if (!p)
        return NULL;
    p->loop = loop;
    const struct worker_hooks hooks = {.clients_closed = on_clients_closed, .ctx = p};
    p->w = worker_new(loop, conf, &hooks);
    p->ov = overrides_new();
    if (!p->w || !p->ov) {
        overrides_free(p->ov);
        if (p->w)
            worker_free(p->w);
        free(p);
        return NULL;
    }
    ev_timer_init(&p->drain_timer, drain_timer_cb, 0., 0.);
    ev_timer_init(&p->ready_timer, ready_poll_cb, 0., READY_POLL_S);
    ev_signal_init(&p->sig_term, on_stop_signal, SIGTERM);
    ev_signal_init(&p->sig_int, on_stop_signal, SIGINT);
    ev_signal_init(&p->sig_hup, on_reload_signal, SIGHUP);
    p->sig_term.data = p->sig_int.data = p->sig_hup.data = p;
    return p;
}

int process_start(struct process *p, struct ssl_ctx_st **tls)
{
    auth_load(p, p->w->conf, true);
    overrides_load(p);
    if (reload_start(p, tls) < 0)
        return -1;
    overrides_apply(p, false);
    if (fleet_start(p) < 0)
        return -1;
    if (p->w->conf->admin.enabled && admin_start(p) < 0)
        return -1;
    signal(SIGPIPE, SIG_IGN);
    ev_signal_start(p->loop, &p->sig_term);
    ev_signal_start(p->loop, &p->sig_int);
    ev_signal_start(p->loop, &p->sig_hup);
    ev_timer_start(p->loop, &p->ready_timer);
    ready_poll_cb(p->loop, &p->ready_timer, 0);
    return 0;
}

int process_run(struct process *p)
{
    ev_run(p->loop, 0);
    return p->exit_code;
}

void process_free(struct process *p)
{
    if (!p)
        return;
    ev_signal_stop(p->loop, &p->sig_term);
    ev_signal_stop(p->loop, &p->sig_int);
    ev_signal_stop(p->loop, &p->sig_hup);
    ev_timer_stop(p->loop, &p->drain_timer);
    ev_timer_stop(p->loop, &p->ready_timer);
    struct conf *conf = p->w->conf;
    fleet_stop(p);
    worker_free(p->w);
    admin_stop(p);
    log_info("released", "what=admin_listener");
    conf_free(conf);
    overrides_free(p->ov);
    free(p->token);
    free(p);
}
