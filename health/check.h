/* Active health checks of one backend: private to health/. check.c runs the
 * attempts on the event loop; backend.c owns the state machine and receives
 * exactly one result per attempt through the callback it handed to hc_init(). */
#ifndef USHER_HEALTH_CHECK_H
#define USHER_HEALTH_CHECK_H

#include "backend-t.h"

typedef void (*hc_done_cb)(struct backend *b, enum hc_outcome outcome, const char *reason,
                           int status);

/* Static reasons, shared with the state machine (and the logs via hooks). */
extern const char hc_reason_ok[];          /* "ok" */
extern const char hc_reason_503[];         /* "503" */
extern const char hc_reason_not_serving[]; /* "not_serving": a gRPC check's NOT_SERVING */
extern const char hc_reason_none[];        /* "none": no check completed yet */

/* Prepares the check watchers of <b> (fd -1, nothing armed). Each attempt
 * that ends reports its one result to <done>: <reason> is static, <status>
 * the HTTP status or 0; called from a libev callback only. */
void hc_init(struct backend *b, hc_done_cb done);

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

#endif
