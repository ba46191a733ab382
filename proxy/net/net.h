/* Sockets, written once: the non-blocking connect (health checks and
 * upstream connections) with its one SO_ERROR check, and the listening
 * socket (data-plane listeners and the admin listener). */
#ifndef USHER_LOOP_NET_H
#define USHER_LOOP_NET_H

#include <sys/socket.h>

/* The one result convention for I/O code: 0 done, negative failure, and a
 * distinct "would block / need more" (nginx NGX_OK / NGX_ERROR / NGX_AGAIN). */
enum {
    NET_OK = 0,
    NET_ERROR = -1,
    NET_AGAIN = -2,
};

/* Kernel accept queue for every listening socket; SOMAXCONN caps it. */
#define NET_LISTEN_BACKLOG 4096

/* Starts a non-blocking connect to <addr> (TCP_NODELAY set). Returns the
 * socket with *<in_progress> telling whether the connect is still pending
 * (wait for EV_WRITE, then net_connect_result), or -1 with *<err> = errno. */
int net_connect_start(const struct sockaddr *addr, socklen_t len, int *in_progress, int *err);

/* After EV_WRITE on a pending connect: NET_OK once connected, NET_AGAIN if
 * still in progress, or NET_ERROR with *<err> = the socket's error. */
int net_connect_result(int fd, int *err);

/* Binds a non-blocking listening socket (SO_REUSEADDR, TCP_NODELAY: the
 * sockets it accepts inherit it) on <addr>. Returns
 * it, or -1 with *<why> a static reason ("socket failed", "bind failed",
 * "listen failed") and errno kept. */
int net_listen(const struct sockaddr *addr, socklen_t len, const char **why);

/* Takes over a listening socket another process bound (systemd socket
 * activation, the old process of an upgrade): makes it non-blocking, sets
 * TCP_NODELAY (inherited by accepted sockets) and checks that it listens. Returns 0, or -1 with *<why> a static reason. */
int net_adopt_listener(int fd, const char **why);

#endif
