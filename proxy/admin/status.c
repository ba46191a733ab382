#include "status.h"

#include <unistd.h>

#include "../../health/backend.h"
#include "../base/log.h"
#include "../core/balance.h"
#include "../core/listener.h"
#include "../core/fds.h"
#include "../core/upstream.h"
#include "../core/worker.h"
#include "../sources/discover.h"
#include "../sources/fleet.h"
#include "status_page.h"

const char *status_not_ready_reason(const struct process *p)
{
    const struct worker *w = p->w;
    if (!worker_ready(w))
        return worker_state_str(w->state);
    if (!w->conf->admin.ready_requires_backends)
        return NULL;
    for (const struct listener *l = w->listeners; l; l = l->next)
        if (!l->closed && !balance_has_backend(l))
            return "no backend in rotation";
    return NULL;
}

/* /status names the side of an upgrade under way. */
static const char *upgrade_role_str(enum upgrade_role r)
{
    switch (r) {
    case UPGRADE_NONE:
        return "none";
    case UPGRADE_OLD:
        return "old";
    case UPGRADE_NEW:
        return "new";
    }
    return "none";
}

/* Why <s> takes no new traffic, or NULL when it is in rotation. */
static const char *not_in_rotation_reason(const struct server *s)
{
    const struct backend *b = s->hb;
    switch (b->state) {
    case BACKEND_CHECKING:
        return "checking";
    case BACKEND_UNHEALTHY:
        return b->last_result ? b->last_result : "unhealthy";
    case BACKEND_DRAINING:
        return backend_drain_reason_str(b->drain_reason);
    case BACKEND_EJECTED:
        return "ejected";
    case BACKEND_HEALTHY:
        break;
    }
    return server_weight(s) == 0 ? "weight 0" : NULL;
}

static void drain_json(struct hbuf *o, const struct server *s, ev_tstamp now)
{
    const struct backend *b = s->hb;
    if (b->state != BACKEND_DRAINING || b->drain_started_at <= 0) {
        hbuf_append_str(o, "null");
        return;
    }
    double left = (b->drain_until - now) * 1000.0;
    bool complete = b->connections == 0 || left <= 0;
    if (complete || left < 0)
        left = 0;
    hbuf_append_str(o, "{\"reason\":");
    log_json_str(o, backend_drain_reason_str(b->drain_reason));
    hbuf_printf(o,
                ",\"started_ms\":%.0f,\"deadline_ms\":%.0f,\"remaining_ms\":%.0f,"
                "\"connections\":%u,\"inflight\":%u,\"oldest_connection_age_ms\":%.0f,"
                "\"complete\":%s}",
                b->drain_started_at * 1000.0, b->drain_until * 1000.0, left, b->connections,
                server_inflight(s), b->connections ? server_oldest_connection_age(s) * 1000.0 : 0.0,
                complete ? "true" : "false");
}

