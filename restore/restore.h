/*
 * restore: gives a snapshot's files back, byte-exact (the "wake" path).
 *
 * Each file is written to DIR/.NAME.cairn-tmp and renamed to DIR/NAME only when every
 * page was read, decompressed and matched its id: a restore that meets a damaged or
 * missing chunk fails with the snapshot, file and offset in the message and leaves no
 * file with wrong bytes behind. Output is sparse: the file is sized with ftruncate and
 * zero pages stay holes. Groups are decompressed in parallel and runs of pages written
 * with one pwrite each.
 *
 * Store: open for reading (or writing). Outputs are not fsynced: a wake hands them to a
 * VM at once; a caller that needs durability syncs them itself.
 */
#ifndef CAIRN_RESTORE_H
#define CAIRN_RESTORE_H

#include <jansson.h>

#include "store/store.h"

typedef void (*restore_progress_fn)(void *arg, uint64_t done, uint64_t total);

/* Restores every blob of snapshot `id` into outdir (created if missing) as outdir/NAME. */
STORE_MUST_USE int restore_snapshot(store_t *s, const char *id, const char *outdir,
                     restore_progress_fn progress, void *arg, store_err *e);

/* The same into the folder name inside the folder open at dirfd (created if missing; never
 * followed if it is a symlink), shown as outdir in messages: for a caller that checked
 * that folder and must not have its path swapped under it (the API). */
STORE_MUST_USE int restore_snapshot_at(store_t *s, const char *id, int dirfd, const char *name, const char *outdir,
                                       restore_progress_fn progress, void *arg, store_err *e);

/* Restores one blob of a loaded snapshot to path (via a temp file beside it). */
STORE_MUST_USE int restore_blob(store_t *s, const store_snapshot *snap, const store_blob *b, const char *path,
                 store_err *e);

/* ---- extract (issue 3): support engineers' file recovery -----------------------------
 *
 * Reads files straight from a snapshot's file index and disk chunks. Every path, name and
 * symlink target in the index is hostile (a tenant controls its image): extraction writes
 * only below its output folder, resolving every name with openat2(RESOLVE_BENEATH |
 * RESOLVE_NO_SYMLINKS) relative to that folder, creating with O_EXCL|O_NOFOLLOW and never
 * following a symlink it made. A tar stream holds the same members under the same rules.
 *
 * Refused (counted in refused, reported through warn, the rest goes on): a path with an
 * empty, "." or ".." component or one over 255 bytes, a path below an entry that is not a
 * directory, a name that already exists in the output, a symlink in the way, a hard link
 * whose target is not a regular file of the index. Skipped without error: devices, FIFOs
 * and sockets (specials), secrets unless asked for (secrets_skipped; a secret directory's
 * whole subtree and hard links to a secret file count as secret). Modes lose S_ISUID and
 * S_ISGID; owners are kept only when running as root; only user.* xattrs are written to a
 * folder (a tar keeps all but security.capability as SCHILY.xattr.*).
 *
 * Errors: negative errno + message in e. When entries were refused or failed the function
 * still extracts the rest, then returns -EPERM (refusals) or the first failure's code with
 * a summary naming the first one.
 */
/* Called for each refused or failed entry: path is printable (bytes outside printable
 * ASCII escaped as \xNN), why is a short reason. */
typedef void (*restore_warn_fn)(void *arg, const char *path, const char *why);

typedef struct {
    uint64_t files, dirs, symlinks, bytes, refused, secrets_skipped;
    uint64_t hardlinks;         /* members made as hard links (also counted in files) */
    uint64_t specials;          /* devices, FIFOs, sockets: skipped */
    uint64_t failed;            /* data unreadable (damaged store or index entry): not written */
    restore_warn_fn warn;       /* optional, set by the caller */
    void *warn_arg;
    char first_problem[480];    /* out: the first refused or failed entry and why */
} restore_extract_stats;

/* 1 if the entry's bytes are a secret: class secret, below a secret folder, or a hard link
 * to a secret file (what select skips; what cat's caller must check). fi must be sorted. */
STORE_MUST_USE int restore_is_secret(const store_findex *fi, const store_fentry *f);

/* 1 if reading f's bytes (cat, the API's content) gives out a secret: f is one, or the
 * file that holds its bytes is (a hard link's target). The one check of `cairn cat` and
 * GET /v1/snapshots/{id}/content. */
