/* usher ctl. Each command is one or two HTTP/1.1 requests to the admin
 * listener (one per connection, as the listener answers; the answer read
 * by the house's response reader, proxy/base/h1resp.c), a human table by
 * default, the raw JSON with --json (jansson, as everywhere in usher).
 * Waits of `switch --wait-drained` poll /status from here; `drain-pool
 * --wait` lets the server wait. */
#include "ctl.h"

#include <errno.h>
#include <jansson.h>
#include <poll.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "../../conf/conf.h"
#include "../base/buf.h"
#include "../base/h1resp.h"

enum { CTL_OK = 0, CTL_FAILED = 1, CTL_USAGE = 2 };

/* A wait without T (DESIGN: "A wait without T waits up to 60 s"). */
#define CTL_WAIT_DEFAULT_MS 60000
/* How often switch --wait-drained looks at /status. */
#define CTL_POLL_MS 200
/* Connect and per-request I/O bound, beyond any server-side wait. */
#define CTL_IO_TIMEOUT_MS 10000
/* A reply larger than this is not from usher's admin listener. */
#define CTL_REPLY_MAX (16 << 20)
/* Non-terminal progress: one line at most this often (plus on change). */
#define CTL_PLAIN_PROGRESS_MS 1000

struct ctl {
    struct conf_address admin;
    bool have_admin;
    char *token;
    bool json;
};

struct reply {
    int status;
    struct hbuf body;
};

static void usage(FILE *out)
{
    fprintf(
        out,
        "usage: usher ctl [-c usher.yaml | --admin HOST:PORT] [--token-file F] [--json] COMMAND\n"
        "  status\n"
        "  drain POOL/BACKEND [--deadline D] [--wait [T]]\n"
        "  ready POOL/BACKEND\n"
        "  weight POOL/BACKEND N | --clear\n"
        "  split LISTENER POOL=W [POOL=W ...] | --clear\n"
        "  switch LISTENER POOL [--wait-drained [T]]\n"
        "  drain-pool POOL [--deadline D] [--wait [T]]\n"
        "  ready-pool POOL\n"
        "  reload\n"
        "exit codes: 0 done, 1 failed or a wait timed out, 2 bad usage, admin API\n"
        "            unreachable or the caller refused (401/403)\n");
}

static int die_usage(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fputs("usher ctl: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    return CTL_USAGE;
}

static double now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1000.0 + ts.tv_nsec / 1e6;
}

/* ---- the HTTP/1.1 client ------------------------------------------------- */

static bool wait_fd(int fd, short ev, double deadline)
{
    for (;;) {
        int left = (int)(deadline - now_ms());
        if (left <= 0)
            return false;
        struct pollfd pfd = {.fd = fd, .events = ev};
        int n = poll(&pfd, 1, left);
        if (n > 0)
            return true;
        if (n < 0 && errno != EINTR)
            return false;
    }
}

/* Percent-encodes a path segment. */
static void seg(struct hbuf *o, const char *s)
{
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
            strchr("-._~", c))
            hbuf_append(o, (const char *)&c, 1);
        else
            hbuf_printf(o, "%%%02X", c);
    }
}