void status_backend_json(struct hbuf *o, const struct process *p, const struct server *s)
{
    const struct backend *b = s->hb;
    ev_tstamp now = ev_now(p->loop);
    const char *why = not_in_rotation_reason(s);
    hbuf_append_str(o, "{\"name\":");
    log_json_str(o, b->name);
    hbuf_append_str(o, ",\"pool\":");
    log_json_str(o, b->pool_name);
    hbuf_append_str(o, ",\"address\":");
    log_json_str(o, b->address_text);
    /* why the last resolution of its host name failed (it kept the
     * address it had), null when it worked or the address is no name */
    const char *rerr = discover_resolve_error(p->discover, b->pool_name, b->name);
    hbuf_append_str(o, ",\"resolve_error\":");
    if (rerr)
        log_json_str(o, rerr);
    else
        hbuf_append_str(o, "null");
    hbuf_printf(o, ",\"state\":\"%s\",\"reason\":", backend_state_str(b->state));
    if (why)
        log_json_str(o, why);
    else
        hbuf_append_str(o, "null");
    /* in force: override and slow start applied (a ramp makes it fractional) */
    hbuf_printf(o, ",\"weight\":%g,\"weight_configured\":%u,\"weight_override\":",
                (double)balance_weight(s) / 1000.0, b->weight);
    if (s->weight_overridden)
        hbuf_printf(o, "%u", s->weight_override);
    else
        hbuf_append_str(o, "null");
    struct server_totals t;
    server_totals(s, &t);
    hbuf_printf(o,
                ",\"in_config\":%s,\"active_connections\":%u,\"idle_connections\":%u,"
                "\"inflight_requests\":%u,\"requests_total\":%llu,\"connect_failures\":%llu,"
                "\"success_streak\":%u,\"failure_streak\":%u,\"last_result\":",
                backend_removed(b) ? "false" : "true", b->connections, t.idle, server_inflight(s),
                (unsigned long long)t.requests, (unsigned long long)t.connect_failures,
                b->success_streak, b->failure_streak);
    if (b->last_result)
        log_json_str(o, b->last_result);
    else
        hbuf_append_str(o, "null");
    hbuf_printf(o, ",\"last_status\":%d,\"last_check_age_ms\":", b->last_status);
    if (b->last_check_at > 0)
        hbuf_printf(o, "%.0f", (now - b->last_check_at) * 1000.0);
    else
        hbuf_append_str(o, "null");
    hbuf_append_str(o, ",\"drain_deadline_ms\":");
    if (b->state == BACKEND_DRAINING && b->drain_deadline > 0) {
        double left = (b->drain_deadline - now) * 1000.0;
        hbuf_printf(o, "%.0f", left > 0 ? left : 0);
    } else {
        hbuf_append_str(o, "null");
    }
    hbuf_append_str(o, ",\"slow_start_remaining_ms\":");
    if (server_in_rotation(s) && balance_ramp_left_ms(s) > 0)
        hbuf_printf(o, "%llu", (unsigned long long)balance_ramp_left_ms(s));
    else
        hbuf_append_str(o, "null");
    hbuf_printf(o, ",\"ejections_total\":%llu,\"ejected_remaining_ms\":",
                (unsigned long long)b->ejections_total);
    if (b->state == BACKEND_EJECTED && b->ejected_until > 0) {
        double left = (b->ejected_until - now) * 1000.0;
        hbuf_printf(o, "%.0f", left > 0 ? left : 0);
    } else {
        hbuf_append_str(o, "null");
    }
    hbuf_append_str(o, ",\"drain\":");
    drain_json(o, s, now);
    hbuf_append_str(o, "}");
}

static void split_map(struct hbuf *o, const struct listener *l)
{
    hbuf_append_str(o, "{");
    for (size_t i = 0; i < l->num_slots; i++) {
        if (i)
            hbuf_append_str(o, ",");
        log_json_str(o, l->slots[i].pool ? l->slots[i].pool->name : "?");
        hbuf_printf(o, ":%u", l->slots[i].weight);
    }
    hbuf_append_str(o, "}");
}

void status_listener_json(struct hbuf *o, const struct process *p, const struct listener *l)
{
    hbuf_append_str(o, "{\"name\":");
    log_json_str(o, l->name);
    hbuf_append_str(o, ",\"bind\":");
    log_json_str(o, l->bind_text);
    struct listener_totals lt;
    listener_totals(l, &lt);
    hbuf_printf(o,
                ",\"protocol\":\"%s\",\"open\":%s,\"connections\":%u,"
                "\"connections_by_protocol\":{\"http1\":%u,\"http2\":%u},\"pools\":",
                l->protocol == CONF_PROTO_TCP ? "tcp" : "http", l->closed ? "false" : "true",
                lt.connections, lt.connections - lt.h2_connections, lt.h2_connections);
    split_map(o, l);
    hbuf_append_str(o, ",\"split_override\":");
    if (l->split_overridden)
        split_map(o, l);
    else
        hbuf_append_str(o, "null");
    hbuf_append_str(o, ",\"split_configured\":{");
    for (size_t i = 0; l->conf && i < l->conf->num_splits; i++) {
        if (i)
            hbuf_append_str(o, ",");
        log_json_str(o, l->conf->splits[i].pool);
        hbuf_printf(o, ":%u", l->conf->splits[i].weight);
    }
    hbuf_append_str(o, "}}");
}

