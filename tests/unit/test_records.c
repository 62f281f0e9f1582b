/* The small record formats of the S3 backend and the clock rule they feed (docs/s3.md,
 * "Whose clock"): store_kv_text / store_kv_parse, store_rfc3339_parse (the listings'
 * LastModified), store_gc_record_ripe. */
#include <stdint.h>
#include <string.h>

#include "tests/unit/check.h"
#include "gc/gc.h"
#include "store/internal.h"

static void test_kv(void)
{
    char buf[128];
    uint64_t nonce = 0x00000000000000ffULL, got_nonce = 0;
    uint32_t node = 0;
    int64_t v = 0;
    int n = store_kv_text(buf, sizeof buf, 0xabcdef, "ttl_ms", 600000, &nonce);
    CHECK(n > 0 && !strcmp(buf, "node=abcdef\nttl_ms=600000\nnonce=00000000000000ff\n"));
    CHECK(store_kv_parse((const uint8_t *)buf, (size_t)n, "ttl_ms", &node, &v, &got_nonce) == 0);
    CHECK(node == 0xabcdef && v == 600000 && got_nonce == nonce);
    /* Another field's record is not this one's. */
    CHECK(store_kv_parse((const uint8_t *)buf, (size_t)n, "stale_ms", &node, &v, &got_nonce) == -1);
    n = store_kv_text(buf, sizeof buf, 0x00beef, "stale_ms", 600000, NULL);
    CHECK(n > 0 && !strcmp(buf, "node=00beef\nstale_ms=600000\n"));
    CHECK(store_kv_parse((const uint8_t *)buf, (size_t)n, "stale_ms", &node, &v, NULL) == 0 && node == 0x00beef);
    /* A record without the nonce its kind needs, and an older lease (an end time). */
    CHECK(store_kv_parse((const uint8_t *)buf, (size_t)n, "stale_ms", &node, &v, &got_nonce) == -1);
    const char *old = "node=abcdef\nexpires_ms=1764547200000\nnonce=00000000000000ff\n";
    CHECK(store_kv_parse((const uint8_t *)old, strlen(old), "ttl_ms", &node, &v, &got_nonce) == -1);
    CHECK(store_kv_text(buf, 8, 1, "ttl_ms", 1, NULL) == -1);                  /* too small */
}

static void test_time(void)
{
    int64_t ms = 0;
    CHECK(store_rfc3339_parse("2026-12-01T00:01:29.123Z", &ms) == 0 && ms == 1796083289123LL);
    CHECK(store_rfc3339_parse("2026-12-01T00:01:29Z", &ms) == 0 && ms == 1796083289000LL);
    CHECK(store_rfc3339_parse("2026-12-01T02:01:29.5+02:00", &ms) == 0 && ms == 1796083289500LL);
    CHECK(store_rfc3339_parse("2026-12-01T00:01:29", &ms) == -1);             /* no zone */
    CHECK(store_rfc3339_parse("2026-02-30T00:00:00Z", &ms) == -1);
    CHECK(store_rfc3339_parse("", &ms) == -1);
    CHECK(gc_parse_time("1796083289", &ms) == 0 && ms == 1796083289000LL);
    CHECK(gc_parse_time("2026-12-01T00:01:29Z", &ms) == 0 && ms == 1796083289000LL);
}

static void test_ripe(void)
{
    /* A record's age is the bucket's: its Last-Modified (rounded up by the listing's 1 s)
     * against the bucket's now; its writer's clock (at_ms) plays no part. */
    store_gc_record r = {.at_ms = 0, .mtime_ms = 1000000};
    int64_t wait = 20000;
    CHECK(!store_gc_record_ripe(&r, 1000000 + wait, wait));
    CHECK(!store_gc_record_ripe(&r, 1000000 + wait + BACKEND_MTIME_SLACK_MS - 1, wait));
    CHECK(store_gc_record_ripe(&r, 1000000 + wait + BACKEND_MTIME_SLACK_MS, wait));
    r.at_ms = 1000000 + 3 * 3600 * 1000;              /* written by a node 3 h ahead */
    CHECK(store_gc_record_ripe(&r, 1000000 + wait + BACKEND_MTIME_SLACK_MS, wait));
    r.at_ms = 1000000 - 3 * 3600 * 1000;              /* ... or 3 h behind */
    CHECK(!store_gc_record_ripe(&r, 1000000 + 1, wait));
}

int main(void)
{
    test_kv();
    test_time();
    test_ripe();
    return failures != 0;
}
