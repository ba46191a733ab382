/* The process: startup, signals, the drain and the reload, around one
 * worker (DESIGN.md "Signals", "The process drain", "The reload"). */
#ifndef USHER_PROXY_LIFECYCLE_H
#define USHER_PROXY_LIFECYCLE_H

#include "../control/process-t.h"

/* Creates the process for <conf> (loaded and valid; ownership passes) on
 * <loop>; <exe> (absolute, ownership passes) and <argv> are what SIGUSR2
 * starts again. Nothing is bound yet. NULL on allocation failure. */
struct process *process_new(struct ev_loop *loop, struct conf *conf, char *exe, char **argv);

/* Applies the config (pools, backends and their checks, listeners) with the
 * TLS contexts <tls> built for it (listener_tls_prepare; the array passes
 * to the process), starts the admin listener and the signal watchers.
 * Returns 0, or -1 after logging why (the caller exits 1). */
int process_start(struct process *p, struct ssl_ctx_st **tls);

/* Runs the loop until the process drain ends. Returns the exit code. */
int process_run(struct process *p);

/* Releases everything, in reverse order of acquisition. */
void process_free(struct process *p);

#endif
