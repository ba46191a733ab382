/* The process lifecycle: startup, readiness, the graceful drain on
 * SIGTERM/SIGINT and the reload on SIGHUP (DESIGN.md "The process drain",
 * "The reload"). The only writer of the worker's state. */
#include "lifecycle.h"

#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "../../conf/conf.h"
#include "../base/log.h"
#include "../core/listener.h"
#include "../core/worker.h"
#include "../admin/admin.h"
#include "../sources/discover.h"
#include "../admin/auth.h"
#include "../sources/fleet.h"
#include "../control/bgwork.h"
#include "../control/overrides.h"
#include "reload.h"
#include "sysd.h"
#include "upgrade.h"
#include "workers.h"

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
    case SIGUSR2:
        return "SIGUSR2";
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
    worker_set_state(p->w, WORKER_STOPPED);
    ev_timer_stop(p->loop, &p->drain_timer);
    /* a fleet member leaves the instance list first (bounded) */
    if (p->fleet && fleet_leave(p->fleet, break_loop, p) == 0)
        return;
    ev_break(p->loop, EVBREAK_ALL);
}

/* Step 4: exit at the last connection of every worker. */
static void drain_check(struct process *p)
{
    if (p->w->state != WORKER_DRAINING || worker_busy_clients(p->w) > 0)
        return;
    log_info("shutdown drained", "connections=0 exit_code=0");
    stop_loop(p, 0);
}

static void drain_check_cb(struct ev_loop *loop, ev_async *a, int revents)
{
    drain_check(container_of(a, struct process, drain_check));
}

/* The worker's hook, at its safe point, on its own thread: the control
 * thread counts what is left. */
static void on_clients_closed(struct worker *w, void *ctx)
{
    struct process *p = ctx;
    if (w->state == WORKER_DRAINING)
        ev_async_send(p->loop, &p->drain_check);
}

/* Step 3: no new connections; idle keep-alive connections go now, the ones
 * with a request in progress close after answering it. */
static void close_listeners(struct process *p)
{
    struct worker *w = p->w;
    worker_close_listeners(w);
    worker_set_state(w, WORKER_DRAINING);
    p->drain_deadline = ev_now(p->loop) + (double)w->conf->shutdown.timeout / 1000.0;
    log_info("shutdown listeners closed", "connections=%u timeout_ms=%llu", worker_clients(w),
             (unsigned long long)w->conf->shutdown.timeout);

    const struct conf *conf = w->conf;
    bool after_request = conf->shutdown.idle_close == CONF_IDLE_CLOSE_AFTER_REQUEST;
    /* the spread must end before the deadline, or its last slots are cut */
    conf_ms spread = conf->shutdown.close_spread;
    if (spread > conf->shutdown.timeout)
        spread = conf->shutdown.timeout;
    unsigned before = worker_busy_clients(w);
    worker_shutdown_idle(w, spread, after_request);
    worker_tunnels_deadline(w, p->drain_deadline);
    log_info("shutdown idle connections closed",
             "closed=%u connections=%u close_spread_ms=%llu idle_close=%s",
             before - worker_busy_clients(w), worker_busy_clients(w), (unsigned long long)spread,
             after_request ? "after_request" : "now");

    ev_timer_stop(p->loop, &p->drain_timer);
    ev_timer_set(&p->drain_timer, DRAIN_TICK_S, DRAIN_TICK_S);
    ev_timer_start(p->loop, &p->drain_timer);
    drain_check(p);
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
        unsigned left = worker_busy_clients(w);
        worker_set_state(w, WORKER_STOPPED); /* these closes must not read as a clean drain */
        /* idle keep-alive connections (after_request) cut nothing: exit 1
         * means an exchange in progress or a tunnel was cut */
        unsigned cut = worker_close_clients(w);
        int code = cut > 0 ? 1 : 0;
        log_kv(code ? CONF_LOG_WARN : CONF_LOG_INFO, "shutdown timeout", LOG_UINT("closing", left),
               LOG_UINT("cut", cut), LOG_INT("exit_code", code));
        stop_loop(p, code);
        return;
    }
    log_info("shutdown progress", "connections=%u remaining_ms=%.0f", worker_busy_clients(w),
             (p->drain_deadline - ev_now(loop)) * 1000.0);
    sysd_notify("STATUS=draining: %u connections, %.0f s left", worker_busy_clients(w),
                p->drain_deadline - ev_now(loop));
    /* land exactly on the deadline rather than up to a tick after it */
    double left = p->drain_deadline - ev_now(loop);
    if (left < DRAIN_TICK_S) {
        ev_timer_stop(loop, t);
        ev_timer_set(t, left, DRAIN_TICK_S);
        ev_timer_start(loop, t);
    }
}

