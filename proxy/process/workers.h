/* The worker threads (DESIGN "Ownership and state"). */
#ifndef USHER_PROXY_WORKERS_H
#define USHER_PROXY_WORKERS_H

#include "../control/process-t.h"

/* The number of workers <conf> asks for: `workers`, or with auto (0) the
 * CPUs this process may run on. */
unsigned workers_wanted(const struct conf *conf);

/* Creates the <n> workers of <p> serving <conf>: with one, it runs on the
 * control loop p->loop; with more, each gets a loop of its own (p->w is the
 * first, the others its replicas). 0 or -1 (out of memory). */
int workers_create(struct process *p, unsigned n, struct conf *conf,
                   const struct worker_hooks *hooks);

/* With more than one worker: starts a thread per worker, and from now on
 * every callback of the control loop runs while every worker is parked
 * between two iterations of its loop. 0 or -1 (logged). */
int workers_start(struct process *p);

/* Stops and joins the threads (the control loop has returned). */
void workers_stop(struct process *p);

/* Frees every worker and its loop (after workers_stop). */
void workers_free(struct process *p);

#endif
