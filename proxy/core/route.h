/* The route table of one listener (DESIGN "Routes and certificates"):
 * compiled once per config generation from the routes in their written
 * order, immutable afterwards (shared by every worker without a lock), and
 * matched per request.
 *
 * Precedence: the most specific matching route, compared first by host (an
 * exact name, then wildcards from the longest to the shortest, then the
 * routes without hosts), then by path (an exact path, then prefixes from
 * the longest to the shortest, then "/", then the routes without paths),
 * then by the number of headers (more first), then by written order. It is
 * lexicographic over the routes that match: when no route of the exact
 * host matches the path and headers, the wildcards' routes are tried, then
 * the routes without hosts.
 *
 * Cost of a match, whatever the number of routes: the host costs one pass
 * over it and one hash probe per label (proxy/core/hostidx.c); in each host
 * group tried, an exact path costs one hash probe and prefixes one probe
 * per '/' of the path up to the group's longest prefix, and only at the
 * lengths some prefix of the group has; then a header check per candidate
 * route of the same path (routes that differ only by headers). Routes with
 * no host and no path (a catch-all) cost nothing to find. */
#ifndef USHER_PROXY_ROUTE_H
#define USHER_PROXY_ROUTE_H

#include "route-t.h"

struct route_table;

/* Compiles <specs>[0..<n>) (in written order: it breaks ties) into
 * *<out>. Returns 0; -EINVAL for a malformed spec, with *<bad> its index
 * and *<reason> a static string ("bad host", "bad path", "bad header");
 * -ENOMEM. The config has checked all of it already: -EINVAL is a bug of
 * the conversion. <bad> and <reason> may be NULL. */
int route_table_build(const struct route_spec *specs, size_t n, struct route_table **out,
                      size_t *bad, const char **reason);

/* Frees <t> (not the specs' data). NULL is allowed. */
void route_table_free(struct route_table *t);

/* The number of routes of <t>. */
size_t route_table_count(const struct route_table *t);

/* Finds the route for <req> (see the top of this file for the order).
 * Returns 0 with *<m> filled, or ROUTE_NO_MATCH. The host is normalised
 * here (route_host_normalize), the path's query string ignored, an empty
 * path taken as "/". */
int route_match(const struct route_table *t, const struct route_request *req,
                struct route_match *m);

/* The host part of a Host / :authority value, as routes compare it: the
 * port removed ("a.example:8080" -> "a.example"), an IPv6 literal kept in
 * its brackets ("[::1]:80" -> "[::1]", which no route host can name), one
 * trailing dot removed ("a.example." -> "a.example"). Case is left as it
 * is: the index compares case-insensitively. Sets *<out> to the start
 * (within <host>) and returns the length. */
size_t route_host_normalize(const char *host, size_t len, const char **out);

/* strip_prefix: the target to forward for <path>[0..<len>) when the route
 * matched <prefix_len> bytes of it (route_match.prefix_len): *<rest> and
 * *<rest_len> are what follows the prefix, query included. Returns true
 * when a '/' must be written before it (the rest is empty or starts with
 * '?'), so "/v1/users" matched by "/v1/" gives "/users", "/v1" and an
 * exact match give "/", "/v1/x?a=1" gives "/x?a=1". No copy. */
bool route_strip_prefix(const char *path, size_t len, size_t prefix_len, const char **rest,
                        size_t *rest_len);

/* A route_header_fn over an HTTP/1 head: <ctx> is the request's
 * `const struct http1_message *`. */
bool route_http1_has_header(void *ctx, const char *name, size_t name_len, const char *value,
                            size_t value_len);

#endif