/* Steps 1-2 of the drain, for a stop signal or a finished upgrade hand-over
 * (<why>: the signal's name, or "upgrade"). */
static void drain_start(struct process *p, const char *why, conf_ms delay)
{
    struct worker *w = p->w;
    log_info("shutdown started", "signal=%s drain_delay_ms=%llu timeout_ms=%llu connections=%u",
             why, (unsigned long long)delay, (unsigned long long)w->conf->shutdown.timeout,
             worker_clients(w));
    ev_timer_stop(p->loop, &p->ready_timer);
    worker_set_state(w, WORKER_DRAIN_DELAY);
    if (delay == 0) {
        close_listeners(p);
        return;
    }
    ev_timer_set(&p->drain_timer, (double)delay / 1000.0, 0.);
    ev_timer_start(p->loop, &p->drain_timer);
}

static void on_stop_signal(struct ev_loop *loop, ev_signal *s, int revents)
{
    struct process *p = s->data;
    struct worker *w = p->w;
    if (w->state >= WORKER_DRAIN_DELAY) {
        log_warn("shutdown forced", "signal=%s connections=%u exit_code=1", signal_name(s->signum),
                 worker_clients(w));
        stop_loop(p, 1);
        return;
    }
    if (!p->upgrade.handed_over)
        sysd_notify("STOPPING=1");
    drain_start(p, signal_name(s->signum), w->conf->shutdown.drain_delay);
}

/* The new process took over the sockets: nothing arrives here any more, so
 * no drain_delay; the connections this process holds drain as in a stop. */
static void on_handed_over(struct process *p)
{
    worker_release_listeners(p->w);
    admin_release_listener(p);
    drain_start(p, "upgrade", 0);
}

static void on_upgrade_signal(struct ev_loop *loop, ev_signal *s, int revents)
{
    upgrade_start(s->data);
}

static void on_reload_signal(struct ev_loop *loop, ev_signal *s, int revents)
{
    struct process *p = s->data;
    if (p->w->state >= WORKER_DRAIN_DELAY) {
        log_warn("reload ignored", "reason=draining");
        return;
    }
    /* asynchronous: it logs its end (and tells systemd) itself */
    if (reload_request(p, NULL, NULL) < 0)
        log_error("reload failed", "reason=\"out of memory\" generation=%llu",
                  (unsigned long long)p->w->generation);
}

static void ready_poll_cb(struct ev_loop *loop, ev_timer *t, int revents)
{
    struct process *p = container_of(t, struct process, ready_timer);
    struct worker *w = p->w;
    if (w->state != WORKER_STARTING || !worker_first_round_done(w) ||
        !discover_first_round_done(p->discover))
        return;
    ev_timer_stop(loop, t);
    worker_set_state(w, WORKER_RUNNING);
    log_info("ready", "generation=%llu", (unsigned long long)w->generation);
    sysd_notify("READY=1\nSTATUS=serving, generation %llu", (unsigned long long)w->generation);
    upgrade_ready(p);
}

struct process *process_new(struct ev_loop *loop, struct conf *conf, char *exe, char **argv)
{
    struct process *p = calloc(1, sizeof(*p));
    if (!p)
        return NULL;
    p->loop = loop;
    p->exe = exe;
    p->argv = argv;
    p->upgrade.ctl_fd = p->upgrade.state_fd = p->admin_fd = -1;
    p->upgrade.handed_over_cb = on_handed_over;
    const struct worker_hooks hooks = {.clients_closed = on_clients_closed, .ctx = p};
    int rc = workers_create(p, workers_wanted(conf), conf, &hooks);
    p->ov = overrides_new();
    p->bg = bgwork_new(loop);
    if (rc == 0 && p->ov && p->bg && reload_init(p) == 0)
        p->discover = discover_new(loop, p->w);
    if (!p->discover) {
        reload_stop(p);
        bgwork_free(p->bg);
        overrides_free(p->ov);
        workers_free(p);
        free(p);
        return NULL;
    }
    ev_async_init(&p->drain_check, drain_check_cb);
    ev_async_start(loop, &p->drain_check);
    ev_timer_init(&p->drain_timer, drain_timer_cb, 0., 0.);
    ev_timer_init(&p->ready_timer, ready_poll_cb, 0., READY_POLL_S);
    ev_signal_init(&p->sig_term, on_stop_signal, SIGTERM);
    ev_signal_init(&p->sig_int, on_stop_signal, SIGINT);
    ev_signal_init(&p->sig_hup, on_reload_signal, SIGHUP);
    ev_signal_init(&p->sig_usr2, on_upgrade_signal, SIGUSR2);
    p->sig_term.data = p->sig_int.data = p->sig_hup.data = p->sig_usr2.data = p;
    return p;
}

