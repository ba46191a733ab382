/* The probe thread. Its loop holds the admin listening socket and the
 * connections whose head has not arrived yet; nothing it touches belongs
 * to the control thread, and the two meet at three points only:
 *   - the readiness, one pointer to a static string (atomic: the control
 *     thread stores it, the probe loads it per request);
 *   - the hand-over, a list under a mutex held just to link or unlink, and
 *     an ev_async on the control loop;
 *   - the commands (release, stop), bits in an atomic word and an
 *     ev_async on the probe's loop.
 * So a control loop busy for seconds (a reload's apply, a /status of
 * 20,000 backends) delays only the requests it serves itself: a probe
 * never waits for it.
 *
 * The connections are watched through an epoll set of the probe's own
 * (itself watched by the loop), not by ev_io: a descriptor handed to the
 * control loop must leave this thread's kernel state before it does, and
 * libev's epoll backend never removes a stopped descriptor (it waits for
 * the close or a spurious event, which would then be handled here while
 * the control thread owns the descriptor). EPOLL_CTL_DEL, explicitly,
 * before the hand-over, leaves nothing behind. */
#include "probe.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "../../parser/http1.h"
#include "../net/list.h"

/* After EMFILE/ENFILE the listening socket stays readable: accepting
 * pauses this long instead of spinning. */
#define ACCEPT_RETRY_S 0.1

/* The probe thread's nice value, where the process may lower it: ahead of
 * the control and worker threads (0) when the CPUs are saturated. */
#define PROBE_NICE (-10)

enum probe_cmd {
    CMD_RELEASE = 1, /* close the listening socket, keep serving what is open */
    CMD_STOP = 2,    /* close everything, leave the loop */
};

/* One connection while the probe holds it: reading its head, or writing
 * the probe's answer. */
struct pconn {
    struct probe *pr;
    int fd;
    struct sockaddr_storage peer;
    socklen_t peer_len;
    bool watched;   /* in pr->conns_ep */
    ev_timer timer; /* ADMIN_TIMEOUT_S for the head, then for the write */
    char *in;
    size_t in_len;
    size_t in_cap;
    struct hbuf out;
    struct list link; /* the probe's conns, then the hand-over list */
};

struct probe {
    struct ev_loop *loop;    /* the probe's own */
    struct ev_loop *control; /* where hand-overs go */
    pthread_t tid;
    int fd; /* the listening socket, -1 once released (the probe's thread) */
    ev_io accept_io;
    int conns_ep;   /* epoll set of the connections (see above) */
    ev_io conns_io; /* the loop's watch on it */
    ev_timer accept_retry;
    ev_async cmd_wake;     /* on <loop> */
    int cmd;               /* atomic: enum probe_cmd bits */
    struct list conns;     /* the probe's thread */
    unsigned num_conns;    /* the probe's thread */
    const char *ready;     /* atomic: why /ready is 503, NULL when 200 */
    unsigned control_held; /* atomic: handed-over connections still open */

    pthread_mutex_t lock;
    struct list handed;    /* under lock: handed over, not yet taken */
    ev_async handoff_wake; /* on <control> */
    probe_handoff_cb handoff;
    void *ctx;
};

void probe_format_response(struct hbuf *out, int status, const char *type, const char *allow,
                           const char *body, size_t body_len, bool head_only)
{
    hbuf_printf(out, "HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %zu\r\n", status,
                http1_status_text(status), type, body_len);
    if (allow)
        hbuf_printf(out, "Allow: %s\r\n", allow);
    hbuf_append_str(out, "Cache-Control: no-store\r\nConnection: close\r\n\r\n");
    if (!head_only)
        hbuf_append(out, body, body_len);
}

/* ---- the probe's thread --------------------------------------------------- */

/* Watches <c> for <events> (EPOLLIN or EPOLLOUT), or no more (0). */
static void watch(struct pconn *c, uint32_t events)
{
    struct epoll_event ev = {.events = events, .data.ptr = c};
    if (!events) {
        if (c->watched)
            epoll_ctl(c->pr->conns_ep, EPOLL_CTL_DEL, c->fd, &ev);
        c->watched = false;
        return;
    }
    if (epoll_ctl(c->pr->conns_ep, c->watched ? EPOLL_CTL_MOD : EPOLL_CTL_ADD, c->fd, &ev) == 0)
        c->watched = true; /* else its timer ends it */
}

