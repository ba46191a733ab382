// links: usher_proxy_base
/* Unit tests of proxy/base/log.c (included, for its statics): the one
 * escaper (JSON strings, invalid UTF-8 as U+FFFD), logfmt quoting, typed
 * values, cut lines that stay valid, the printf shim; and the log thread:
 * order within and across threads, a stalled stderr that costs lines and
 * never blocks the caller, memory that goes back, the exit on a stalled
 * stderr. Lines are captured by pointing stderr at a pipe or a file. */
#include "proxy/base/log.c"

#include <fcntl.h>
#include <sys/wait.h>

#include "proxy/base/buf.h"

#define CHECK_STREAM stdout /* stderr is the captured log */
#include "test/unit/check.h"

static int pipe_fd[2], saved_stderr;

/* The last line written, without the time stamp (its first 24 bytes). */
static char captured[8192];

static const char *grab(void)
{
    CHECK(log_flush(5000) == 0, "flush");
    ssize_t n = read(pipe_fd[0], captured, sizeof(captured) - 1);
    captured[n > 0 ? n : 0] = '\0';
    return captured;
}

static bool has(const char *needle)
{
    if (strstr(captured, needle))
        return true;
    fprintf(stdout, "  not found: %s\n  in: %s", needle, captured);
    return false;
}

static void test_escape(void)
{
    char out[64];
    size_t n = log_json_escape(out, sizeof(out), "a\"b\\c\n\x01\x7f", 8);
    CHECK(n == 21 && !memcmp(out, "a\\\"b\\\\c\\n\\u0001\\u007f", n));
    n = log_json_escape(out, sizeof(out), "\xff\xc3\xa9\xed\xa0\x80\xc0\xaf", 8);
    /* U+00E9 kept; a surrogate and an overlong are invalid, byte by byte */
    CHECK(n == 6 + 2 + 6 * 3 + 6 * 2);
    CHECK(!memcmp(out, "\\ufffd\xc3\xa9\\ufffd", 14));
    /* an escape that does not fit is left out whole */
    n = log_json_escape(out, 7, "abc\"", 4);
    CHECK(n == 5 && !memcmp(out, "abc\\\"", 5));
    n = log_json_escape(out, 4, "ab\xff", 3);
    CHECK(n == 2);

    struct hbuf h = {0};
    char big[1000];
    memset(big, '"', sizeof(big) - 1);
    big[sizeof(big) - 1] = '\0';
    CHECK(log_json_str(&h, big) == 0);
    CHECK(h.len == 2 + 2 * (sizeof(big) - 1) && h.data[0] == '"' && h.data[h.len - 1] == '"');
    hbuf_free(&h);
}

static void test_text(void)
{
    log_configure(CONF_LOG_DEBUG, CONF_LOG_TEXT);
    log_kv(CONF_LOG_INFO, "ev one", LOG_STR("plain", "abc"), LOG_STR("sp", "a b"),
           LOG_STR("q", "say \"hi\""), LOG_STR("eq", "k=v"), LOG_STR("empty", ""),
           LOG_STR("null", NULL), LOG_STRN("bad", "x\xffy", 3), LOG_INT("neg", -42),
           LOG_UINT("big", 18446744073709551615ull), LOG_FLOAT("ms", 1.25, 1),
           LOG_FLOAT("z", 0.04, 1), LOG_BOOL("ok", true));
    grab();
    CHECK(has(" info ev one plain=abc sp=\"a b\" q=\"say \\\"hi\\\"\" eq=\"k=v\" empty=\"\" "
              "null=- bad=\"x\\ufffdy\" neg=-42 big=18446744073709551615 ms=1.3 z=0.0 ok=true\n"));
    log_kv(CONF_LOG_WARN, "bare");
    grab();
    CHECK(has(" warn bare\n"));
    log_configure(CONF_LOG_ERROR, CONF_LOG_TEXT);
    log_kv(CONF_LOG_WARN, "hidden", LOG_STR("x", "y"));
    log_kv(CONF_LOG_ERROR, "shown");
    grab();
    CHECK(has(" error shown\n") && !strstr(captured, "hidden"));
}

