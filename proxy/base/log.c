#include "log.h"

#include <errno.h>
#include <limits.h>
#include <math.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include "buf.h"
#include "utf8.h"

/* Longest line written; longer ones are cut (and stay one valid line). */
#define LOG_LINE_MAX 4096

/* Room kept at the end of a line for what closes it: '"' (a cut string),
 * '}' and '\n'. */
#define LINE_TAIL 3

/* Longest escape log_json_escape writes for one input byte: \u00XX or
 * \ufffd. */
#define ESCAPE_MAX 6

/* Fields the printf shim splits a formatted line into; no caller has more
 * than a dozen. */
#define SHIM_FIELDS_MAX 32

/* "2026-01-02T03:04:05" */
#define TIME_SEC_LEN 19

/* Process-wide settings, not data-plane state: written at startup and on
 * reload by the control thread, read by every thread that logs (atomics:
 * a worker may format a line while a reload changes them). */
static struct {
    _Atomic int level;  /* enum conf_log_level */
    _Atomic int format; /* enum conf_log_format */
} settings = {CONF_LOG_INFO, CONF_LOG_TEXT};

static const char *level_str(enum conf_log_level l)
{
    switch (l) {
    case CONF_LOG_DEBUG:
        return "debug";
    case CONF_LOG_INFO:
        return "info";
    case CONF_LOG_WARN:
        return "warn";
    case CONF_LOG_ERROR:
        return "error";
    }
    return "info";
}

void log_configure(enum conf_log_level level, enum conf_log_format format)
{
    atomic_store_explicit(&settings.level, (int)level, memory_order_relaxed);
    atomic_store_explicit(&settings.format, (int)format, memory_order_relaxed);
}

bool log_enabled(enum conf_log_level level)
{
    return (int)level >= atomic_load_explicit(&settings.level, memory_order_relaxed);
}

/* ---- escaping: the one place -------------------------------------------- */

/* Escapes <s>[0..<n>) into <out> of <cap> bytes, stopping before an
 * escape that would not fit; *<used> says how much of <s> went in. */
static size_t escape(char *out, size_t cap, const char *s, size_t n, size_t *used)
{
    static const char hex[] = "0123456789abcdef";
    const unsigned char *u = (const unsigned char *)s;
    size_t o = 0, i = 0;
    while (i < n) {
        unsigned char ch = u[i];
        size_t take = 1, len;
        if (ch >= 0x20 && ch < 0x7f && ch != '"' && ch != '\\') {
            if (o + 1 > cap)
                break;
            out[o++] = (char)ch;
        } else if (ch >= 0x80 && (len = utf8_len(u + i, n - i)) != 0) {
            if (o + len > cap)
                break;
            memcpy(out + o, s + i, len);
            o += len;
            take = len;
        } else if (ch >= 0x80) {
            if (o + ESCAPE_MAX > cap)
                break;
            memcpy(out + o, "\\ufffd", ESCAPE_MAX);
            o += ESCAPE_MAX;
        } else if (ch == '"' || ch == '\\' || ch == '\n' || ch == '\r' || ch == '\t') {
            if (o + 2 > cap)
                break;
            out[o++] = '\\';
            out[o++] = ch == '\n' ? 'n' : ch == '\r' ? 'r' : ch == '\t' ? 't' : (char)ch;
        } else {
            if (o + ESCAPE_MAX > cap)
                break;
            memcpy(out + o, "\\u00", 4);
            out[o + 4] = hex[ch >> 4];
            out[o + 5] = hex[ch & 15];
            o += ESCAPE_MAX;
        }
        i += take;
    }
    *used = i;
    return o;
}

size_t log_json_escape(char *out, size_t cap, const char *s, size_t n)
{
    size_t used;
    return escape(out, cap, s, n, &used);
}

int log_json_str(struct hbuf *h, const char *s)
{
    char tmp[256];
    size_t n = s ? strlen(s) : 0, used;
    int rc = hbuf_append(h, "\"", 1);
    while (n > 0) {
        size_t w = escape(tmp, sizeof(tmp), s, n, &used);
        rc |= hbuf_append(h, tmp, w);
        s += used;
        n -= used;
    }
    rc |= hbuf_append(h, "\"", 1);
    return rc ? -1 : 0;
}

/* logfmt: a value is written bare unless it is empty or holds a byte a
 * reader would split on or misread (space, '"', '=', '\', a control
 * byte) or any non-ASCII byte (it may be invalid UTF-8); quoted values are
 * JSON strings, so one escaper serves both formats. */
static bool needs_quotes(const char *s, size_t n)
{
    if (n == 0)
        return true;
    for (size_t i = 0; i < n; i++) {
        unsigned char ch = (unsigned char)s[i];
        if (ch <= 0x20 || ch >= 0x7f || ch == '"' || ch == '=' || ch == '\\')
            return true;
    }
    return false;
}

