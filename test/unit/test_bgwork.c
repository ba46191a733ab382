// links: usher_proxy_control
/* Background jobs (proxy/control/bgwork.c): run on another thread, one at
 * a time in submission order, done on the loop in the same order; the loop
 * goes on while a job blocks; bgwork_free finishes what is queued. */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "proxy/control/bgwork.h"
#include "test/unit/check.h"

#define JOBS 200

struct rec {
    int ran[JOBS + 8];
    int ran_n; /* written by the background thread only */
    int done[JOBS + 8];
    int done_n;
    pthread_t loop_thread;
    int wrong_thread_run;  /* a run on the loop's thread */
    int wrong_thread_done; /* a done off the loop's thread */
    int overlap;           /* two runs at once */
    int running;
    struct bgwork *bg;
    struct ev_loop *loop;
};

struct job {
    struct rec *r;
    int id;
    useconds_t sleep_us;
};

static void job_run(void *arg)
{
    struct job *j = arg;
    struct rec *r = j->r;
    if (pthread_equal(pthread_self(), r->loop_thread))
        r->wrong_thread_run++;
    if (__atomic_add_fetch(&r->running, 1, __ATOMIC_SEQ_CST) != 1)
        r->overlap++;
    if (j->sleep_us)
        usleep(j->sleep_us);
    r->ran[r->ran_n++] = j->id;
    __atomic_sub_fetch(&r->running, 1, __ATOMIC_SEQ_CST);
}

static void job_done(void *arg)
{
    struct job *j = arg;
    struct rec *r = j->r;
    if (!pthread_equal(pthread_self(), r->loop_thread))
        r->wrong_thread_done++;
    r->done[r->done_n++] = j->id;
    free(j);
    if (r->done_n == JOBS)
        ev_break(r->loop, EVBREAK_ALL);
}

static struct job *job_new(struct rec *r, int id, useconds_t sleep_us)
{
    struct job *j = calloc(1, sizeof(*j));
    j->r = r;
    j->id = id;
    j->sleep_us = sleep_us;
    return j;
}

static void guard_cb(struct ev_loop *loop, ev_timer *t, int revents)
{
    ev_break(loop, EVBREAK_ALL);
}

/* FIFO on both sides, on the right threads, never two runs at once. */
static void test_order_and_threads(void)
{
    struct rec r = {0};
    r.loop = ev_loop_new(EVFLAG_AUTO);
    r.loop_thread = pthread_self();
    r.bg = bgwork_new(r.loop);
    CHECK(r.bg != NULL);
    for (int i = 0; i < JOBS; i++)
        CHECK_INT(bgwork_submit(r.bg, job_run, job_done, job_new(&r, i, i % 10 == 0 ? 200 : 0)), 0);
    CHECK(bgwork_busy(r.bg));
    ev_timer guard;
    ev_timer_init(&guard, guard_cb, 10.0, 0.);
    ev_timer_start(r.loop, &guard);
    ev_run(r.loop, 0);
    ev_timer_stop(r.loop, &guard);
    CHECK_INT(r.ran_n, JOBS);
    CHECK_INT(r.done_n, JOBS);
    for (int i = 0; i < r.ran_n; i++)
        CHECK_INT(r.ran[i], i);
    for (int i = 0; i < r.done_n; i++)
        CHECK_INT(r.done[i], i);
    CHECK_INT(r.wrong_thread_run, 0);
    CHECK_INT(r.wrong_thread_done, 0);
    CHECK_INT(r.overlap, 0);
    CHECK(!bgwork_busy(r.bg));
    bgwork_free(r.bg);
    ev_loop_destroy(r.loop);
}

/* While a job blocks, the loop keeps serving its timers. */
static int ticks;
static void tick_cb(struct ev_loop *loop, ev_timer *t, int revents)
{
    ticks++;
}

static int blocked_done;
static void blocked_run(void *arg)
{
    usleep(300 * 1000);
}
static void blocked_done_cb(void *arg)
{
    blocked_done = 1;
    ev_break((struct ev_loop *)arg, EVBREAK_ALL);
}

static void test_loop_runs_while_job_blocks(void)
{
    struct ev_loop *loop = ev_loop_new(EVFLAG_AUTO);
    struct bgwork *bg = bgwork_new(loop);
    ev_timer tick, guard;
    ev_timer_init(&tick, tick_cb, 0.01, 0.01);
    ev_timer_start(loop, &tick);
    ev_timer_init(&guard, guard_cb, 5.0, 0.);
    ev_timer_start(loop, &guard);
    ticks = 0;
    CHECK_INT(bgwork_submit(bg, blocked_run, blocked_done_cb, loop), 0);
    ev_run(loop, 0);
    CHECK(blocked_done);
    /* 300 ms of blocking at a 10 ms tick: the loop ticked all along */
    CHECK(ticks >= 15, "ticks=%d while the job blocked", ticks);
    ev_timer_stop(loop, &tick);
    ev_timer_stop(loop, &guard);
    bgwork_free(bg);
    ev_loop_destroy(loop);
}

/* A done callback may submit the next job (a queued reload starts from
 * the end of the previous one). */
struct chain {
    struct bgwork *bg;
    struct ev_loop *loop;
    int left;
    int runs;
};
static void chain_run(void *arg)
{
    ((struct chain *)arg)->runs++;
}
static void chain_done(void *arg)
{
    struct chain *c = arg;
    if (--c->left > 0)
        CHECK_INT(bgwork_submit(c->bg, chain_run, chain_done, c), 0);
    else
        ev_break(c->loop, EVBREAK_ALL);
}

static void test_submit_from_done(void)
{
    struct chain c = {.loop = ev_loop_new(EVFLAG_AUTO), .left = 5};
    c.bg = bgwork_new(c.loop);
    ev_timer guard;
    ev_timer_init(&guard, guard_cb, 5.0, 0.);
    ev_timer_start(c.loop, &guard);
    CHECK_INT(bgwork_submit(c.bg, chain_run, chain_done, &c), 0);
    ev_run(c.loop, 0);
    CHECK_INT(c.runs, 5);
    CHECK_INT(c.left, 0);
    ev_timer_stop(c.loop, &guard);
    bgwork_free(c.bg);
    ev_loop_destroy(c.loop);
}

/* bgwork_free runs what is still queued, then every done callback, and a
 * done callback cannot submit any more. */
static int free_runs, free_dones, free_resubmit_rc = 99;
static struct bgwork *free_bg;
static void free_run(void *arg)
{
    usleep(20 * 1000);
    free_runs++;
}
static void free_done(void *arg)
{
    free_dones++;
    free_resubmit_rc = bgwork_submit(free_bg, free_run, free_done, NULL);
}

static void test_free_finishes_queue(void)
{
    struct ev_loop *loop = ev_loop_new(EVFLAG_AUTO);
    free_bg = bgwork_new(loop);
    for (int i = 0; i < 5; i++)
        CHECK_INT(bgwork_submit(free_bg, free_run, free_done, NULL), 0);
    bgwork_free(free_bg); /* the loop never ran */
    CHECK_INT(free_runs, 5);
    CHECK_INT(free_dones, 5);
    CHECK_INT(free_resubmit_rc, -1);
    bgwork_free(NULL);
    ev_loop_destroy(loop);
}

int main(void)
{
    test_order_and_threads();
    test_loop_runs_while_job_blocks();
    test_submit_from_done();
    test_free_finishes_queue();
    return check_report("test_bgwork");
}