/* One request; 0 with <r> filled, -1 after printing why (unreachable). */
static int http(struct ctl *c, const char *method, const char *target, const char *body,
                double timeout_ms, struct reply *r)
{
    double deadline = now_ms() + timeout_ms;
    struct hbuf req = {0};
    int fd = socket(c->admin.sa.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        goto unreachable;
    if (connect(fd, (struct sockaddr *)&c->admin.sa, c->admin.sa_len) < 0 && errno != EINPROGRESS)
        goto unreachable;
    if (!wait_fd(fd, POLLOUT, deadline)) {
        errno = ETIMEDOUT;
        goto unreachable;
    }
    int soerr = 0;
    socklen_t sl = sizeof(soerr);
    getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &sl);
    if (soerr) {
        errno = soerr;
        goto unreachable;
    }
    size_t blen = body ? strlen(body) : 0;
    hbuf_printf(&req, "%s %s HTTP/1.1\r\nHost: %s\r\nUser-Agent: usher-ctl\r\n", method, target,
                c->admin.text);
    if (c->token)
        hbuf_printf(&req, "Authorization: Bearer %s\r\n", c->token);
    if (body)
        hbuf_printf(&req, "Content-Type: application/json\r\n");
    hbuf_printf(&req, "Content-Length: %zu\r\nConnection: close\r\n\r\n", blen);
    if (body)
        hbuf_append(&req, body, blen);
    for (size_t off = 0; off < req.len;) {
        if (!wait_fd(fd, POLLOUT, deadline)) {
            errno = ETIMEDOUT;
            goto unreachable;
        }
        ssize_t n = send(fd, req.data + off, req.len - off, MSG_NOSIGNAL);
        if (n < 0 && (errno == EAGAIN || errno == EINTR))
            continue;
        if (n <= 0)
            goto unreachable;
        off += (size_t)n;
    }
    struct h1resp rd;
    h1resp_init(&rd, HTTP1_METHOD_GET, CTL_REPLY_MAX);
    int rc = H1RESP_AGAIN;
    while (rc == H1RESP_AGAIN) {
        char buf[16384];
        if (!wait_fd(fd, POLLIN, deadline)) {
            h1resp_free(&rd);
            errno = ETIMEDOUT;
            goto unreachable;
        }
        ssize_t n = recv(fd, buf, sizeof(buf), 0);
        if (n < 0 && (errno == EAGAIN || errno == EINTR))
            continue;
        if (n < 0) {
            h1resp_free(&rd);
            goto unreachable;
        }
        rc = n == 0 ? h1resp_eof(&rd) : h1resp_feed(&rd, buf, (size_t)n);
    }
    close(fd);
    hbuf_free(&req);
    if (rc == H1RESP_ERROR) {
        fprintf(stderr, "usher ctl: %s answered something that is not usher's admin API: %s\n",
                c->admin.text, rd.error);
        h1resp_free(&rd);
        return -1;
    }
    r->status = rd.status;
    r->body = rd.body; /* data[len] is a NUL once anything came: it prints */
    rd.body = (struct hbuf){0};
    h1resp_free(&rd);
    return 0;
unreachable:;
    int saved = errno;
    if (fd >= 0)
        close(fd);
    hbuf_free(&req);
    fprintf(stderr, "usher ctl: cannot reach the admin API at %s: %s\n", c->admin.text,
            strerror(saved));
    return -1;
}

/* Exit code for an answer: refused callers and unreachable APIs are 2. */
static int verdict(const struct reply *r)
{
    if (r->status == 401 || r->status == 403)
        return CTL_USAGE;
    return r->status == 200 ? CTL_OK : CTL_FAILED;
}

/* ---- the answers' JSON --------------------------------------------------- */

/* A body as a JSON value (decref it), or NULL with <err> filled. */
static json_t *parse_body(const struct hbuf *b, json_error_t *err)
{
    return json_loadb(b->data ? b->data : "", b->len, 0, err);
}

/* The string at <key> of object <o>, or <dflt> (also when <o> is not an object). */
static const char *jstr(json_t *o, const char *key, const char *dflt)
{
    const char *s = json_string_value(json_object_get(o, key));
    return s ? s : dflt;
}

/* The number at <key> of object <o>, or <dflt>. */
static double jnum(json_t *o, const char *key, double dflt)
{
    json_t *v = json_object_get(o, key);
    return json_is_number(v) ? json_number_value(v) : dflt;
}

/* Prints a non-200 answer's error to stderr; returns the exit code. */
static int report_failure(struct ctl *c, const struct reply *r)
{
    json_t *v = parse_body(&r->body, NULL);
    const char *msg = jstr(v, "error", NULL);
    json_t *errs = json_object_get(v, "errors"), *e;
    size_t i;
    if (c->json)
        printf("%s", r->body.data ? r->body.data : "");
    fprintf(stderr, "usher ctl: %d: %s\n", r->status,
            msg ? msg : (errs ? "reload failed" : (r->body.data ? r->body.data : "")));
    json_array_foreach(errs, i, e)
    {
        if (json_is_string(e))
            fprintf(stderr, "  %s\n", json_string_value(e));
    }
    json_decref(v);
    return verdict(r);
}

/* GETs /status into a tree; NULL after printing why (*<code> set). */
static json_t *get_status(struct ctl *c, int *code)
{
    struct reply r;
    if (http(c, "GET", "/status", NULL, CTL_IO_TIMEOUT_MS, &r) < 0) {
        *code = CTL_USAGE;
        return NULL;
    }
    if (r.status != 200) {
        *code = report_failure(c, &r);
        hbuf_free(&r.body);
        return NULL;
    }
    json_error_t err;
    json_t *v = parse_body(&r.body, &err);
    hbuf_free(&r.body);
    if (!v) {
        fprintf(stderr, "usher ctl: /status is not JSON: %s\n", err.text);
        *code = CTL_FAILED;
    }
    return v;
}

