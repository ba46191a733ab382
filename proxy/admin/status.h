/* What the admin listener shows: the /status JSON (DESIGN.md "Admin
 * endpoints"), each object also the answer of the mutation that changed
 * it, and the server-rendered status page. */
#ifndef USHER_PROXY_STATUS_H
#define USHER_PROXY_STATUS_H

#include "../base/buf.h"
#include "../control/process-t.h"

/* One backend, listener or pool object, as it appears in /status. */
void status_backend_json(struct hbuf *o, const struct process *p, const struct server *s);
void status_listener_json(struct hbuf *o, const struct process *p, const struct listener *l);
void status_pool_json(struct hbuf *o, const struct process *p, const struct pool *pl);

/* Why /ready answers 503, or NULL when it answers 200: not running yet (or
 * draining), or, with admin.ready_requires_backends, a listener that still
 * accepts but could route a new request nowhere. A static string. */
const char *status_not_ready_reason(const struct process *p);

/* The whole /status document. */
void status_json(struct hbuf *o, const struct process *p);

/* GET /: the status page, with the current state rendered in (readable
 * without JavaScript) and a script that refreshes it from /status. */
void status_page_html(struct hbuf *o, const struct process *p);

#endif
