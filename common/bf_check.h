/*  common/bf_check.h - the one assertion of Beamfleet's unit tests. CHECK
    counts a failure, printing file, line and the condition, and lets the
    test go on, so that one run reports every broken check; a test's main
    returns non-zero when `failures` is. Include it from x_test.c files only
    (it defines a file-local counter). */

#ifndef BF_CHECK_H_INCLUDED
#define BF_CHECK_H_INCLUDED

#include <stdio.h>

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

#endif