void status_pool_json(struct hbuf *o, const struct process *p, const struct pool *pl)
{
    hbuf_append_str(o, "{\"name\":");
    log_json_str(o, pl->name);
    if (pl->conf)
        hbuf_printf(o, ",\"balance\":\"%s\",\"deregistration_delay_ms\":%llu",
                    pl->conf->balance == CONF_BALANCE_LEAST_CONN ? "least_conn" : "round_robin",
                    (unsigned long long)pl->conf->deregistration_delay);
    hbuf_printf(o, ",\"in_config\":%s,", pl->conf ? "true" : "false");
    if (pl->conf && pl->conf->discover.enabled) {
        hbuf_append_str(o, "\"discover\":");
        if (!discover_status_json(p->discover, pl->name, o))
            hbuf_append_str(o, "null");
        hbuf_append_str(o, ",");
    }
    hbuf_append_str(o, "\"backends\":[");
    for (size_t i = 0; i < pl->num_servers; i++) {
        if (i)
            hbuf_append_str(o, ",");
        status_backend_json(o, p, pl->servers[i]);
    }
    hbuf_append_str(o, "]}");
}

void status_json(struct hbuf *o, const struct process *p)
{
    const struct worker *w = p->w;
    ev_tstamp now = ev_now(p->loop);
    hbuf_printf(o,
                "{\"state\":\"%s\",\"ready\":%s,\"version\":\"%s\",\"generation\":%llu,\"pid\":%d,"
                "\"workers\":%u,"
                "\"uptime_s\":%.1f,\"connections\":%u,\"config\":",
                worker_state_str(w->state), status_not_ready_reason(p) ? "false" : "true",
                USHER_VERSION, (unsigned long long)w->generation, (int)getpid(), p->num_workers,
                now - w->started_at, worker_clients(w));
    log_json_str(o, w->conf->path);
    unsigned all = 0, h2 = 0;
    for (const struct listener *l = w->listeners; l; l = l->next) {
        struct listener_totals lt;
        listener_totals(l, &lt);
        all += lt.connections;
        h2 += lt.h2_connections;
    }
    hbuf_printf(o, ",\"connections_by_protocol\":{\"http1\":%u,\"http2\":%u}", all - h2, h2);
    if (p->upgrade.role == UPGRADE_NONE)
        hbuf_append_str(o, ",\"upgrade\":null");
    else
        hbuf_printf(o, ",\"upgrade\":{\"role\":\"%s\",\"peer_pid\":%d}",
                    upgrade_role_str(p->upgrade.role), p->upgrade.peer_pid);
    hbuf_append_str(o, ",\"fleet\":");
    fleet_status_json(o, p->fleet);
    if (w->state == WORKER_DRAINING)
        hbuf_printf(o, ",\"shutdown_remaining_ms\":%.0f", (p->drain_deadline - now) * 1000.0);
    hbuf_printf(o, ",\"reloads\":{\"ok\":%llu,\"error\":%llu},\"listeners\":[",
                (unsigned long long)p->reloads_ok, (unsigned long long)p->reloads_error);
    bool first = true;
    for (const struct listener *l = w->listeners; l; l = l->next) {
        if (!first)
            hbuf_append_str(o, ",");
        first = false;
        status_listener_json(o, p, l);
    }
    hbuf_append_str(o, "],\"pools\":[");
    first = true;
    for (const struct pool *pl = w->pools; pl; pl = pl->next) {
        if (!pl->conf && pl->num_servers == 0)
            continue; /* removed by a reload and fully drained */
        if (!first)
            hbuf_append_str(o, ",");
        first = false;
        status_pool_json(o, p, pl);
    }
    hbuf_append_str(o, "]}\n");
}

/* ---- the status page ----------------------------------------------------- */

static void html_str(struct hbuf *o, const char *s)
{
    for (; s && *s; s++) {
        switch (*s) {
        case '<':
            hbuf_append_str(o, "&lt;");
            break;
        case '>':
            hbuf_append_str(o, "&gt;");
            break;
        case '&':
            hbuf_append_str(o, "&amp;");
            break;
        case '"':
            hbuf_append_str(o, "&quot;");
            break;
        case '\'':
            hbuf_append_str(o, "&#39;");
            break;
        default:
            hbuf_append(o, s, 1);
        }
    }
}

