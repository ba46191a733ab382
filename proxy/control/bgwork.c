/* One background thread and two queues: jobs waiting to run (filled by the
 * loop, emptied by the thread) and jobs that ran (filled by the thread,
 * emptied by the loop's ev_async). Each queue is a list under one mutex,
 * held only to link or unlink a job: the loop never waits for a job.
 *
 * Why one thread: the jobs are rare and short next to a person's
 * patience (a reload's parse, a state file's fsync), and their order is
 * part of their meaning — a state file written later must never be
 * overwritten by one written earlier, and one reload loads after the
 * other. One thread in FIFO order gives both for free; a pool would have
 * to rebuild the order with sequence numbers. */
#include "bgwork.h"

#include <pthread.h>
#include <signal.h>
#include <stdlib.h>

#include "../net/list.h"

struct job {
    bgwork_run_cb run;
    bgwork_done_cb done;
    void *arg;
    struct job *next;
};

/* A FIFO list: append at the tail, take the whole of it at once. */
struct jobq {
    struct job *head, *tail;
};

struct bgwork {
    struct ev_loop *loop;
    pthread_t tid;
    pthread_mutex_t lock;
    pthread_cond_t wake; /* a job was queued, or quit */
    struct jobq todo;    /* under lock */
    struct jobq ran;     /* under lock */
    bool quit;           /* under lock: finish what is queued, then leave */
    ev_async finished;   /* on <loop>: something is in <ran> */
    unsigned pending;    /* the loop's: submitted, done callback not yet run */
    bool closing;        /* the loop's: bgwork_free runs */
};

static void q_append(struct jobq *q, struct job *j)
{
    j->next = NULL;
    if (q->tail)
        q->tail->next = j;
    else
        q->head = j;
    q->tail = j;
}

static struct job *q_take(struct jobq *q)
{
    struct job *all = q->head;
    q->head = q->tail = NULL;
    return all;
}

static void *thread_main(void *p)
{
    struct bgwork *bg = p;
    pthread_mutex_lock(&bg->lock);
    for (;;) {
        while (!bg->todo.head && !bg->quit)
            pthread_cond_wait(&bg->wake, &bg->lock);
        struct job *j = bg->todo.head;
        if (!j)
            break; /* quit, and nothing left */
        bg->todo.head = j->next;
        if (!bg->todo.head)
            bg->todo.tail = NULL;
        pthread_mutex_unlock(&bg->lock);
        if (j->run)
            j->run(j->arg);
        pthread_mutex_lock(&bg->lock);
        q_append(&bg->ran, j);
        /* the watcher outlives this thread: bgwork_free joins first */
        ev_async_send(bg->loop, &bg->finished);
    }
    pthread_mutex_unlock(&bg->lock);
    return NULL;
}

/* Calls the done callbacks of the jobs that ran, in their order. */
static void run_done(struct bgwork *bg)
{
    pthread_mutex_lock(&bg->lock);
    struct job *j = q_take(&bg->ran);
    pthread_mutex_unlock(&bg->lock);
    while (j) {
        struct job *next = j->next;
        bg->pending--;
        if (j->done)
            j->done(j->arg);
        free(j);
        j = next;
    }
}

static void finished_cb(struct ev_loop *loop, ev_async *a, int revents)
{
    run_done(container_of(a, struct bgwork, finished));
}

struct bgwork *bgwork_new(struct ev_loop *loop)
{
    struct bgwork *bg = calloc(1, sizeof(*bg));
    if (!bg)
        return NULL;
    bg->loop = loop;
    pthread_mutex_init(&bg->lock, NULL);
    pthread_cond_init(&bg->wake, NULL);
    ev_async_init(&bg->finished, finished_cb);
    ev_async_start(loop, &bg->finished);
    /* signals are the control thread's: this thread never takes one */
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    int err = pthread_create(&bg->tid, NULL, thread_main, bg);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (err) {
        ev_async_stop(loop, &bg->finished);
        pthread_mutex_destroy(&bg->lock);
        pthread_cond_destroy(&bg->wake);
        free(bg);
        return NULL;
    }
    return bg;
}

int bgwork_submit(struct bgwork *bg, bgwork_run_cb run, bgwork_done_cb done, void *arg)
{
    if (bg->closing)
        return -1;
    struct job *j = calloc(1, sizeof(*j));
    if (!j)
        return -1;
    j->run = run;
    j->done = done;
    j->arg = arg;
    bg->pending++;
    pthread_mutex_lock(&bg->lock);
    q_append(&bg->todo, j);
    pthread_cond_signal(&bg->wake);
    pthread_mutex_unlock(&bg->lock);
    return 0;
}

bool bgwork_busy(const struct bgwork *bg)
{
    return bg && bg->pending > 0;
}

void bgwork_free(struct bgwork *bg)
{
    if (!bg)
        return;
    bg->closing = true;
    pthread_mutex_lock(&bg->lock);
    bg->quit = true;
    pthread_cond_signal(&bg->wake);
    pthread_mutex_unlock(&bg->lock);
    pthread_join(bg->tid, NULL);
    run_done(bg); /* every job ran: the thread left with an empty queue */
    ev_async_stop(bg->loop, &bg->finished);
    pthread_mutex_destroy(&bg->lock);
    pthread_cond_destroy(&bg->wake);
    free(bg);
}
