/* The unit tests' scratch folder, one per run: in $TEST_TMP (the folder tests/run.sh gives
 * the test and removes after it), else in $TMPDIR, else in /tmp. scratch_make makes it,
 * scratch_path names a file in it, scratch_done removes it, or keeps it and says where after
 * a failed run or with KEEP set, for a look at what the test left.
 * A path from scratch_path lives until eight more calls: enough for one call's arguments. */
#ifndef CAIRN_TEST_SCRATCH_H
#define CAIRN_TEST_SCRATCH_H

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>

static char scratch_root[512];

/* PREFIX: the folder's name before mkdtemp's six random letters. 0, or -1 (said why). */
static int scratch_make(const char *prefix)
{
    const char *dir = getenv("TEST_TMP");
    if (!dir) dir = getenv("TMPDIR");
    if (!dir) dir = "/tmp";
    snprintf(scratch_root, sizeof scratch_root, "%s/%sXXXXXX", dir, prefix);
    if (!mkdtemp(scratch_root)) {
        perror(scratch_root);
        return -1;
    }
    return 0;
}

__attribute__((format(printf, 1, 2))) static const char *scratch_path(const char *fmt, ...)
{
    static char buf[8][1500];
    static int k;
    k = (k + 1) % 8;
    char rel[900];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(rel, sizeof rel, fmt, ap);
    va_end(ap);
    snprintf(buf[k], sizeof buf[k], "%s/%s", scratch_root, rel);
    return buf[k];
}

/* FAILED: the run had failures (the folder is kept). Write bits first: a test may leave
 * read-only folders. */
static void scratch_done(int failed)
{
    if (failed || getenv("KEEP")) {
        fprintf(stderr, "kept %s\n", scratch_root);
        return;
    }
    char cmd[1200];
    snprintf(cmd, sizeof cmd, "chmod -R u+w '%s' && rm -rf '%s'", scratch_root, scratch_root);
    if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", scratch_root);
}

#endif