static void pconn_free(struct pconn *c)
{
    struct probe *pr = c->pr;
    watch(c, 0);
    ev_timer_stop(pr->loop, &c->timer);
    close(c->fd);
    list_remove(&c->link);
    pr->num_conns--;
    hbuf_free(&c->out);
    free(c->in);
    free(c);
}

static void flush(struct pconn *c)
{
    while (c->out.sent < c->out.len) {
        ssize_t n = send(c->fd, c->out.data + c->out.sent, c->out.len - c->out.sent, MSG_NOSIGNAL);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && errno == EAGAIN)
            return; /* the write watcher goes on */
        if (n <= 0)
            break;
        c->out.sent += (size_t)n;
    }
    pconn_free(c);
}

static void answer(struct pconn *c, int status, const char *type, const char *allow,
                   const char *body, bool head_only)
{
    probe_format_response(&c->out, status, type, allow, body, strlen(body), head_only);
    watch(c, EPOLLOUT);
    /* a reader that never reads is dropped too */
    ev_timer_stop(c->pr->loop, &c->timer);
    ev_timer_set(&c->timer, ADMIN_TIMEOUT_S, 0.);
    ev_timer_start(c->pr->loop, &c->timer);
    flush(c);
}

/* The same JSON error body the control loop writes. */
static void answer_error(struct pconn *c, int status)
{
    char body[128];
    snprintf(body, sizeof(body), "{\"error\":\"%s\"}\n", http1_status_text(status));
    answer(c, status, "application/json", NULL, body, false);
}

/* The control loop takes it from here (or, when the requests it holds are
 * at the limit, the probe says so itself). */
static void hand_over(struct pconn *c)
{
    struct probe *pr = c->pr;
    if (__atomic_add_fetch(&pr->control_held, 1, __ATOMIC_RELAXED) > ADMIN_CONNS_MAX) {
        __atomic_sub_fetch(&pr->control_held, 1, __ATOMIC_RELAXED);
        answer_error(c, 503);
        return;
    }
    watch(c, 0); /* before the control thread may touch the descriptor */
    ev_timer_stop(pr->loop, &c->timer);
    list_remove(&c->link);
    pr->num_conns--;
    pthread_mutex_lock(&pr->lock);
    list_append(&pr->handed, &c->link);
    pthread_mutex_unlock(&pr->lock);
    ev_async_send(pr->control, &pr->handoff_wake);
}

/* A whole head is in: /live and /ready without a body are the probe's. */
static void route(struct pconn *c, const struct http1_request *req)
{
    struct http1_slice path = req->target;
    const char *q = memchr(path.ptr, '?', path.len);
    if (q)
        path.len = (size_t)(q - path.ptr);
    bool live = http1_slice_eq(path, "/live");
    bool ready = http1_slice_eq(path, "/ready");
    /* a body is read (and a 405 answered) by the control loop, so that the
     * answer never races unread bytes into a reset */
    bool body = req->msg.framing == HTTP1_BODY_CHUNKED ||
                (req->msg.framing == HTTP1_BODY_LENGTH && req->msg.content_length > 0);
    if ((!live && !ready) || body) {
        hand_over(c);
        return;
    }
    static const char text[] = "text/plain; charset=utf-8";
    bool head = req->method_id == HTTP1_METHOD_HEAD;
    if (req->method_id != HTTP1_METHOD_GET && !head) {
        answer(c, 405, text, "GET, HEAD", "405 Method Not Allowed\n", false);
        return;
    }
    if (live) {
        answer(c, 200, text, NULL, "live\n", head);
        return;
    }
    const char *why = __atomic_load_n(&c->pr->ready, __ATOMIC_ACQUIRE);
    char body_text[128];
    snprintf(body_text, sizeof(body_text), "%s\n", why ? why : "ready");
    answer(c, why ? 503 : 200, text, NULL, body_text, head);
}

static void on_readable(struct pconn *c)
{
    if (c->in_len == c->in_cap) {
        answer_error(c, 431);
        return;
    }
    ssize_t n = read(c->fd, c->in + c->in_len, c->in_cap - c->in_len);
    if (n < 0 && (errno == EAGAIN || errno == EINTR))
        return;
    if (n <= 0) {
        pconn_free(c);
        return;
    }
    c->in_len += (size_t)n;
    struct http1_header headers[ADMIN_HEADERS_MAX];
    struct http1_limits lim = {ADMIN_HEAD_MAX, ADMIN_HEADERS_MAX, ADMIN_HEAD_MAX};
    struct http1_request req;
    memset(&req, 0, sizeof(req));
    req.msg.headers = headers;
    int rc = http1_parse_request(c->in, c->in_len, &lim, &req);
    if (rc == HTTP1_AGAIN) {
        if (c->in_len >= ADMIN_HEAD_MAX)
            answer_error(c, 431);
        return;
    }
    if (rc != HTTP1_OK) {
        answer_error(c, req.msg.error_status ? req.msg.error_status : 400);
        return;
    }
    route(c, &req);
}

