/* The probe thread: /live and /ready answered whatever the control thread
 * is doing (DESIGN "Ownership and state": within 100 ms, a reload of a
 * 20,000-backend config or a frozen DNS server notwithstanding). A tiny
 * thread with a loop of its own owns the admin listening socket: it
 * accepts, reads each request head, answers GET/HEAD /live and /ready from
 * what the control thread published (probe_set_ready), and hands every
 * other request — the descriptor and the bytes read so far — to the
 * control loop, which serves it (admin.c). */
#ifndef USHER_PROXY_PROBE_H
#define USHER_PROXY_PROBE_H

#include <ev.h>
#include <stdbool.h>
#include <stddef.h>
#include <sys/socket.h>

#include "../base/buf.h"

/* An admin request head must fit here; anything larger is not ours (431). */
#define ADMIN_HEAD_MAX 8192
#define ADMIN_HEADERS_MAX 64
/* A stuck admin client is dropped after this long (the head; then, at the
 * control loop, the body; then the answer's write). */
#define ADMIN_TIMEOUT_S 5.0
/* Admin connections open at once, on each side: the probe's (reading a
 * head, answering a probe) and the control loop's (the requests it was
 * handed). Beyond the first a connection is closed at accept; beyond the
 * second the probe answers 503 itself. So a flood of admin clients cannot
 * take descriptors or memory the data plane needs, and requests piling up
 * at a busy control loop never take the probes' places. Enough for a few
 * pollers, ctl waits and a browser. */
#define ADMIN_CONNS_MAX 32

struct probe;

/* A request the probe does not answer, on the control loop: <fd>
 * (non-blocking, close-on-exec) is the callee's from now on, and so is
 * <in> (malloc'd, <cap> bytes, the first <len> read: a whole head, maybe
 * part of a body). The callee calls probe_conn_closed() when it closes
 * <fd>. */
typedef void (*probe_handoff_cb)(void *ctx, int fd, const struct sockaddr *peer, socklen_t peer_len,
                                 char *in, size_t len, size_t cap);

/* Starts the probe thread on listening socket <fd> (taken over: the probe
 * closes it). <control> is the control loop, where <handoff>(<ctx>, ...)
 * runs. <ready_reason>: as for probe_set_ready. NULL when the thread or
 * memory could not be had (<fd> is then still the caller's). */
struct probe *probe_start(int fd, struct ev_loop *control, probe_handoff_cb handoff, void *ctx,
                          const char *ready_reason);

/* What /ready answers from now on: 200 for NULL, else 503 with <reason>
 * (a static string: "starting", "draining", "no backend in rotation").
 * Any thread; the probe reads it with the next request. */
void probe_set_ready(struct probe *pr, const char *reason);

/* A connection handed over was closed: its place at the control loop is
 * free again. The control loop's thread. */
void probe_conn_closed(struct probe *pr);

/* Upgrade hand-over: the probe stops accepting and closes its descriptor
 * of the listening socket (which lives on in the new process); requests it
 * holds are still answered. Returns at once. */
void probe_release(struct probe *pr);

/* Stops the thread (its connections are closed, the listening socket too
 * unless released) and frees <pr>; handed-over requests the control loop
 * has not taken yet are closed. NULL is fine. */
void probe_stop(struct probe *pr);

/* The admin listener's one response writer (both threads): a status
 * line, Content-Type, Content-Length, Allow (if not NULL), no caching,
 * Connection: close, then <body> unless <head_only>. */
void probe_format_response(struct hbuf *out, int status, const char *type, const char *allow,
                           const char *body, size_t body_len, bool head_only);

#endif
