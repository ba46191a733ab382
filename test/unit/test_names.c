// links: usher_proxy_sources
/* The config's own host names through c-ares (discover_names_* in
 * proxy/sources/discover.c) against a real DNS server on loopback: a tiny
 * UDP responder in a thread that answers A and AAAA from a table, says
 * NXDOMAIN for unknown names and never answers "frozen.test". Each batch
 * ends once, from the loop, within its bound; IPv4 is preferred when a
 * name has both; a batch freed early calls nothing. And the resolve_error
 * set /status reads. */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "conf/conf.h"
#include "proxy/sources/discover.h"
#include "test/unit/check.h"

/* DNS (RFC 1035 section 4.1): header, question, answers. */
#define DNS_HEADER 12
#define T_A 1
#define T_AAAA 28
#define RCODE_NXDOMAIN 3

static int dns_fd = -1;
static uint16_t dns_port;
static int dns_stop; /* atomic */
static int frozen_queries;

struct record {
    const char *name;
    int type;
    const char *addr;
};

static const struct record records[] = {
    {"a.test", T_A, "10.1.2.3"},          {"both.test", T_A, "10.0.0.2"},
    {"both.test", T_AAAA, "2001:db8::2"}, {"six.test", T_AAAA, "2001:db8::1"},
    {"other.test", T_A, "10.9.9.9"},
};

/* Reads the question's name as "a.b.c"; returns the offset after QTYPE and
 * QCLASS, or 0. */
static size_t read_question(const unsigned char *q, size_t len, char *name, size_t cap, int *type)
{
    size_t off = DNS_HEADER, o = 0;
    while (off < len && q[off]) {
        size_t l = q[off++];
        if (off + l > len || o + l + 2 > cap)
            return 0;
        if (o)
            name[o++] = '.';
        memcpy(name + o, q + off, l);
        o += l;
        off += l;
    }
    name[o] = '\0';
    off++;
    if (off + 4 > len)
        return 0;
    *type = q[off] << 8 | q[off + 1];
    return off + 4;
}

