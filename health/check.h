/* Active health checks of one backend: private to health/. check.c runs the
 * attempts on the event loop; backend.c owns the state machine and receives
 * exactly one result per attempt through backend_check_done(). */
#ifndef USHER_HEALTH_CHECK_H
#define USHER_HEALTH_CHECK_H

#include "backend-t.h"

/* What one attempt said about the backend. */
enum hc_outcome {
    HC_SUCCESS = 1, /* status within expect_status (http), connected (tcp) */
    HC_FAILURE,     /* refused, timeout, reset, closed, bad status, ... */
    HC_DRAINING,    /* HTTP 503: the backend asks to be deregistered */
};

/* Static reasons, shared with the state machine (and the logs via hooks). */
extern const char hc_reason_ok[];   /* "ok" */
extern const char hc_reason_503[];  /* "503" */
extern const char hc_reason_none[]; /* "none": no check completed yet */

/* Prepares the check watchers of <b> (fd -1, nothing armed). */
void hc_init(struct backend *b);

/* Arms the next attempt <delay> seconds from now, replacing any pending
 * one. Does nothing while an attempt is in progress or without a health
 * check. */
void hc_schedule(struct backend *b, ev_tstamp delay);

/* Cancels the attempt in progress (no result is reported) and the next one;
 * closes the socket and releases the buffer. */
void hc_stop(struct backend *b);

/* True if an attempt is in progress or scheduled. */
bool hc_running(const struct backend *b);

/* Delay before the first attempt: uniform in [0, min(interval, 50 ms)), so
 * readiness comes fast but a fleet added at once is not hit in one burst. */
ev_tstamp hc_first_delay(struct backend *b);

/* Delay between the end of one attempt and the start of the next: interval
 * with +-10% uniform jitter from the backend's own random state. */
ev_tstamp hc_next_delay(struct backend *b);

/* "idle", "connecting", "sending", "reading". */
const char *hc_phase_str(enum backend_check_phase p);

/* Implemented in backend.c: the one result of the attempt that just ended.
 * <reason> is static; <status> the HTTP status or 0. Called from a libev
 * callback only. */
void backend_check_done(struct backend *b, enum hc_outcome outcome, const char *reason, int status);

#endif