/* ---- the log thread ------------------------------------------------------ */

/* A thread that logs formats its line itself, then appends it to a queue
 * of its own (no lock, no system call while the log thread is awake) and
 * goes on. One log thread takes the lines of every queue and writes them;
 * only it ever blocks on stderr. When stderr's reader stalls, the log
 * thread blocks in write(2), the queues fill, and a line that finds its
 * queue full is dropped and counted (usher_log_lines_dropped_total).
 *
 * A queue is a chain of segments: the thread appends to the last, the log
 * thread reads from the first and frees it once the thread has moved on.
 * A record is { seq, len } and the line, padded to 8 bytes; seq is taken
 * from one process-wide counter just before the record is published, and
 * the log thread writes, among the records it can see, the one with the
 * lowest seq first.
 *
 * Order: the lines of one thread are written in the order they were
 * logged. Across threads, lines are written in seq order: a line
 * published (or only numbered) while the log thread already holds a later
 * one is waited for, up to LOG_GAP_WAIT_NS (a thread numbers one line at a
 * time and publishes it a copy later, so the gap closes in microseconds
 * unless that thread is preempted right then); after the wait the later
 * lines go first. So a line logged after another one, in any thread that
 * could know the first was logged, comes after it -- unless the first
 * one's thread lost its CPU for longer than that between numbering its
 * line and publishing it. Each line carries its own time stamp. */

/* One segment: the default capacity of a Linux pipe (pipe(7): 16 pages,
 * 65,536 bytes), the buffer stderr's reader already grants. About 300
 * access-log lines, and 15 of the longest (LOG_LINE_MAX). */
#define LOG_SEGMENT_BYTES 65536

/* Segments a thread holds without drawing on the shared budget: the one
 * it fills and the one before, still being written out. So a thread always
 * has at least one segment's worth of room of its own, whatever the other
 * threads hold. */
#define LOG_QUEUE_SEGMENTS 2

/* Segments beyond those, shared by every thread: 2 MiB. The
 * largest burst usher makes is the control thread's at a reload of a large
 * config: one `reload change` (~120 bytes) per backend, 1.2 MB for 10,000
 * backends, logged faster than a log thread waiting for a CPU on a busy
 * host writes it. With a stalled reader they fill, and lines drop. */
#define LOG_BURST_SEGMENTS 32

/* How long the log thread holds later lines back for a line whose seq it
 * has not seen yet (see "Order" above): longer than a copy of 4 KiB by
 * far, short enough that a line still reaches stderr within milliseconds
 * when its thread was preempted between taking its seq and publishing. */
#define LOG_GAP_WAIT_NS 2000000
/* The log thread's pause between two looks while it waits for a gap. */
#define LOG_GAP_POLL_NS 50000

/* After writing, the log thread looks again this much later before it
 * goes to sleep on its doorbell: while lines keep coming (the access log
 * under load) no thread that logs makes a system call to wake it and each
 * write(2) carries a batch, not one line. Measured with the access log at
 * 62,000 requests/s: 215,000 wake-ups for 310,000 lines without it, 15,500
 * with it. Short, because a line logged meanwhile waits that much longer. */
#define LOG_LINGER_NS 200000

/* At exit, the final lines get this long without any progress on stderr
 * before the exit gives up on them (counted as dropped): a reader that
 * took nothing for half a second is stalled, not slow. */
#define LOG_EXIT_STALL_MS 500
/* ... and this long in all, for a reader that is alive but slow. */
#define LOG_EXIT_MAX_MS 5000

/* Lines are written in batches of whole lines up to PIPE_BUF bytes: a
 * write to a pipe of at most PIPE_BUF is atomic (pipe(7)), so a line never
 * interleaves with another process writing the same pipe (the new usher of
 * an upgrade shares stderr with the old one). */
_Static_assert(LOG_LINE_MAX <= PIPE_BUF, "a line must fit one atomic pipe write");

struct record {
    uint64_t seq;
    uint32_t len; /* bytes of the line that follows */
    uint32_t pad;
};

#define RECORD_ALIGN 8

struct segment {
    _Atomic size_t wpos;            /* bytes published (the owner stores) */
    _Atomic(struct segment *) next; /* set by the owner when it moved on */
    size_t rpos;                    /* the log thread's position */
    bool burst;                     /* drawn from the shared budget */
    _Alignas(RECORD_ALIGN) char data[LOG_SEGMENT_BYTES];
};