static void *dns_main(void *arg)
{
    unsigned char q[512], r[512];
    while (!__atomic_load_n(&dns_stop, __ATOMIC_RELAXED)) {
        struct sockaddr_in from;
        socklen_t flen = sizeof(from);
        ssize_t n = recvfrom(dns_fd, q, sizeof(q), 0, (struct sockaddr *)&from, &flen);
        if (n < DNS_HEADER)
            continue;
        char name[256];
        int type = 0;
        size_t qend = read_question(q, (size_t)n, name, sizeof(name), &type);
        if (!qend)
            continue;
        if (strcmp(name, "frozen.test") == 0) {
            __atomic_add_fetch(&frozen_queries, 1, __ATOMIC_RELAXED);
            continue; /* never answered */
        }
        bool known = false;
        size_t ancount = 0, off = qend;
        memcpy(r, q, qend); /* header and question (no EDNS record back) */
        for (size_t i = 0; i < sizeof(records) / sizeof(records[0]); i++) {
            if (strcmp(records[i].name, name) != 0)
                continue;
            known = true;
            if (records[i].type != type)
                continue;
            unsigned char rdata[16];
            int fam = type == T_A ? AF_INET : AF_INET6;
            int rdlen = type == T_A ? 4 : 16;
            inet_pton(fam, records[i].addr, rdata);
            unsigned char rr[] = {0xc0, DNS_HEADER, 0, (unsigned char)type, 0, 1, 0, 0,
                                  0,    60,         0, (unsigned char)rdlen};
            memcpy(r + off, rr, sizeof(rr));
            off += sizeof(rr);
            memcpy(r + off, rdata, (size_t)rdlen);
            off += (size_t)rdlen;
            ancount++;
        }
        r[2] = 0x84 | (q[2] & 0x01); /* QR, AA, RD copied */
        r[3] = 0x80 | (known ? 0 : RCODE_NXDOMAIN);
        r[6] = 0, r[7] = (unsigned char)ancount;
        r[8] = r[9] = r[10] = r[11] = 0; /* no authority, no additional */
        sendto(dns_fd, r, off, 0, (struct sockaddr *)&from, flen);
    }
    return NULL;
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static struct conf *conf_with_server(void)
{
    char doc[512];
    snprintf(doc, sizeof(doc),
             "listeners:\n"
             "  - {name: web, bind: \"127.0.0.1:1\", pools: {blue: 100}}\n"
             "resolver: {nameservers: [\"127.0.0.1:%u\"]}\n"
             "pools:\n"
             "  - name: blue\n"
             "    backends: [{name: b1, address: \"127.0.0.1:2\"}]\n",
             (unsigned)dns_port);
    struct conf_errors e = {0};
    struct conf *c = conf_load_string("t.yaml", doc, strlen(doc), &e);
    for (size_t i = 0; i < e.count; i++)
        fprintf(stderr, "%s\n", e.messages[i]);
    conf_errors_clear(&e);
    return c;
}

struct batch_state {
    int calls;
    double at;
};

static void on_done(void *ctx)
{
    struct batch_state *st = ctx;
    st->calls++;
    st->at = now_s();
}

static void run_until(struct ev_loop *loop, int *flag, double secs)
{
    double end = now_s() + secs;
    while (!*flag && now_s() < end)
        ev_run(loop, EVRUN_ONCE);
}

static void check_result(struct discover_names *b, size_t i, const char *want_ip,
                         const char *want_why)
{
    struct sockaddr_storage sa;
    socklen_t len = 0;
    const char *why = NULL;
    int rc = discover_names_result(b, i, &sa, &len, &why);
    if (!want_ip) {
        CHECK_INT(rc, -1);
        if (want_why && why)
            CHECK_STR(why, want_why);
        CHECK(why != NULL);
        return;
    }
    CHECK_INT(rc, 0);
    char ip[INET6_ADDRSTRLEN] = "";
    if (sa.ss_family == AF_INET)
        inet_ntop(AF_INET, &((struct sockaddr_in *)&sa)->sin_addr, ip, sizeof(ip));
    else
        inet_ntop(AF_INET6, &((struct sockaddr_in6 *)&sa)->sin6_addr, ip, sizeof(ip));
    CHECK_STR(ip, want_ip);
    CHECK(len ==
          (sa.ss_family == AF_INET ? sizeof(struct sockaddr_in) : sizeof(struct sockaddr_in6)));
}

static void test_batches(struct ev_loop *loop, struct conf *c)
{
    /* answered, both families, NXDOMAIN, and one that never answers */
    const char *hosts[] = {"a.test", "both.test", "six.test", "none.test", "frozen.test"};
    struct batch_state st = {0};
    const char *why = NULL;
    double t0 = now_s();
    struct discover_names *b =
        discover_names_start(loop, c, false, hosts, 5, 600, on_done, &st, &why);
    CHECK(b != NULL, "%s", why ? why : "");
    CHECK_INT(st.calls, 0); /* never from inside the call */
    run_until(loop, &st.calls, 5.0);
    CHECK_INT(st.calls, 1);
    double took = st.at - t0;
    CHECK(took >= 0.55 && took < 1.5, "the bound: done after %.3f s", took);
    check_result(b, 0, "10.1.2.3", NULL);
    check_result(b, 1, "10.0.0.2", NULL); /* IPv4 first, as conf_load picks */
    check_result(b, 2, "2001:db8::1", NULL);
    check_result(b, 3, NULL, NULL);
    check_result(b, 4, NULL, "timed out");
    CHECK(__atomic_load_n(&frozen_queries, __ATOMIC_RELAXED) > 0, "the frozen name was asked");
    /* nothing more happens after the end */
    ev_run(loop, EVRUN_NOWAIT);
    CHECK_INT(st.calls, 1);
    discover_names_free(b);

    /* all answered: done well before the bound */
    const char *quick[] = {"a.test", "other.test"};
    st = (struct batch_state){0};
    t0 = now_s();
    b = discover_names_start(loop, c, false, quick, 2, 2000, on_done, &st, &why);
    run_until(loop, &st.calls, 5.0);
    CHECK_INT(st.calls, 1);
    CHECK(st.at - t0 < 0.5, "answered names end the batch at once: %.3f s", st.at - t0);
    check_result(b, 1, "10.9.9.9", NULL);
    discover_names_free(b);

    /* no names: still one call, from the loop */
    st = (struct batch_state){0};
    b = discover_names_start(loop, c, false, NULL, 0, 2000, on_done, &st, &why);
    CHECK_INT(st.calls, 0);
    run_until(loop, &st.calls, 2.0);
    CHECK_INT(st.calls, 1);
    discover_names_free(b);

    /* freed while a lookup is out: no call, nothing leaks (ASan) */
    const char *frozen[] = {"frozen.test", "a.test"};
    st = (struct batch_state){0};
    b = discover_names_start(loop, c, false, frozen, 2, 2000, on_done, &st, &why);
    for (int i = 0; i < 20; i++)
        ev_run(loop, EVRUN_NOWAIT);
    discover_names_free(b);
    double end = now_s() + 0.3;
    while (now_s() < end)
        ev_run(loop, EVRUN_NOWAIT);
    CHECK_INT(st.calls, 0);
}

static void test_resolve_errors(struct ev_loop *loop)
{
    struct discover *d = discover_new(loop, NULL);
    CHECK(d != NULL);
    CHECK(discover_resolve_error(d, "blue", "b1") == NULL);
    enum { N = 3000 };
    struct discover_resolve_error *e = calloc(N, sizeof(*e));
    char(*names)[16] = calloc(N, sizeof(*names));
    for (int i = 0; i < N; i++) {
        snprintf(names[i], sizeof(names[i]), "b%d", i);
        e[i] = (struct discover_resolve_error){i % 2 ? "blue" : "green", names[i], "timed out"};
    }
    CHECK_INT(discover_set_resolve_errors(d, e, N), 0);
    free(e); /* copied */
    CHECK_STR(discover_resolve_error(d, "blue", "b1"), "timed out");
    CHECK_STR(discover_resolve_error(d, "green", "b2998"), "timed out");
    CHECK(discover_resolve_error(d, "green", "b1") == NULL, "the pool counts");
    CHECK(discover_resolve_error(d, "blue", "b2") == NULL);
    CHECK(discover_resolve_error(d, "blue", "nope") == NULL);
    /* the next reload's set replaces it */
    struct discover_resolve_error one = {"blue", "b7", "Domain name not found"};
    CHECK_INT(discover_set_resolve_errors(d, &one, 1), 0);
    CHECK(discover_resolve_error(d, "blue", "b1") == NULL);
    CHECK_STR(discover_resolve_error(d, "blue", "b7"), "Domain name not found");
    CHECK_INT(discover_set_resolve_errors(d, NULL, 0), 0);
    CHECK(discover_resolve_error(d, "blue", "b7") == NULL);
    CHECK(discover_resolve_error(NULL, "blue", "b7") == NULL);
    free(names);
    discover_free(d);
}

int main(void)
{
    dns_fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in sin = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof(sin);
    struct timeval tv = {.tv_usec = 100000};
    setsockopt(dns_fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    if (bind(dns_fd, (struct sockaddr *)&sin, sizeof(sin)) < 0)
        return 1;
    getsockname(dns_fd, (struct sockaddr *)&sin, &len);
    dns_port = ntohs(sin.sin_port);
    pthread_t tid;
    pthread_create(&tid, NULL, dns_main, NULL);

    struct ev_loop *loop = ev_loop_new(EVFLAG_AUTO);
    struct conf *c = conf_with_server();
    CHECK(c != NULL);
    if (c)
        test_batches(loop, c);
    test_resolve_errors(loop);
    conf_free(c);
    ev_loop_destroy(loop);
    __atomic_store_n(&dns_stop, 1, __ATOMIC_RELAXED);
    pthread_join(tid, NULL);
    close(dns_fd);
    return check_report("test_names");
}