static void test_json(void)
{
    log_configure(CONF_LOG_DEBUG, CONF_LOG_JSON);
    log_kv(CONF_LOG_INFO, "access", LOG_STR("path", "/a\"b\\\xff"), LOG_INT("status", 200),
           LOG_FLOAT("ms", 12.345, 2), LOG_BOOL("tls", false));
    grab();
    CHECK(has(",\"level\":\"info\",\"event\":\"access\",\"path\":\"/a\\\"b\\\\\\ufffd\","
              "\"status\":200,\"ms\":12.35,\"tls\":false}\n"));

    /* a line over the limit is cut inside a string and still closes */
    static char huge[10000];
    memset(huge, '"', sizeof(huge) - 1);
    log_kv(CONF_LOG_INFO, "huge", LOG_STR("v", huge), LOG_STR("after", "x"));
    grab();
    size_t n = strlen(captured);
    CHECK(n <= 4096 && n > 4000);
    CHECK(!strcmp(captured + n - 3, "\"}\n"));
    CHECK(!strstr(captured, "after"));
}

static void test_shim(void)
{
    log_configure(CONF_LOG_DEBUG, CONF_LOG_JSON);
    log_info("reload", "generation=3 ok=true name=blue reason=\"out of memory\" ratio=0.5 "
                       "id=007 flag");
    grab();
    CHECK(has("\"event\":\"reload\",\"generation\":3,\"ok\":true,\"name\":\"blue\","
              "\"reason\":\"out of memory\",\"ratio\":0.5,\"id\":\"007\",\"flag\":\"\"}\n"));
    log_configure(CONF_LOG_DEBUG, CONF_LOG_TEXT);
    log_warn("x", "error=\"unknown pool \"gren\"\" n=1");
    grab();
    CHECK(has(" warn x error=\"unknown pool \\\"gren\\\"\" n=1\n"));
}

/* ---- the log thread -------------------------------------------------------- */

/* A pad that makes a line about 350 bytes, like an access line. */
static char pad[301];

/* Waits at most 10 s for <pid>; its exit status, or -1. */
static int reap(pid_t pid)
{
    for (int i = 0; i < 1000; i++) {
        int st;
        if (waitpid(pid, &st, WNOHANG) == pid)
            return WIFEXITED(st) ? WEXITSTATUS(st) : 128;
        usleep(10000);
    }
    kill(pid, SIGKILL);
    waitpid(pid, NULL, 0);
    return -1;
}

/* Reads what <fd> has now (non-blocking) into <out> (NUL-terminated). */
static size_t slurp(int fd, char *out, size_t cap)
{
    size_t n = 0;
    fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
    for (;;) {
        ssize_t r = read(fd, out + n, cap - 1 - n);
        if (r <= 0)
            break;
        n += (size_t)r;
    }
    out[n] = '\0';
    return n;
}

/* A process whose stderr is stalled still exits, LOG_EXIT_STALL_MS after
 * its last progress; one whose stderr is read gets its last line out.
 * Runs first: the children must start without a log thread of ours. */
