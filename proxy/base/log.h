/* One line per event on stderr: "time level event key=value ..." or, with
 * log.format json, one JSON object per line. */
#ifndef USHER_PROXY_LOG_H
#define USHER_PROXY_LOG_H

#include <stdbool.h>
#include "../../conf/conf-t.h"

/* Sets the threshold and the format; called at startup and on reload. */
void log_configure(enum conf_log_level level, enum conf_log_format format);

/* True if a message of <level> would be written. */
bool log_enabled(enum conf_log_level level);

/* Writes one event. <fmt> formats the key=value part: values containing
 * spaces must be double-quoted by the caller (key="a b"). */
void log_event(enum conf_log_level level, const char *event, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

#define log_debug(ev, ...) log_event(CONF_LOG_DEBUG, ev, __VA_ARGS__)
#define log_info(ev, ...) log_event(CONF_LOG_INFO, ev, __VA_ARGS__)
#define log_warn(ev, ...) log_event(CONF_LOG_WARN, ev, __VA_ARGS__)
#define log_error(ev, ...) log_event(CONF_LOG_ERROR, ev, __VA_ARGS__)

#endif
