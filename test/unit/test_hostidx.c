// links: usher_proxy_core
/* The host-name index (proxy/core/hostidx.c): exact names, wildcards of
 * any depth (routes) and of one label (certificates), precedence, case,
 * malformed keys and names, and a large index. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "proxy/core/hostidx.h"

#include "test/unit/check.h"

/* Values are the keys themselves, so a lookup says which entry it found. */
static void add(struct hostidx *idx, const char *key)
{
    CHECK_INT(hostidx_add(idx, key, strlen(key), (void *)key), 0);
}

static const char *look(const struct hostidx *idx, const char *name)
{
    return hostidx_lookup(idx, name, strlen(name));
}

#define EXPECT(idx, name, want)                                                                    \
    do {                                                                                           \
        const char *got_ = look(idx, name), *want_ = (want);                                       \
        if (want_ ? !got_ || strcmp(got_, want_) : got_ != NULL)                                   \
            check_fail(__FILE__, __LINE__, NULL, "lookup(%s) == %s, expected %s", name,            \
                       got_ ? got_ : "none", want_ ? want_ : "none");                              \
    } while (0)

static void test_any_depth(void)
{
    struct hostidx *idx = hostidx_new(HOSTIDX_WILDCARD_ANY_DEPTH);
    add(idx, "example.com");
    add(idx, "*.example.com");
    add(idx, "*.b.example.com");
    add(idx, "x.b.example.com");
    add(idx, "*.org");
    CHECK_EQ(hostidx_count(idx), 5);

    EXPECT(idx, "example.com", "example.com");         /* exact */
    EXPECT(idx, "a.example.com", "*.example.com");     /* one label */
    EXPECT(idx, "a.c.example.com", "*.example.com");   /* two labels */
    EXPECT(idx, "b.example.com", "*.example.com");     /* the apex of *.b is not *.b */
    EXPECT(idx, "a.b.example.com", "*.b.example.com"); /* the longer wildcard */
    EXPECT(idx, "z.a.b.example.com", "*.b.example.com");
    EXPECT(idx, "x.b.example.com", "x.b.example.com"); /* exact beats both */
    EXPECT(idx, "y.x.b.example.com", "*.b.example.com");
    EXPECT(idx, "example.org", "*.org");
    EXPECT(idx, "org", NULL); /* *.org does not cover org */
    EXPECT(idx, "com", NULL);
    EXPECT(idx, "example.net", NULL);
    EXPECT(idx, "notexample.com", NULL); /* a suffix, not on a label */
    EXPECT(idx, "aexample.com", NULL);

    /* case: either side */
    EXPECT(idx, "EXAMPLE.COM", "example.com");
    EXPECT(idx, "A.B.Example.Com", "*.b.example.com");
    CHECK_INT(hostidx_add(idx, "*.EXAMPLE.com", 13, "dup"), -EEXIST);
    CHECK_INT(hostidx_add(idx, "Example.COM", 11, "dup"), -EEXIST);
    EXPECT(idx, "example.com", "example.com"); /* the first one stays */

    /* names that are not host names match nothing */
    EXPECT(idx, "", NULL);
    EXPECT(idx, "example.com.", NULL); /* callers strip the dot */
    EXPECT(idx, ".example.com", NULL);
    EXPECT(idx, "a..example.com", NULL);
    EXPECT(idx, "a.example..com", NULL);
    EXPECT(idx, ".", NULL);
    char long_name[300];
    memset(long_name, 'a', sizeof(long_name));
    memcpy(long_name + sizeof(long_name) - 12, ".example.com", 12);
    CHECK(hostidx_lookup(idx, long_name, sizeof(long_name)) == NULL);
    /* 253 bytes: still a name */
    const char *longest = long_name + sizeof(long_name) - HOSTIDX_NAME_MAX;
    CHECK(hostidx_lookup(idx, longest, HOSTIDX_NAME_MAX) != NULL);
    CHECK(hostidx_lookup(idx, long_name + sizeof(long_name) - 254, 254) == NULL);

    /* get: the key itself */
    CHECK_STR(hostidx_get(idx, "*.b.example.com", 15), "*.b.example.com");
    CHECK_STR(hostidx_get(idx, "X.B.example.com", 15), "x.b.example.com");
    CHECK(hostidx_get(idx, "a.b.example.com", 15) == NULL);
    CHECK(hostidx_get(idx, "*.c.example.com", 15) == NULL);
    CHECK(hostidx_get(idx, "b.example.com", 13) == NULL); /* not the wildcard's suffix */
    hostidx_free(idx);
}

static void test_iter(void)
{
    struct hostidx *idx = hostidx_new(HOSTIDX_WILDCARD_ANY_DEPTH);
    add(idx, "*.com");
    add(idx, "*.example.com");
    add(idx, "a.b.example.com");
    add(idx, "*.b.example.com");
    add(idx, "*.a.b.example.com"); /* does not cover a.b.example.com itself */
    add(idx, "*.other.com");

    static const char *const want[] = {"a.b.example.com", "*.b.example.com", "*.example.com",
                                       "*.com"};
    struct hostidx_iter it;
    const char *v;
    size_t n = 0;
    hostidx_iter_init(&it, idx, "A.b.example.COM", 15);
    while ((v = hostidx_iter_next(&it)) != NULL) {
        if (n < 4)
            CHECK_STR(v, want[n]);
        n++;
    }
    CHECK_EQ(n, 4);
    CHECK(hostidx_iter_next(&it) == NULL); /* stays done */

    /* no exact entry: the wildcards alone */
    n = 0;
    hostidx_iter_init(&it, idx, "q.example.com", 13);
    while ((v = hostidx_iter_next(&it)) != NULL)
        n++;
    CHECK_EQ(n, 2);

    /* an empty index */
    struct hostidx *empty = hostidx_new(HOSTIDX_WILDCARD_ANY_DEPTH);
    hostidx_iter_init(&it, empty, "a.com", 5);
    CHECK(hostidx_iter_next(&it) == NULL);
    CHECK(hostidx_lookup(empty, "a.com", 5) == NULL);
    CHECK(hostidx_get(empty, "a.com", 5) == NULL);
    CHECK_EQ(hostidx_count(empty), 0);
    hostidx_free(empty);
    hostidx_free(idx);
}

