/*
 * The clock-step shim (LD_PRELOAD): CAIRN_TEST_CLOCK_STEP_MS=N moves CLOCK_REALTIME by N
 * milliseconds (negative: back), as an NTP step would, for tests/integration/clock.sh.
 * faketime is not a Debian package here, and a hook inside cairn would ship a clock any
 * environment could move: this lives in test tooling only, never linked into cairn.
 */
#include <dlfcn.h>
#include <stdlib.h>
#include <time.h>

typedef int (*clock_gettime_fn)(clockid_t, struct timespec *);

int clock_gettime(clockid_t id, struct timespec *ts)
{
    static clock_gettime_fn real;
    if (!real) real = (clock_gettime_fn)dlsym(RTLD_NEXT, "clock_gettime");
    int rc = real(id, ts);
    const char *step = getenv("CAIRN_TEST_CLOCK_STEP_MS");
    if (rc == 0 && id == CLOCK_REALTIME && step && *step) {
        long long ns = (long long)ts->tv_sec * 1000000000LL + ts->tv_nsec + strtoll(step, NULL, 10) * 1000000LL;
        ts->tv_sec = (time_t)(ns / 1000000000LL);
        ts->tv_nsec = (long)(ns % 1000000000LL);
        if (ts->tv_nsec < 0) { ts->tv_nsec += 1000000000L; ts->tv_sec--; }
    }
    return rc;
}