/* ---- human output -------------------------------------------------------- */

static void print_backend_row(const char *pool, json_t *b)
{
    char name[256];
    snprintf(name, sizeof(name), "%s/%s", pool, jstr(b, "name", "?"));
    char weight[64];
    if (json_is_number(json_object_get(b, "weight_override")))
        snprintf(weight, sizeof(weight), "%.0f (override; config %.0f)", jnum(b, "weight", 0),
                 jnum(b, "weight_configured", 0));
    else
        snprintf(weight, sizeof(weight), "%.0f", jnum(b, "weight", 0));
    char drain[128] = "-";
    json_t *d = json_object_get(b, "drain");
    if (json_is_object(d))
        snprintf(drain, sizeof(drain), "%s, %.1fs left, %.0f conns%s", jstr(d, "reason", "?"),
                 jnum(d, "remaining_ms", 0) / 1000.0, jnum(d, "connections", 0),
                 json_is_true(json_object_get(d, "complete")) ? ", complete" : "");
    printf("%-28s %-10s %-28s %6.0f %8.0f  %s\n", name, jstr(b, "state", "?"), weight,
           jnum(b, "active_connections", 0), jnum(b, "inflight_requests", 0), drain);
}

static void print_split(json_t *pools)
{
    const char *name;
    json_t *w;
    bool first = true;
    json_object_foreach(pools, name, w)
    {
        printf("%s%s=%.0f", first ? "" : " ", name, json_number_value(w));
        first = false;
    }
}

static void print_status(json_t *st)
{
    printf("usher %s  state %s  pid %.0f  generation %.0f  connections %.0f\n\n",
           jstr(st, "version", "?"), jstr(st, "state", "?"), jnum(st, "pid", 0),
           jnum(st, "generation", 0), jnum(st, "connections", 0));
    printf("%-16s %-22s %s\n", "LISTENER", "BIND", "SPLIT");
    size_t i, k;
    json_t *l, *pl, *b;
    json_array_foreach(json_object_get(st, "listeners"), i, l)
    {
        printf("%-16s %-22s ", jstr(l, "name", "?"), jstr(l, "bind", "?"));
        print_split(json_object_get(l, "pools"));
        printf("%s\n", json_is_object(json_object_get(l, "split_override")) ? "  (override)" : "");
    }
    printf("\n%-28s %-10s %-28s %6s %8s  %s\n", "BACKEND", "STATE", "WEIGHT", "CONNS", "INFLIGHT",
           "DRAIN");
    json_array_foreach(json_object_get(st, "pools"), i, pl)
    {
        json_array_foreach(json_object_get(pl, "backends"), k, b)
        {
            print_backend_row(jstr(pl, "name", "?"), b);
        }
    }
}

/* Prints a 200 answer: its JSON with --json, else <human> of the tree. */
static int print_ok(struct ctl *c, struct reply *r, void (*human)(json_t *))
{
    if (c->json || !human) {
        printf("%s", r->body.data ? r->body.data : "");
        fflush(stdout);
        return CTL_OK;
    }
    json_t *v = parse_body(&r->body, NULL);
    if (v)
        human(v);
    else
        printf("%s", r->body.data ? r->body.data : "");
    json_decref(v);
    fflush(stdout); /* a script reading a pipe sees the step done at once */
    return CTL_OK;
}

static void human_backend(json_t *b)
{
    printf("%-28s %-10s %-28s %6s %8s  %s\n", "BACKEND", "STATE", "WEIGHT", "CONNS", "INFLIGHT",
           "DRAIN");
    print_backend_row(jstr(b, "pool", "?"), b);
}

static void human_listener(json_t *l)
{
    printf("%s: ", jstr(l, "name", "?"));
    print_split(json_object_get(l, "pools"));
    printf("%s\n",
           json_is_object(json_object_get(l, "split_override")) ? "  (override)" : "  (config)");
}

static void human_pool(json_t *p)
{
    printf("%-28s %-10s %-28s %6s %8s  %s\n", "BACKEND", "STATE", "WEIGHT", "CONNS", "INFLIGHT",
           "DRAIN");
    size_t k;
    json_t *b;
    json_array_foreach(json_object_get(p, "backends"), k, b)
    {
        print_backend_row(jstr(p, "name", "?"), b);
    }
}

static void human_drained(json_t *v)
{
    printf("drained: %s, %.0f connections left\n",
           json_is_true(json_object_get(v, "drained")) ? "yes" : "no", jnum(v, "connections", 0));
    json_t *p = json_object_get(v, "pool");
    if (p)
        human_pool(p);
}