static void test_one_label(void)
{
    struct hostidx *idx = hostidx_new(HOSTIDX_WILDCARD_ONE_LABEL);
    add(idx, "*.example.com");
    add(idx, "*.b.example.com");
    add(idx, "www.example.com");

    EXPECT(idx, "a.example.com", "*.example.com");
    EXPECT(idx, "www.example.com", "www.example.com");
    EXPECT(idx, "a.b.example.com", "*.b.example.com");
    EXPECT(idx, "a.c.example.com", NULL); /* two labels under *.example.com */
    EXPECT(idx, "x.a.b.example.com", NULL);
    EXPECT(idx, "example.com", NULL);
    EXPECT(idx, "A.EXAMPLE.COM", "*.example.com");

    struct hostidx_iter it;
    hostidx_iter_init(&it, idx, "www.example.com", 15);
    CHECK_STR(hostidx_iter_next(&it), "www.example.com");
    CHECK_STR(hostidx_iter_next(&it), "*.example.com");
    CHECK(hostidx_iter_next(&it) == NULL);
    hostidx_free(idx);
}

static void test_bad_keys(void)
{
    struct hostidx *idx = hostidx_new(HOSTIDX_WILDCARD_ANY_DEPTH);
    static const char *const bad[] = {
        "",     "*",    "*.",     "*.*.com", "a.*.com", "*a.com", "a*.com",    "**.com",
        ".com", "com.", "a..com", "a com",   "a\tcom",  "*..com", "a.com\x7f",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        check_context = bad[i];
        CHECK_INT(hostidx_add(idx, bad[i], strlen(bad[i]), "x"), -EINVAL);
    }
    check_context = NULL;
    CHECK_INT(hostidx_add(idx, "a.com", 5, NULL), -EINVAL);
    char long_key[HOSTIDX_NAME_MAX + 2];
    memset(long_key, 'a', sizeof(long_key));
    CHECK_INT(hostidx_add(idx, long_key, HOSTIDX_NAME_MAX + 1, "x"), -EINVAL);
    CHECK_INT(hostidx_add(idx, long_key, HOSTIDX_NAME_MAX, "x"), 0);
    long_key[1] = '.';
    long_key[0] = '*';
    CHECK_INT(hostidx_add(idx, long_key, HOSTIDX_NAME_MAX + 1, "x"), -EINVAL);
    CHECK_INT(hostidx_add(idx, long_key, HOSTIDX_NAME_MAX, "w"), 0);
    CHECK_EQ(hostidx_count(idx), 2);
    /* a single-label name and a single-label wildcard are names too */
    CHECK_INT(hostidx_add(idx, "localhost", 9, "l"), 0);
    CHECK_INT(hostidx_add(idx, "*.localhost", 11, "L"), 0);
    CHECK_STR(look(idx, "localhost"), "l");
    CHECK_STR(look(idx, "a.localhost"), "L");
    hostidx_free(idx);
    hostidx_free(NULL);
}

/* Thousands of certificates: every name and wildcard found, near misses
 * not, through several table growths. */
static void test_many(void)
{
    enum { N = 5000 };
    struct hostidx *idx = hostidx_new(HOSTIDX_WILDCARD_ONE_LABEL);
    static char names[2 * N][48];
    for (int i = 0; i < N; i++) {
        snprintf(names[2 * i], sizeof(names[0]), "svc%d.tenant%d.example.com", i, i % 97);
        snprintf(names[2 * i + 1], sizeof(names[0]), "*.t%d.example.net", i);
        CHECK_INT(hostidx_add(idx, names[2 * i], strlen(names[2 * i]), names[2 * i]), 0);
        CHECK_INT(hostidx_add(idx, names[2 * i + 1], strlen(names[2 * i + 1]), names[2 * i + 1]),
                  0);
    }
    CHECK_EQ(hostidx_count(idx), 2 * N);
    char q[64];
    int wrong = 0;
    for (int i = 0; i < N; i++) {
        const char *v = look(idx, names[2 * i]);
        wrong += !v || v != names[2 * i];
        snprintf(q, sizeof(q), "host.t%d.example.net", i);
        v = look(idx, q);
        wrong += !v || v != names[2 * i + 1];
        snprintf(q, sizeof(q), "svc%d.tenant%d.example.com", i, (i + 1) % 97);
        wrong += look(idx, q) != NULL;
        snprintf(q, sizeof(q), "t%d.example.net", i);
        wrong += look(idx, q) != NULL;
    }
    CHECK_INT(wrong, 0);
    hostidx_free(idx);
}

int main(void)
{
    test_any_depth();
    test_iter();
    test_one_label();
    test_bad_keys();
    test_many();
    return check_report("test_hostidx");
}
