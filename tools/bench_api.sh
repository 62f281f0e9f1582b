#!/usr/bin/env bash
# `make bench`, the API part: tools/bench/api.py on a small generated corpus (2 sandboxes x
# 2 snapshots, 256 MiB memory, 64 MiB disk).  BENCH_API_SECONDS (30) is the load phase.
set -euo pipefail
cache=${BENCH_CACHE:-./bench-cache}
mkdir -p "$cache"
cache=$(cd "$cache" && pwd)
cd "$(dirname "$0")/.."
BUILD=${BUILD:-build}
"$BUILD/cairn-corpus" --out "$cache/corpus-api" --sandboxes 2 --snapshots 2 --memory-size 256M \
    --disk-size 64M >&2
exec python3 tools/bench/api.py --cairn "$BUILD/cairn" --corpus "$cache/corpus-api" --work "$cache/api" \
    --seconds "${BENCH_API_SECONDS:-30}" --connections 64
