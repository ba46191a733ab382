/* Speed of http1_parse_request on a typical browser GET head.
 * Usage: bench_http1 [iterations]   (default 2,000,000)
 * Prints "heads/s: <n>" and "ns/head: <n>". Build it in a release build. */
#include "parser/http1.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define DEFAULT_ITERATIONS 2000000L
#define MAX_HEADERS 100

/* What a current desktop browser sends for a page load (about 500 bytes). */
static const char head[] =
    "GET /articles/2024/connection-draining-done-right?ref=home&utm_source=news HTTP/1.1\r\n"
    "Host: www.example.com\r\n"
    "User-Agent: Mozilla/5.0 (X11; Linux x86_64; rv:126.0) Gecko/20100101 Firefox/126.0\r\n"
    "Accept: text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8\r\n"
    "Accept-Language: en-US,en;q=0.5\r\n"
    "Accept-Encoding: gzip, deflate, br, zstd\r\n"
    "Referer: https://www.example.com/\r\n"
    "Connection: keep-alive\r\n"
    "Cookie: session=8f14e45fceea167a5a36dedd4bea2543; theme=dark\r\n"
    "Upgrade-Insecure-Requests: 1\r\n"
    "Sec-Fetch-Dest: document\r\n"
    "Sec-Fetch-Mode: navigate\r\n"
    "Sec-Fetch-Site: same-origin\r\n"
    "Priority: u=0, i\r\n"
    "\r\n";

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

int main(int argc, char **argv)
{
    long n = argc > 1 ? atol(argv[1]) : DEFAULT_ITERATIONS;
    struct http1_limits lim = {
        .max_head_bytes = 16384, .max_headers = MAX_HEADERS, .max_uri_bytes = 8192};
    static struct http1_header headers[MAX_HEADERS];
    struct http1_request req = {.msg.headers = headers};
    /* the head sits in a buffer like the one a connection reads into */
    static char buf[16384];
    size_t len = sizeof(head) - 1;
    size_t check = 0;

    if (n <= 0)
        n = DEFAULT_ITERATIONS;
    memcpy(buf, head, len);
    if (http1_parse_request(buf, len, &lim, &req) != HTTP1_OK) {
        fprintf(stderr, "bench_http1: the sample head does not parse: %s\n", req.msg.error_reason);
        return 1;
    }

    double t0 = now();
    for (long i = 0; i < n; i++) {
        if (http1_parse_request(buf, len, &lim, &req) != HTTP1_OK)
            return 1;
        check += req.msg.num_headers; /* keeps the call from being optimised away */
    }
    double dt = now() - t0;

    printf("head bytes: %zu, headers: %zu, iterations: %ld\n", len, check / (size_t)n, n);
    printf("heads/s: %.0f\n", (double)n / dt);
    printf("ns/head: %.1f\n", dt * 1e9 / (double)n);
    return 0;
}
