/* The config's HTTP/2 settings (DESIGN: listeners[].http2,
 * limits.h2_max_streams), read in one place. */
#ifndef USHER_PROXY_H2CONF_H
#define USHER_PROXY_H2CONF_H

#include <stdbool.h>

#include "../../conf/conf-t.h"

/* True if HTTP/2 is offered on listener <cl>: h2 by ALPN on TLS, h2c with
 * prior knowledge on plain TCP (http2: auto); never in TCP mode. */
static inline bool h2_enabled(const struct conf_listener *cl)
{
    return cl->protocol == CONF_PROTO_HTTP && cl->http2 != CONF_HTTP2_OFF;
}

/* limits.h2_max_streams: concurrent streams on one HTTP/2 connection. */
static inline unsigned h2_max_streams(const struct conf *conf)
{
    return conf->limits.h2_max_streams;
}

#endif