STORE_MUST_USE int restore_cat_is_secret(const store_findex *fi, const store_fentry *f);

/* Writes the bytes of a regular file entry (or a hardlink's target) to fd. Secrets are the
 * caller's decision (the CLI checks restore_is_secret before calling). Holes are written
 * as zeros. */
STORE_MUST_USE int restore_cat(store_t *s, const store_snapshot *snap, const store_findex *fi,
                const store_fentry *f, int fd, store_err *e);

/* Selects entries: each path in paths (or "/" if npaths == 0) and, for directories,
 * everything below; keeps only classes in class_mask (bit 1<<class; 0 = all); skips class
 * secret unless include_secrets (counting them in st->secrets_skipped). Calls fn(arg,
 * entry) for each selected entry in path order; a non-zero return stops and is returned.
 * Refuses hostile paths (see above). -ENOENT if a requested path is not in the index,
 * -EINVAL if the index is not sorted. */
typedef int (*restore_select_fn)(void *arg, const store_fentry *f);
STORE_MUST_USE int restore_select(const store_findex *fi, const char *const *paths, size_t npaths,
                   unsigned class_mask, int include_secrets, restore_select_fn fn, void *arg,
                   restore_extract_stats *st, store_err *e);

/* Extracts the selected entries below outdir (made if missing), at their index paths
 * (/a/b -> outdir/a/b); missing parents are made 0755. Directories' modes and times are
 * set after their children. Sparse files stay sparse. */
STORE_MUST_USE int restore_extract_dir(store_t *s, const store_snapshot *snap, const store_findex *fi,
                        const char *const *paths, size_t npaths, unsigned class_mask,
                        int include_secrets, const char *outdir, restore_extract_stats *st,
                        store_err *e);

/* Writes the selected entries as a POSIX tar stream (pax headers for long/non-ASCII names,
 * big sizes, nanosecond times and xattrs as SCHILY.xattr.*; files with holes in the GNU
 * sparse 1.0 format) to fd. Member names are relative ("home/ubuntu/x"); hard links are
 * tar hard links to a member written earlier in the stream. */
STORE_MUST_USE int restore_extract_tar(store_t *s, const store_snapshot *snap, const store_findex *fi,
                        const char *const *paths, size_t npaths, unsigned class_mask,
                        int include_secrets, int fd, restore_extract_stats *st, store_err *e);

/* ---- rebuild (issue 3): a fresh VM disk for a reclaimed sandbox ----------------------
 *
 * Writes out_path: a raw ext4 image = the template snapshot's "disk" blob, with every entry
 * of the sandbox snapshot's file index whose class is important (store_class_important)
 * written into it with libext2fs, keeping path, mode, uid/gid, atime/mtime (nanoseconds
 * when the inodes are large; ctime is the rebuild's time, as for any copy), xattrs and
 * symlinks; parent directories are made as needed (with the index's metadata when it has
 * them, else 0755 root); a file that exists in the template is replaced; hard links to an
 * important file become hard links; holes stay holes. Nothing of class secret, cache, temp
 * or runtime is copied (an inode one of whose names is secret is copied under none).
 * The image passes e2fsck -fn. Cost: the template's data (restored sparse) plus the
 * important files' bytes, not the disk's size.
 *
 * Skipped, counted in skipped and reported through warn (the rest goes on): a path with an
 * empty, "." or ".." component, a directory of the template that is not empty where the
 * snapshot has a non-directory (or the reverse of an empty one: it is replaced), devices
 * and sockets, a symlink of the template in the way that leads to no directory, an entry
 * whose extents are out of order or outside the snapshot's disk. Links made by the rebuild
 * are never followed; the template's own symlinks on the way (/bin -> usr/bin) are.
 *
 * The file index is snap->files when set, else loaded from the store. Written to
 * out_path.tmp and renamed on success; on error nothing is left at out_path and the
 * message names the file (-ENOSPC when the image has no room left). Not fsynced (as for a
 * wake): the caller syncs it if it needs it durable.
 */
typedef struct {
    uint64_t files, dirs, symlinks, bytes, replaced, skipped;
    double seconds;
    uint64_t hardlinks;         /* names made as hard links (not counted in files) */
    uint64_t xattrs_dropped;    /* xattrs the image could not take (no room, bad name) */
    char first_skip[512];       /* why the first skipped entry was skipped, "" if none */
    /* set by the caller, kept across the call: path is printable (\xNN escapes) */
    void (*warn)(void *arg, const char *path, const char *why);
    void *warn_arg;
} restore_rebuild_stats;

