/*
 * harness.h — a two-macro test harness (after redis' testhelp.h). Each test
 * binary prints one line per check and exits nonzero when any failed.
 */
#ifndef GN_HARNESS_H
#define GN_HARNESS_H
#include <stdio.h>
#include <stdlib.h>

static int th_passed, th_failed;
#define CHECK(cond, ...) do { \
        if (cond) th_passed++; \
        else { th_failed++; printf("FAIL %s:%d: ", __FILE__, __LINE__); printf(__VA_ARGS__); printf("\n"); } \
    } while (0)
#define TEST_REPORT() do { \
        printf("%s: %d passed, %d failed\n", __FILE__, th_passed, th_failed); \
        return th_failed ? 1 : 0; \
    } while (0)
#endif