/* Where the stop signal handler leaves its mark (the first worker's flag):
 * a signal handler has no argument, so this one pointer is static. */
static int *stop_flag;

/* In front of libev's handler (ev_feed_signal wakes the control loop from
 * any thread): with several workers, one may serve a request that was
 * already here when the signal came before the control thread begins the
 * drain; the flag makes it answer Connection: close. */
static void stop_signal_handler(int signum)
{
    if (stop_flag)
        __atomic_store_n(stop_flag, 1, __ATOMIC_RELAXED);
    ev_feed_signal(signum);
}

static void mark_stop_signals(struct process *p)
{
    stop_flag = &p->w->stop_signalled;
    struct sigaction sa = {.sa_handler = stop_signal_handler, .sa_flags = SA_RESTART};
    sigfillset(&sa.sa_mask);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
}

int process_start(struct process *p, struct ssl_ctx_st **tls)
{
    /* an upgrade's child names itself in LISTEN_PID first (upgrade.c) */
    if (upgrade_inherit(p) < 0 || sysd_inherit(&p->inherited) < 0) {
        listener_tls_release(tls, p->w->conf->num_listeners);
        free(tls);
        return -1;
    }
    auth_load(p, p->w->conf, true);
    overrides_load(p);
    int rc = reload_start(p, tls);
    if (rc == 0) {
        upgrade_restore(p);
        overrides_apply(p, false);
        if (fleet_start(p) < 0)
            rc = -1;
        else if (p->w->conf->admin.enabled && admin_start(p, sysd_claim(&p->inherited, "admin")) < 0)
            rc = -1;
    }
    sysd_release_unclaimed(&p->inherited);
    if (rc < 0)
        return -1;
    signal(SIGPIPE, SIG_IGN);
    ev_signal_start(p->loop, &p->sig_term);
    ev_signal_start(p->loop, &p->sig_int);
    ev_signal_start(p->loop, &p->sig_hup);
    ev_signal_start(p->loop, &p->sig_usr2);
    mark_stop_signals(p);
    ev_timer_start(p->loop, &p->ready_timer);
    ready_poll_cb(p->loop, &p->ready_timer, 0);
    return workers_start(p);
}

int process_run(struct process *p)
{
    ev_run(p->loop, 0);
    workers_stop(p);
    return p->exit_code;
}

void process_free(struct process *p)
{
    if (!p)
        return;
    stop_flag = NULL;
    ev_signal_stop(p->loop, &p->sig_term);
    ev_signal_stop(p->loop, &p->sig_int);
    ev_signal_stop(p->loop, &p->sig_hup);
    ev_signal_stop(p->loop, &p->sig_usr2);
    ev_timer_stop(p->loop, &p->drain_timer);
    ev_timer_stop(p->loop, &p->ready_timer);
    upgrade_stop(p);
    /* a reload under way is abandoned: nothing is applied now (whoever
     * waits for it is told, before the admin listener closes) */
    reload_stop(p);
    struct conf *conf = p->w->conf;
    discover_free(p->discover); /* no answer may reach the worker once it goes */
    p->discover = NULL;
    fleet_stop(p);
    workers_stop(p); /* when process_run was never reached */
    workers_free(p);
    ev_async_stop(p->loop, &p->drain_check);
    /* what is queued still runs: the last state file is written, and the
     * mutations that wait for it are answered before the admin listener
     * closes */
    bgwork_free(p->bg);
    p->bg = NULL;
    admin_stop(p);
    log_info("released", "what=admin_listener");
    conf_free(conf);
    free(p->exe);
    overrides_free(p->ov);
    free(p->token);
    free(p);
}
