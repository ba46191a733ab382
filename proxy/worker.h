/* The worker: one event loop and everything the data plane owns. */
#ifndef USHER_PROXY_WORKER_H
#define USHER_PROXY_WORKER_H

#include "worker-t.h"

/* Creates a worker on <loop> for config <conf> (ownership passes to the
 * worker). Nothing is bound yet. Returns NULL on allocation failure. */
struct worker *worker_new(struct ev_loop *loop, struct conf *conf);

/* Binds listeners and the admin listener, creates pools and backends
 * (starting their health checks) and installs signal watchers. Returns 0,
 * or -1 after logging why (the caller exits 1). */
int worker_start(struct worker *w);

/* Runs the loop until the process drain ends. Returns the exit code. */
int worker_run(struct worker *w);

/* Releases everything, in reverse order of acquisition. */
void worker_free(struct worker *w);

/* Bookkeeping called by client.c when a connection opens / closes. */
void worker_client_opened(struct worker *w, struct client *c);
void worker_client_closed(struct worker *w, struct client *c);

/* Makes the runtime pools and backends match <conf>: new backends start
 * checking, kept ones are reconfigured, removed ones drain. Also rebuilds
 * every listener's split. Returns 0 or -1 (allocation failure). */
int worker_sync_pools(struct worker *w, const struct conf *conf);

/* Finds a runtime pool by name; NULL if none. */
struct pool *worker_find_pool(struct worker *w, const char *name);

/* True once the first health round completed and while not draining. */
bool worker_ready(const struct worker *w);

/* Pauses / resumes accepting on every open listener. */
void worker_accept_pause(struct worker *w);
void worker_accept_resume(struct worker *w);

/* Raises the soft RLIMIT_NOFILE to the hard limit (once, at startup). */
void worker_raise_fd_limit(void);

/* Limits derived from a config: parse limits, buffer size, and the
 * effective max_connections (capped by the file descriptor limit). */
void worker_apply_limits(struct worker *w, const struct conf *conf);

const char *worker_state_str(enum worker_state s);

#endif
