#!/usr/bin/env bash
# make fuzz: builds the image-reader fuzzer (clang, libFuzzer, ASan), seeds it with small
# real ext4 images made by mke2fs -d, and runs it for FUZZ_SECONDS (default 60).
# A crash, leak or hang of the reader fails this script and leaves the input in
# $FUZZ_DIR/crash-* (replay: build-fuzz/fuzz_image FILE).
set -euo pipefail
cd "$(dirname "$0")/.."
B=${FUZZ_BUILD:-build-fuzz}
SECS=${FUZZ_SECONDS:-60}
DIR=${FUZZ_DIR:-$B/fuzz-work}
LIBS="-lrocksdb -lzstd -lxxhash -ljansson -lext2fs -lcom_err -lpthread -lm"
make -s BUILD="$B" CC=clang SAN=address,fuzzer-no-link OPT=-O1 "$B/libcairn.a" >/dev/null
clang -O1 -g -std=c11 -D_GNU_SOURCE -I. -fsanitize=fuzzer,address tests/fuzz/fuzz_image.c \
    "$B/libcairn.a" $LIBS -o "$B/fuzz_image"

mkdir -p "$DIR/seeds" "$DIR/corpus"
if [ ! -s "$DIR/seeds/basic.img" ]; then
    t=$(mktemp -d)
    mkdir -p "$t/tree/home/ubuntu/output/deep/er" "$t/tree/home/ubuntu/.ssh"
    echo report >"$t/tree/home/ubuntu/output/report.md"
    head -c 70000 /dev/urandom >"$t/tree/home/ubuntu/output/deep/er/blob.bin"
    printf 'x' >"$t/tree/home/ubuntu/tiny"
    echo key >"$t/tree/home/ubuntu/.ssh/id_ed25519"
    ln -s ../output/report.md "$t/tree/home/ubuntu/link"
    ln "$t/tree/home/ubuntu/tiny" "$t/tree/home/ubuntu/hard"
    truncate -s 300000 "$t/tree/home/ubuntu/sparse"
    for f in basic:ext4 inline:ext4 ext2:ext2; do
        name=${f%%:*} type=${f#*:}
        opts=(); [ "$name" = inline ] && opts=(-O inline_data)
        E2FSPROGS_FAKE_TIME=1700000000 mke2fs -q -F -t "$type" -b 1024 -N 64 "${opts[@]}" \
            -U 0b8f3a4e-0000-4000-8000-000000000001 -E hash_seed=0b8f3a4e-0000-4000-8000-000000000001 \
            -d "$t/tree" "$DIR/seeds/$name.img" 1M
    done
    rm -rf "$t"
fi
echo "fuzz: running the image reader for ${SECS}s (seeds: $(ls "$DIR/seeds" | wc -l) images)"
# -rss_limit_mb and -timeout make memory blow-ups and hangs findings, as the child's limits would.
"$B/fuzz_image" -max_total_time="$SECS" -max_len=1100000 -timeout=10 -rss_limit_mb=2048 \
    -artifact_prefix="$DIR/" -print_final_stats=1 "$DIR/corpus" "$DIR/seeds" 2>"$DIR/log" || {
    tail -40 "$DIR/log"; echo "fuzz: FAILED, see $DIR/log and $DIR/crash-*" >&2; exit 1; }
grep -E "stat::number_of_executed_units|stat::peak_rss_mb" "$DIR/log" || true
echo "fuzz: no crash, leak or hang"