struct queue {
    /* the owner thread's */
    struct segment *tail;
    unsigned long long segs_made;
    /* the log thread's */
    struct segment *head;
    unsigned long long taken;      /* lines taken out */
    unsigned long long flush_mark; /* lines to take before a flush is done */
    struct queue *next;            /* the registry; changed under g.lock */
    /* shared */
    _Atomic unsigned long long segs_freed; /* the log thread adds */
    _Atomic unsigned long long published;  /* lines published (the owner stores) */
    _Atomic bool gone;                     /* the owner thread exited */
};

enum log_mode {
    MODE_NONE = 0,  /* nothing logged yet: the first line starts the thread */
    MODE_THREAD,    /* lines go through the queues */
    MODE_DIRECT,    /* no log thread (it could not start; a forked child): write(2) here */
    MODE_ABANDONED, /* the exit gave up on a stalled stderr: lines are dropped */
};

static struct {
    /* read by every line */
    _Atomic int mode;
    pthread_key_t key;    /* a thread's queue, for its exit */
    pthread_t tid;        /* the log thread */
    _Atomic int stop;     /* the exit asks the log thread to end once idle */
    int wake_fd;          /* eventfd: the log thread's doorbell */
    pthread_mutex_t lock; /* the registry (insert, remove), and starting */
    _Atomic(struct queue *) queues;
    /* written often, each on a cache line of its own (64 bytes on x86-64
     * and most arm64 cores) so that one's writers do not slow the others */
    _Alignas(64) _Atomic unsigned long long seq;     /* the next line's number: lines numbered */
    _Alignas(64) _Atomic int sleeping;               /* the log thread waits on wake_fd */
    _Alignas(64) _Atomic unsigned long long dropped; /* usher_log_lines_dropped_total */
    _Alignas(64) _Atomic unsigned long long out;     /* lines the log thread wrote or lost */
    _Atomic int burst;                               /* burst segments in use */
    /* flushes: a request number, and the last one the log thread finished */
    pthread_mutex_t flush_lock;
    pthread_cond_t flush_cond;
    _Atomic unsigned long long flush_req;
    unsigned long long flush_done; /* under flush_lock */
} g = {
    .lock = PTHREAD_MUTEX_INITIALIZER,
    .flush_lock = PTHREAD_MUTEX_INITIALIZER,
    .wake_fd = -1,
};

static __thread struct queue *my_queue;

static uint64_t mono_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static void drop_line(void)
{
    atomic_fetch_add_explicit(&g.dropped, 1, memory_order_relaxed);
}

/* Rings the log thread's doorbell if it sleeps. The caller's seq_cst
 * store (a line published, a segment linked, the owner gone) and this
 * seq_cst load pair with log_thread_sleep's store and loads (Dekker):
 * either the log thread sees the change, or this sees it asleep. (Seq_cst
 * operations rather than fences: GCC's ThreadSanitizer has no fences.) */
static void wake_log_thread(void)
{
    if (atomic_load(&g.sleeping) && atomic_exchange(&g.sleeping, 0)) {
        uint64_t one = 1;
        ssize_t r = write(g.wake_fd, &one, sizeof(one)); /* an eventfd never blocks */
        (void)r;
    }
}

/* One burst segment from the shared budget; false when it is spent. */
static bool burst_take(void)
{
    int n = atomic_load_explicit(&g.burst, memory_order_relaxed);
    while (n < LOG_BURST_SEGMENTS)
        if (atomic_compare_exchange_weak(&g.burst, &n, n + 1))
            return true;
    return false;
}

static struct segment *segment_new(void)
{
    struct segment *s = malloc(sizeof(*s));
    if (!s)
        return NULL;
    atomic_init(&s->wpos, 0);
    atomic_init(&s->next, NULL);
    s->rpos = 0;
    s->burst = false;
    return s;
}

/* The thread is gone: its queue is the log thread's to empty and free. */
static void queue_orphan(void *arg)
{
    struct queue *q = arg;
    my_queue = NULL;
    atomic_store(&q->gone, true);
    wake_log_thread();
}

/* The calling thread's queue, made at its first line; NULL if memory ran out. */
static struct queue *queue_get(void)
{
    if (my_queue)
        return my_queue;
    struct queue *q = calloc(1, sizeof(*q));
    if (!q)
        return NULL;
    q->head = q->tail = segment_new();
    if (!q->tail) {
        free(q);
        return NULL;
    }
    q->segs_made = 1;
    pthread_mutex_lock(&g.lock);
    q->next = atomic_load_explicit(&g.queues, memory_order_relaxed);
    atomic_store(&g.queues, q); /* seq_cst: see wake_log_thread */
    pthread_mutex_unlock(&g.lock);
    pthread_setspecific(g.key, q);
    my_queue = q;
    return q;
}

static void *log_thread_main(void *arg);

static void at_fork_child(void)
{
    /* the log thread did not come along: a child writes its own lines */
    atomic_store_explicit(&g.mode, MODE_DIRECT, memory_order_relaxed);
}

