/* usher ctl: drives a running usher through its admin API (DESIGN.md
 * "Runtime control"). A CLI: blocking I/O is fine here. */
#ifndef USHER_PROXY_CTL_H
#define USHER_PROXY_CTL_H

/* Runs "usher ctl ..." with <argc>/<argv> starting at "ctl". Returns the
 * exit code: 0 done, 1 the operation failed or a wait timed out, 2 bad
 * usage, admin API unreachable or the caller refused (401/403). */
int ctl_main(int argc, char **argv);

#endif