static void human_reload(json_t *v)
{
    json_t *ch = json_object_get(v, "changes"), *x;
    size_t i;
    printf("reload ok: generation %.0f, %zu changes\n", jnum(v, "generation", 0),
           json_array_size(ch));
    json_array_foreach(ch, i, x)
    {
        printf("  %s pool=%s backend=%s listener=%s\n", jstr(x, "kind", "?"), jstr(x, "pool", "-"),
               jstr(x, "backend", "-"), jstr(x, "listener", "-"));
    }
}

/* One request whose 200 answer is printed with <human>. */
static int simple(struct ctl *c, const char *method, const char *target, const char *body,
                  double timeout_ms, void (*human)(json_t *))
{
    struct reply r;
    if (http(c, method, target, body, timeout_ms, &r) < 0)
        return CTL_USAGE;
    int code = r.status == 200 ? print_ok(c, &r, human) : report_failure(c, &r);
    hbuf_free(&r.body);
    return code;
}

/* ---- arguments ----------------------------------------------------------- */

/* POOL/BACKEND into the two segments of a path. */
static int pool_backend(const char *arg, struct hbuf *path, const char *verb)
{
    const char *slash = strchr(arg, '/');
    if (!slash || slash == arg || !slash[1] || strchr(slash + 1, '/')) {
        die_usage("expected POOL/BACKEND, got '%s'", arg);
        return -1;
    }
    char pool[256];
    snprintf(pool, sizeof(pool), "%.*s", (int)(slash - arg), arg);
    hbuf_append_str(path, "/backends/");
    seg(path, pool);
    hbuf_append_str(path, "/");
    seg(path, slash + 1);
    hbuf_printf(path, "/%s", verb);
    return 0;
}

static bool is_duration(const char *s)
{
    conf_ms ms;
    const char *why;
    return s && s[0] != '-' && conf_parse_duration(s, &ms, &why) == 0;
}

/* --flag [T]: an optional duration after the flag. */
static int opt_wait(int argc, char **argv, int *i, conf_ms *ms)
{
    const char *why;
    *ms = CTL_WAIT_DEFAULT_MS;
    if (*i + 1 < argc && is_duration(argv[*i + 1])) {
        conf_parse_duration(argv[++*i], ms, &why);
    }
    return 0;
}

/* ---- commands ------------------------------------------------------------ */

static int cmd_status(struct ctl *c)
{
    return simple(c, "GET", "/status", NULL, CTL_IO_TIMEOUT_MS, print_status);
}

/* A drain with --wait (one backend): poll its connections. */
static int wait_backend(struct ctl *c, const char *pool, const char *name, conf_ms wait_ms)
{
    double until = now_ms() + (double)wait_ms;
    bool tty = isatty(STDOUT_FILENO);
    for (;;) {
        int code = CTL_FAILED;
        json_t *st = get_status(c, &code);
        if (!st)
            return code;
        double conns = -1;
        size_t i, k;
        json_t *pl, *b;
        json_array_foreach(json_object_get(st, "pools"), i, pl)
        {
            if (strcmp(jstr(pl, "name", ""), pool) != 0)
                continue;
            json_array_foreach(json_object_get(pl, "backends"), k, b)
            {
                if (!strcmp(jstr(b, "name", ""), name))
                    conns = jnum(b, "active_connections", 0);
            }
        }
        json_decref(st);
        double left = until - now_ms();
        if (conns <= 0) {
            printf("%s%s/%s drained\n", tty ? "\r\033[K" : "", pool, name);
            return CTL_OK;
        }
        if (left <= 0) {
            printf("%s%s/%s: wait timed out, %.0f connections left\n", tty ? "\r\033[K" : "", pool,
                   name, conns);
            return CTL_FAILED;
        }
        printf("%swaiting: %s/%s %.0f connections, %.1fs left%s", tty ? "\r\033[K" : "", pool, name,
               conns, left / 1000.0, tty ? "" : "\n");
        fflush(stdout);
        usleep(CTL_POLL_MS * 1000);
    }
}

/* The options of drain and drain-pool: [--deadline D] [--wait [T]], from
 * argv[1]. Returns 0, or -1 naming the first word it does not know. */
struct drain_opts {
    const char *deadline;
    bool wait;
    conf_ms wait_ms;
};

