// links: usher_health
/* Passive health in the backend state machine (health/backend.c): the
 * failure streak, the ejection and its doubling (at most 10x), the return
 * after the ejection time, and the pool's ejection cap. */
#include <ev.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>

#include "health/backend.h"
#include "test/unit/check.h"

static void test_cap(void)
{
    struct {
        unsigned n, pct, want;
    } cases[] = {
        {1, 50, 0}, /* a pool of one is never emptied */
        {2, 50, 1},  {3, 50, 1},    {4, 50, 2}, {10, 50, 5},
        {2, 10, 1}, /* but 1 in a pool of >= 2 */
        {10, 10, 1}, {10, 100, 10}, {5, 0, 0},  {0, 50, 0},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        unsigned got = backend_ejection_cap(cases[i].n, cases[i].pct);
        CHECK(got == cases[i].want, "pool %u at %u%%: cap %u, want %u", cases[i].n, cases[i].pct,
              got, cases[i].want);
    }
}

static int changes;
static void on_change(struct backend *b, enum backend_state from, const char *reason, void *ctx)
{
    changes++;
}
static const struct backend_hooks hooks = {.state_changed = on_change};

static void break_cb(struct ev_loop *l, ev_timer *w, int revents)
{
    ev_break(l, EVBREAK_ONE);
}

static void wait_s(struct ev_loop *loop, double secs)
{
    ev_timer t;
    ev_timer_init(&t, break_cb, secs, 0.);
    ev_timer_start(loop, &t);
    ev_run(loop, 0);
    ev_timer_stop(loop, &t);
}

static void test_streak_and_ejection(void)
{
    struct ev_loop *loop = ev_default_loop(0);
    struct conf_backend cb = {.name = "b1", .weight = 1};
    struct conf_pool cp = {.name = "p"};
    cp.passive_health.enabled = true;
    cp.passive_health.consecutive_failures = 3;
    cp.passive_health.ejection_time = 40; /* ms */
    cp.passive_health.max_ejected_percent = 50;
    struct backend *b = backend_new(loop, &cp, &cb, &hooks, NULL);
    CHECK(b && b->state == BACKEND_HEALTHY, "no health check: healthy");

    CHECK(!backend_passive_report(b, true, "reset"), "1 failure");
    CHECK(!backend_passive_report(b, true, "reset"), "2 failures");
    CHECK(!backend_passive_report(b, false, NULL), "a success resets the streak");
    CHECK(!backend_passive_report(b, true, "reset") && !backend_passive_report(b, true, "reset"), "2 again");
    CHECK(backend_passive_report(b, true, "reset"), "the 3rd in a row calls for an ejection");

    backend_eject(b);
    CHECK(b->state == BACKEND_EJECTED && !backend_in_rotation(b), "ejected, out of rotation");
    CHECK(b->eject_ms == 40 && b->ejections_total == 1, "first ejection: %llu ms",
          (unsigned long long)b->eject_ms);
    CHECK(!backend_passive_report(b, true, "reset"), "no second ejection while ejected");
    wait_s(loop, 0.02);
    CHECK(b->state == BACKEND_EJECTED, "still ejected halfway");
    wait_s(loop, 0.04);
    CHECK(b->state == BACKEND_HEALTHY, "back after ejection_time: %s", backend_state_str(b->state));

    /* ejected again right away: doubling, up to 10x */
    conf_ms want[] = {80, 160, 320, 400, 400};
    for (size_t i = 0; i < sizeof(want) / sizeof(want[0]); i++) {
        backend_eject(b);
        CHECK(b->eject_ms == want[i], "ejection %zu: %llu ms, want %llu", i + 2,
              (unsigned long long)b->eject_ms, (unsigned long long)want[i]);
        ev_timer_stop(loop, &b->eject_timer);
        ev_feed_event(loop, &b->eject_timer, EV_TIMER); /* its time passed */
        ev_run(loop, EVRUN_NOWAIT);
        CHECK(b->state == BACKEND_HEALTHY, "back after ejection %zu", i + 2);
    }
    /* in rotation longer than the last ejection lasted: from ejection_time again */
    wait_s(loop, 0.45);
    backend_eject(b);
    CHECK(b->eject_ms == 40, "after a good spell: %llu ms", (unsigned long long)b->eject_ms);
    /* an active check failing at the end of the ejection: unhealthy, not back */
    b->hc.enabled = true;
    b->failure_streak = 1;
    backend_eject(b);
    ev_timer_stop(loop, &b->eject_timer);
    ev_feed_event(loop, &b->eject_timer, EV_TIMER);
    ev_run(loop, EVRUN_NOWAIT);
    CHECK(b->state == BACKEND_UNHEALTHY, "failing check after the ejection: %s",
          backend_state_str(b->state));
    b->hc.enabled = false;
    backend_free(b);

    /* without passive_health nothing is counted */
    cp.passive_health.enabled = false;
    b = backend_new(loop, &cp, &cb, &hooks, NULL);
    for (int i = 0; i < 10; i++)
        CHECK(!backend_passive_report(b, true, "reset"), "passive health off");
    backend_free(b);
}

/* Failures reported from worker threads: the ejection is asked once per run
 * of consecutive_failures, on the backend's own loop. */
static int wanted;
static const char *wanted_why;
static pthread_t wanted_on;
static void on_eject_wanted(struct backend *b, const char *why, void *ctx)
{
    wanted++;
    wanted_why = why;
    wanted_on = pthread_self();
}
static const struct backend_hooks thread_hooks = {.state_changed = on_change,
                                                  .eject_wanted = on_eject_wanted};

static void *fail_twice(void *arg)
{
    backend_passive_report(arg, true, "reset");
    backend_passive_report(arg, true, "timeout");
    return NULL;
}

static void test_reports_from_threads(void)
{
    struct ev_loop *loop = ev_default_loop(0);
    struct conf_backend cb = {.name = "b2", .weight = 1};
    struct conf_pool cp = {.name = "p"};
    cp.passive_health.enabled = true;
    cp.passive_health.consecutive_failures = 4;
    cp.passive_health.ejection_time = 1000;
    struct backend *b = backend_new(loop, &cp, &cb, &thread_hooks, NULL);
    pthread_t t1, t2;
    pthread_create(&t1, NULL, fail_twice, b);
    pthread_create(&t2, NULL, fail_twice, b);
    pthread_join(t1, NULL);
    pthread_join(t2, NULL);
    CHECK(wanted == 0, "4 failures from other threads: nothing on their threads");
    wait_s(loop, 0.02);
    CHECK(wanted == 1 && wanted_why && pthread_equal(wanted_on, pthread_self()),
          "asked once, on the loop's thread (%d)", wanted);
    CHECK(!backend_passive_report(b, true, "reset"), "a 5th failure does not ask again");
    backend_free(b);
}

int main(void)
{
    test_cap();
    test_streak_and_ejection();
    test_reports_from_threads();
    return check_report("test_passive");
}