static void log_at_exit(void);

/* Starts the log thread, at the first line; MODE_DIRECT when it cannot. */
static void log_thread_start(void)
{
    pthread_mutex_lock(&g.lock);
    if (atomic_load(&g.mode) != MODE_NONE) {
        pthread_mutex_unlock(&g.lock);
        return;
    }
    int mode = MODE_DIRECT;
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&g.flush_cond, &ca);
    pthread_condattr_destroy(&ca);
    g.wake_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (g.wake_fd >= 0 && pthread_key_create(&g.key, queue_orphan) == 0) {
        /* every signal blocked: they are the event loops' business */
        sigset_t all, old;
        sigfillset(&all);
        pthread_sigmask(SIG_SETMASK, &all, &old);
        if (pthread_create(&g.tid, NULL, log_thread_main, NULL) == 0) {
            mode = MODE_THREAD;
            atexit(log_at_exit);
            pthread_atfork(NULL, NULL, at_fork_child);
        }
        pthread_sigmask(SIG_SETMASK, &old, NULL);
    }
    atomic_store(&g.mode, mode);
    pthread_mutex_unlock(&g.lock);
}

/* One formatted line (ending in '\n') on its way to stderr. */
static void submit(const char *line, size_t len)
{
    int mode = atomic_load_explicit(&g.mode, memory_order_acquire);
    if (mode == MODE_NONE) {
        log_thread_start();
        mode = atomic_load(&g.mode);
    }
    if (mode == MODE_DIRECT) {
        ssize_t r = write(STDERR_FILENO, line, len);
        (void)r;
        return;
    }
    struct queue *q = mode == MODE_THREAD ? queue_get() : NULL;
    if (!q) {
        drop_line();
        return;
    }
    size_t need = sizeof(struct record) + ((len + RECORD_ALIGN - 1) & ~(size_t)(RECORD_ALIGN - 1));
    struct segment *s = q->tail;
    size_t w = atomic_load_explicit(&s->wpos, memory_order_relaxed);
    if (w + need > LOG_SEGMENT_BYTES) {
        /* full: move on to a new segment, of our own or from the budget */
        bool burst = q->segs_made - atomic_load(&q->segs_freed) >= LOG_QUEUE_SEGMENTS;
        if (burst && !burst_take()) {
            drop_line();
            return;
        }
        struct segment *n = segment_new();
        if (!n) {
            if (burst)
                atomic_fetch_sub(&g.burst, 1);
            drop_line();
            return;
        }
        n->burst = burst;
        atomic_store(&s->next, n);
        q->tail = s = n;
        q->segs_made++;
        w = 0;
    }
    struct record r = {
        .seq = atomic_fetch_add_explicit(&g.seq, 1, memory_order_relaxed),
        .len = (uint32_t)len,
    };
    memcpy(s->data + w, &r, sizeof(r));
    memcpy(s->data + w + sizeof(r), line, len);
    atomic_store(&s->wpos, w + need);
    atomic_store_explicit(&q->published,
                          atomic_load_explicit(&q->published, memory_order_relaxed) + 1,
                          memory_order_release);
    wake_log_thread();
}

/* ---- the log thread's side ------------------------------------------------ */

/* Whole lines waiting for one write(2). */
static struct {
    char buf[PIPE_BUF];
    size_t len;
    unsigned long long lines;
} batch;

/* Every line numbered below it was written (or waited for long enough). */
static unsigned long long next_seq;
/* When the log thread first saw the gap it now waits on (0: none). */
static uint64_t gap_since;
/* The flush request the queues' marks were taken for, and whether it is
 * still to be answered. */
static unsigned long long flush_marked;
static bool flush_pending;

/* The lines one pass of drain() writes at most, so a flush is answered
 * between passes even while threads log without a pause. */
#define LOG_PASS_LINES 4096

/* Writes the batch, blocking as long as stderr's reader makes it (this
 * thread exists to block here). Lines a failed write lost are dropped. */
static void batch_write(void)
{
    size_t off = 0;
    bool lost = false;
    while (off < batch.len) {
        ssize_t n = write(STDERR_FILENO, batch.buf + off, batch.len - off);
        if (n > 0) {
            off += (size_t)n;
        } else if (n < 0 && errno == EAGAIN) {
            /* someone made the shared stderr non-blocking: wait for room */
            struct pollfd pfd = {.fd = STDERR_FILENO, .events = POLLOUT};
            poll(&pfd, 1, -1);
            nanosleep(&(struct timespec){.tv_nsec = 1000000}, NULL); /* POLLOUT may be early */
        } else if (!(n < 0 && errno == EINTR)) {
            lost = true; /* closed, EPIPE, a full disk: these lines are gone */
            break;
        }
    }
    if (lost)
        atomic_fetch_add_explicit(&g.dropped, batch.lines, memory_order_relaxed);
    atomic_fetch_add_explicit(&g.out, batch.lines, memory_order_relaxed);
    batch.len = 0;
    batch.lines = 0;
}

