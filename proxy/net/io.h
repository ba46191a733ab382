/* Setting the events of a connection's io watcher: the one helper used by
 * health checks, upstream and client connections. */
#ifndef USHER_LOOP_IO_H
#define USHER_LOOP_IO_H

#include <ev.h>

/* Makes <io> (on <fd>) watch <events> (0: stopped), touching libev only
 * when they differ from *<current>, which tracks what it watches now. */
static inline void io_watch(struct ev_loop *loop, ev_io *io, int fd, unsigned *current,
                            unsigned events)
{
    if (*current == events)
        return;
    ev_io_stop(loop, io);
    if (events) {
        ev_io_set(io, fd, (int)events);
        ev_io_start(loop, io);
    }
    *current = events;
}

#endif