static void test_exit(void)
{
    int p[2], t[2];
    CHECK(pipe(p) == 0 && pipe(t) == 0);
    fcntl(p[1], F_SETPIPE_SZ, 4096);
    fflush(stdout); /* a child must not print this process's buffered lines again */
    pid_t pid = fork();
    if (pid == 0) {
        dup2(p[1], STDERR_FILENO);
        for (int i = 0; i < 20000; i++)
            log_kv(CONF_LOG_INFO, "filler", LOG_INT("i", i), LOG_STR("pad", pad));
        log_kv(CONF_LOG_INFO, "last words");
        uint64_t at = mono_ns();
        ssize_t w = write(t[1], &at, sizeof(at));
        exit(w == sizeof(at) && log_lines_dropped() > 0 ? 0 : 3);
    }
    close(p[1]);
    close(t[1]);
    int st = reap(pid);
    uint64_t reaped = mono_ns(), at = 0;
    CHECK(read(t[0], &at, sizeof(at)) == sizeof(at));
    CHECK(st == 0, "the stalled child exited %d", st);
    CHECK(at && reaped - at < 2000000000u, "exit took %.3f s", (double)(reaped - at) / 1e9);
    static char out[1 << 17];
    size_t n = slurp(p[0], out, sizeof(out));
    CHECK(n > 0 && out[n - 1] == '\n' && !strstr(out, "last words"), "whole lines, not the last");
    close(p[0]);
    close(t[0]);

    char path[] = "/tmp/test_log_XXXXXX";
    int fd = mkstemp(path);
    CHECK(fd >= 0);
    unlink(path);
    fflush(stdout);
    pid = fork();
    if (pid == 0) {
        dup2(fd, STDERR_FILENO);
        for (int i = 0; i < 1000; i++)
            log_kv(CONF_LOG_INFO, "filler", LOG_INT("i", i));
        log_kv(CONF_LOG_INFO, "last words");
        exit(0);
    }
    CHECK(reap(pid) == 0);
    lseek(fd, 0, SEEK_SET);
    n = slurp(fd, out, sizeof(out));
    close(fd);
    size_t lines = 0;
    for (size_t k = 0; k < n; k++)
        lines += out[k] == '\n';
    CHECK(lines == 1001, "%zu lines", lines);
    CHECK(n > 12 && !strcmp(out + n - 12, " last words\n"), "the last line at exit");
}

/* A line reaches stderr without anyone flushing, promptly. */
static void test_prompt(void)
{
    uint64_t t0 = mono_ns();
    log_kv(CONF_LOG_INFO, "prompt");
    struct pollfd pfd = {.fd = pipe_fd[0], .events = POLLIN};
    CHECK(poll(&pfd, 1, 2000) == 1, "the line came");
    uint64_t dt = mono_ns() - t0;
    CHECK(dt < 500000000u, "it took %.3f s", (double)dt / 1e9);
    ssize_t n = read(pipe_fd[0], captured, sizeof(captured) - 1);
    captured[n > 0 ? n : 0] = '\0';
    CHECK(has(" info prompt\n"));
}

#define ORDER_THREADS 4
#define ORDER_LINES 5000

static pthread_barrier_t order_go;

static void *order_thread(void *arg)
{
    long t = (long)arg;
    pthread_barrier_wait(&order_go);
    for (int i = 0; i < ORDER_LINES; i++)
        log_kv(CONF_LOG_INFO, "order", LOG_INT("t", t), LOG_INT("i", i));
    return NULL;
}

static void *causal_thread(void *arg)
{
    log_kv(CONF_LOG_INFO, "inside", LOG_INT("k", (long)arg));
    return NULL;
}

static size_t queues_now(void)
{
    size_t n = 0;
    pthread_mutex_lock(&g.lock);
    for (struct queue *q = atomic_load(&g.queues); q; q = q->next)
        n++;
    pthread_mutex_unlock(&g.lock);
    return n;
}

/* Threads logging at once: each one's lines whole and in order, none lost
 * on a stderr that keeps up. A line logged after another one that its
 * thread knew about comes after it, across threads. The queues of threads
 * that exited go back. */