STORE_MUST_USE int restore_rebuild(store_t *s, const store_snapshot *tmpl, const store_snapshot *snap,
                    const char *out_path, restore_rebuild_stats *st, store_err *e);

/* Writes the template snapshot's disk into dst (a new, empty file open for writing;
 * `shown` names it in messages) from a materialized copy kept in DIR/cache/ (made on
 * first use; restore/tcache.c): cloned where the filesystem shares blocks, else copied in
 * the kernel with holes kept. The caller keeps dst. */
STORE_MUST_USE int restore_template_disk(store_t *s, const store_snapshot *tmpl, int dst, const char *shown,
                                         store_err *e);
/* Makes that materialized copy now (`cairn template add` does, so no rebuild pays it). */
STORE_MUST_USE int restore_template_prepare(store_t *s, const store_snapshot *tmpl, store_err *e);

/* ---- support reads (support.c): what the CLI and the API share ------------------------ */

/* A snapshot named by its id or as SANDBOX@latest. -ENOENT if there is none, -EINVAL for a
 * bad name. restore_resolve_id only names it (id_out), without loading it. */
STORE_MUST_USE int restore_resolve(store_t *s, const char *spec, store_snapshot **snap, store_err *e);
STORE_MUST_USE int restore_resolve_id(store_t *s, const char *spec, char id_out[STORE_SNAPID_LEN],
                                      store_err *e);

/* Sets o[key] to the raw path bytes: as is when valid UTF-8; else with U+FFFD for bad bytes
 * and the exact bytes as hex in o[key + "_hex"]. 0 or -ENOMEM. */
STORE_MUST_USE int restore_json_path(json_t *o, const char *key, const char *p);
/* "file", "dir", "symlink", ...: the type names of the JSON and the listings. */
const char *restore_type_name(uint8_t type);
/* The JSON of an entry (path, type, size, class, mode, uid, gid, mtime, target); NULL when
 * out of memory. The caller owns it. */
json_t *restore_entry_json(const store_fentry *f);

/* "/a//b/" -> "/a/b", "a" -> "/a" (malloc'd; NULL when out of memory). */
char *restore_norm_path(const char *path);
/* Calls fn for PATH itself when it is not a folder, else for its children (everything
 * below with recursive), in path order; a non-zero return stops and is returned. -ENOENT
 * when the path is not in the index. */
STORE_MUST_USE int restore_list(const store_findex *fi, const char *path, int recursive,
                 int (*fn)(void *arg, const store_fentry *f), void *arg, store_err *e);
/* The regular file holding an entry's bytes (itself, or a hard link's target), or NULL. */
const store_fentry *restore_file_data(const store_findex *fi, const store_fentry *f);

/* Appends the audit record of a support read (store_audit_append), before the read runs:
 * when it fails the read must not run. out (a destination) may be NULL. */
STORE_MUST_USE int restore_audit(store_t *s, const char *cmd, const char *actor, const store_snapshot *snap,
                  const char *const *paths, size_t npaths, int include_secrets, const char *out,
                  store_err *e);
/* The same record with the reason the reader gave (an admin opening a secret in the
 * console): kept as "reason", so the log says why, not only who. reason may be NULL. */
int restore_audit_reason(store_t *s, const char *cmd, const char *actor, const store_snapshot *snap,
                         const char *const *paths, size_t npaths, int include_secrets, const char *out,
                         const char *reason, store_err *e);

/* Rebuilds the latest snapshot of sandbox onto template tmpl (NULL: the one recorded at
 * snapshot time) into out (restore_rebuild). On success *snap_out and *tmpl_out are the
 * snapshots used (free both); on failure both are NULL. */
STORE_MUST_USE int restore_rebuild_sandbox(store_t *s, const char *sandbox, const char *tmpl, const char *out,
                            restore_rebuild_stats *st, store_snapshot **snap_out,
                            store_snapshot **tmpl_out, store_err *e);

/* The one JSON report of a rebuild (`cairn rebuild --json`, POST .../rebuild): sandbox,
 * snapshot, template, out (as shown to the caller), the counts of st, seconds. The caller
 * owns it; NULL when out of memory. */
json_t *restore_rebuild_json(const char *sandbox, const store_snapshot *snap, const store_snapshot *tmpl,
                             const char *out, const restore_rebuild_stats *st, double seconds);

#endif
