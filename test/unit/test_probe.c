// links: usher_proxy_admin
/* The probe thread (proxy/admin/probe.c) over real loopback sockets:
 * /live and /ready are answered while the control loop never runs (a
 * control thread as busy as can be), other requests reach the control
 * loop with the bytes read, the control loop's limit is answered 503 by
 * the probe, release stops accepting, stop frees everything (ASan). */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "proxy/admin/probe.h"
#include "test/unit/check.h"

/* What a probe must never exceed (DESIGN: /live within 100 ms). */
#define PROBE_BUDGET_MS 100.0

static double now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1000.0 + (double)ts.tv_nsec / 1e6;
}

static int listen_any(uint16_t *port)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in sin = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof(sin);
    if (fd < 0 || bind(fd, (struct sockaddr *)&sin, sizeof(sin)) < 0 || listen(fd, 128) < 0)
        return -1;
    getsockname(fd, (struct sockaddr *)&sin, &len);
    *port = ntohs(sin.sin_port);
    return fd;
}

static int connect_to(uint16_t port)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in sin = {
        .sin_family = AF_INET, .sin_port = htons(port), .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    struct timeval tv = {.tv_sec = 3};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    if (connect(fd, (struct sockaddr *)&sin, sizeof(sin)) < 0) {
        close(fd);
        return -1;
    }
    return fd;
}

static void send_all(int fd, const char *s)
{
    size_t len = strlen(s), off = 0;
    while (off < len) {
        ssize_t n = send(fd, s + off, len - off, MSG_NOSIGNAL);
        if (n <= 0)
            return;
        off += (size_t)n;
    }
}

/* Reads until EOF (or the 3 s receive timeout) into <buf>; closes <fd>. */
static size_t read_all(int fd, char *buf, size_t cap)
{
    size_t len = 0;
    for (;;) {
        ssize_t n = recv(fd, buf + len, cap - 1 - len, 0);
        if (n <= 0)
            break;
        len += (size_t)n;
        if (len == cap - 1)
            break;
    }
    buf[len] = '\0';
    close(fd);
    return len;
}

/* One request and its whole answer; *<ms> how long it took. */
static int ask(uint16_t port, const char *req, char *buf, size_t cap, double *ms)
{
    double t0 = now_ms();
    int fd = connect_to(port);
    if (fd < 0)
        return -1;
    send_all(fd, req);
    read_all(fd, buf, cap);
    if (ms)
        *ms = now_ms() - t0;
    int status = 0;
    if (sscanf(buf, "HTTP/1.1 %d", &status) != 1)
        return 0;
    return status;
}

/* ---- the control loop's side of the test ---------------------------------- */

struct control {
    struct probe *pr;
    int handed;
    char last[512];
    bool answer; /* answer and close at once, else keep the descriptor */
    int held[64];
    int num_held;
};

static void handoff(void *ctx, int fd, const struct sockaddr *peer, socklen_t peer_len, char *in,
                    size_t len, size_t cap)
{
    struct control *c = ctx;
    c->handed++;
    CHECK(cap >= len);
    CHECK(peer_len > 0 && peer->sa_family == AF_INET);
    snprintf(c->last, sizeof(c->last), "%.*s", (int)len, in);
    free(in);
    if (!c->answer) {
        c->held[c->num_held++] = fd;
        return;
    }
    struct hbuf out = {0};
    probe_format_response(&out, 200, "text/plain", NULL, "control\n", 8, false);
    send(fd, out.data, out.len, MSG_NOSIGNAL);
    hbuf_free(&out);
    close(fd);
    probe_conn_closed(c->pr);
}

/* Runs the control loop until <n> hand-overs arrived (at most 3 s). */
static void run_until_handed(struct ev_loop *loop, struct control *c, int n)
{
    double until = now_ms() + 3000.0;
    while (c->handed < n && now_ms() < until)
        ev_run(loop, EVRUN_NOWAIT), usleep(1000);
}

