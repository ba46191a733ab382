// links: usher_proxy_sources
/* DNS discovery's answers and what they do to a real worker's pool
 * (proxy/sources/discover.c, included for its static functions): names
 * ADDRESS:PORT and [ADDRESS]:PORT, a new address added, a vanished one
 * draining with reason dns, failures changing nothing, an empty answer
 * believed only after hold, and a reload
 * that keeps, reconfigures or drops the discovered backends. Answers are
 * handed to query_result() directly; the one real query (to a closed port)
 * only sets the first failure. */
#include "proxy/sources/discover.c"

#include <time.h>
#include <unistd.h>

#include "health/backend.h"
#include "test/unit/check.h"

#define DOC_HEAD                                                                                   \
    "listeners:\n"                                                                                 \
    "  - name: web\n"                                                                              \
    "    bind: 127.0.0.1:1\n"                                                                      \
    "    pools: {blue: 100}\n"                                                                     \
    "resolver: {nameservers: [127.0.0.1:9], hold: 200ms}\n"                                        \
    "pools:\n"                                                                                     \
    "  - name: blue\n"                                                                             \
    "    deregistration_delay: 5s\n"

#define DISCOVER "    discover: {dns: blue.test, port: 8080, interval: 1h}\n"
#define STATIC                                                                                     \
    "    backends:\n"                                                                              \
    "      - {name: static-1, address: \"127.0.0.9:8080\"}\n"

static struct ev_loop *loop;

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void tick_cb(struct ev_loop *l, ev_timer *w, int revents)
{
}

#define RUN_UNTIL(cond, secs)                                                                      \
    do {                                                                                           \
        double end_ = now_s() + (secs);                                                            \
        while (!(cond) && now_s() < end_)                                                          \
            ev_run(loop, EVRUN_ONCE);                                                              \
    } while (0)

static struct conf *load(const char *yaml)
{
    struct conf_errors e = {0};
    struct conf *c = conf_load_string("t.yaml", yaml, strlen(yaml), &e);
    for (size_t i = 0; i < e.count; i++)
        fprintf(stderr, "%s\n", e.messages[i]);
    conf_errors_clear(&e);
    if (!c)
        exit(2);
    return c;
}

/* What reload.c's commit does for pools and backends, then discovery. */
static void apply(struct worker *w, struct discover *d, const struct conf *old, struct conf *nc)
{
    struct conf empty = {0};
    struct conf_diff diff;

    CHECK(conf_diff(old ? old : &empty, nc, &diff) == 0);
    for (size_t i = 0; i < diff.count; i++)
        CHECK(worker_apply_change(w, nc, &diff.changes[i]) == 0);
    conf_diff_free(&diff);
    worker_commit_conf(w, nc);
    CHECK(discover_configure(d, nc) == 0);
}

static struct server *find(struct worker *w, const char *name)
{
    for (struct pool *p = w->pools; p; p = p->next)
        for (size_t i = 0; i < p->num_servers; i++)
            if (strcmp(p->servers[i]->hb->name, name) == 0)
                return p->servers[i];
    return NULL;
}

static size_t count(struct worker *w)
{
    return w->pools ? w->pools->num_servers : 0;
}

static void add4(struct answer *a, const char *ip)
{
    struct sockaddr_in in = {.sin_family = AF_INET};
    inet_pton(AF_INET, ip, &in.sin_addr);
    CHECK(answer_add(a, (struct sockaddr *)&in, 8080, 1) == 0);
}

static void answer(struct dpool *dp, int status, const char *a, const char *b)
{
    struct answer ans = {0};
    if (a)
        add4(&ans, a);
    if (b)
        add4(&ans, b);
    query_result(dp, status, &ans);
    answer_free(&ans);
}

static void test_names(void)
{
    struct answer a = {0};
    struct sockaddr_in6 in6 = {.sin6_family = AF_INET6};

    add4(&a, "10.0.0.7");
    add4(&a, "10.0.0.7"); /* A record seen twice: one backend */
    inet_pton(AF_INET6, "fd00::1", &in6.sin6_addr);
    CHECK(answer_add(&a, (struct sockaddr *)&in6, 443, 2) == 0);
    CHECK_UINT(a.n, 2);
    CHECK_STR(a.e[0].name, "10.0.0.7:8080");
    CHECK_STR(a.e[1].name, "[fd00::1]:443");
    CHECK_STR(a.e[1].host, "fd00::1");
    CHECK_UINT(a.e[1].weight, 2);
    CHECK_UINT(ntohs(((struct sockaddr_in6 *)&a.e[1].sa)->sin6_port), 443);
    CHECK_UINT(a.e[0].sa_len, sizeof(struct sockaddr_in));
    answer_free(&a);
}

