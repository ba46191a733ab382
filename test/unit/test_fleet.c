// links: usher_proxy_sources
/* The fleet's keys and values (proxy/sources/fleet.c, included for its
 * static functions): every override kind survives the trip to etcd's
 * key/value form and back, keys name what they hold, and a value that is
 * not usher's is refused rather than half read. */
#include "proxy/sources/fleet.c"
#include "test/unit/check.h"

static void test_round_trip(void)
{
    struct fleet f = {.ov_prefix = "/u/overrides/"};
    struct overrides *ov = overrides_new();
    struct conf_split sp[] = {{.pool = "blue", .weight = 0}, {.pool = "green", .weight = 100}};
    CHECK(overrides_set_drain(ov, "blue", "blue-1", 1764633600123LL) == 0, "drain");
    CHECK(overrides_set_weight(ov, "green", "green-2", 7) == 0, "weight");
    CHECK(overrides_set_split(ov, "web", sp, 2) == 0, "split");
    struct kv *kvs = NULL;
    size_t n = 0;
    CHECK(ov_to_kvs(&f, ov, &kvs, &n) == 0 && n == 3, "to kvs: %zu", n);
    CHECK(kv_find(kvs, n, "/u/overrides/drain/blue/blue-1"), "drain key");
    CHECK(kv_find(kvs, n, "/u/overrides/weight/green/green-2"), "weight key");
    CHECK(kv_find(kvs, n, "/u/overrides/split/web"), "split key");
    struct overrides *back = overrides_new();
    for (size_t i = 0; i < n; i++)
        CHECK(ov_add_value(back, kvs[i].key, kvs[i].val) == 0, "value %s", kvs[i].val);
    CHECK(back->num_drains == 1 && back->drains[0].deadline_epoch_ms == 1764633600123LL &&
              !strcmp(back->drains[0].backend, "blue-1"),
          "drain back");
    const struct override_weight *w = overrides_find_weight(back, "green", "green-2");
    CHECK(w && w->weight == 7, "weight back");
    const struct override_split *s = overrides_find_split(back, "web");
    CHECK(same_split(s, overrides_find_split(ov, "web")), "split back, in order");
    /* the same overrides give the same bytes: a write diffs by value */
    struct kv *again = NULL;
    size_t m = 0;
    ov_to_kvs(&f, back, &again, &m);
    for (size_t i = 0; i < m; i++) {
        struct kv *k = kv_find(kvs, n, again[i].key);
        CHECK(k && !strcmp(k->val, again[i].val), "stable value %s", again[i].key);
    }
    kvs_free(again, m);
    kvs_free(kvs, n);
    overrides_free(back);
    overrides_free(ov);
}

static void test_refused_values(void)
{
    const char *bad[] = {
        "",
        "not json",
        "{\"pool\":\"blue\"}",
        "{\"pool\":\"blue\",\"backend\":\"b\",\"weight\":-1}",
        "{\"pool\":\"blue\",\"backend\":\"b\",\"weight\":4294967296}",
        "{\"listener\":\"web\",\"split\":[{\"pool\":\"blue\"}]}",
        "{\"listener\":\"web\",\"split\":{\"blue\":1}}",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        struct overrides *ov = overrides_new();
        CHECK(ov_add_value(ov, "/u/overrides/x", bad[i]) < 0, "refused: %s", bad[i]);
        CHECK(ov->num_drains + ov->num_weights + ov->num_splits == 0, "nothing kept: %s", bad[i]);
        overrides_free(ov);
    }
}

int main(void)
{
    log_configure(CONF_LOG_ERROR, CONF_LOG_TEXT);
    test_round_trip();
    test_refused_values();
    return check_report("test_fleet");
}
