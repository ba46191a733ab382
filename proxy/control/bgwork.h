/* Background jobs: blocking work (parsing a config, loading certificates,
 * fsync of the state file) runs on a thread of its own, never on a loop
 * (DESIGN "Ownership and state": no loop ever blocks). A job is two
 * callbacks: run(arg) on the background thread, then done(arg) on the
 * owner's event loop. */
#ifndef USHER_PROXY_BGWORK_H
#define USHER_PROXY_BGWORK_H

#include <ev.h>
#include <stdbool.h>

struct bgwork;

/* Runs on the background thread: may block, must not touch anything the
 * loops own (it gets what it needs through <arg>). */
typedef void (*bgwork_run_cb)(void *arg);
/* Runs on the owner's loop once run(arg) returned: the job's result goes
 * back to the loop's state here. */
typedef void (*bgwork_done_cb)(void *arg);

/* Starts the background thread for <loop> (the control loop: done
 * callbacks run there). NULL when the thread or memory could not be had. */
struct bgwork *bgwork_new(struct ev_loop *loop);

/* Queues a job: <run>(<arg>) on the background thread, after every job
 * submitted before it (FIFO, one at a time); then <done>(<arg>) on the
 * loop, also in submission order. Either callback may be NULL. Callable
 * from the loop's thread only (done callbacks included). Returns 0, or -1
 * (out of memory) without calling either. */
int bgwork_submit(struct bgwork *bg, bgwork_run_cb run, bgwork_done_cb done, void *arg);

/* True while some job has not finished (its done callback not yet run). */
bool bgwork_busy(const struct bgwork *bg);

/* Finishes every queued job (their run callbacks complete: a state file
 * queued for writing is written), calls the done callbacks of all of them
 * on the calling thread, joins the thread and frees <bg>. A done callback
 * called here may not submit again. NULL is fine. */
void bgwork_free(struct bgwork *bg);

#endif
