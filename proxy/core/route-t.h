/* The route table of a listener: types only (DESIGN "Routes and
 * certificates"). The specs are this module's own, not the config's: the
 * config generation converts its routes into them. */
#ifndef USHER_PROXY_ROUTE_T_H
#define USHER_PROXY_ROUTE_T_H

#include <stdbool.h>
#include <stddef.h>

/* One entry of a route's `paths`. */
struct route_path_spec {
    /* Starts with '/'. A prefix matches on whole segments: "/v1/" and
     * "/v1" both match /v1, /v1/x and /v1?q, not /v10; "/" matches every
     * path. An exact path (written "=/healthz" in the config; the '=' is
     * not part of <text>) matches only itself. The query string never
     * takes part. */
    const char *text;
    bool exact;
};

/* One entry of a route's `headers`: a request matches when some field
 * named <name> has exactly <value>. */
struct route_header_spec {
    const char *name; /* lowercase */
    const char *value;
};

/* A route as written, NUL-terminated strings. Nothing of it is kept by
 * route_table_build: the table copies what it needs. */
struct route_spec {
    /* Exact names or "*.suffix" wildcards, without a trailing dot. None:
     * any host. */
    const char *const *hosts;
    size_t n_hosts;
    const struct route_path_spec *paths; /* none: any path */
    size_t n_paths;
    const struct route_header_spec *headers; /* none: any request */
    size_t n_headers;
    void *data; /* the caller's, handed back by route_match */
};

/* Whether the request has a header field named <name>[0..<name_len>)
 * (lowercase; field names compare case-insensitively) whose value is
 * exactly <value>[0..<value_len>) (byte for byte, one field's whole value:
 * "1" does not match "1, 2"). Called only for routes with headers that
 * match the request otherwise, so a table without header routes never
 * calls it. */
typedef bool (*route_header_fn)(void *ctx, const char *name, size_t name_len, const char *value,
                                size_t value_len);

/* What route_match looks at. Views into the request, not copied. */
struct route_request {
    const char *host; /* Host or :authority as the client sent it; NULL/0 if none */
    size_t host_len;
    const char *path; /* the request target in origin-form, query included */
    size_t path_len;
    route_header_fn has_header; /* NULL: the request has no header a route asks for */
    void *ctx;                  /* for has_header */
};

/* The route a request goes to. */
struct route_match {
    size_t index; /* the route's position in the specs given to route_table_build */
    void *data;   /* its route_spec.data */
    /* Bytes at the start of the path that the matched path covers: the
     * prefix without its trailing '/' ("/v1/" and "/v1" both 3), the whole
     * path for an exact match, 0 for "/" or a route without paths. What
     * strip_prefix removes (route_strip_prefix). */
    size_t prefix_len;
};

/* route_match's answer when no route matches (the listener's default
 * route then, or 404). */
#define ROUTE_NO_MATCH (-1)

#endif
