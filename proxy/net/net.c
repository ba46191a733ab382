#include "net.h"

#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <unistd.h>

int net_connect_start(const struct sockaddr *addr, socklen_t len, int *in_progress, int *err)
{
    int fd = socket(addr->sa_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        *err = errno;
        return -1;
    }
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    if (connect(fd, addr, len) == 0) {
        *in_progress = 0;
        return fd;
    }
    if (errno == EINPROGRESS || errno == EINTR) {
        *in_progress = 1;
        return fd;
    }
    *err = errno;
    close(fd);
    return -1;
}

int net_connect_result(int fd, int *err)
{
    int soerr = 0;
    socklen_t len = sizeof(soerr);
    if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &len) < 0)
        soerr = errno;
    if (soerr == 0)
        return NET_OK;
    if (soerr == EINPROGRESS || soerr == EALREADY)
        return NET_AGAIN;
    *err = soerr;
    return NET_ERROR;
}

int net_listen(const struct sockaddr *addr, socklen_t len, const char **why)
{
    int fd = socket(addr->sa_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        *why = "socket failed";
        return -1;
    }
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    /* Linux copies it to every accepted socket: no setsockopt per connection */
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    if (bind(fd, addr, len) < 0) {
        *why = "bind failed";
        goto fail;
    }
    if (listen(fd, NET_LISTEN_BACKLOG) < 0) {
        *why = "listen failed";
        goto fail;
    }
    return fd;
fail:;
    int saved = errno;
    close(fd);
    errno = saved;
    return -1;
}

int net_adopt_listener(int fd, const char **why)
{
    int listening = 0;
    socklen_t len = sizeof(listening);
    if (getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &listening, &len) < 0 || !listening) {
        *why = "inherited socket is not listening";
        return -1;
    }
    int flags = fcntl(fd, F_GETFL);
    if (flags < 0 || fcntl(fd, F_SETFL, flags | O_NONBLOCK) < 0) {
        *why = "inherited socket cannot be made non-blocking";
        return -1;
    }
    int one = 1; /* as net_listen: accepted sockets inherit it */
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    return 0;
}
