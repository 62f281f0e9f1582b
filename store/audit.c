/* The audit log: one JSON object per line in DIR/audit.log, appended with O_APPEND in a
 * single write and fsynced before the audited read happens, so no support read goes
 * unrecorded. Readers of the store may append (the shared lock is enough: O_APPEND writes
 * of one line do not interleave on a local filesystem). */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "store/internal.h"

int store_audit_append(store_t *s, const char *line, store_err *e)
{
    char *path = util_path(s->dir, "audit.log");
    if (!path) return store_errf(e, -ENOMEM, "out of memory");
    size_t n = strlen(line);
    char *buf = malloc(n + 1);
    int rc = 0;
    int fd = buf ? open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600) : -1;
    if (!buf) rc = -ENOMEM;
    else if (fd < 0) rc = -errno;
    if (!rc) {
        memcpy(buf, line, n);
        buf[n] = '\n';
        ssize_t w = write(fd, buf, n + 1);
        if (w != (ssize_t)(n + 1)) rc = w < 0 ? -errno : -EIO;
        else if (fdatasync(fd) < 0) rc = -errno;
    }
    if (fd >= 0) close(fd);
    free(buf);
    if (rc) store_errf(e, rc, "%s: cannot record the audit entry (%s); the read was not done", path,
                       strerror(-rc));
    free(path);
    return rc;
}

int store_audit_read(store_t *s, int (*fn)(void *arg, const char *line), void *arg, store_err *e)
{
    char *path = util_path(s->dir, "audit.log");
    FILE *f = path ? fopen(path, "r") : NULL;
    if (!f) {
        int rc = errno == ENOENT ? 0 : store_errf(e, -errno, "%s: %s", path ? path : "audit.log", strerror(errno));
        free(path);
        return rc;
    }
    char *line = NULL;
    size_t cap = 0;
    ssize_t n;
    while ((n = getline(&line, &cap, f)) > 0) {
        if (line[n - 1] == '\n') line[n - 1] = 0;
        if (line[0] && fn(arg, line)) break;
    }
    free(line);
    fclose(f);
    free(path);
    return 0;
}
