#!/usr/bin/env bash
# `make bench`: Cairn beside restic, borg, casync and the limits (cat, cp, zstd, the
# page-level ideal) on one generated fleet corpus.  Prints the table and writes
# docs/performance.md (between the bench markers), docs/bench.png and
# $BENCH_CACHE/bench-results.json.
#   BENCH_SIZE=small|full   corpus shape (small: a couple of minutes; full: under 20)
#   BENCH_CACHE=DIR         corpus and results, reused between runs (./bench-cache)
#   BENCH_RUNS=N            runs per system, best taken (small 1, full 3)
#   BENCH_ONLY=a,b          only these systems, docs untouched
#                           (cairn restic borg borg-fixed casync cat cp zstd1 zstd3)
set -euo pipefail
t0=$(date +%s.%N)
size=${BENCH_SIZE:-small}
cache=${BENCH_CACHE:-./bench-cache}
mkdir -p "$cache"
cache=$(cd "$cache" && pwd)  # relative to where we were called; cairn-corpus wants it absolute
cd "$(dirname "$0")/.."
BUILD=${BUILD:-build}
# The shapes are the smallest fleets the issue allows (memory files of 512 MiB, several
# sandboxes with successive snapshots), because the peers set the clock: on 2 cores casync
# takes ~8 s per 512 MiB file and restic and borg ~5 s, so one round of all systems costs
# about 30 s per snapshot.  small: 1 round of 4 snapshots; full: 3 rounds of 9.
case $size in
    small) sandboxes=2 snapshots=2 mem=512M disk=64M runs=1 ;;
    full)  sandboxes=3 snapshots=3 mem=512M disk=128M runs=3 ;;
    *) echo "bench: BENCH_SIZE must be small or full" >&2; exit 2 ;;
esac
runs=${BENCH_RUNS:-$runs}
shape="$sandboxes sandboxes x $snapshots snapshots, memory $mem, disk $disk each"
for tool in restic borg casync zstd gnuplot /usr/bin/time python3 cmp; do
    command -v "$tool" >/dev/null || { echo "bench: $tool missing (tools/deps.sh bench)" >&2; exit 1; }
done
[ -x "$BUILD/cairn-corpus" ] || { echo "bench: $BUILD/cairn-corpus not built (make)" >&2; exit 1; }
mkdir -p docs
corpus=$cache/corpus-$size
echo "bench: corpus $corpus ($shape)" >&2
"$BUILD/cairn-corpus" --out "$corpus" --sandboxes "$sandboxes" --snapshots "$snapshots" \
    --memory-size "$mem" --disk-size "$disk" >&2
# A partial run (BENCH_ONLY) prints its table but leaves the docs alone.
docs=(--doc docs/performance.md --png docs/bench.png)
[ -n "${BENCH_ONLY:-}" ] && docs=()
BENCH_T0=$t0 exec python3 tools/bench/run.py --corpus "$corpus" --cache "$cache" \
    --cairn "$BUILD/cairn" --runs "$runs" --size "$size" --shape "$shape" \
    --only "${BENCH_ONLY:-}" "${docs[@]}"