static int drain_opts_parse(const char *cmd, int argc, char **argv, struct drain_opts *o)
{
    o->deadline = NULL;
    o->wait = false;
    o->wait_ms = CTL_WAIT_DEFAULT_MS;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--deadline") && i + 1 < argc && is_duration(argv[i + 1])) {
            o->deadline = argv[++i];
        } else if (!strcmp(argv[i], "--wait")) {
            o->wait = true;
            opt_wait(argc, argv, &i, &o->wait_ms);
        } else {
            die_usage("%s: unexpected '%s'", cmd, argv[i]);
            return -1;
        }
    }
    return 0;
}

static int cmd_drain(struct ctl *c, int argc, char **argv)
{
    if (argc < 1)
        return die_usage("drain POOL/BACKEND [--deadline D] [--wait [T]]");
    struct drain_opts o;
    if (drain_opts_parse("drain", argc, argv, &o) < 0)
        return CTL_USAGE;
    struct hbuf path = {0};
    if (pool_backend(argv[0], &path, "drain") < 0)
        return CTL_USAGE;
    if (o.deadline)
        hbuf_printf(&path, "?deadline=%s", o.deadline);
    int code = simple(c, "POST", path.data, "", CTL_IO_TIMEOUT_MS, human_backend);
    hbuf_free(&path);
    if (code != CTL_OK || !o.wait)
        return code;
    const char *slash = strchr(argv[0], '/');
    char pool[256];
    snprintf(pool, sizeof(pool), "%.*s", (int)(slash - argv[0]), argv[0]);
    return wait_backend(c, pool, slash + 1, o.wait_ms);
}

static int cmd_ready(struct ctl *c, int argc, char **argv)
{
    if (argc != 1)
        return die_usage("ready POOL/BACKEND");
    struct hbuf path = {0};
    if (pool_backend(argv[0], &path, "ready") < 0)
        return CTL_USAGE;
    int code = simple(c, "POST", path.data, "", CTL_IO_TIMEOUT_MS, human_backend);
    hbuf_free(&path);
    return code;
}

static int cmd_weight(struct ctl *c, int argc, char **argv)
{
    if (argc != 2)
        return die_usage("weight POOL/BACKEND N | --clear");
    struct hbuf path = {0}, body = {0};
    if (pool_backend(argv[0], &path, "weight") < 0)
        return CTL_USAGE;
    int code;
    if (!strcmp(argv[1], "--clear")) {
        code = simple(c, "DELETE", path.data, NULL, CTL_IO_TIMEOUT_MS, human_backend);
    } else {
        char *end;
        unsigned long w = strtoul(argv[1], &end, 10);
        if (!*argv[1] || *end || argv[1][0] == '-' || w > UINT32_MAX) {
            hbuf_free(&path);
            return die_usage("weight: N must be a non-negative integer, got '%s'", argv[1]);
        }
        hbuf_printf(&body, "{\"weight\": %lu}", w);
        code = simple(c, "POST", path.data, body.data, CTL_IO_TIMEOUT_MS, human_backend);
    }
    hbuf_free(&path);
    hbuf_free(&body);
    return code;
}

static int post_split(struct ctl *c, const char *listener, const char *body,
                      void (*human)(json_t *))
{
    struct hbuf path = {0};
    hbuf_append_str(&path, "/listeners/");
    seg(&path, listener);
    hbuf_append_str(&path, "/split");
    int code = simple(c, body ? "POST" : "DELETE", path.data, body, CTL_IO_TIMEOUT_MS, human);
    hbuf_free(&path);
    return code;
}

static int cmd_split(struct ctl *c, int argc, char **argv)
{
    if (argc < 2)
        return die_usage("split LISTENER POOL=W [POOL=W ...] | --clear");
    if (argc == 2 && !strcmp(argv[1], "--clear"))
        return post_split(c, argv[0], NULL, human_listener);
    json_t *body = json_object();
    for (int i = 1; i < argc; i++) {
        char *eq = strrchr(argv[i], '=');
        char *end;
        unsigned long w = eq ? strtoul(eq + 1, &end, 10) : 0;
        if (!eq || eq == argv[i] || !eq[1] || *end || eq[1] == '-' || w > UINT32_MAX) {
            json_decref(body);
            return die_usage("split: expected POOL=WEIGHT, got '%s'", argv[i]);
        }
        *eq = '\0';
        /* a JSON object names each member once: a pool given twice is a mistake */
        const char *bad = json_object_get(body, argv[i]) ? "given twice" : NULL;
        if (!bad && json_object_set_new(body, argv[i], json_integer((json_int_t)w)) < 0)
            bad = "not a valid name (UTF-8)";
        *eq = '=';
        if (bad) {
            json_decref(body);
            return die_usage("split: pool '%.*s' %s", (int)(eq - argv[i]), argv[i], bad);
        }
    }
    char *text = json_dumps(body, JSON_COMPACT);
    json_decref(body);
    if (!text)
        return die_usage("split: out of memory");
    int code = post_split(c, argv[0], text, human_listener);
    free(text);
    return code;
}

