#!/usr/bin/env bash
# make fuzz: builds the libFuzzer targets (clang, -fsanitize=fuzzer,address,undefined) of
# every parser of damageable or hostile bytes (tests/fuzz/fuzz_*.c) and runs each for
# FUZZ_SECONDS (default 60) from its seed corpus (tests/fuzz/corpus/TARGET/, plus small
# ext4 images made here with mke2fs -d for the image reader). An input that once crashed a
# target is kept in its corpus folder (crash-WHAT), so every run replays it first.
#   FUZZ_TARGETS="manifest pack"  only these targets
# A crash, leak, UB report, hang or memory blow-up fails this script and leaves the input
# in $FUZZ_DIR/TARGET/crash-* (replay: build-fuzz/fuzz_TARGET FILE). One line per target
# goes to $FUZZ_DIR/summary: "TARGET EXECUTIONS CRASHES SECONDS".
set -euo pipefail
cd "$(dirname "$0")/.."
B=${FUZZ_BUILD:-build-fuzz}
SECS=${FUZZ_SECONDS:-60}
DIR=${FUZZ_DIR:-$B/fuzz-work}
ALL=$(ls tests/fuzz/fuzz_*.c | sed 's|.*/fuzz_||; s|\.c$||' | tr '\n' ' ')
TARGETS=${FUZZ_TARGETS:-$ALL}
# The link line is the Makefile's: a copy here went stale when the store gained S3.
LIBS=$(make -s print-LDLIBS)
SAN=address,undefined
make -s BUILD="$B" CC=clang SAN=$SAN,fuzzer-no-link OPT=-O1 "$B/libcairn.a" >/dev/null
for t in $TARGETS; do
    src=tests/fuzz/fuzz_$t.c
    [ -f "$src" ] || { echo "fuzz: no target $t ($src)" >&2; exit 2; }
    if [ ! "$B/fuzz_$t" -nt "$src" ] || [ "$B/libcairn.a" -nt "$B/fuzz_$t" ]; then
        clang -O1 -g -std=c11 -D_GNU_SOURCE -Wall -Wextra -Werror -I. -fsanitize=fuzzer,$SAN -fno-sanitize-recover=all \
            "$src" "$B/libcairn.a" $LIBS -o "$B/fuzz_$t"
    fi
done

# The image reader's seeds: small real ext4/ext2 images (1 MiB each, so made, not kept).
img_seeds() {
    local d=$1 t
    [ -s "$d/basic.img" ] && return 0
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
            -d "$t/tree" "$d/$name.img" 1M >/dev/null 2>&1
    done
    rm -rf "$t"
}

mkdir -p "$DIR"
: >"$DIR/summary"
failed=0
for t in $TARGETS; do
    w=$DIR/$t
    mkdir -p "$w/corpus" "$w/seeds" "$w/previous"
    # Findings of an earlier run are kept aside, so this run counts only its own.
    find "$w" -maxdepth 1 -type f \( -name 'crash-*' -o -name 'leak-*' -o -name 'timeout-*' -o -name 'oom-*' \) \
        -exec mv -t "$w/previous" {} +
    if [ "$t" = image ]; then
        img_seeds "$w/seeds"; maxlen=1100000; seeds="$w/seeds tests/fuzz/corpus/image"
    else
        maxlen=65536; seeds=tests/fuzz/corpus/$t
    fi
    t0=$EPOCHREALTIME
    # -rss_limit_mb and -timeout make memory blow-ups and hangs findings, as the child's limits would.
    rc=0
    "$B/fuzz_$t" -max_total_time="$SECS" -max_len=$maxlen -timeout=10 -rss_limit_mb=2048 \
        -artifact_prefix="$w/" -print_final_stats=1 "$w/corpus" $seeds 2>"$w/log" || rc=$?
    secs=$(awk -v a="$t0" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.0f", b - a }')
    execs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$w/log" | grep -o '[0-9]*$' || echo 0)
    crashes=$(ls "$w" | grep -cE '^(crash|leak|timeout|oom)-' || true)
    [ "$rc" = 0 ] || [ "$crashes" -gt 0 ] || crashes=1
    echo "$t ${execs:-0} $crashes $secs" >>"$DIR/summary"
    if [ "$rc" != 0 ]; then
        tail -40 "$w/log"
        echo "fuzz: $t FAILED (exit $rc), see $w/log and $w/crash-* (replay: $B/fuzz_$t FILE)" >&2
        failed=1
    else
        echo "fuzz: $t: ${execs:-0} executions in ${secs}s, no crash, leak or hang"
    fi
done
[ "$failed" = 0 ] || exit 1
echo "fuzz: no crash, leak or hang"