static size_t record_size(const struct record *r)
{
    return sizeof(*r) + ((r->len + RECORD_ALIGN - 1) & ~(size_t)(RECORD_ALIGN - 1));
}

/* The next record of <q> that is published, or NULL; frees the segments
 * its owner has moved past. */
static const struct record *queue_peek(struct queue *q)
{
    struct segment *s = q->head;
    for (;;) {
        if (s->rpos < atomic_load_explicit(&s->wpos, memory_order_acquire))
            return (const struct record *)(s->data + s->rpos);
        struct segment *n = atomic_load_explicit(&s->next, memory_order_acquire);
        if (!n)
            return NULL;
        /* the owner published its last record here before it moved on */
        if (s->rpos < atomic_load_explicit(&s->wpos, memory_order_acquire))
            continue;
        q->head = n;
        if (s->burst)
            atomic_fetch_sub(&g.burst, 1);
        free(s);
        atomic_fetch_add(&q->segs_freed, 1);
        s = n;
    }
}

/* Unlinks and frees <q>: its thread exited and every line of it is out. */
static void queue_remove(struct queue *q)
{
    pthread_mutex_lock(&g.lock);
    struct queue *first = atomic_load_explicit(&g.queues, memory_order_relaxed);
    if (first == q) {
        atomic_store_explicit(&g.queues, q->next, memory_order_release);
    } else {
        struct queue *p = first;
        while (p->next != q)
            p = p->next;
        p->next = q->next;
    }
    pthread_mutex_unlock(&g.lock);
    if (q->head->burst)
        atomic_fetch_sub(&g.burst, 1);
    free(q->head);
    free(q);
}

/* A queue that has a line to write, with its next record. */
struct candidate {
    struct queue *q;
    const struct record *r;
};

static struct candidate *cands;
static size_t cands_cap;

/* Fills cands; frees the queues of exited threads once they are empty.
 * Returns how many queues have a line. */
static size_t collect(void)
{
    size_t n = 0;
    struct queue *q = atomic_load_explicit(&g.queues, memory_order_acquire);
    while (q) {
        struct queue *next = q->next;
        bool gone = atomic_load_explicit(&q->gone, memory_order_acquire);
        const struct record *r = queue_peek(q);
        if (!r && gone) {
            queue_remove(q);
        } else if (r) {
            if (n == cands_cap) {
                size_t cap = cands_cap ? cands_cap * 2 : 16;
                struct candidate *c = realloc(cands, cap * sizeof(*c));
                if (!c)
                    break; /* the others wait for the next pass */
                cands = c;
                cands_cap = cap;
            }
            cands[n++] = (struct candidate){.q = q, .r = r};
        }
        q = next;
    }
    return n;
}

enum drain_result { DRAIN_IDLE = 1, DRAIN_MORE, DRAIN_GAP };

/* One pass: writes the lines the queues hold, lowest seq first. IDLE: none
 * left; MORE: the pass ended at LOG_PASS_LINES; GAP: waiting for a line
 * numbered but not yet published. */
static enum drain_result drain(void)
{
    size_t lines = 0;
again:;
    size_t n = collect();
    while (n > 0) {
        size_t best = 0;
        for (size_t i = 1; i < n; i++)
            if (cands[i].r->seq < cands[best].r->seq)
                best = i;
        const struct record *r = cands[best].r;
        if (r->seq > next_seq) {
            uint64_t now = mono_ns();
            if (!gap_since) {
                gap_since = now;
                goto again; /* it may sit in a queue that was empty a moment ago */
            }
            if (now - gap_since < LOG_GAP_WAIT_NS) {
                batch_write();
                return DRAIN_GAP;
            }
            /* its thread was preempted mid-line: the later lines go first */
        }
        gap_since = 0;
        if (r->seq >= next_seq)
            next_seq = r->seq + 1;
        if (batch.len + r->len > sizeof(batch.buf))
            batch_write();
        memcpy(batch.buf + batch.len, r + 1, r->len);
        batch.len += r->len;
        batch.lines++;
        cands[best].q->head->rpos += record_size(r);
        cands[best].q->taken++;
        cands[best].r = queue_peek(cands[best].q);
        if (!cands[best].r)
            cands[best] = cands[--n];
        if (++lines >= LOG_PASS_LINES) {
            batch_write();
            return DRAIN_MORE;
        }
        if (n == 0)
            n = collect();
    }
    batch_write();
    return DRAIN_IDLE;
}

/* Answers the flushes: marks what each queue had published when a new
 * request came, and tells the waiters once all of it is out. Called with
 * the batch written. */