/* Sums, over the backends of the pools of <split> other than <keep>, what
 * a switch waits for: in-flight requests and busy connections (tunnels,
 * requests), not idle pooled ones. Fills <line> with per-backend counts. */
static double busy_left(json_t *st, json_t *split, const char *keep, struct hbuf *line)
{
    double total = 0;
    size_t i, k;
    json_t *pl, *b;
    json_array_foreach(json_object_get(st, "pools"), i, pl)
    {
        const char *name = jstr(pl, "name", "");
        if (!strcmp(name, keep) || !json_object_get(split, name))
            continue;
        json_array_foreach(json_object_get(pl, "backends"), k, b)
        {
            double busy = jnum(b, "active_connections", 0) - jnum(b, "idle_connections", 0);
            double infl = jnum(b, "inflight_requests", 0);
            if (busy < infl)
                busy = infl;
            if (busy < 0)
                busy = 0;
            total += busy;
            hbuf_printf(line, "%s%s/%s %.0f", line->len ? ", " : "", name, jstr(b, "name", "?"),
                        busy);
        }
    }
    /* a fleet: every other live instance's report (the one asked counts
     * its own above), once all of them have applied the switch */
    json_t *fl = json_object_get(st, "fleet");
    if (!json_is_object(fl))
        return total;
    if (json_is_false(json_object_get(fl, "synced"))) {
        total += 1;
        hbuf_printf(line, "%sfleet: instances catching up", line->len ? ", " : "");
    }
    json_t *inst;
    json_array_foreach(json_object_get(fl, "instances"), i, inst)
    {
        if (json_is_true(json_object_get(inst, "self")))
            continue;
        const char *pool;
        json_t *n;
        json_object_foreach(json_object_get(inst, "pools"), pool, n)
        {
            if (!strcmp(pool, keep) || !json_object_get(split, pool))
                continue;
            double busy = json_number_value(n);
            total += busy;
            hbuf_printf(line, "%s%s@%s %.0f", line->len ? ", " : "", pool, jstr(inst, "id", "?"),
                        busy);
        }
    }
    return total;
}

static int cmd_switch(struct ctl *c, int argc, char **argv)
{
    if (argc < 2)
        return die_usage("switch LISTENER POOL [--wait-drained [T]]");
    const char *listener = argv[0], *pool = argv[1];
    bool wait = false;
    conf_ms wait_ms = CTL_WAIT_DEFAULT_MS;
    for (int i = 2; i < argc; i++) {
        if (!strcmp(argv[i], "--wait-drained")) {
            wait = true;
            opt_wait(argc, argv, &i, &wait_ms);
        } else {
            return die_usage("switch: unexpected '%s'", argv[i]);
        }
    }
    int code = CTL_FAILED;
    json_t *st = get_status(c, &code);
    if (!st)
        return code;
    json_t *split = NULL, *l;
    size_t i;
    json_array_foreach(json_object_get(st, "listeners"), i, l)
    {
        if (!strcmp(jstr(l, "name", ""), listener))
            split = json_object_get(l, "split_configured");
    }
    if (!split) {
        fprintf(stderr, "usher ctl: unknown listener '%s'\n", listener);
        json_decref(st);
        return CTL_FAILED;
    }
    if (!json_object_get(split, pool)) {
        fprintf(stderr, "usher ctl: pool '%s' is not in listener '%s'\n", pool, listener);
        json_decref(st);
        return CTL_FAILED;
    }
    /* all to <pool>, 0 to the others; the object also names the pools the
     * wait watches, after /status is gone */
    json_t *names = json_object();
    const char *name;
    json_t *w;
    json_object_foreach(split, name, w)
    {
        json_object_set_new(names, name, json_integer(strcmp(name, pool) ? 0 : 100));
    }
    json_decref(st);
    char *body = json_dumps(names, JSON_COMPACT);
    if (!body) {
        json_decref(names);
        fprintf(stderr, "usher ctl: out of memory\n");
        return CTL_FAILED;
    }
    bool tty = isatty(STDOUT_FILENO);
    code = post_split(c, listener, body, c->json ? NULL : human_listener);
    free(body);
    if (code != CTL_OK || !wait) {
        json_decref(names);
        return code;
    }
    double start = now_ms(), until = start + (double)wait_ms, last_plain = 0;
    struct hbuf prev = {0};
    for (;;) {
        st = get_status(c, &code);
        if (!st)
            break;
        struct hbuf line = {0};
        double left = busy_left(st, names, pool, &line);
        json_decref(st);
        double remaining = until - now_ms();
        if (left <= 0) {
            printf("%sdrained: %s has no request or tunnel left on the other pools (%.1fs)\n",
                   tty ? "\r\033[K" : "", listener, (now_ms() - start) / 1000.0);
            code = CTL_OK;
            hbuf_free(&line);
            break;
        }
        if (remaining <= 0) {
            printf("%swait timed out: %.0f connections left (%s)\n", tty ? "\r\033[K" : "", left,
                   line.data ? line.data : "");
            code = CTL_FAILED;
            hbuf_free(&line);
            break;
        }
        bool changed = !prev.data || !line.data || strcmp(prev.data, line.data) != 0;
        if (tty) {
            printf("\r\033[Kwaiting: %s · %.1fs left", line.data ? line.data : "",
                   remaining / 1000.0);
            fflush(stdout);
        } else if (changed || now_ms() - last_plain >= CTL_PLAIN_PROGRESS_MS) {
            printf("waiting: %s · %.1fs left\n", line.data ? line.data : "", remaining / 1000.0);
            fflush(stdout);
            last_plain = now_ms();
        }
        hbuf_free(&prev);
        prev = line;
        usleep(CTL_POLL_MS * 1000);
    }
    hbuf_free(&prev);
    json_decref(names);
    return code;
}

