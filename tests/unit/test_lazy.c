/* Lazy wake's parsers: the region list (every way a hostile list can be wrong) and the
 * working-set file (round trip, damage, absence). */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <xxhash.h>
#include <zstd.h>

#include "restore/lazy.h"
#include "tests/unit/check.h"

#define MEM (64ull << 20)

static int parse(const char *json, restore_region **r, size_t *n)
{
    store_err e;
    return restore_regions_parse(json, strlen(json), MEM, r, n, &e);
}

static void test_regions_ok(void)
{
    restore_region *r = NULL;
    size_t n = 0;
    /* Two regions, out of order: sorted by base; the three page-size spellings. */
    CHECK(parse("[{\"base_host_virt_addr\": 1073741824, \"size\": 8192, \"offset\": 4096, \"page_size\": 4096},"
                " {\"base_host_virt_addr\": 4096, \"size\": 4096, \"offset\": 0}]", &r, &n) == 0);
    CHECK(n == 2 && r && r[0].base == 4096 && r[0].page_size == 4096 && r[1].offset == 4096 && r[1].size == 8192);
    free(r);
    CHECK(parse("[{\"base_host_virt_addr\": 2097152, \"size\": 2097152, \"offset\": 0, \"page_size_kib\": 2097152}]",
                &r, &n) == 0);
    CHECK(n == 1 && r[0].page_size == 2097152);
    free(r);
    /* The whole file, exactly. */
    char buf[200];
    snprintf(buf, sizeof buf, "[{\"base_host_virt_addr\": 4096, \"size\": %llu, \"offset\": 0}]", MEM);
    CHECK(parse(buf, &r, &n) == 0 && n == 1);
    free(r);
}

static void test_regions_hostile(void)
{
    static const char *bad[] = {
        "", "{}", "[]", "[1]", "[{}]", "nul",
        "[{\"base_host_virt_addr\": 4096, \"size\": 4096}]",                           /* no offset */
        "[{\"base_host_virt_addr\": -4096, \"size\": 4096, \"offset\": 0}]",
        "[{\"base_host_virt_addr\": 4096, \"size\": \"4096\", \"offset\": 0}]",
        "[{\"base_host_virt_addr\": 4096, \"size\": 4096.0, \"offset\": 0}]",
        "[{\"base_host_virt_addr\": 4096, \"size\": 0, \"offset\": 0}]",
        "[{\"base_host_virt_addr\": 4097, \"size\": 4096, \"offset\": 0}]",            /* misaligned */
        "[{\"base_host_virt_addr\": 4096, \"size\": 4096, \"offset\": 2048}]",
        "[{\"base_host_virt_addr\": 4096, \"size\": 6144, \"offset\": 0}]",
        "[{\"base_host_virt_addr\": 4096, \"size\": 4096, \"offset\": 67108864}]",     /* past the file */
        "[{\"base_host_virt_addr\": 4096, \"size\": 67112960, \"offset\": 0}]",
        "[{\"base_host_virt_addr\": 9223372036854771712, \"size\": 9223372036854771712, \"offset\": 0}]",
        "[{\"base_host_virt_addr\": 4096, \"size\": 4096, \"offset\": 9223372036854771712}]",
        "[{\"base_host_virt_addr\": 4096, \"size\": 4096, \"offset\": 0, \"page_size\": 3000}]",
        "[{\"base_host_virt_addr\": 4096, \"size\": 4096, \"offset\": 0, \"page_size\": 2048}]",
        "[{\"base_host_virt_addr\": 0, \"size\": 1073741824, \"offset\": 0, \"page_size\": 1073741824}]",
        ("[{\"base_host_virt_addr\": 4096, \"size\": 8192, \"offset\": 0},"
         " {\"base_host_virt_addr\": 8192, \"size\": 4096, \"offset\": 0}]"),            /* overlap */
        "[{\"base_host_virt_addr\": 4096, \"size\": 4096, \"offset\": 0, \"size\": 8192}]", /* duplicate key */
        "[{\"base_host_virt_addr\": 99999999999999999999999, \"size\": 4096, \"offset\": 0}]",
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        restore_region *r = (restore_region *)1;
        size_t n = 7;
        int rc = parse(bad[i], &r, &n);
        if (rc == 0) fprintf(stderr, "accepted: %s\n", bad[i]);
        CHECK(rc < 0 && r == NULL && n == 0);
    }
    /* 65 regions: over the limit. */
    char *big = malloc(65 * 80 + 8);
    size_t len = 0;
    len += (size_t)sprintf(big + len, "[");
    for (int i = 0; i < 65; i++)
        len += (size_t)sprintf(big + len, "%s{\"base_host_virt_addr\": %d, \"size\": 4096, \"offset\": 0}",
                               i ? "," : "", (i + 1) * 8192);
    sprintf(big + len, "]");
    restore_region *r = NULL;
    size_t n = 0;
    CHECK(parse(big, &r, &n) == -EINVAL);
    free(big);
    /* Incomplete JSON says so (the server reads more), complete garbage does not. */
    store_err e;
    const char *part = "[{\"base_host_virt_addr\": 4096, \"si";
    CHECK(restore_regions_parse(part, strlen(part), MEM, &r, &n, &e) == -ENODATA);
    CHECK(restore_regions_parse("]]", 2, MEM, &r, &n, &e) == -EINVAL);
}

