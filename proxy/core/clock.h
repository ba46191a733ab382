/* Time on a worker's loop: deadlines are seconds of the loop's clock
 * (ev_now), timeouts in the config are milliseconds. */
#ifndef USHER_PROXY_CLOCK_H
#define USHER_PROXY_CLOCK_H

#include <ev.h>
#include <float.h>

#include "../../conf/conf-t.h"

/* A state without a deadline of its own (a timer armed for an earlier
 * state just fires and is not re-armed). */
#define NO_DEADLINE DBL_MAX

static inline double ms_to_s(conf_ms ms)
{
    return (double)ms / 1000.0;
}

static inline ev_tstamp earliest(ev_tstamp a, ev_tstamp b)
{
    return a < b ? a : b;
}

#endif