static int cmd_drain_pool(struct ctl *c, int argc, char **argv)
{
    if (argc < 1)
        return die_usage("drain-pool POOL [--deadline D] [--wait [T]]");
    struct drain_opts o;
    if (drain_opts_parse("drain-pool", argc, argv, &o) < 0)
        return CTL_USAGE;
    const char *deadline = o.deadline;
    bool wait = o.wait;
    conf_ms wait_ms = o.wait_ms;
    struct hbuf path = {0};
    hbuf_append_str(&path, "/pools/");
    seg(&path, argv[0]);
    hbuf_append_str(&path, "/drain");
    char sep = '?';
    if (deadline) {
        hbuf_printf(&path, "%cdeadline=%s", sep, deadline);
        sep = '&';
    }
    if (wait)
        hbuf_printf(&path, "%cwait=%llums", sep, (unsigned long long)wait_ms);
    struct reply r;
    int code;
    if (http(c, "POST", path.data, "", CTL_IO_TIMEOUT_MS + (double)(wait ? wait_ms : 0), &r) < 0) {
        hbuf_free(&path);
        return CTL_USAGE;
    }
    hbuf_free(&path);
    if (r.status != 200) {
        code = report_failure(c, &r);
    } else {
        print_ok(c, &r, human_drained);
        json_t *v = parse_body(&r.body, NULL);
        code = !wait || json_is_true(json_object_get(v, "drained")) ? CTL_OK : CTL_FAILED;
        json_decref(v);
    }
    hbuf_free(&r.body);
    return code;
}

static int cmd_ready_pool(struct ctl *c, int argc, char **argv)
{
    if (argc != 1)
        return die_usage("ready-pool POOL");
    struct hbuf path = {0};
    hbuf_append_str(&path, "/pools/");
    seg(&path, argv[0]);
    hbuf_append_str(&path, "/ready");
    int code = simple(c, "POST", path.data, "", CTL_IO_TIMEOUT_MS, human_pool);
    hbuf_free(&path);
    return code;
}

/* ---- main ---------------------------------------------------------------- */

static char *read_token(const char *path)
{
    FILE *f = fopen(path, "r");
    if (!f) {
        fprintf(stderr, "usher ctl: cannot read token file %s: %s\n", path, strerror(errno));
        return NULL;
    }
    char buf[4097];
    size_t n = fread(buf, 1, sizeof(buf) - 1, f);
    fclose(f);
    buf[n] = '\0';
    char *a = buf;
    while (*a && strchr(" \t\r\n\f\v", *a))
        a++;
    while (n > (size_t)(a - buf) && strchr(" \t\r\n\f\v", buf[n - 1]))
        buf[--n] = '\0';
    return strdup(a);
}

