/*  common/bf_check.h - the one assertion of Beamfleet's unit tests. CHECK
    counts a failure, printing file, line and the condition, and lets the
    test go on, so that one run reports every broken check (REQUIRE ends it,
    for a check the rest cannot do without); a test's main
    returns non-zero when `failures` is. Include it from x_test.c files only
    (it defines a file-local counter). */

#ifndef BF_CHECK_H_INCLUDED
#define BF_CHECK_H_INCLUDED

#include <stdio.h>
#include <stdlib.h>

static int failures;

#define CHECK(cond)                                                                                \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #cond);               \
            failures++;                                                                            \
        }                                                                                          \
    } while (0)

/* CHECK with a printf-style explanation of what was found. */
#define CHECKF(cond, ...)                                                                          \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "%s:%d: check failed: %s: ", __FILE__, __LINE__, #cond);               \
            fprintf(stderr, __VA_ARGS__);                                                          \
            fputc('\n', stderr);                                                                   \
            failures++;                                                                            \
        }                                                                                          \
    } while (0)

/* A check the rest of the test cannot do without: it fails the test at once. */
#define REQUIRE(cond)                                                                              \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "%s:%d: required: %s\n", __FILE__, __LINE__, #cond);                   \
            exit(1);                                                                               \
        }                                                                                          \
    } while (0)

/* Milliseconds scaled for the machine the test runs on: ms times
   BF_TEST_TIME_SCALE (an integer, default 1). The unit tests whose peers beat
   and expire in tens of milliseconds take every interval and every bound
   derived from one through this, so they stretch together: `make test-asan`
   runs with 3 and `make test-tsan` with 10, where instrumented code on two
   cores is that much slower, and a verdict never hangs on the machine's
   speed. */
static inline int bf_test_ms(int ms)
{
    const char *s = getenv("BF_TEST_TIME_SCALE");
    int scale = s ? atoi(s) : 1;
    return ms * (scale >= 1 && scale <= 100 ? scale : 1);
}

#endif
