/* The client connection's own machinery, below its muxes: its timer (one
 * deadline per state), its io watcher, the drain test, the plain close and
 * the lingering close. The muxes (mux_h1.c, mux_h2.c) and the connection's
 * top (client.c) use it; it calls up only through c->mux. */
#ifndef USHER_PROXY_CONN_H
#define USHER_PROXY_CONN_H

#include "clock.h"
#include "worker-t.h"

/* Sets up the connection's timer (its io watcher is the caller's). */
void conn_init(struct client *c);

/* The process drains, or this connection's listener was removed by a
 * reload: what is asked is answered, and the connection then closes
 * (HTTP/1.1: Connection: close; HTTP/2: the two-step GOAWAY). */
bool conn_closing(const struct client *c);

/* Moves <c> to state <s>: its last activity is now and its timer follows
 * the new state's deadline. */
void conn_set_state(struct client *c, enum client_state s);

/* Makes sure the timer fires no later than the state's deadline. */
void conn_arm_timer(struct client *c);

/* Sets what the client's socket is watched for (EV_READ|EV_WRITE, 0). */
void conn_want(struct client *c, unsigned events);

/* Closes <c> now: its mux lets go of every exchange, the socket closes,
 * and the worker frees it at its next safe point (client_free). */
void conn_close(struct client *c);

/* The connection is done. If the client may still be sending, a plain
 * close() with unread bytes would answer with an RST that can destroy what
 * is still in flight to it: the write side is shut instead and input is
 * discarded for a while (lingering close). STEP_CLOSED if it closed at
 * once, else STEP_BLOCKED (now CLIENT_LINGERING). */
enum step conn_finish(struct client *c);

/* CLIENT_LINGERING: discards what the client sends; closes at its end. */
enum step conn_on_lingering(struct client *c);

#endif