static void flush_check(void)
{
    unsigned long long req = atomic_load(&g.flush_req);
    if (req != flush_marked) {
        for (struct queue *q = atomic_load_explicit(&g.queues, memory_order_acquire); q;
             q = q->next)
            q->flush_mark = atomic_load_explicit(&q->published, memory_order_acquire);
        flush_marked = req;
        flush_pending = true;
    }
    if (!flush_pending)
        return;
    for (struct queue *q = atomic_load_explicit(&g.queues, memory_order_acquire); q; q = q->next)
        if (q->taken < q->flush_mark)
            return;
    flush_pending = false;
    pthread_mutex_lock(&g.flush_lock);
    g.flush_done = flush_marked;
    pthread_cond_broadcast(&g.flush_cond);
    pthread_mutex_unlock(&g.flush_lock);
}

/* True if some queue has work for the log thread: a line, a segment to
 * move on to, an owner gone. Seq_cst loads: see wake_log_thread. */
static bool work_pending(void)
{
    for (struct queue *q = atomic_load(&g.queues); q; q = q->next) {
        struct segment *s = q->head;
        if (atomic_load(&q->gone) || s->rpos < atomic_load(&s->wpos) || atomic_load(&s->next))
            return true;
    }
    return false;
}

/* Waits for the doorbell, unless a line or a flush came meanwhile. */
static void log_thread_sleep(void)
{
    atomic_store(&g.sleeping, 1);
    if (!flush_pending && atomic_load(&g.flush_req) == flush_marked && !atomic_load(&g.stop) &&
        !work_pending()) {
        struct pollfd pfd = {.fd = g.wake_fd, .events = POLLIN};
        poll(&pfd, 1, -1);
        uint64_t v;
        ssize_t r = read(g.wake_fd, &v, sizeof(v));
        (void)r;
    }
    atomic_store(&g.sleeping, 0);
}

static void *log_thread_main(void *arg)
{
    for (;;) {
        unsigned long long before = atomic_load_explicit(&g.out, memory_order_relaxed);
        enum drain_result rc = drain();
        flush_check();
        bool wrote = atomic_load_explicit(&g.out, memory_order_relaxed) != before;
        if (rc == DRAIN_GAP)
            nanosleep(&(struct timespec){.tv_nsec = LOG_GAP_POLL_NS}, NULL);
        else if (rc == DRAIN_IDLE && atomic_load(&g.stop))
            break;
        else if (rc == DRAIN_IDLE && wrote)
            nanosleep(&(struct timespec){.tv_nsec = LOG_LINGER_NS}, NULL);
        else if (rc == DRAIN_IDLE)
            log_thread_sleep();
    }
    return NULL;
}

/* ---- flushes and exit ------------------------------------------------------ */

int log_flush(unsigned timeout_ms)
{
    int mode = atomic_load(&g.mode);
    if (mode != MODE_THREAD)
        return mode == MODE_ABANDONED ? -1 : 0;
    unsigned long long req = atomic_fetch_add(&g.flush_req, 1) + 1;
    uint64_t one = 1;
    ssize_t w = write(g.wake_fd, &one, sizeof(one));
    (void)w;
    struct timespec until;
    clock_gettime(CLOCK_MONOTONIC, &until);
    until.tv_sec += timeout_ms / 1000;
    until.tv_nsec += (long)(timeout_ms % 1000) * 1000000;
    if (until.tv_nsec >= 1000000000) {
        until.tv_sec++;
        until.tv_nsec -= 1000000000;
    }
    pthread_mutex_lock(&g.flush_lock);
    while (g.flush_done < req &&
           pthread_cond_timedwait(&g.flush_cond, &g.flush_lock, &until) != ETIMEDOUT)
        ;
    bool done = g.flush_done >= req;
    pthread_mutex_unlock(&g.flush_lock);
    return done ? 0 : -1;
}

/* Ends the log thread, idle after a flush: the exit leaves no thread
 * behind (ThreadSanitizer would wait a second for it at exit). A line
 * logged from now on is written where it is logged. */
static void log_thread_stop(void)
{
    atomic_store(&g.mode, MODE_DIRECT);
    atomic_store(&g.stop, 1);
    uint64_t one = 1;
    ssize_t w = write(g.wake_fd, &one, sizeof(one));
    (void)w;
    struct timespec until;
    clock_gettime(CLOCK_REALTIME, &until); /* pthread_timedjoin_np's clock */
    until.tv_sec += LOG_EXIT_STALL_MS / 1000;
    until.tv_nsec += (long)(LOG_EXIT_STALL_MS % 1000) * 1000000;
    if (until.tv_nsec >= 1000000000) {
        until.tv_sec++;
        until.tv_nsec -= 1000000000;
    }
    pthread_timedjoin_np(g.tid, NULL, &until);
}

