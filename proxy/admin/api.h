/* The runtime API (DESIGN.md "Runtime control"): POST and DELETE on the
 * admin listener. It decides who may change things, parses the JSON
 * bodies, records overrides and applies them to the data plane. */
#ifndef USHER_PROXY_API_H
#define USHER_PROXY_API_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/socket.h>

#include "../base/buf.h"
#include "../../parser/http1-t.h"
#include "../control/process-t.h"

/* Bodies larger than this get 413 (a split of many pools fits easily). */
#define API_BODY_MAX (64 * 1024)

struct api_request {
    enum http1_method method;
    const char *path; /* without the query */
    size_t path_len;
    const char *query; /* after '?', or NULL */
    size_t query_len;
    const char *body;
    size_t body_len;
    const char *authz; /* Authorization field value, or NULL */
    size_t authz_len;
    const struct sockaddr *peer;
    socklen_t peer_len;
};

struct api_reply {
    int status;
    const char *allow; /* the Allow field of a 405, else NULL */
    struct hbuf body;  /* JSON */
};

struct api_wait;

/* A reply that waited (a pool drain with ?wait): called once, from a timer
 * on the loop; <r> is the callee's to send (and free). */
typedef void (*api_later_cb)(void *ctx, struct api_reply *r);

enum api_result {
    API_NOT_MINE = 0, /* not a runtime API path: the admin listener answers */
    API_DONE,         /* <r> is filled */
    API_LATER,        /* *<wait> set: <later> will be called with the reply */
};

/* Answers <rq>. Never blocks: a wait is a timer on p->loop. */
enum api_result api_handle(struct process *p, const struct api_request *rq, struct api_reply *r,
                           api_later_cb later, void *ctx, struct api_wait **wait);

/* The connection that waits went away: <later> will not be called. */
void api_wait_cancel(struct api_wait *w);

/* True if <path> (<len> bytes) is a runtime API path, whatever the method. */
bool api_owns_path(const char *path, size_t len);

#endif
