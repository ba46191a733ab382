/* The worker: one event loop and everything the data plane owns. */
#ifndef USHER_PROXY_WORKER_H
#define USHER_PROXY_WORKER_H

#include "worker-t.h"

struct conf_change;

/* With several workers the first one (the primary) lists the others, its
 * replicas; the process layer calls every function below on the primary
 * and it acts on all of them (counts are sums), from the control thread
 * while every worker is parked. */

/* Creates a worker on <loop> serving <conf> (the caller keeps owning every
 * config generation); its backends' health runs on <health_loop> (the
 * same loop with one worker). Nothing is bound and no pool exists yet: the
 * caller applies the config's changes — to <primary> (the first worker)
 * first when this one is a replica of it. <hooks> is copied. NULL on
 * allocation failure. */
struct worker *worker_new(struct ev_loop *loop, struct ev_loop *health_loop,
                          struct worker *primary, struct conf *conf,
                          const struct worker_hooks *hooks);

/* Releases listeners, client connections, health checks and pools, in that
 * order (DESIGN "The process drain" step 6). Replicas go before their
 * primary. */
void worker_free(struct worker *w);

/* Applies one pool or backend change of conf_diff(running, <nc>): pools are
 * created, backends added (or revived), removed (they drain) or
 * reconfigured. Listener changes are the caller's. Returns 0 or -1 (out of
 * memory). */
int worker_apply_change(struct worker *w, const struct conf *nc, const struct conf_change *ch);

/* Applies a change DNS discovery made to pool <ch>'s discovered backends:
 * CONF_BACKEND_ADDED (new_pool: the pool in the current generation,
 * new_backend: the address, only read during the call) adds it, or revives
 * it if it still drains; CONF_BACKEND_REMOVED (old_pool, old_backend: its
 * name) drains it with old_pool's deregistration_delay, reason dns;
 * CONF_BACKEND_WEIGHT (new_pool, new_backend) gives it a new weight. Servers
 * added here are the discovery's: worker_apply_change never removes them,
 * and a changed pool reconfigures them too. Other kinds are ignored.
 * Returns 0 or -1 (out of memory). */
int worker_apply_discovered(struct worker *w, const struct conf_change *ch);

/* Makes <nc> the generation in force: pools point at their new settings
 * (NULL for removed ones), limits follow it. */
void worker_commit_conf(struct worker *w, struct conf *nc);

/* Binds a listener for <cl> (or adopts the inherited listening socket <fd>
 * when >= 0) whose connections this worker serves (not accepting yet);
 * <tls_ctx> passes to it on success. NULL with *<err>. */
struct listener *worker_listener_open(struct worker *w, const struct conf_listener *cl, int fd,
                                      struct ssl_ctx_st *tls_ctx, const char **err);

/* A replica's listener on the socket of the primary's listener <pl> (a
 * descriptor of its own, the same TLS context), listed by <pl>. NULL with
 * *<err>. */
struct listener *worker_listener_replicate(struct worker *w, struct listener *pl, const char **err);

/* Appends an opened (and configured) listener to the worker's list, and
 * a replica of it to each replica worker's. 0, or -1 if a replica could
 * not be made (logged). */
int worker_listener_add(struct worker *w, struct listener *l);

/* A kept listener <l> follows generation <cl> in every worker: its split
 * over each worker's pools and <tls_ctx> (taken; each replica holds a
 * reference). 0 or -1 (out of memory). */
int worker_listener_configure(struct worker *w, struct listener *l, const struct conf_listener *cl,
                              struct ssl_ctx_st *tls_ctx);

/* A reload removed <l>: it stops accepting, its idle connections close and
 * busy ones close after their response; it is freed with the last one. */
void worker_listener_remove(struct worker *w, struct listener *l);

/* The server named <name> of runtime pool <p> (or of the pool named <pool>
 * of the config in force) that the config still has (not removed); NULL if
 * none. The admin API, overrides, the fleet and an upgrade find backends
 * by these. */
struct server *worker_pool_server(struct pool *p, const char *name);
struct server *worker_find_server(struct worker *w, const char *pool, const char *name);

/* True if an open listener sends new traffic to pool <p>. */
bool worker_pool_in_use(const struct worker *w, const struct pool *p);

/* The runtime API or the fleet overrode the split of <l>: pools it left at
 * 0 that no open listener sends to keep their backends in rotation (for a
 * rollback), but nothing will reuse their idle pooled connections: those
 * close, in every worker. */
void worker_split_overridden(struct worker *w, const struct listener *l);

/* The open listener of the config in force named <name>, or NULL. */
struct listener *worker_listener_named(struct worker *w, const char *name);

/* The open listener with <cl>'s name and bind address (the identity a
 * reload keeps a socket by), or NULL. */
struct listener *worker_find_listener(struct worker *w, const struct conf_listener *cl);

/* Pauses / resumes accepting on every open listener. */
void worker_accept_pause(struct worker *w);
void worker_accept_resume(struct worker *w);

/* Drain steps: close every listener (accepting what the kernel queued). */
void worker_close_listeners(struct worker *w);

/* Upgrade hand-over: stop accepting and close this process's descriptors
 * of every listening socket without accepting: the sockets (and their
 * queues) live on in the new process, which accepts from them. */
void worker_release_listeners(struct worker *w);

/* Drain step 3 for client connections: idle keep-alive ones close now, or
 * evenly over <spread_ms> (shutdown.close_spread), or, with
 * <after_request> (shutdown.idle_close: after_request), after their next
 * response; requests that already arrived are served with Connection:
 * close. */
void worker_shutdown_idle(struct worker *w, conf_ms spread_ms, bool after_request);

/* The process drain ends at <deadline>: WebSocket tunnels get their close
 * frames shutdown.tunnel_close_grace before it. */
void worker_tunnels_deadline(struct worker *w, ev_tstamp deadline);

/* Closes every client connection now. Returns how many of them were cut
 * in an exchange or a tunnel (idle keep-alive ones cut nothing). */
unsigned worker_close_clients(struct worker *w);

/* Client connections a drain waits for (lingering closes excluded). */
unsigned worker_busy_clients(const struct worker *w);

/* True once every health-checked backend has a first result. */
bool worker_first_round_done(const struct worker *w);

/* True once the first health round completed and while not draining. */
bool worker_ready(const struct worker *w);

/* Raises the soft RLIMIT_NOFILE to the hard limit (once, at startup). */
void worker_raise_fd_limit(void);

/* Limits derived from a config: parse limits, buffer size, and the
 * effective max_connections (capped by the file descriptor limit). */
void worker_apply_limits(struct worker *w, const struct conf *conf);

/* Sets the state of every worker (the process lifecycle only). */
void worker_set_state(struct worker *w, enum worker_state state);

/* Open client connections and accept pauses, summed over the workers. */
unsigned worker_clients(const struct worker *w);
uint64_t worker_accept_paused(const struct worker *w);

/* The retries of the pool named <pool>, summed over the workers. */
struct pool_totals {
    uint64_t retries[RETRY_REASONS];
    uint64_t budget_refused;
};
void worker_pool_totals(const struct worker *w, const char *pool, struct pool_totals *t);

/* HTTP/2 streams in progress and GOAWAYs sent, summed over the workers. */
struct h2_totals {
    unsigned streams;
    uint64_t goaway[H2_GOAWAY_REASONS];
};
void worker_h2_totals(const struct worker *w, struct h2_totals *t);

const char *worker_state_str(enum worker_state s);

#endif
