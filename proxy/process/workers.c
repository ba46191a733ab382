/* The worker threads. With `workers` > 1 each worker's event loop runs on
 * a thread of its own; the control thread (the process loop: signals,
 * reload, health checks, the admin API, discovery, the fleet link) owns
 * everything else.
 *
 * The control thread touches data-plane state only while every worker is
 * parked between two iterations of its loop: libev's documented pattern of
 * a mutex per loop, held by its thread except while it polls
 * (ev_set_loop_release_cb), taken by another thread that wants to act on
 * the loop. The control loop's callbacks run inside one such stop of the
 * world (ev_set_invoke_pending_cb), so the reload, the admin API and
 * health's hooks see and change a quiescent data plane, and what they did
 * is in force at each worker's next event: a reload answers only once
 * every worker runs the new generation. A worker takes its own, otherwise
 * uncontended mutex once per loop iteration: no lock on the hot path
 * beyond that, and workers never share a connection. What workers report
 * upward (a last connection to a backend, an ejection, a drain's progress)
 * goes through atomics and ev_async to the control loop. */
#include "workers.h"

#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>

#include "../../conf/conf.h"
#include "../base/log.h"
#include "../core/worker.h"

struct worker_thread {
    struct worker *w;
    pthread_t tid;
    bool running;          /* the thread was created */
    pthread_mutex_t lock;  /* held by the worker except while it polls */
    pthread_cond_t resume; /* the control thread let go */
    int control_wants;     /* atomic: the control thread waits for the lock */
    bool quit;             /* under lock: leave the loop */
    ev_async wake;         /* on the worker's loop: look at quit, recompute timers */
};

unsigned workers_wanted(const struct conf *conf)
{
    if (conf->workers > 0)
        return conf->workers;
    cpu_set_t set;
    if (sched_getaffinity(0, sizeof(set), &set) < 0)
        return 1;
    int n = CPU_COUNT(&set);
    return n > 0 ? (unsigned)n : 1;
}

int workers_create(struct process *p, unsigned n, struct conf *conf,
                   const struct worker_hooks *hooks)
{
    p->num_workers = n;
    if (n == 1) {
        p->w = worker_new(p->loop, p->loop, NULL, conf, hooks);
        return p->w ? 0 : -1;
    }
    p->threads = calloc(n, sizeof(*p->threads));
    if (!p->threads)
        return -1;
    for (unsigned i = 0; i < n; i++) {
        struct ev_loop *loop = ev_loop_new(EVFLAG_AUTO);
        struct worker *w = loop ? worker_new(loop, p->loop, p->w, conf, hooks) : NULL;
        if (!w) {
            if (loop)
                ev_loop_destroy(loop);
            return -1;
        }
        if (i == 0)
            p->w = w;
        struct worker_thread *t = &p->threads[i];
        t->w = w;
        pthread_mutex_init(&t->lock, NULL);
        pthread_cond_init(&t->resume, NULL);
        ev_set_userdata(loop, t);
    }
    return 0;
}

/* ---- the worker's side --------------------------------------------------- */

static void release_cb(struct ev_loop *loop)
{
    struct worker_thread *t = ev_userdata(loop);
    pthread_mutex_unlock(&t->lock);
}

static void acquire_cb(struct ev_loop *loop)
{
    struct worker_thread *t = ev_userdata(loop);
    pthread_mutex_lock(&t->lock);
    /* the control thread asked first: it gets the lock before this loop
     * goes on (a busy worker would otherwise win it back every time) */
    while (__atomic_load_n(&t->control_wants, __ATOMIC_ACQUIRE))
        pthread_cond_wait(&t->resume, &t->lock);
}

static void wake_cb(struct ev_loop *loop, ev_async *a, int revents)
{
    struct worker_thread *t = ev_userdata(loop);
    if (t->quit)
        ev_break(loop, EVBREAK_ALL);
}

static void *thread_main(void *arg)
{
    struct worker_thread *t = arg;
    pthread_mutex_lock(&t->lock);
    ev_run(t->w->loop, 0);
    pthread_mutex_unlock(&t->lock);
    return NULL;
}

/* ---- the control thread's side ------------------------------------------- */