/* Connections per wake-up, at most (more wait for the next one: the set
 * stays readable). */
#define EVENTS_MAX 64

static void conns_cb(struct ev_loop *loop, ev_io *io, int revents)
{
    struct probe *pr = container_of(io, struct probe, conns_io);
    struct epoll_event evs[EVENTS_MAX];
    int n = epoll_wait(pr->conns_ep, evs, EVENTS_MAX, 0);
    /* each connection appears once and frees only itself */
    for (int i = 0; i < n; i++) {
        struct pconn *c = evs[i].data.ptr;
        if (c->out.len)
            flush(c);
        else
            on_readable(c);
    }
}

static void conn_timeout_cb(struct ev_loop *loop, ev_timer *t, int revents)
{
    pconn_free(container_of(t, struct pconn, timer));
}

static void accept_retry_cb(struct ev_loop *loop, ev_timer *t, int revents)
{
    struct probe *pr = container_of(t, struct probe, accept_retry);
    if (pr->fd >= 0)
        ev_io_start(loop, &pr->accept_io);
}

static void accept_cb(struct ev_loop *loop, ev_io *io, int revents)
{
    struct probe *pr = container_of(io, struct probe, accept_io);
    for (;;) {
        struct sockaddr_storage peer;
        socklen_t peer_len = sizeof(peer);
        int fd = accept4(pr->fd, (struct sockaddr *)&peer, &peer_len, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM) {
                ev_io_stop(loop, io);
                ev_timer_set(&pr->accept_retry, ACCEPT_RETRY_S, 0.);
                ev_timer_start(loop, &pr->accept_retry);
            }
            return;
        }
        if (pr->num_conns >= ADMIN_CONNS_MAX) {
            close(fd);
            continue;
        }
        struct pconn *c = calloc(1, sizeof(*c));
        char *in = malloc(ADMIN_HEAD_MAX);
        if (!c || !in) {
            free(c);
            free(in);
            close(fd);
            return;
        }
        c->pr = pr;
        c->fd = fd;
        c->peer = peer;
        c->peer_len = peer_len;
        c->in = in;
        c->in_cap = ADMIN_HEAD_MAX;
        pr->num_conns++;
        list_append(&pr->conns, &c->link);
        watch(c, EPOLLIN);
        ev_timer_init(&c->timer, conn_timeout_cb, ADMIN_TIMEOUT_S, 0.);
        ev_timer_start(loop, &c->timer);
    }
}

static void close_listener(struct probe *pr)
{
    if (pr->fd < 0)
        return;
    ev_io_stop(pr->loop, &pr->accept_io);
    ev_timer_stop(pr->loop, &pr->accept_retry);
    close(pr->fd);
    pr->fd = -1;
}

static void cmd_cb(struct ev_loop *loop, ev_async *a, int revents)
{
    struct probe *pr = container_of(a, struct probe, cmd_wake);
    int cmd = __atomic_load_n(&pr->cmd, __ATOMIC_ACQUIRE);
    if (cmd & (CMD_RELEASE | CMD_STOP))
        close_listener(pr);
    if (!(cmd & CMD_STOP))
        return;
    struct list *pos, *tmp;
    list_for_each_safe (pos, tmp, &pr->conns) {
        pconn_free(container_of(pos, struct pconn, link));
    }
    ev_io_stop(loop, &pr->conns_io);
    ev_async_stop(loop, a);
    ev_break(loop, EVBREAK_ALL);
}

static void *thread_main(void *arg)
{
    struct probe *pr = arg;
    /* a host whose CPUs are saturated (by this process's own workers or by
     * anything else) must still get a probe answered: the thread does next
     * to nothing, so ahead of the rest it costs nobody anything. Only with
     * CAP_SYS_NICE (or RLIMIT_NICE); otherwise it stays at the process's. */
    (void)setpriority(PRIO_PROCESS, (id_t)syscall(SYS_gettid), PROBE_NICE);
    ev_run(pr->loop, 0);
    return NULL;
}

/* ---- the control thread's side -------------------------------------------- */