/* The final lines at exit (atexit): waited for while stderr takes them;
 * on a stalled stderr the exit goes on and they count as dropped. */
static void log_at_exit(void)
{
    if (atomic_load(&g.mode) != MODE_THREAD)
        return; /* a forked child: the log thread is its parent's */
    uint64_t start = mono_ns();
    for (;;) {
        unsigned long long before = atomic_load(&g.out);
        if (log_flush(LOG_EXIT_STALL_MS) == 0) {
            log_thread_stop();
            return;
        }
        if (atomic_load(&g.out) == before ||
            mono_ns() - start >= (uint64_t)LOG_EXIT_MAX_MS * 1000000u)
            break;
    }
    atomic_store(&g.mode, MODE_ABANDONED);
    unsigned long long numbered = atomic_load(&g.seq), out = atomic_load(&g.out);
    if (numbered > out)
        atomic_fetch_add(&g.dropped, numbered - out);
}

unsigned long long log_lines_dropped(void)
{
    return atomic_load_explicit(&g.dropped, memory_order_relaxed);
}

/* ---- the line ------------------------------------------------------------ */

struct line {
    char buf[LOG_LINE_MAX];
    size_t len;
    bool json;
};

static size_t room(const struct line *l)
{
    return l->len + LINE_TAIL < sizeof(l->buf) ? sizeof(l->buf) - LINE_TAIL - l->len : 0;
}

static void put(struct line *l, const char *s, size_t n)
{
    if (n > room(l))
        n = room(l);
    memcpy(l->buf + l->len, s, n);
    l->len += n;
}

static void put_str(struct line *l, const char *s)
{
    put(l, s, strlen(s));
}

/* A string value: JSON string, or logfmt bare or quoted. A cut string
 * still gets its closing quote (LINE_TAIL keeps room for it). */
static void put_string(struct line *l, const char *s, size_t n)
{
    if (!l->json && !needs_quotes(s, n)) {
        put(l, s, n);
        return;
    }
    if (room(l) == 0)
        return;
    l->buf[l->len++] = '"';
    l->len += log_json_escape(l->buf + l->len, room(l), s, n);
    l->buf[l->len++] = '"'; /* from LINE_TAIL if the string was cut */
}

static void put_uint(struct line *l, unsigned long long v)
{
    char digits[20]; /* ULLONG_MAX has 20 digits */
    size_t i = sizeof(digits);
    do
        digits[--i] = (char)('0' + v % 10);
    while ((v /= 10) != 0);
    put(l, digits + i, sizeof(digits) - i);
}

/* Fixed point without printf (the access log's ms is on the hot path).
 * Not finite, or too large for the fixed-point path: written as 0 in
 * JSON's terms (null is not a number) — no usher value gets there. */
static void put_float(struct line *l, double v, size_t decimals)
{
    static const unsigned scale[] = {1, 10, 100, 1000};
    if (decimals > 3)
        decimals = 3;
    if (!isfinite(v) || fabs(v) >= 1e15) {
        put(l, "0", 1);
        return;
    }
    if (v < 0) {
        put(l, "-", 1);
        v = -v;
    }
    unsigned long long x = (unsigned long long)llround(v * scale[decimals]);
    put_uint(l, x / scale[decimals]);
    if (decimals == 0)
        return;
    char frac[3];
    unsigned long long f = x % scale[decimals];
    for (size_t i = decimals; i-- > 0; f /= 10)
        frac[i] = (char)('0' + f % 10);
    put(l, ".", 1);
    put(l, frac, decimals);
}

static void put_value(struct line *l, const struct log_field *f)
{
    switch (f->type) {
    case LOG_T_STR:
        put_string(l, f->v.s ? f->v.s : "-", f->v.s ? strlen(f->v.s) : 1);
        return;
    case LOG_T_STRN:
        put_string(l, f->v.s, f->len);
        return;
    case LOG_T_INT:
        if (f->v.i < 0) {
            put(l, "-", 1);
            put_uint(l, 0ull - (unsigned long long)f->v.i);
        } else {
            put_uint(l, (unsigned long long)f->v.i);
        }
        return;
    case LOG_T_UINT:
        put_uint(l, f->v.u);
        return;
    case LOG_T_FLOAT:
        put_float(l, f->v.f, f->len);
        return;
    case LOG_T_BOOL:
        put_str(l, f->v.b ? "true" : "false");
        return;
    case LOG_T_NUMBER:
        put(l, f->v.s, f->len);
        return;
    }
}

/* The second is formatted once per second per thread: gmtime and strftime
 * are not free, and the access log calls this per request. */
