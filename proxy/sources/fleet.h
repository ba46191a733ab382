/* Fleet control through etcd (DESIGN.md "Discovery and fleets"): with
 * `fleet` set, the runtime overrides live in etcd under
 * prefix + "overrides/" instead of admin.state_file, every instance
 * watches them and applies each change, and each instance publishes its
 * status under prefix + "instances/" + id with a lease of FLEET_LEASE_TTL_S.
 *
 * Who writes what:
 *   prefix/overrides/drain/POOL/BACKEND  any instance's runtime API
 *   prefix/overrides/weight/POOL/BACKEND any instance's runtime API
 *   prefix/overrides/split/LISTENER      any instance's runtime API
 *   prefix/instances/ID                  instance ID only, under its lease
 * Values are JSON objects. */
#ifndef USHER_PROXY_FLEET_H
#define USHER_PROXY_FLEET_H

#include <stdbool.h>

#include "../base/buf.h"
#include "../control/process-t.h"

/* The DESIGN's lease: an instance that dies leaves the list this long
 * after its last keepalive. */
#define FLEET_LEASE_TTL_S 10
/* Keepalives well inside the lease: two may be lost before it expires. */
#define FLEET_KEEPALIVE_S 3.0
/* How often an instance looks at its connection counts to republish them
 * (a drain wait on another instance sees a finished request this late). */
#define FLEET_TICK_S 0.1
/* How long a clean exit waits for etcd to revoke the lease (a loopback
 * etcd answers in milliseconds; a dead one must not hold the exit). */
#define FLEET_LEAVE_MAX_S 0.5

/* With conf->fleet.enabled, connects <p> to its fleet (p->fleet, and
 * p->ov_store so overrides_save writes to etcd). Without etcd the process
 * still starts: it serves and keeps retrying. Returns 0, or -1 on
 * allocation failure. */
int fleet_start(struct process *p);

/* A clean exit: revokes this instance's lease so it leaves the instance
 * list now (not a lease later), then calls <done>(<ctx>) from the loop —
 * at the latest FLEET_LEAVE_MAX_S later. Returns 0, or -1 (nothing to
 * revoke, or leaving already) and <done> is not called. */
int fleet_leave(struct fleet *f, void (*done)(void *ctx), void *ctx);

/* Disconnects and frees p->fleet (NULL: nothing). */
void fleet_stop(struct process *p);

/* True when a mutation may be made now (etcd reachable and the overrides
 * loaded); else false with *<why> a static reason for the 503. */
bool fleet_writable(const struct fleet *f, const char **why);

/* True while some other live instance may still have a request on <pool>:
 * a write of ours is in flight, an instance has not applied our last
 * write yet, or one reports connections on it. */
bool fleet_pool_busy(const struct fleet *f, const char *pool);

/* Writes to etcd issued so far: a caller compares it before and after a
 * mutation to learn whether it wrote, and which ticket to ask about. */
unsigned long fleet_writes_issued(const struct fleet *f);

/* The outcome of write <ticket>: 1 in etcd, 0 still in flight, -1 failed
 * (the change was taken back here too). */
int fleet_write_outcome(const struct fleet *f, unsigned long ticket);

/* /status "fleet": the object, or null without a fleet. */
void fleet_status_json(struct hbuf *o, const struct fleet *f);

#endif
