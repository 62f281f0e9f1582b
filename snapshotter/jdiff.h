/* snapshotter-internal: the pieces of a disk's file index that journal.c and ext4walk.c
 * share. Not for other modules. */
#ifndef CAIRN_SNAPSHOTTER_JDIFF_H
#define CAIRN_SNAPSHOTTER_JDIFF_H

#include "snapshotter/snapshotter.h"

/* The journal diff, run by the confined walker (never by the parent: it reads tenant bytes
 * and allocates by what the image says). copy_fd is the private copy with the journal
 * replayed, whose index fi is; image_fd the disk as it will be stored. Pages where they
 * differ are found, and a file whose data touches one keeps its replayed bytes in the index
 * (inline_data), each changed page for one file only, within budget bytes in all; files
 * that could not keep them are listed without bytes. warn (wcap bytes) says so, or "". */
void snap_jdiff_apply(store_findex *fi, int image_fd, int copy_fd, uint64_t budget, char *warn,
                      size_t wcap);

/* snap_index_disk for a replayed copy: the confined walker indexes copy and applies the
 * journal diff against image (both opened before it confines itself). warn as above. */
STORE_MUST_USE int snap_index_disk_journal(const char *copy, const char *image, uint64_t disk_bytes,
                                           store_findex **out, char *warn, size_t wcap, store_err *e);

#endif
