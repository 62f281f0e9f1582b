#!/usr/bin/env bash
# Installs what Cairn needs to build, test and benchmark, from Debian's packages.
# Idempotent and quiet when everything is present: `make` calls it before building.
#   tools/deps.sh build   libraries + compilers + e2fsprogs (make, make test)
#   tools/deps.sh bench   + the peers and plotting (make bench)
#   tools/deps.sh vm      + QEMU and the guest's pieces (tests/e2e calls it itself)
#   tools/deps.sh browser + Chromium, Node.js and tests/node_modules (npm ci from
#                         tests/package-lock.json) for the console's browser test
set -euo pipefail
want=(build-essential pkg-config clang libclang-rt-14-dev librocksdb-dev libzstd-dev libxxhash-dev libs3-dev
      libevent-dev libext2fs-dev libjansson-dev libssl-dev curl python3-yaml e2fsprogs zstd time fuse3 libfuse3-dev)
# The S3 backend (libcurl) and its tests' real S3: Ceph RGW on loopback (tests/rgw.sh).
want+=(libcurl4-openssl-dev curl radosgw ceph-mon ceph-osd uuid-runtime python3)
case ${1:-build} in
    bench) want+=(restic borgbackup casync gnuplot-nox) ;;
    # The guest kernel is not a dependency: the e2e test fetches it with
    # `apt-get download` into its own cache, so the host's /boot is untouched.
    vm) want+=(qemu-system-x86 busybox-static cpio kmod) ;;
    browser) want+=(chromium nodejs) ;;
esac
missing=()
for p in "${want[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing+=("$p")
done
# Debian's nodejs comes without npm (a package of its own); NodeSource's carries it.
[ "${1:-build}" = browser ] && ! command -v npm >/dev/null && missing+=(npm)
if [ ${#missing[@]} -gt 0 ]; then
    echo "deps: installing ${missing[*]}" >&2
    SUDO=; [ "$(id -u)" -ne 0 ] && SUDO=sudo
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
if [ "${1:-build}" = browser ]; then
    # npm ci again only when the lockfile changed since the last install.
    t=$(cd "$(dirname "$0")/../tests" && pwd)
    if ! cmp -s "$t/package-lock.json" "$t/node_modules/.cairn-lock" 2>/dev/null; then
        echo "deps: npm ci in tests/" >&2
        (cd "$t" && npm ci --no-audit --no-fund --loglevel=error >/dev/null)
        cp "$t/package-lock.json" "$t/node_modules/.cairn-lock"
    fi
fi