static void test_probe(void)
{
    uint16_t port = 0;
    int lfd = listen_any(&port);
    CHECK(lfd >= 0);
    struct ev_loop *control_loop = ev_loop_new(EVFLAG_AUTO);
    struct control c = {.answer = true};
    c.pr = probe_start(lfd, control_loop, handoff, &c, "starting");
    CHECK(c.pr != NULL);
    char buf[4096];
    double ms;

    /* the control loop does not run at all here: the probe answers alone */
    CHECK_INT(ask(port, "GET /live HTTP/1.1\r\nHost: a\r\n\r\n", buf, sizeof(buf), &ms), 200);
    CHECK(strstr(buf, "\r\n\r\nlive\n") != NULL, "%s", buf);
    CHECK(strstr(buf, "Connection: close\r\n") != NULL, "%s", buf);
    CHECK(ms < PROBE_BUDGET_MS, "/live took %.1f ms", ms);
    CHECK_INT(ask(port, "GET /ready?x=1 HTTP/1.1\r\nHost: a\r\n\r\n", buf, sizeof(buf), &ms), 503);
    CHECK(strstr(buf, "\r\n\r\nstarting\n") != NULL, "%s", buf);
    CHECK_INT(ask(port, "HEAD /ready HTTP/1.1\r\nHost: a\r\n\r\n", buf, sizeof(buf), NULL), 503);
    CHECK(strstr(buf, "Content-Length: 9\r\n") != NULL, "%s", buf);
    CHECK(strstr(buf, "\r\n\r\n")[4] == '\0', "HEAD has no body: %s", buf);
    probe_set_ready(c.pr, NULL);
    CHECK_INT(ask(port, "GET /ready HTTP/1.1\r\nHost: a\r\n\r\n", buf, sizeof(buf), NULL), 200);
    CHECK(strstr(buf, "\r\n\r\nready\n") != NULL, "%s", buf);
    probe_set_ready(c.pr, "draining");
    CHECK_INT(ask(port, "GET /ready HTTP/1.0\r\n\r\n", buf, sizeof(buf), NULL), 503);
    CHECK(strstr(buf, "\r\n\r\ndraining\n") != NULL, "%s", buf);
    CHECK_INT(ask(port, "POST /live HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n", buf,
                  sizeof(buf), NULL),
              405);
    CHECK(strstr(buf, "Allow: GET, HEAD\r\n") != NULL, "%s", buf);
    CHECK_INT(ask(port, "GET /live HTTP/1.1\r\nHost: a\r\nX-A : b\r\n\r\n", buf, sizeof(buf), NULL),
              400);
    CHECK(strstr(buf, "application/json") != NULL, "%s", buf);
    CHECK_INT(c.handed, 0);

    /* a head in pieces */
    int fd = connect_to(port);
    send_all(fd, "GET /li");
    usleep(50 * 1000);
    send_all(fd, "ve HTTP/1.1\r\nHo");
    usleep(50 * 1000);
    send_all(fd, "st: a\r\n\r\n");
    read_all(fd, buf, sizeof(buf));
    CHECK(strncmp(buf, "HTTP/1.1 200 ", 13) == 0, "%s", buf);

    /* a head that never fits */
    fd = connect_to(port);
    char big[ADMIN_HEAD_MAX + 64];
    memset(big, 'a', sizeof(big) - 1);
    big[sizeof(big) - 1] = '\0';
    memcpy(big, "GET /live HTTP/1.1\r\nX: ", 23);
    send_all(fd, big);
    read_all(fd, buf, sizeof(buf));
    CHECK(strncmp(buf, "HTTP/1.1 431 ", 13) == 0, "%s", buf);

    /* anything else goes to the control loop, head and body as sent */
    static const char status_req[] = "GET /status HTTP/1.1\r\nHost: a\r\n\r\n";
    fd = connect_to(port);
    send_all(fd, status_req);
    run_until_handed(control_loop, &c, 1);
    CHECK_INT(c.handed, 1);
    CHECK_STR(c.last, status_req);
    read_all(fd, buf, sizeof(buf));
    CHECK(strstr(buf, "\r\n\r\ncontrol\n") != NULL, "%s", buf);
    /* /live with a body is the control loop's too (it reads the body) */
    static const char live_body[] = "POST /live HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\n\r\nab";
    fd = connect_to(port);
    send_all(fd, live_body);
    run_until_handed(control_loop, &c, 2);
    CHECK_INT(c.handed, 2);
    CHECK_STR(c.last, live_body);
    read_all(fd, buf, sizeof(buf));

    /* the control loop holds ADMIN_CONNS_MAX: the next one gets 503 from the
     * probe, and /live still answers */
    c.answer = false;
    int clients[ADMIN_CONNS_MAX];
    for (int i = 0; i < ADMIN_CONNS_MAX; i++) {
        clients[i] = connect_to(port);
        send_all(clients[i], status_req);
    }
    run_until_handed(control_loop, &c, 2 + ADMIN_CONNS_MAX);
    CHECK_INT(c.num_held, ADMIN_CONNS_MAX);
    CHECK_INT(ask(port, status_req, buf, sizeof(buf), NULL), 503);
    CHECK_INT(ask(port, "GET /live HTTP/1.1\r\nHost: a\r\n\r\n", buf, sizeof(buf), &ms), 200);
    CHECK(ms < PROBE_BUDGET_MS, "/live took %.1f ms", ms);
    for (int i = 0; i < c.num_held; i++) {
        close(c.held[i]);
        probe_conn_closed(c.pr);
        close(clients[i]);
    }
    c.num_held = 0;
    c.answer = true;
    fd = connect_to(port);
    send_all(fd, status_req);
    run_until_handed(control_loop, &c, 3 + ADMIN_CONNS_MAX);
    CHECK_INT(c.handed, 3 + ADMIN_CONNS_MAX);
    read_all(fd, buf, sizeof(buf));
    CHECK(strstr(buf, "\r\n\r\ncontrol\n") != NULL, "%s", buf);

    /* handed over but never taken: probe_stop closes it */
    fd = connect_to(port);
    send_all(fd, status_req);
    usleep(100 * 1000);

    /* release: the socket closes, nothing is accepted any more */
    probe_release(c.pr);
    double until = now_ms() + 2000.0;
    int refused = 0;
    while (!refused && now_ms() < until) {
        int t = connect_to(port);
        if (t < 0)
            refused = 1;
        else
            close(t), usleep(10 * 1000);
    }
    CHECK(refused, "the listening socket was released");
    probe_stop(c.pr);
    CHECK(read_all(fd, buf, sizeof(buf)) == 0, "closed without an answer: %s", buf);
    probe_stop(NULL);
    ev_loop_destroy(control_loop);
}

int main(void)
{
    test_probe();
    return check_report("test_probe");
}