static void test_wset(void)
{
    char dir[] = "/tmp/cairn-test-lazy.XXXXXX";
    CHECK(mkdtemp(dir) != NULL);
    const char *id = "0123456789abcdef0123";
    uint64_t pages[1000];
    for (int i = 0; i < 1000; i++) pages[i] = (uint64_t)(i * 7919 % 16384);
    store_err e;
    uint64_t *got = NULL;
    size_t n = 0;
    CHECK(restore_wset_load(dir, id, &got, &n, &e) == -ENOENT);
    CHECK(restore_wset_save_pending(dir, "box1", pages, 1000, &e) == 0);
    CHECK(restore_wset_adopt(dir, "box1", id, &e) == 0);
    CHECK(restore_wset_adopt(dir, "box1", id, &e) == 0);          /* nothing pending: fine */
    CHECK(restore_wset_load(dir, id, &got, &n, &e) == 0 && n == 1000 && !memcmp(got, pages, sizeof pages));
    free(got);
    CHECK(restore_wset_save(dir, id, pages, 0, &e) == 0);           /* an empty set is a set */
    CHECK(restore_wset_load(dir, id, &got, &n, &e) == 0 && n == 0);
    free(got);
    /* A flipped byte and a cut file are both "damaged", never a shorter list. */
    CHECK(restore_wset_save(dir, id, pages, 1000, &e) == 0);
    char path[256];
    snprintf(path, sizeof path, "%s/cache/wset-%s.bin", dir, id);
    FILE *f = fopen(path, "r+b");
    CHECK(f && fseek(f, 100, SEEK_SET) == 0 && fputc(0x5A, f) != EOF && fclose(f) == 0);
    got = NULL;
    CHECK(restore_wset_load(dir, id, &got, &n, &e) == -EBADMSG && got == NULL);
    CHECK(restore_wset_save(dir, id, pages, 1000, &e) == 0);
    CHECK(truncate(path, 16 + 8 * 500) == 0);
    CHECK(restore_wset_load(dir, id, &got, &n, &e) == -EBADMSG);
    /* Names that could leave the cache folder are refused. */
    CHECK(restore_wset_save_pending(dir, "../x", pages, 1, &e) == -EINVAL);
    CHECK(restore_wset_save(dir, "../../etc/passwd", pages, 1, &e) == -EINVAL);
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    CHECK(system(cmd) == 0);
}

static void put_le(uint8_t *p, uint64_t v, int n)
{
    for (int i = 0; i < n; i++) p[i] = (uint8_t)(v >> (8 * i));
}

/* A crafted manifest whose checksum holds but whose recipe does not decode (a zero run of
 * 3 pages in a 2-page blob): the page source opens (the recipe is expanded in the
 * background) and every page then fails with the reason; nothing reads as zeros. */
static void test_crafted_recipe(void)
{
    char dir[] = "/tmp/cairn-test-lazy.XXXXXX";
    CHECK(mkdtemp(dir) != NULL);
    char sd[300], path[400];
    snprintf(sd, sizeof sd, "%s/s", dir);
    store_err e;
    CHECK(store_init(sd, &e) == 0);
    const char *id = "0123456789abcdef0123";
    char meta[512];
    int ml = snprintf(meta, sizeof meta,
                      "{\"snapshot\":\"%s\",\"tenant\":\"t\",\"sandbox\":\"b\",\"tier\":\"\",\"parent\":\"\","
                      "\"kind\":\"full\",\"time_ms\":1,\"packs\":[],"
                      "\"blob_list\":[{\"name\":\"memory\",\"size\":8192,\"npages\":2}]}", id);
    uint8_t raw[1] = {3 << 1 | 1}, buf[1024];
    memcpy(buf, "CAIRNMF1", 8);
    put_le(buf + 8, 1, 4);
    put_le(buf + 12, (uint64_t)ml, 4);
    memcpy(buf + 16, meta, (size_t)ml);
    size_t n = 16 + (size_t)ml;
    size_t zl = ZSTD_compress(buf + n + 16, sizeof buf - n - 40, raw, sizeof raw, 3);
    CHECK(!ZSTD_isError(zl));
    put_le(buf + n, sizeof raw, 8);
    put_le(buf + n + 8, zl, 8);
    n += 16 + zl;
    put_le(buf + n, XXH3_64bits(buf, n), 8);
    memcpy(buf + n + 8, "CAIRNMFE", 8);
    n += 16;
    snprintf(path, sizeof path, "%s/manifests/%s.cmf", sd, id);
    FILE *f = fopen(path, "wb");
    CHECK(f && fwrite(buf, 1, n, f) == n && fclose(f) == 0);
    restore_pages *p = NULL;
    CHECK(restore_pages_open(sd, id, "memory", 0, &p, &e) == 0);
    if (p) {
        uint8_t page[4096];
        CHECK(restore_pages_count(p) == 2);
        CHECK(restore_pages_is_zero(p, 0) == 0);
        CHECK(restore_pages_get(p, 0, page, &e) == -EBADMSG && strstr(e.msg, "malformed"));
        CHECK(restore_pages_get_cached(p, 1, page, &e) == -EBADMSG);
        restore_pages_close(p);
    }
    /* The same bytes with a flipped byte: refused at open (the checksum). */
    buf[20] ^= 1;
    f = fopen(path, "wb");
    CHECK(f && fwrite(buf, 1, n, f) == n && fclose(f) == 0);
    p = NULL;
    CHECK(restore_pages_open(sd, id, "memory", 0, &p, &e) == -EBADMSG && !p);
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    CHECK(system(cmd) == 0);
}

int main(void)
{
    test_regions_ok();
    test_regions_hostile();
    test_wset();
    test_crafted_recipe();
    if (failures) fprintf(stderr, "test_lazy: %d checks failed\n", failures);
    return failures ? 1 : 0;
}
