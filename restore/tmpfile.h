/*
 * A file written beside its target and renamed over it when complete (restore_blob,
 * rebuild). Owned by restore/ (not for other modules).
 *
 * The folder may be writable by others (a restore root a sandbox shares), so the temp
 * name is random and created O_EXCL|O_NOFOLLOW: a symlink or file planted at any name is
 * never opened, and two writers into one folder never share a temp file. Everything is
 * done relative to one descriptor of the folder, opened once.
 */
#ifndef CAIRN_RESTORE_TMPFILE_H
#define CAIRN_RESTORE_TMPFILE_H

#include <stddef.h>

#include "store/store.h"

typedef struct {
    int dirfd;           /* the target's folder; -1 when not open */
    int fd;              /* the temp file, read-write; -1 when closed */
    char dir[4096];      /* for messages */
    char name[256];      /* the target's last component */
    char tmp[300];       /* the temp file's name inside dir */
} restore_tmpfile;

/* Opens the folder of path (following symlinks in it, as the caller's path says) and
 * creates a new temp file there, mode 0600. On error nothing is left behind. */
STORE_MUST_USE int restore_tmp_open(restore_tmpfile *t, const char *path, store_err *e);

/* The same in the folder open at dirfd (duplicated: the caller keeps its own), shown as
 * dir in messages; name is one path component. */
STORE_MUST_USE int restore_tmp_openat(restore_tmpfile *t, int dirfd, const char *dir, const char *name,
                                      store_err *e);

/* fsync the temp file, rename it over the target (rename never follows a symlink at the
 * target: it replaces it), fsync the folder; so success means the bytes are on disk under
 * the target's name. Always closes everything; on error the temp file is removed. */
STORE_MUST_USE int restore_tmp_commit(restore_tmpfile *t, store_err *e);

/* Removes the temp file and closes everything (after an error; safe to call twice). */
void restore_tmp_abort(restore_tmpfile *t);

#endif