/* The same markup the page's script renders from /status (render()
 * in status_page.h): keep the two in step. */
static void snapshot_html(struct hbuf *o, const struct process *p)
{
    const struct worker *w = p->w;
    ev_tstamp now = ev_now(p->loop);
    hbuf_printf(o,
                "<p class=\"proc\">state <b id=\"proc-state\">%s</b> · generation %llu · pid %d"
                " · connections %u</p>\n",
                worker_state_str(w->state), (unsigned long long)w->generation, (int)getpid(),
                worker_clients(w));
    hbuf_append_str(o, "<h2>Listeners</h2>\n<table id=\"listeners\"><tr><th>listener</th>"
                       "<th>bind</th><th>split</th><th>connections</th></tr>\n");
    for (const struct listener *l = w->listeners; l; l = l->next) {
        hbuf_append_str(o, "<tr class=\"listener\" data-listener=\"");
        html_str(o, l->name);
        hbuf_append_str(o, "\"><td>");
        html_str(o, l->name);
        hbuf_append_str(o, "</td><td>");
        html_str(o, l->bind_text);
        hbuf_append_str(o, "</td><td class=\"split\">");
        for (size_t i = 0; i < l->num_slots; i++) {
            hbuf_printf(o, "%s<span class=\"slot%s\">", i ? " " : "",
                        l->slots[i].weight ? "" : " zero");
            html_str(o, l->slots[i].pool ? l->slots[i].pool->name : "?");
            hbuf_printf(o, " %u</span>", l->slots[i].weight);
        }
        if (l->split_overridden)
            hbuf_append_str(o, " <span class=\"override\">override</span>");
        struct listener_totals lt;
        listener_totals(l, &lt);
        hbuf_printf(o, "</td><td>%u</td></tr>\n", lt.connections);
    }
    hbuf_append_str(o, "</table>\n<h2>Pools</h2>\n");
    for (const struct pool *pl = w->pools; pl; pl = pl->next) {
        if (!pl->conf && pl->num_servers == 0)
            continue;
        hbuf_append_str(o, "<h3 class=\"pool\">");
        html_str(o, pl->name);
        hbuf_append_str(o, "</h3>\n<table class=\"backends\"><tr><th>backend</th><th>address</th>"
                           "<th>state</th><th>weight</th><th>connections</th><th>in flight</th>"
                           "<th>drain</th></tr>\n");
        for (size_t i = 0; i < pl->num_servers; i++) {
            const struct server *s = pl->servers[i];
            const struct backend *b = s->hb;
            const char *st = backend_state_str(b->state);
            hbuf_printf(o, "<tr class=\"backend state-%s\" data-pool=\"", st);
            html_str(o, pl->name);
            hbuf_append_str(o, "\" data-backend=\"");
            html_str(o, b->name);
            hbuf_append_str(o, "\"><td>");
            html_str(o, b->name);
            hbuf_append_str(o, "</td><td>");
            html_str(o, b->address_text);
            hbuf_printf(o,
                        "</td><td class=\"state\">%s</td><td class=\"weight\">%u%s</td>"
                        "<td class=\"conns\">%u</td><td class=\"inflight\">%u</td>"
                        "<td class=\"drain\">",
                        st, server_weight(s), s->weight_overridden ? " (override)" : "",
                        b->connections, server_inflight(s));
            if (b->state == BACKEND_DRAINING && b->drain_started_at > 0) {
                double left = (b->drain_until - now) * 1000.0;
                if (b->connections == 0 || left < 0)
                    left = 0;
                hbuf_printf(o,
                            "%s: <span class=\"countdown\" data-remaining-ms=\"%.0f\">%.1f s"
                            "</span> left, %u connections",
                            backend_drain_reason_str(b->drain_reason), left, left / 1000.0,
                            b->connections);
            }
            hbuf_append_str(o, "</td></tr>\n");
        }
        hbuf_append_str(o, "</table>\n");
    }
}

void status_page_html(struct hbuf *o, const struct process *p)
{
    hbuf_append_str(o, STATUS_PAGE_HEAD);
    snapshot_html(o, p);
    hbuf_append_str(o, STATUS_PAGE_TAIL);
}
