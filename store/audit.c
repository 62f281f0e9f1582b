/* Append-only logs of JSON lines: audit.log (support reads) and events.log (lifecycle:
 * its lines are encoded and parsed by store/events.c only). A line is appended with O_APPEND in a single write and fsynced before
 * the caller goes on, so an audited read never happens unrecorded and an event is never
 * lost. Any process may append, with or without the lock: O_APPEND writes of one line do
 * not interleave on a local filesystem. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "store/internal.h"

static int log_append(store_t *s, const char *name, const char *line, store_err *e)
{
    char *path = util_path(s->dir, name);
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
    if (rc) store_errf(e, rc, "%s: cannot append (%s)", path, strerror(-rc));
    free(path);
    return rc;
}

static int log_read(store_t *s, const char *name, int (*fn)(void *arg, const char *line), void *arg,
                    store_err *e)
{
    char *path = util_path(s->dir, name);
    FILE *f = path ? fopen(path, "r") : NULL;
    if (!f) {
        int rc = errno == ENOENT ? 0 : store_errf(e, -errno, "%s: %s", path ? path : name, strerror(errno));
        free(path);
        return rc;
    }
    char *line = NULL;
    size_t cap = 0;
    ssize_t n;
    int rc = 0;
    errno = 0;
    while ((n = getline(&line, &cap, f)) > 0) {
        if (line[n - 1] == '\n') line[n - 1] = 0;
        if (line[0] && fn(arg, line)) break;
        errno = 0;
    }
    /* getline answers -1 both at the end and on a read error. */
    if (n < 0 && ferror(f))
        rc = store_errf(e, errno ? -errno : -EIO, "%s: read error: %s", path,
                        strerror(errno ? errno : EIO));
    free(line);
    fclose(f);
    free(path);
    return rc;
}

int store_audit_append(store_t *s, const char *line, store_err *e)
{
    store_err le;
    int rc = log_append(s, "audit.log", line, &le);
    if (rc) store_errf(e, rc, "%s; the read was not done", le.msg);
    return rc;
}

int store_audit_read(store_t *s, int (*fn)(void *arg, const char *line), void *arg, store_err *e)
{
    return log_read(s, "audit.log", fn, arg, e);
}

int events_append_line(store_t *s, const char *line, store_err *e)
{
    return log_append(s, "events.log", line, e);
}

int events_read_lines(store_t *s, int (*fn)(void *arg, const char *line), void *arg, store_err *e)
{
    return log_read(s, "events.log", fn, arg, e);
}