static void put_time(struct line *l)
{
    static __thread time_t cached_sec = -1;
    static __thread char cached[TIME_SEC_LEN + 1];
    struct timeval tv;
    gettimeofday(&tv, NULL);
    if (tv.tv_sec != cached_sec) {
        struct tm tm;
        gmtime_r(&tv.tv_sec, &tm);
        strftime(cached, sizeof(cached), "%Y-%m-%dT%H:%M:%S", &tm);
        cached_sec = tv.tv_sec;
    }
    unsigned ms = (unsigned)(tv.tv_usec / 1000);
    char frac[6] = {'.', (char)('0' + ms / 100), (char)('0' + ms / 10 % 10), (char)('0' + ms % 10),
                    'Z'};
    put(l, cached, TIME_SEC_LEN);
    put(l, frac, 5);
}

void log_write(enum conf_log_level level, const char *event, const struct log_field *fields,
               size_t n)
{
    if (!log_enabled(level))
        return;
    struct line l;
    l.len = 0;
    l.json = atomic_load_explicit(&settings.format, memory_order_relaxed) == CONF_LOG_JSON;
    if (l.json) {
        put_str(&l, "{\"time\":\"");
        put_time(&l);
        put_str(&l, "\",\"level\":\"");
        put_str(&l, level_str(level));
        put_str(&l, "\",\"event\":");
        put_string(&l, event, strlen(event));
    } else {
        put_time(&l);
        put(&l, " ", 1);
        put_str(&l, level_str(level));
        put(&l, " ", 1);
        put_str(&l, event);
    }
    for (size_t i = 0; i < n; i++) {
        /* a field that cannot start whole is left out, not half written */
        if (room(&l) < strlen(fields[i].key) + 8)
            break;
        if (l.json) {
            put(&l, ",\"", 2);
            put_str(&l, fields[i].key);
            put(&l, "\":", 2);
        } else {
            put(&l, " ", 1);
            put_str(&l, fields[i].key);
            put(&l, "=", 1);
        }
        put_value(&l, &fields[i]);
    }
    if (l.json)
        l.buf[l.len++] = '}';
    l.buf[l.len++] = '\n';
    submit(l.buf, l.len);
}

/* ---- the printf shim ----------------------------------------------------- */

/* An unquoted value spelled as a JSON number: -?digits(.digits)? */
static bool is_number(const char *s, size_t n)
{
    size_t i = 0, d = 0;
    if (i < n && s[i] == '-')
        i++;
    while (i < n && s[i] >= '0' && s[i] <= '9')
        i++, d++;
    if (d == 0 || (d > 1 && s[i - d] == '0'))
        return false;
    if (i < n && s[i] == '.') {
        size_t f = ++i;
        while (i < n && s[i] >= '0' && s[i] <= '9')
            i++;
        if (i == f)
            return false;
    }
    return i == n;
}

/* Splits "k=v k2=\"a b\" ..." into <f> (keys are the caller's literals;
 * the text stays in <kv>, which the fields point into). A quoted value
 * ends at the quote that is followed by a space or the end, so a value
 * with a quote inside mostly survives; callers must not rely on it. */
static size_t split_pairs(char *kv, struct log_field *f, size_t max)
{
    size_t n = 0;
    char *p = kv;
    while (*p && n < max) {
        while (*p == ' ')
            p++;
        char *key = p;
        while (*p && *p != '=' && *p != ' ')
            p++;
        if (p == key)
            break;
        bool has_value = *p == '=';
        if (*p)
            *p++ = '\0'; /* ends the key in place */
        f[n] = (struct log_field){.key = key, .type = LOG_T_STRN, .v.s = p};
        if (has_value && *p == '"') {
            char *v = ++p;
            while (*p && !(*p == '"' && (p[1] == ' ' || p[1] == '\0')))
                p++;
            f[n].v.s = v;
            f[n].len = (size_t)(p - v);
            if (*p)
                p++;
        } else if (has_value) {
            char *v = p;
            while (*p && *p != ' ')
                p++;
            f[n].len = (size_t)(p - v);
            if (is_number(v, f[n].len))
                f[n].type = LOG_T_NUMBER;
            else if ((f[n].len == 4 && !memcmp(v, "true", 4)) ||
                     (f[n].len == 5 && !memcmp(v, "false", 5)))
                f[n].type = LOG_T_NUMBER; /* spelled the same in JSON */
        } else {
            f[n].len = 0;
        }
        n++;
    }
    return n;
}

void log_event(enum conf_log_level level, const char *event, const char *fmt, ...)
{
    if (!log_enabled(level))
        return;
    char kv[LOG_LINE_MAX];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(kv, sizeof(kv), fmt, ap);
    va_end(ap);
    struct log_field f[SHIM_FIELDS_MAX];
    log_write(level, event, f, split_pairs(kv, f, SHIM_FIELDS_MAX));
}