static void test_threads(void)
{
    char path[] = "/tmp/test_log_XXXXXX";
    int fd = mkstemp(path);
    CHECK(fd >= 0);
    unlink(path);
    log_configure(CONF_LOG_INFO, CONF_LOG_TEXT);
    CHECK(log_flush(5000) == 0);
    dup2(fd, STDERR_FILENO);
    unsigned long long d0 = log_lines_dropped();

    pthread_t th[ORDER_THREADS];
    pthread_barrier_init(&order_go, NULL, ORDER_THREADS);
    for (long t = 0; t < ORDER_THREADS; t++)
        pthread_create(&th[t], NULL, order_thread, (void *)t);
    for (int t = 0; t < ORDER_THREADS; t++)
        pthread_join(th[t], NULL);
    pthread_barrier_destroy(&order_go);
    for (long k = 0; k < 200; k++) {
        log_kv(CONF_LOG_INFO, "before", LOG_INT("k", k));
        pthread_t c;
        pthread_create(&c, NULL, causal_thread, (void *)k);
        pthread_join(c, NULL);
        log_kv(CONF_LOG_INFO, "after", LOG_INT("k", k));
    }
    CHECK(log_flush(10000) == 0);
    CHECK_UINT(log_lines_dropped() - d0, 0);

    off_t size = lseek(fd, 0, SEEK_END);
    char *text = malloc((size_t)size + 1);
    CHECK(text && pread(fd, text, (size_t)size, 0) == size);
    text[size] = '\0';
    long next[ORDER_THREADS] = {0};
    long step = 0; /* 0 before, 1 inside, 2 after: of causal round k */
    long k = 0, bad_order = 0, bad_causal = 0, lines = 0;
    for (char *line = text, *nl; (nl = strchr(line, '\n')); line = nl + 1) {
        *nl = '\0';
        lines++;
        long t, i, kk;
        if (sscanf(line, "%*s info order t=%ld i=%ld", &t, &i) == 2) {
            if (t < 0 || t >= ORDER_THREADS || i != next[t]++)
                bad_order++;
        } else if (sscanf(line, "%*s info before k=%ld", &kk) == 1) {
            bad_causal += kk != k || step != 0;
            step = 1;
        } else if (sscanf(line, "%*s info inside k=%ld", &kk) == 1) {
            bad_causal += kk != k || step != 1;
            step = 2;
        } else if (sscanf(line, "%*s info after k=%ld", &kk) == 1) {
            bad_causal += kk != k || step != 2;
            step = 0;
            k++;
        } else {
            bad_order++;
        }
    }
    CHECK(lines == ORDER_THREADS * ORDER_LINES + 600, "%ld lines", lines);
    CHECK(bad_order == 0, "%ld lines out of order or broken", bad_order);
    CHECK(bad_causal == 0 && k == 200, "%ld causal rounds out of order", bad_causal);
    for (int t = 0; t < ORDER_THREADS; t++)
        CHECK(next[t] == ORDER_LINES, "thread %d: %ld lines", t, next[t]);
    free(text);
    close(fd);

    /* the 204 threads are gone: so are their queues (this one's stays) */
    for (int i = 0; i < 200 && queues_now() > 1; i++)
        usleep(5000);
    CHECK(queues_now() == 1, "%zu queues", queues_now());
    CHECK(atomic_load(&g.burst) == 0, "%d burst segments held", atomic_load(&g.burst));
    dup2(pipe_fd[1], STDERR_FILENO);
}

static struct {
    int fd;
    char *data;
    size_t len, cap;
} stalled;

/* Reads the stalled pipe until the "stall end" line, 10 s at most. */
static void *stall_reader(void *arg)
{
    for (;;) {
        struct pollfd pfd = {.fd = stalled.fd, .events = POLLIN};
        if (poll(&pfd, 1, 10000) != 1)
            return NULL;
        if (stalled.len + 65536 > stalled.cap) {
            stalled.cap = stalled.cap * 2 + 65536;
            stalled.data = realloc(stalled.data, stalled.cap + 1);
        }
        ssize_t n = read(stalled.fd, stalled.data + stalled.len, 65536);
        if (n <= 0)
            return NULL;
        stalled.len += (size_t)n;
        stalled.data[stalled.len] = '\0';
        if (strstr(stalled.data + (stalled.len > 4200 ? stalled.len - 4200 : 0), "stall end\n"))
            return NULL;
    }
}

static void *own_room_thread(void *arg)
{
    for (int k = 0; k < 10; k++)
        log_kv(CONF_LOG_INFO, "own room", LOG_INT("k", k));
    return NULL;
}

