/* Working-set lists: the one encoder and parser of DIR/cache/wset-*.bin (restore/lazy.h). */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <xxhash.h>

#include "restore/lazy.h"

#define WS_MAGIC "CAIRNWS1"
#define WS_HDR 16
#define WS_MAX (1u << 24)           /* 64 GiB of 4 KiB pages: more is not a working set */

static void put64(uint8_t *p, uint64_t v)
{
    for (int i = 0; i < 8; i++) p[i] = (uint8_t)(v >> (8 * i));
}

static uint64_t get64(const uint8_t *p)
{
    uint64_t v = 0;
    for (int i = 0; i < 8; i++) v |= (uint64_t)p[i] << (8 * i);
    return v;
}

static int write_atomic(const char *dir, const char *name, const uint64_t *pages, size_t n, store_err *e)
{
    if (n > WS_MAX) n = WS_MAX;
    char cdir[4096], path[4200], tmp[4300];
    snprintf(cdir, sizeof cdir, "%s/cache", dir);
    if (snprintf(path, sizeof path, "%s/%s", cdir, name) >= (int)sizeof path)
        return store_errf(e, -ENAMETOOLONG, "%s: path too long", dir);
    snprintf(tmp, sizeof tmp, "%s.%d.tmp", path, (int)getpid());
    if (mkdir(cdir, 0700) < 0 && errno != EEXIST) return store_errf(e, -errno, "%s: %s", cdir, strerror(errno));
    size_t len = WS_HDR + n * 8 + 8;
    uint8_t *buf = malloc(len);
    if (!buf) return store_errf(e, -ENOMEM, "out of memory");
    memcpy(buf, WS_MAGIC, 8);
    put64(buf + 8, (uint64_t)n);
    for (size_t i = 0; i < n; i++) put64(buf + WS_HDR + i * 8, pages[i]);
    put64(buf + len - 8, XXH3_64bits(buf, len - 8));
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    int rc = fd < 0 ? -errno : 0;
    for (size_t off = 0; !rc && off < len;) {
        ssize_t w = write(fd, buf + off, len - off);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) rc = w < 0 ? -errno : -EIO;
        else off += (size_t)w;
    }
    /* Not fsynced: a working set is a hint; a torn one fails its checksum and is ignored. */
    if (fd >= 0 && close(fd) < 0 && !rc) rc = -errno;
    if (!rc && rename(tmp, path) < 0) rc = -errno;
    free(buf);
    if (rc) {
        unlink(tmp);
        return store_errf(e, rc, "%s: %s", path, strerror(-rc));
    }
    return 0;
}

int restore_wset_save(const char *dir, const char *snap_id, const uint64_t *pages, size_t n,
                      store_err *e)
{
    if (store_snapid_valid(snap_id)) return store_errf(e, -EINVAL, "'%s' is not a snapshot id", snap_id);
    char name[64];
    snprintf(name, sizeof name, "wset-%s.bin", snap_id);
    return write_atomic(dir, name, pages, n, e);
}

int restore_wset_save_pending(const char *dir, const char *sandbox, const uint64_t *pages,
                              size_t n, store_err *e)
{
    if (store_name_valid(sandbox)) return store_errf(e, -EINVAL, "'%s' is not a sandbox name", sandbox);
    char name[STORE_NAME_MAX + 32];
    snprintf(name, sizeof name, "wset-pending-%s.bin", sandbox);
    return write_atomic(dir, name, pages, n, e);
}

int restore_wset_adopt(const char *dir, const char *sandbox, const char *snap_id, store_err *e)
{
    if (store_name_valid(sandbox)) return store_errf(e, -EINVAL, "'%s' is not a sandbox name", sandbox);
    if (store_snapid_valid(snap_id)) return store_errf(e, -EINVAL, "'%s' is not a snapshot id", snap_id);
    char from[4400], to[4400];
    snprintf(from, sizeof from, "%s/cache/wset-pending-%s.bin", dir, sandbox);
    snprintf(to, sizeof to, "%s/cache/wset-%s.bin", dir, snap_id);
    if (rename(from, to) < 0) {
        if (errno == ENOENT) return 0;          /* no lazy wake recorded one */
        return store_errf(e, -errno, "%s: %s", from, strerror(errno));
    }
    return 0;
}

int restore_wset_load(const char *dir, const char *snap_id, uint64_t **pages, size_t *n,
                      store_err *e)
{
    *pages = NULL;
    *n = 0;
    if (store_snapid_valid(snap_id)) return store_errf(e, -EINVAL, "'%s' is not a snapshot id", snap_id);
    char path[4400];
    snprintf(path, sizeof path, "%s/cache/wset-%s.bin", dir, snap_id);
    FILE *f = fopen(path, "rbe");
    if (!f) return store_errf(e, -errno, "%s: %s", path, strerror(errno));
    uint8_t hdr[WS_HDR];
    int rc = fread(hdr, 1, WS_HDR, f) == WS_HDR && !memcmp(hdr, WS_MAGIC, 8) ? 0 : -EBADMSG;
    uint64_t cnt = rc ? 0 : get64(hdr + 8);
    if (!rc && cnt > WS_MAX) rc = -EBADMSG;
    size_t len = WS_HDR + (size_t)cnt * 8 + 8;
    uint8_t *buf = rc ? NULL : malloc(len);
    if (!rc && !buf) rc = -ENOMEM;
    if (!rc) {
        memcpy(buf, hdr, WS_HDR);
        if (fread(buf + WS_HDR, 1, len - WS_HDR, f) != len - WS_HDR || fgetc(f) != EOF) rc = -EBADMSG;
    }
    if (!rc && get64(buf + len - 8) != XXH3_64bits(buf, len - 8)) rc = -EBADMSG;
    uint64_t *out = NULL;
    if (!rc && !(out = malloc((cnt ? cnt : 1) * sizeof *out))) rc = -ENOMEM;
    for (uint64_t i = 0; !rc && i < cnt; i++) out[i] = get64(buf + WS_HDR + i * 8);
    fclose(f);
    free(buf);
    if (rc) {
        free(out);
        return store_errf(e, rc, "%s: %s", path, rc == -EBADMSG ? "damaged working-set file" : strerror(-rc));
    }
    *pages = out;
    *n = (size_t)cnt;
    return 0;
}
