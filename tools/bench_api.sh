#!/usr/bin/env bash
# `make bench`, the API part: tools/bench/api.py on a small generated corpus (2 sandboxes x
# 2 snapshots, 256 MiB memory, 64 MiB disk), and the fleet through the API on the main
# bench's corpus (BENCH_SIZE, when tools/bench.sh made it; else the small one).
#   BENCH_API_SECONDS (30) is each load round; BENCH_API_ROUNDS (2) how many.
set -euo pipefail
cache=${BENCH_CACHE:-./bench-cache}
mkdir -p "$cache"
cache=$(cd "$cache" && pwd)
cd "$(dirname "$0")/.."
BUILD=${BUILD:-build}
[ -x "$BUILD/cairn-apiload" ] || { echo "bench_api: $BUILD/cairn-apiload not built (make $BUILD/cairn-apiload)" >&2; exit 1; }
"$BUILD/cairn-corpus" --out "$cache/corpus-api" --sandboxes 2 --snapshots 2 --memory-size 256M \
    --disk-size 64M >&2
fleet=$cache/corpus-${BENCH_SIZE:-small}
[ -d "$fleet" ] || fleet=$cache/corpus-api
exec python3 tools/bench/api.py --cairn "$BUILD/cairn" --apiload "$BUILD/cairn-apiload" \
    --corpus "$cache/corpus-api" --fleet "$fleet" --work "$cache/api" \
    --seconds "${BENCH_API_SECONDS:-30}" --rounds "${BENCH_API_ROUNDS:-2}" --connections 64
