/* Internals shared by the store's files. Not part of the public face (store.h). */
#ifndef CAIRN_STORE_INTERNAL_H
#define CAIRN_STORE_INTERNAL_H

#include <pthread.h>
#include <rocksdb/c.h>

#include "store/store.h"

#define STORE_FORMAT 1
#define SECRET_LEN 192                    /* XXH3_SECRET_DEFAULT_SIZE */
#define PACK_TARGET_BYTES (64u << 20)     /* a pack is sealed past this size */
#define PACK_HEADER "CAIRNPK1"
#define PACK_TRAILER "CAIRNPKE"
#define PACK_HEADER_LEN 16
#define PACK_TRAILER_LEN 32
#define MANIFEST_MAGIC "CAIRNMF1"
#define MANIFEST_END "CAIRNMFE"
#define GROUP_CACHE 16                    /* decompressed groups kept per store (4 MiB) */

/* Column families of the index. */
enum { CF_DEFAULT, CF_CHUNKS, CF_SNAPSHOTS, CF_SANDBOXES, CF_COUNT };

struct pool;

struct store {
    char *dir;
    int mode;
    int lock_fd;
    uint8_t secret[SECRET_LEN];
    rocksdb_t *db;
    rocksdb_options_t *opts;
    rocksdb_block_based_table_options_t *topts;
    rocksdb_column_family_handle_t *cf[CF_COUNT];
    rocksdb_readoptions_t *ro;
    rocksdb_writeoptions_t *wo_sync;
    rocksdb_writeoptions_t *wo;
    pthread_mutex_t mu;                /* pack numbers, counters, pack fd cache */
    uint64_t next_pack;
    int64_t last_id_ms;                /* time part of the newest snapshot id handed out
                                          (0: not read from the index yet); under mu */
    int *pack_fds;                     /* open read fds, indexed by pack number (cache) */
    uint64_t npack_fds;
    struct pool *pool;
    /* Recently decompressed groups, for small reads (cat, extract): many files share a
     * group, and decompressing 256 KiB per 4 KiB read dominated. Guarded by cache_mu. */
    pthread_mutex_t cache_mu;
    struct cached_group {
        uint64_t pack, offset, used;
        uint16_t npages;
        uint8_t *pages;
    } cache[GROUP_CACHE];
    uint64_t cache_clock;
};

/* util.c */
int util_write_all(int fd, const void *buf, size_t n);
int util_pwrite_all(int fd, const void *buf, size_t n, off_t off);
int util_pread_all(int fd, void *buf, size_t n, off_t off);   /* -EIO on short read */
int util_fsync_dir(const char *dir);
int util_read_file(const char *path, uint8_t **out, size_t *len);
/* Writes path atomically: path.tmp, fsync, rename, fsync of the directory. */
int util_write_file_durable(const char *dir, const char *name, const void *buf, size_t n);
char *util_path(const char *a, const char *b);   /* malloc'd "a/b" */
uint64_t util_dir_bytes(const char *dir);
size_t util_put_varint(uint8_t *p, uint64_t v);
int util_get_varint(const uint8_t **p, const uint8_t *end, uint64_t *v);
void util_put_le64(uint8_t *p, uint64_t v);
uint64_t util_get_le64(const uint8_t *p);
void util_put_le32(uint8_t *p, uint32_t v);
uint32_t util_get_le32(const uint8_t *p);

/* index.c */
int index_open(store_t *s, int create, store_err *e);
void index_close(store_t *s);
int index_get_u64(store_t *s, const char *key, uint64_t *v);
void index_encode_loc(const store_loc *l, uint8_t *buf, size_t *len);
int index_decode_loc(const uint8_t *buf, size_t len, store_loc *l);
/* Index records for a manifest's snapshot (snapshot CF + sandbox CF) into batch. */
void index_put_snapshot(store_t *s, rocksdb_writebatch_t *b, const store_snapshot *snap);
int index_write(store_t *s, rocksdb_writebatch_t *b, int sync, store_err *e);

/* pack.c */
char *pack_path(const store_t *s, uint64_t pack, int tmp);
/* Parses and checks a pack's footer. On success *groups (n entries) and *ids (nchunks)
 * are malloc'd: group g holds ids[first[g] .. first[g]+npages). */
typedef store_group pack_group;
int pack_read_footer(int fd, uint64_t fsize, pack_group **groups, uint32_t *ngroups,
                     store_id **ids, uint32_t *nchunks, store_err *e, const char *name);
int pack_fd(store_t *s, uint64_t pack, store_err *e);

/* manifest.c */
int manifest_encode(const store_snapshot *snap, const uint64_t *packs, size_t npacks,
                    uint8_t **out, size_t *len, store_err *e);
int manifest_decode(const uint8_t *buf, size_t len, store_snapshot **out, uint64_t **packs,
                    size_t *npacks, store_err *e);
char *manifest_record_json(const store_snapshot *snap);
int manifest_load_path(const char *path, store_snapshot **out, store_err *e);

/* files.c */
int files_write(store_t *s, store_snapshot *snap, store_err *e);

/* pool.c */
struct pool *pool_new(unsigned threads);
void pool_free(struct pool *p);

#endif