/* stderr into a pipe nobody reads: no call waits, the lines that do not
 * fit are counted, memory stays bounded, and a thread still has room of
 * its own when another one spent the shared budget; once the reader is
 * back the lines kept come out whole and in order, and the buffers go
 * back. */
static void test_stall(void)
{
    enum { N = 20000 };
    int p[2];
    CHECK(pipe(p) == 0);
    fcntl(p[1], F_SETPIPE_SZ, 4096);
    CHECK(log_flush(5000) == 0);
    dup2(p[1], STDERR_FILENO);
    unsigned long long d0 = log_lines_dropped();
    uint64_t worst = 0;
    int burst_max = 0;
    for (int i = 0; i < N; i++) {
        uint64_t t0 = mono_ns();
        log_kv(CONF_LOG_INFO, "stall", LOG_INT("i", i), LOG_STR("pad", pad));
        uint64_t dt = mono_ns() - t0;
        worst = dt > worst ? dt : worst;
        int b = atomic_load(&g.burst);
        burst_max = b > burst_max ? b : burst_max;
    }
    unsigned long long dropped = log_lines_dropped() - d0;
    /* blocked, it would wait for ever: a bound far above a preempted call */
    CHECK(worst < 1000000000u, "a log call took %.3f s", (double)worst / 1e9);
    CHECK(dropped > 0 && dropped < N, "%llu dropped", dropped);
    CHECK(burst_max <= LOG_BURST_SEGMENTS, "%d burst segments", burst_max);
    CHECK(atomic_load(&g.burst) == LOG_BURST_SEGMENTS, "the shared budget is spent");
    pthread_t own;
    pthread_create(&own, NULL, own_room_thread, NULL);
    pthread_join(own, NULL);
    CHECK_UINT(log_lines_dropped() - d0, dropped);
    CHECK(log_flush(300) == -1, "a flush on a stalled stderr times out");

    stalled.fd = p[0];
    pthread_t rd;
    pthread_create(&rd, NULL, stall_reader, NULL);
    CHECK(log_flush(10000) == 0, "the reader is back");
    log_kv(CONF_LOG_INFO, "stall end");
    CHECK(log_flush(10000) == 0);
    pthread_join(rd, NULL);
    CHECK_UINT(log_lines_dropped() - d0, dropped);

    long next = -1, got = 0, broken = 0, own_room = 0;
    for (char *line = stalled.data, *nl; line && (nl = strchr(line, '\n')); line = nl + 1) {
        *nl = '\0';
        long i;
        if (sscanf(line, "%*s info stall i=%ld pad=", &i) == 1 && strlen(line) > 300) {
            broken += i <= next;
            next = i;
            got++;
        } else if (strstr(line, " info own room k=")) {
            own_room++;
        } else if (!strstr(line, " info stall end")) {
            broken++;
        }
    }
    CHECK(broken == 0, "%ld lines broken or out of order", broken);
    CHECK((unsigned long long)got + dropped == N, "%ld written + %llu dropped", got, dropped);
    CHECK(own_room == 10, "%ld lines of the other thread", own_room);
    CHECK(atomic_load(&g.burst) == 0, "%d burst segments held", atomic_load(&g.burst));
    free(stalled.data);
    close(p[0]);
    close(p[1]);
    dup2(pipe_fd[1], STDERR_FILENO);
}

int main(void)
{
    memset(pad, 'p', sizeof(pad) - 1);
    test_exit();
    if (pipe(pipe_fd) < 0)
        return 1;
    saved_stderr = dup(STDERR_FILENO);
    dup2(pipe_fd[1], STDERR_FILENO);
    test_escape();
    test_text();
    test_json();
    test_shim();
    test_prompt();
    test_threads();
    test_stall();
    CHECK(log_flush(5000) == 0);
    dup2(saved_stderr, STDERR_FILENO);
    return check_report("test_log");
}
