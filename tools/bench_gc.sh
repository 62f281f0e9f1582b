#!/usr/bin/env bash
# make bench-gc: cairn gc over fleets of many sandboxes (issue 8: gc must stay fast at 100k).
# For each size N in BENCH_GC_SIZES (default "1000 10000 100000"), cairn-gcfleet fills a
# fresh store with N sandboxes of one one-page snapshot each (one in 100 has a second, so gc
# drops 1% as superseded and deletes their packs), then one `cairn gc` runs on it.
# Stores live in BENCH_GC_DIR (default /dev/shm: the figure is gc's own work, not the
# disk's fsyncs). One line per size: sandboxes, gc seconds (wall), CPU seconds, drops.
set -euo pipefail
BUILD=${BUILD:-build}
SIZES=${BENCH_GC_SIZES:-1000 10000 100000}
ROOT=$(mktemp -d "${BENCH_GC_DIR:-/dev/shm}/cairn-bench-gc.XXXXXX")
trap 'rm -rf "$ROOT"' EXIT
for n in $SIZES; do
    "$BUILD/cairn-gcfleet" "$ROOT/s$n" "$n"
    /usr/bin/time -f '%e %U %S' -o "$ROOT/time" "$BUILD/cairn" gc --store "$ROOT/s$n" --json \
        >"$ROOT/gc.json" 2>/dev/null
    read -r wall user sys <"$ROOT/time"
    drops=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["dropped_snapshots"])' "$ROOT/gc.json")
    printf 'gc: %7d sandboxes  %8.2f s  (%.2f s CPU)  %d snapshots dropped\n' \
        "$n" "$wall" "$(awk -v u="$user" -v s="$sys" 'BEGIN { print u + s }')" "$drops"
    rm -rf "$ROOT/s$n"
done
