/* The one set of check macros every unit test uses. A failed check counts
 * in <failures>, prints "file:line: CHECK(expr) failed [context]: message"
 * and the test goes on, so one run names every broken case; main() ends
 * with `return check_report("test_NAME");`.
 *
 *   CHECK(cond)                    CHECK(cond, "fmt", args...)
 *   CHECK_INT(a, b)   signed       CHECK_UINT(a, b) / CHECK_EQ(a, b) unsigned
 *   CHECK_STR(a, b)   both non-NULL and equal
 *   check_fail(__FILE__, line, NULL, "fmt", ...) for a helper that reports
 *   at its caller's line.
 *
 * A test whose stderr is captured (test_log) defines CHECK_STREAM to stdout
 * before including this header. */
#ifndef USHER_TEST_CHECK_H
#define USHER_TEST_CHECK_H

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#ifndef CHECK_STREAM
#define CHECK_STREAM stderr
#endif

/* CHECK(cond) passes "" as the message format: an empty format is what
 * the macro means, not a mistake. */
#pragma GCC diagnostic ignored "-Wformat-zero-length"

static int failures;

/* Names the case under test in every failure line; NULL for none. */
static const char *check_context;

__attribute__((format(printf, 4, 5))) static void check_fail(const char *file, int line,
                                                             const char *expr, const char *fmt, ...)
{
    va_list ap;

    failures++;
    fprintf(CHECK_STREAM, "%s:%d:", file, line);
    if (expr)
        fprintf(CHECK_STREAM, " CHECK(%s) failed", expr);
    if (check_context)
        fprintf(CHECK_STREAM, " [%s]", check_context);
    if (fmt[0]) {
        fputs(": ", CHECK_STREAM);
        va_start(ap, fmt);
        vfprintf(CHECK_STREAM, fmt, ap);
        va_end(ap);
    }
    fputc('\n', CHECK_STREAM);
}

#define CHECK(cond, ...)                                                                           \
    do {                                                                                           \
        if (!(cond))                                                                               \
            check_fail(__FILE__, __LINE__, #cond, "" __VA_ARGS__);                                 \
    } while (0)

#define CHECK_INT(a, b)                                                                            \
    do {                                                                                           \
        long long a_ = (long long)(a), b_ = (long long)(b);                                        \
        if (a_ != b_)                                                                              \
            check_fail(__FILE__, __LINE__, NULL, "%s == %lld, expected %lld", #a, a_, b_);         \
    } while (0)

#define CHECK_UINT(a, b)                                                                           \
    do {                                                                                           \
        unsigned long long a_ = (unsigned long long)(a), b_ = (unsigned long long)(b);             \
        if (a_ != b_)                                                                              \
            check_fail(__FILE__, __LINE__, NULL, "%s == %llu, expected %llu", #a, a_, b_);         \
    } while (0)

#define CHECK_EQ(a, b) CHECK_UINT(a, b)

#define CHECK_STR(a, b)                                                                            \
    do {                                                                                           \
        const char *a_ = (a), *b_ = (b);                                                           \
        if (!a_ || !b_ || strcmp(a_, b_) != 0)                                                     \
            check_fail(__FILE__, __LINE__, NULL, "%s == \"%s\", expected \"%s\"", #a,              \
                       a_ ? a_ : "(null)", b_ ? b_ : "(null)");                                    \
    } while (0)

/* Prints "<name>: ok" or "<name>: N failure(s)"; returns main's exit code. */
static int check_report(const char *name)
{
    if (failures) {
        fprintf(CHECK_STREAM, "%s: %d failure(s)\n", name, failures);
        return 1;
    }
    printf("%s: ok\n", name);
    return 0;
}

#endif
