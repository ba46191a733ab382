// links: usher_conf
/* conf_load() and conf_diff() stay linear in the size of a config: a
 * reload of a config with 20,000 backends must not stall the control
 * thread on a quadratic name check or diff. The configs are generated
 * into temporary files. Times are the CPU time of this thread, which a
 * busy shared machine does not inflate the way it does wall time. */
#include "conf/conf.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "test/unit/check.h"

/* DESIGN's scale: 20,000 backends in 10 pools, and many routes. */
#define BACKENDS 20000
#define POOLS 10
#define ROUTES 2000

/* The diff of such a config takes a few milliseconds; 200 ms leaves room
 * for ASan/UBSan (about 3-5x slower) and a slow machine, and is still far
 * below what a scan per backend costs (seconds). */
#define DIFF_MAX_MS 200.0

/* Four times the backends may cost at most this many times the time: 4
 * when linear, 16 when quadratic; the margin absorbs allocator and cache
 * effects and timer noise. */
#define LOAD_GROWTH_MAX 8.0

static char dir[] = "/tmp/usher-test-scale-XXXXXX";

static double cpu_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return (double)ts.tv_sec * 1000.0 + (double)ts.tv_nsec / 1e6;
}

/* Writes a config with <backends> backends spread over <pools> pools, one
 * listener splitting over all pools and <routes> routes, each route on its
 * own host. <weight> is every backend's weight. Returns its path. */
static char *write_config(const char *name, size_t backends, size_t pools, size_t routes,
                          unsigned weight)
{
    char *path = NULL;
    FILE *f;

    if (asprintf(&path, "%s/%s", dir, name) < 0 || !(f = fopen(path, "w")))
        abort();
    fputs("listeners:\n"
          "  - name: web\n"
          "    bind: 127.0.0.1:8080\n"
          "    routes:\n",
          f);
    for (size_t r = 0; r < routes; r++)
        fprintf(f,
                "      - name: r%zu\n"
                "        hosts: [r%zu.example.com, \"*.r%zu.example.com\"]\n"
                "        paths: [/v1/, =/healthz]\n"
                "        pools: {p%zu: 1}\n",
                r, r, r, r % pools);
    fputs("    pools:\n", f);
    for (size_t p = 0; p < pools; p++)
        fprintf(f, "      p%zu: %u\n", p, p == 0 ? 100u : 0u);
    fputs("pools:\n", f);
    for (size_t p = 0; p < pools; p++) {
        fprintf(f,
                "  - name: p%zu\n"
                "    health_check: {interval: 5s}\n"
                "    backends:\n",
                p);
        for (size_t b = p; b < backends; b += pools)
            fprintf(f, "      - {name: b%zu, address: 10.%zu.%zu.%zu:%zu, weight: %u}\n", b,
                    b >> 16 & 0xff, b >> 8 & 0xff, b & 0xff, 1024 + b % 60000, weight);
    }
    fclose(f);
    return path;
}

static struct conf *load(const char *path)
{
    struct conf_errors e = {0};
    struct conf *c = conf_load(path, &e);

    for (size_t i = 0; i < e.count && i < 5; i++)
        fprintf(stderr, "%s\n", e.messages[i]);
    if (!c)
        failures++;
    conf_errors_clear(&e);
    return c;
}

/* The smallest CPU time of three loads of <path>, in ms. */
static double load_ms(const char *path)
{
    double best = 1e30;

    for (int i = 0; i < 3; i++) {
        double t0 = cpu_ms();
        struct conf *c = load(path);
        double t = cpu_ms() - t0;
        conf_free(c);
        if (t < best)
            best = t;
    }
    return best;
}

static double diff_ms(const struct conf *a, const struct conf *b, size_t want_changes)
{
    struct conf_diff d;
    double best = 1e30;

    for (int i = 0; i < 3; i++) {
        double t0 = cpu_ms();
        int rc = conf_diff(a, b, &d);
        double t = cpu_ms() - t0;
        CHECK(rc == 0);
        CHECK_EQ(d.count, want_changes);
        conf_diff_free(&d);
        if (t < best)
            best = t;
    }
    return best;
}

static void test_diff_is_fast(void)
{
    char *p1 = write_config("a.yaml", BACKENDS, POOLS, ROUTES, 1);
    char *p2 = write_config("b.yaml", BACKENDS, POOLS, ROUTES, 2);
    struct conf *a = load(p1), *a2 = load(p1), *b = load(p2);

    if (a && a2 && b) {
        CHECK_EQ(a->num_pools, POOLS);
        CHECK_EQ(a->pools[3].num_backends, BACKENDS / POOLS);
        CHECK_EQ(a->listeners[0].num_routes, ROUTES);
        double same = diff_ms(a, a, 0);
        double copy = diff_ms(a, a2, 0);
        /* every backend reweighted: one change each, no less linear */
        double all = diff_ms(a, b, BACKENDS);
        printf("diff of %d backends, %d routes: itself %.2f ms, a copy %.2f ms, all changed "
               "%.2f ms\n",
               BACKENDS, ROUTES, same, copy, all);
        CHECK(same < DIFF_MAX_MS, "%.1f ms", same);
        CHECK(copy < DIFF_MAX_MS, "%.1f ms", copy);
        CHECK(all < DIFF_MAX_MS, "%.1f ms", all);
    }
    conf_free(a);
    conf_free(a2);
    conf_free(b);
    unlink(p1);
    unlink(p2);
    free(p1);
    free(p2);
}

/* Backends in one pool and routes in one listener: where a name check
 * comparing each against all the earlier ones would show. */
static void test_load_is_linear(void)
{
    char *small = write_config("small.yaml", BACKENDS / 4, 1, ROUTES / 4, 1);
    char *big = write_config("big.yaml", BACKENDS, 1, ROUTES, 1);
    double ts = load_ms(small), tb = load_ms(big);

    printf("load of %d backends and %d routes: %.1f ms; of %d and %d: %.1f ms (x%.1f)\n",
           BACKENDS / 4, ROUTES / 4, ts, BACKENDS, ROUTES, tb, tb / ts);
    CHECK(tb < ts * LOAD_GROWTH_MAX, "%.1f ms for 4x the size of %.1f ms", tb, ts);
    unlink(small);
    unlink(big);
    free(small);
    free(big);
}

int main(void)
{
    if (!mkdtemp(dir)) {
        perror("mkdtemp");
        return 1;
    }
    test_diff_is_fast();
    test_load_is_linear();
    rmdir(dir);
    return check_report("test_conf_scale");
}
