// links: usher_proxy_core
/* upstream_keep_rule() over every combination of its five facts: a
 * connection is kept only when nothing speaks against it, and a close
 * always names a fact that holds. */
#include <stdbool.h>
#include <stdio.h>
#include <string.h>

#include "proxy/core/upstream.h"
#include "test/unit/check.h"

/* The reasons upstream.c gives, one per fact, in the order of struct
 * keep_facts. */
enum fact { REUSABLE, IN_ROTATION, POOL_FULL, PROCESS_DRAINING, FD_PRESSURE, NUM_FACTS };

static const char *const reason_of[NUM_FACTS] = {
    [REUSABLE] = "the exchange left it unusable", [IN_ROTATION] = "its backend is out of rotation",
    [POOL_FULL] = "the idle pool is full",        [PROCESS_DRAINING] = "the process drains",
    [FD_PRESSURE] = "descriptors are short",
};

/* Whether fact <i> of <f> speaks against keeping the connection. */
static bool against(const struct keep_facts *f, enum fact i)
{
    switch (i) {
    case REUSABLE:
        return !f->reusable;
    case IN_ROTATION:
        return !f->in_rotation;
    case POOL_FULL:
        return f->pool_full;
    case PROCESS_DRAINING:
        return f->process_draining;
    case FD_PRESSURE:
        return f->fd_pressure;
    case NUM_FACTS:
        break;
    }
    return false;
}

int main(void)
{
    for (unsigned row = 0; row < 1u << NUM_FACTS; row++) {
        struct keep_facts f = {
            .reusable = row & 1u << REUSABLE,
            .in_rotation = row & 1u << IN_ROTATION,
            .pool_full = row & 1u << POOL_FULL,
            .process_draining = row & 1u << PROCESS_DRAINING,
            .fd_pressure = row & 1u << FD_PRESSURE,
        };
        char name[96];
        snprintf(name, sizeof(name), "reusable=%d in_rotation=%d pool_full=%d draining=%d fd=%d",
                 f.reusable, f.in_rotation, f.pool_full, f.process_draining, f.fd_pressure);
        check_context = name;

        bool keep =
            f.reusable && f.in_rotation && !f.pool_full && !f.process_draining && !f.fd_pressure;
        const char *r = upstream_keep_rule(&f);
        if (keep) {
            CHECK(r == NULL, "closed: \"%s\"", r);
            continue;
        }
        CHECK(r != NULL);
        if (!r)
            continue;
        /* a static string: the same pointer every time, and one of the known
         * reasons, for a fact that holds in this row */
        CHECK(upstream_keep_rule(&f) == r);
        int which = -1;
        for (int i = 0; i < NUM_FACTS; i++)
            if (strcmp(r, reason_of[i]) == 0)
                which = i;
        CHECK(which >= 0, "unknown reason \"%s\"", r);
        if (which >= 0)
            CHECK(against(&f, (enum fact)which), "reason \"%s\" for a fact that does not hold", r);
        if (f.reusable && !f.in_rotation)
            CHECK_STR(r, reason_of[IN_ROTATION]);
        if (!f.reusable)
            CHECK_STR(r, reason_of[REUSABLE]);
    }
    check_context = NULL;
    return check_report("test_keep_rule");
}