static void test_answers(void)
{
    struct conf *c1 = load(DOC_HEAD DISCOVER STATIC);
    const struct worker_hooks hooks = {0};
    struct worker *w = worker_new(loop, loop, NULL, c1, &hooks);
    struct discover *d = discover_new(loop, w);

    apply(w, d, NULL, c1);
    struct dpool *dp = pool_find(d, "blue");
    CHECK(dp != NULL);
    if (!dp)
        return;
    CHECK(!discover_first_round_done(d), "nothing came back yet");
    RUN_UNTIL(dp->first_done, 5.0);
    CHECK(dp->first_done && dp->last_error != NULL, "the closed port failed: %s",
          dp->last_error ? dp->last_error : "-");
    CHECK(discover_first_round_done(d));
    CHECK_UINT(count(w), 1); /* the static one */

    answer(dp, ARES_SUCCESS, "127.0.0.3", NULL);
    CHECK_UINT(count(w), 2);
    struct server *s3 = find(w, "127.0.0.3:8080");
    CHECK(s3 && s3->discovered && s3->hb->state == BACKEND_HEALTHY);
    CHECK(!find(w, "static-1")->discovered, "the static backend stays the config's");
    CHECK(dp->last_error == NULL && dp->resolved_at > 0);

    answer(dp, ARES_SUCCESS, "127.0.0.3", "127.0.0.2");
    CHECK_UINT(count(w), 3);
    CHECK_UINT(dp->cur.n, 2);
    CHECK_STR(dp->cur.e[0].name, "127.0.0.2:8080"); /* sorted */

    /* failures and a fresh empty answer change nothing */
    answer(dp, ARES_ETIMEOUT, NULL, NULL);
    answer(dp, ARES_ECONNREFUSED, NULL, NULL);
    answer(dp, ARES_ENOTFOUND, NULL, NULL);
    CHECK_UINT(count(w), 3);
    CHECK(dp->last_error && strcmp(dp->last_error, ares_strerror(ARES_ENOTFOUND)) == 0);
    CHECK(!backend_removed(find(w, "127.0.0.2:8080")->hb));
    CHECK_UINT(dp->cur.n, 2);

    /* a vanished address drains with the pool's delay, reason dns */
    answer(dp, ARES_SUCCESS, "127.0.0.3", NULL);
    struct server *s2 = find(w, "127.0.0.2:8080");
    CHECK(s2 && backend_removed(s2->hb) && s2->hb->drain_reason == BACKEND_DRAIN_DNS);
    RUN_UNTIL(!find(w, "127.0.0.2:8080"), 1.0);
    CHECK(!find(w, "127.0.0.2:8080"), "no connection: gone");
    CHECK(dp->empty_since == 0, "a good answer ends the empty count");

    /* an empty answer lasting longer than hold (200ms) is believed */
    answer(dp, ARES_ENODATA, NULL, NULL);
    CHECK(!backend_removed(find(w, "127.0.0.3:8080")->hb), "within hold");
    usleep(250 * 1000);
    ev_now_update(loop);
    answer(dp, ARES_ETIMEOUT, NULL, NULL);
    CHECK(!backend_removed(find(w, "127.0.0.3:8080")->hb), "a timeout is no empty answer");
    answer(dp, ARES_SUCCESS, NULL, NULL); /* success without addresses: empty */
    CHECK(backend_removed(find(w, "127.0.0.3:8080")->hb), "after hold: drained");
    CHECK_UINT(dp->cur.n, 0);
    RUN_UNTIL(count(w) == 1, 1.0);
    CHECK_UINT(count(w), 1);

    /* an answer lists it again */
    answer(dp, ARES_SUCCESS, "127.0.0.3", NULL);
    CHECK(find(w, "127.0.0.3:8080") && find(w, "127.0.0.3:8080")->discovered);

    /* an SRV weight that changed follows */
    struct answer w5 = {0};
    struct sockaddr_in in = {.sin_family = AF_INET};
    inet_pton(AF_INET, "127.0.0.3", &in.sin_addr);
    CHECK(answer_add(&w5, (struct sockaddr *)&in, 8080, 5) == 0);
    query_result(dp, ARES_SUCCESS, &w5);
    answer_free(&w5);
    CHECK_UINT(find(w, "127.0.0.3:8080")->hb->weight, 5);
    CHECK_UINT(dp->cur.e[0].weight, 5);

    /* /status */
    struct hbuf o = {0};
    CHECK(discover_status_json(d, "blue", &o));
    hbuf_append(&o, "", 1);
    CHECK(strstr(o.data, "\"dns\":\"blue.test\",\"addresses\":[\"127.0.0.3:8080\"],"
                         "\"last_error\":null,\"resolved_age_ms\":") != NULL,
          "%s", o.data);
    hbuf_free(&o);
    CHECK(!discover_status_json(d, "green", &o) && o.len == 0);

    /* a reload with a health check: the diff knows only the static backend,
     * the discovered one stays and takes the new check */
    struct conf *c2 =
        load(DOC_HEAD DISCOVER "    health_check: {interval: 3s, timeout: 1s}\n" STATIC);
    apply(w, d, c1, c2);
    struct server *s = find(w, "127.0.0.3:8080");
    CHECK(s && !backend_removed(s->hb) && s->hb->hc.enabled && s->hb->hc.interval == 3000,
          "kept and reconfigured");
    CHECK(pool_find(d, "blue") == dp && dp->cp == &c2->pools[0], "follows the new generation");
    conf_free(c1);

    /* a reload without discover drains what it found */
    struct conf *c3 = load(DOC_HEAD STATIC);
    apply(w, d, c2, c3);
    CHECK(pool_find(d, "blue") == NULL);
    s = find(w, "127.0.0.3:8080");
    CHECK(s && backend_removed(s->hb) && s->hb->drain_reason == BACKEND_DRAIN_DNS);
    conf_free(c2);
    RUN_UNTIL(count(w) == 1, 1.0);
    CHECK_UINT(count(w), 1);
    CHECK(find(w, "static-1") != NULL);

    discover_free(d);
    worker_free(w);
    conf_free(c3);
}

int main(void)
{
    ev_timer tick;

    loop = ev_loop_new(EVFLAG_AUTO);
    if (!loop)
        return 2;
    ev_timer_init(&tick, tick_cb, 0.005, 0.005);
    ev_timer_start(loop, &tick);
    test_names();
    test_answers();
    ev_timer_stop(loop, &tick);
    ev_loop_destroy(loop);
    return check_report("test_discover");
}