int ctl_main(int argc, char **argv)
{
    struct ctl c = {0};
    const char *config = NULL, *admin = NULL, *token_file = NULL;
    int i = 1, code;
    for (; i < argc && argv[i][0] == '-'; i++) {
        if ((!strcmp(argv[i], "-c") || !strcmp(argv[i], "--config")) && i + 1 < argc)
            config = argv[++i];
        else if (!strcmp(argv[i], "--admin") && i + 1 < argc)
            admin = argv[++i];
        else if (!strcmp(argv[i], "--token-file") && i + 1 < argc)
            token_file = argv[++i];
        else if (!strcmp(argv[i], "--json"))
            c.json = true;
        else if (!strcmp(argv[i], "-h") || !strcmp(argv[i], "--help")) {
            usage(stdout);
            return CTL_OK;
        } else {
            usage(stderr);
            return die_usage("unknown option '%s'", argv[i]);
        }
    }
    /* the global options may also follow the command */
    int n = 0;
    for (int k = i; k < argc; k++) {
        if (!strcmp(argv[k], "--json"))
            c.json = true;
        else if ((!strcmp(argv[k], "-c") || !strcmp(argv[k], "--config")) && k + 1 < argc)
            config = argv[++k];
        else if (!strcmp(argv[k], "--admin") && k + 1 < argc)
            admin = argv[++k];
        else if (!strcmp(argv[k], "--token-file") && k + 1 < argc)
            token_file = argv[++k];
        else
            argv[i + n++] = argv[k];
    }
    argc = i + n;
    if (i >= argc) {
        usage(stderr);
        return die_usage("missing COMMAND");
    }
    if (!config && !admin)
        return die_usage("give -c usher.yaml or --admin HOST:PORT");
    const char *why = NULL;
    if (admin) {
        if (conf_parse_address(admin, &c.admin, &why) < 0)
            return die_usage("--admin %s: %s", admin, why ? why : "invalid address");
        c.have_admin = true;
    }
    if (config) {
        struct conf_errors errs = {0};
        struct conf *conf = conf_load(config, &errs);
        if (!conf) {
            for (size_t k = 0; k < errs.count; k++)
                fprintf(stderr, "%s\n", errs.messages[k]);
            conf_errors_clear(&errs);
            code = die_usage("cannot load %s", config);
            goto out;
        }
        if (!c.have_admin) {
            if (!conf->admin.enabled) {
                conf_free(conf);
                code = die_usage("%s has no admin section: give --admin HOST:PORT", config);
                goto out;
            }
            if (conf_parse_address(conf->admin.bind.text, &c.admin, &why) < 0) {
                conf_free(conf);
                code = die_usage("admin.bind: %s", why ? why : "invalid");
                goto out;
            }
            c.have_admin = true;
        }
        if (!token_file && conf->admin.token_file) {
            c.token = read_token(conf->admin.token_file);
            if (!c.token) {
                conf_free(conf);
                code = CTL_USAGE;
                goto out;
            }
        }
        conf_free(conf);
    }
    if (token_file && !(c.token = read_token(token_file))) {
        code = CTL_USAGE;
        goto out;
    }
    const char *cmd = argv[i];
    int cargc = argc - i - 1;
    char **cargv = argv + i + 1;
    if (!strcmp(cmd, "status") && cargc == 0)
        code = cmd_status(&c);
    else if (!strcmp(cmd, "drain"))
        code = cmd_drain(&c, cargc, cargv);
    else if (!strcmp(cmd, "ready"))
        code = cmd_ready(&c, cargc, cargv);
    else if (!strcmp(cmd, "weight"))
        code = cmd_weight(&c, cargc, cargv);
    else if (!strcmp(cmd, "split"))
        code = cmd_split(&c, cargc, cargv);
    else if (!strcmp(cmd, "switch"))
        code = cmd_switch(&c, cargc, cargv);
    else if (!strcmp(cmd, "drain-pool"))
        code = cmd_drain_pool(&c, cargc, cargv);
    else if (!strcmp(cmd, "ready-pool"))
        code = cmd_ready_pool(&c, cargc, cargv);
    else if (!strcmp(cmd, "reload") && cargc == 0)
        code = simple(&c, "POST", "/reload", "", CTL_IO_TIMEOUT_MS * 3, human_reload);
    else {
        usage(stderr);
        code = die_usage("unknown command '%s'", cmd);
    }
out:
    if (c.have_admin)
        conf_address_clear(&c.admin);
    free(c.token);
    return code;
}