static void handoff_cb(struct ev_loop *loop, ev_async *a, int revents)
{
    struct probe *pr = container_of(a, struct probe, handoff_wake);
    struct list taken;
    list_init(&taken);
    pthread_mutex_lock(&pr->lock);
    if (!list_empty(&pr->handed)) {
        /* splice the whole list over */
        taken.next = pr->handed.next;
        taken.prev = pr->handed.prev;
        taken.next->prev = &taken;
        taken.prev->next = &taken;
        list_init(&pr->handed);
    }
    pthread_mutex_unlock(&pr->lock);
    struct list *pos, *tmp;
    list_for_each_safe (pos, tmp, &taken) {
        struct pconn *c = container_of(pos, struct pconn, link);
        list_remove(&c->link);
        pr->handoff(pr->ctx, c->fd, (const struct sockaddr *)&c->peer, c->peer_len, c->in,
                    c->in_len, c->in_cap);
        free(c);
    }
}

struct probe *probe_start(int fd, struct ev_loop *control, probe_handoff_cb handoff, void *ctx,
                          const char *ready_reason)
{
    struct probe *pr = calloc(1, sizeof(*pr));
    if (!pr)
        return NULL;
    pr->loop = ev_loop_new(EVFLAG_AUTO);
    pr->conns_ep = epoll_create1(EPOLL_CLOEXEC);
    if (!pr->loop || pr->conns_ep < 0) {
        if (pr->loop)
            ev_loop_destroy(pr->loop);
        if (pr->conns_ep >= 0)
            close(pr->conns_ep);
        free(pr);
        return NULL;
    }
    pr->control = control;
    pr->fd = fd;
    /* accept_cb accepts until EAGAIN */
    int fl = fcntl(fd, F_GETFL);
    if (fl >= 0)
        fcntl(fd, F_SETFL, fl | O_NONBLOCK);
    pr->handoff = handoff;
    pr->ctx = ctx;
    pr->ready = ready_reason;
    list_init(&pr->conns);
    list_init(&pr->handed);
    pthread_mutex_init(&pr->lock, NULL);
    ev_io_init(&pr->accept_io, accept_cb, fd, EV_READ);
    ev_io_start(pr->loop, &pr->accept_io);
    ev_io_init(&pr->conns_io, conns_cb, pr->conns_ep, EV_READ);
    ev_io_start(pr->loop, &pr->conns_io);
    ev_init(&pr->accept_retry, accept_retry_cb);
    ev_async_init(&pr->cmd_wake, cmd_cb);
    ev_async_start(pr->loop, &pr->cmd_wake);
    ev_async_init(&pr->handoff_wake, handoff_cb);
    ev_async_start(control, &pr->handoff_wake);
    /* signals are the control thread's: this thread never takes one */
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    int err = pthread_create(&pr->tid, NULL, thread_main, pr);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (err) {
        ev_async_stop(control, &pr->handoff_wake);
        ev_loop_destroy(pr->loop);
        close(pr->conns_ep);
        pthread_mutex_destroy(&pr->lock);
        free(pr);
        errno = err;
        return NULL;
    }
    return pr;
}

void probe_set_ready(struct probe *pr, const char *reason)
{
    if (pr)
        __atomic_store_n(&pr->ready, reason, __ATOMIC_RELEASE);
}

void probe_conn_closed(struct probe *pr)
{
    if (pr)
        __atomic_sub_fetch(&pr->control_held, 1, __ATOMIC_RELAXED);
}

static void command(struct probe *pr, enum probe_cmd cmd)
{
    __atomic_or_fetch(&pr->cmd, (int)cmd, __ATOMIC_RELEASE);
    ev_async_send(pr->loop, &pr->cmd_wake);
}

void probe_release(struct probe *pr)
{
    if (pr)
        command(pr, CMD_RELEASE);
}

void probe_stop(struct probe *pr)
{
    if (!pr)
        return;
    command(pr, CMD_STOP);
    pthread_join(pr->tid, NULL);
    ev_async_stop(pr->control, &pr->handoff_wake);
    /* handed over after the control loop last looked: nobody serves them */
    struct list *pos, *tmp;
    list_for_each_safe (pos, tmp, &pr->handed) {
        struct pconn *c = container_of(pos, struct pconn, link);
        list_remove(&c->link);
        close(c->fd);
        free(c->in);
        hbuf_free(&c->out);
        free(c);
    }
    ev_loop_destroy(pr->loop);
    close(pr->conns_ep);
    pthread_mutex_destroy(&pr->lock);
    free(pr);
}