static void stop_world(struct process *p)
{
    for (unsigned i = 0; i < p->num_workers; i++)
        __atomic_store_n(&p->threads[i].control_wants, 1, __ATOMIC_RELEASE);
    for (unsigned i = 0; i < p->num_workers; i++) {
        struct worker_thread *t = &p->threads[i];
        pthread_mutex_lock(&t->lock);
        /* a worker that slept in its poll has an old clock: timers the
         * control thread arms on its loop must start from now */
        ev_now_update(t->w->loop);
    }
}

static void start_world(struct process *p)
{
    for (unsigned i = 0; i < p->num_workers; i++) {
        struct worker_thread *t = &p->threads[i];
        __atomic_store_n(&t->control_wants, 0, __ATOMIC_RELEASE);
        pthread_cond_broadcast(&t->resume);
        pthread_mutex_unlock(&t->lock);
        /* what was done to its loop (timers, watchers) takes effect now */
        ev_async_send(t->w->loop, &t->wake);
    }
}

static void control_invoke(struct ev_loop *loop)
{
    struct process *p = ev_userdata(loop);
    if (ev_pending_count(loop) == 0)
        return;
    stop_world(p);
    ev_invoke_pending(loop);
    start_world(p);
}

int workers_start(struct process *p)
{
    if (!p->threads)
        return 0;
    /* signals are the control thread's, so the workers block them — all but
     * the stop signals: whichever thread runs first takes one, so its mark
     * (lifecycle.c) is set before any worker serves another request */
    sigset_t all, old;
    sigfillset(&all);
    sigdelset(&all, SIGTERM);
    sigdelset(&all, SIGINT);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    int rc = 0;
    for (unsigned i = 0; i < p->num_workers && rc == 0; i++) {
        struct worker_thread *t = &p->threads[i];
        struct ev_loop *loop = t->w->loop;
        ev_async_init(&t->wake, wake_cb);
        ev_async_start(loop, &t->wake);
        ev_set_loop_release_cb(loop, release_cb, acquire_cb);
        int err = pthread_create(&t->tid, NULL, thread_main, t);
        if (err) {
            log_error("worker thread failed", "worker=%u reason=\"%s\"", i, strerror(err));
            rc = -1;
            break;
        }
        t->running = true;
    }
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    ev_set_userdata(p->loop, p);
    ev_set_invoke_pending_cb(p->loop, control_invoke);
    log_info("workers started", "workers=%u", p->num_workers);
    return rc;
}

void workers_stop(struct process *p)
{
    if (!p->threads)
        return;
    ev_set_invoke_pending_cb(p->loop, ev_invoke_pending);
    for (unsigned i = 0; i < p->num_workers; i++) {
        struct worker_thread *t = &p->threads[i];
        if (!t->running)
            continue;
        pthread_mutex_lock(&t->lock);
        t->quit = true;
        pthread_mutex_unlock(&t->lock);
        ev_async_send(t->w->loop, &t->wake);
    }
    for (unsigned i = 0; i < p->num_workers; i++) {
        struct worker_thread *t = &p->threads[i];
        if (t->running)
            pthread_join(t->tid, NULL);
        t->running = false;
        ev_set_loop_release_cb(t->w->loop, NULL, NULL);
    }
}

void workers_free(struct process *p)
{
    if (!p->threads) {
        worker_free(p->w);
        p->w = NULL;
        return;
    }
    struct ev_loop **loops = calloc(p->num_workers, sizeof(*loops));
    for (unsigned i = 0; i < p->num_workers; i++) {
        struct worker_thread *t = &p->threads[i];
        if (!t->w)
            continue;
        if (loops)
            loops[i] = t->w->loop;
        ev_async_stop(t->w->loop, &t->wake);
    }
    worker_free(p->w); /* the replicas with it */
    p->w = NULL;
    for (unsigned i = 0; i < p->num_workers; i++) {
        if (!p->threads[i].w)
            continue;
        if (loops && loops[i])
            ev_loop_destroy(loops[i]);
        pthread_mutex_destroy(&p->threads[i].lock);
        pthread_cond_destroy(&p->threads[i].resume);
    }
    free(loops);
    free(p->threads);
    p->threads = NULL;
}
