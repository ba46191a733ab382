/* Listening sockets: bind, accept in batches, hand each connection to the
 * owner's accept callback. */
#ifndef USHER_PROXY_LISTENER_H
#define USHER_PROXY_LISTENER_H

#include "worker-t.h"

/* Binds and listens for <cl> (not accepting yet), or takes over the
 * listening socket <fd> when it is >= 0 (inherited). <tls_ctx> (NULL for a
 * plain listener) passes to the listener on success. Accepted connections
 * go to <ops> with <owner>. Returns the listener, or NULL with *<err> set to
 * a static reason and errno kept (an inherited <fd> is then the caller's). */
struct listener *listener_open(struct ev_loop *loop, const struct conf_listener *cl, int fd,
                               struct ssl_ctx_st *tls_ctx, const struct listener_ops *ops,
                               void *owner, const char **err);

/* Points <l> at config <cl> (same name and bind) and rebuilds its split
 * over the runtime pools <pools>. <tls_ctx> replaces the listener's context
 * (ownership passes). Returns 0 or -1 (nothing changed). */
int listener_configure(struct listener *l, const struct conf_listener *cl, struct pool *pools,
                       struct ssl_ctx_st *tls_ctx);

/* Overrides the split of <l> with the <n> pool weights of <split> (pools
 * of the listener's split; one left out gets 0): the next request uses it.
 * Returns 0, or -1 with *<unknown> naming a pool the listener has not
 * (nothing changed). */
int listener_override_split(struct listener *l, const struct conf_split *split, size_t n,
                            const char **unknown);

/* Back to the config's split. */
void listener_clear_split(struct listener *l);

/* Appends the split in force, "blue=0,green=100", to <out> (for the log). */
void listener_split_text(const struct listener *l, struct hbuf *out);

/* What primary listener <l> and its replicas served, summed over the
 * workers. */
struct listener_totals {
    unsigned connections;
    unsigned h2_connections; /* of connections: the HTTP/2 ones */
    uint64_t accepted;
    uint64_t responses[STATUS_CLASSES];
    uint64_t h2_responses[STATUS_CLASSES]; /* of responses: to requests over HTTP/2 */
    uint64_t bytes_in, bytes_out;
    struct metrics_histogram duration;
};
void listener_totals(const struct listener *l, struct listener_totals *t);

/* Starts / stops the accept watcher. */
void listener_resume(struct listener *l);
void listener_pause(struct listener *l);

/* Accepts what the kernel already queued, then closes the socket: no new
 * connections. Open ones continue. */
void listener_close(struct listener *l);

/* Closes this process's descriptor of the socket without accepting: the
 * socket lives on where another process holds it (upgrade hand-over). */
void listener_release(struct listener *l);

/* Frees <l>. A socket still open is closed without accepting (a listener
 * prepared by a reload that failed). Its connections must be gone. */
void listener_free(struct listener *l);

/* Builds the TLS context of every TLS listener of <conf> into <ctxs>
 * (conf->num_listeners entries, NULL for plain ones), so a bad certificate
 * is a config error at -t, startup and reload, and the contexts built are
 * the ones used. Returns 0, or -1 with "file:line:column:
 * listeners[i].tls: reason" in <msg> and nothing left allocated. */
int listener_tls_prepare(const struct conf *conf, struct ssl_ctx_st **ctxs, char *msg, size_t cap);

/* Frees the contexts of <ctxs> not handed to a listener (set to NULL). */
void listener_tls_release(struct ssl_ctx_st **ctxs, size_t n);

#endif
