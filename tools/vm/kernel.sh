#!/usr/bin/env bash
# Puts a guest kernel for the QEMU microVM in a cache and prints its folder:
#   tools/vm/kernel.sh [CACHE]      (default $CAIRN_VM_CACHE, else /var/tmp/cairn-vm-cache)
# The folder holds vmlinux (uncompressed: it boots in ~2 s under TCG instead of
# ~4.5 s for vmlinuz), modules/*.ko (virtio-mmio, virtio-blk, ext4 and their
# dependencies) and modules.order (the insmod order).  A cached kernel is reused
# without asking apt, so a rerun downloads nothing.
set -euo pipefail
CACHE=${1:-${CAIRN_VM_CACHE:-/var/tmp/cairn-vm-cache}}
mkdir -p "$CACHE"
# Two runs at once must not extract into the same folder.
exec 9>"$CACHE/.lock"
flock 9

for d in $(ls -d "$CACHE"/6.1.0-*-amd64 2>/dev/null | sort -V -r); do
    [ -s "$d/vmlinux" ] && [ -s "$d/modules.order" ] && { echo "$d"; exit 0; }
done

# The version the linux-image-amd64 metapackage points at is the one the
# mirror surely still carries; older -NN packages may already be gone.
pkg=$(apt-cache depends linux-image-amd64 2>/dev/null |
      awk '$1 == "Depends:" && $2 ~ /^linux-image-6\.1\.0-[0-9]+-amd64$/ { print $2; exit }')
if [ -z "$pkg" ]; then
    pkg=$(apt-cache pkgnames linux-image-6.1.0- | grep -E '^linux-image-6\.1\.0-[0-9]+-amd64$' |
          sort -V | tail -n 1)
fi
[ -n "$pkg" ] || { echo "kernel.sh: apt offers no linux-image-6.1.0-*-amd64 (apt-get update?)" >&2; exit 1; }
kver=${pkg#linux-image-}

tmp=$(mktemp -d "$CACHE/.fetch.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
echo "kernel.sh: downloading $pkg" >&2
(cd "$tmp" && apt-get download -q "$pkg" >/dev/null 2>"$tmp/apt.err") ||
    { cat "$tmp/apt.err" >&2; exit 1; }
dpkg -x "$tmp"/*.deb "$tmp/root"
rm -f "$tmp"/*.deb

out=$tmp/out
mkdir -p "$out/modules"
python3 - "$tmp/root/boot/vmlinuz-$kver" "$out/vmlinux" <<'EOF'
import lzma, sys
data = open(sys.argv[1], "rb").read()
at = data.find(b"\xfd7zXZ\x00")
if at < 0:
    sys.exit("kernel.sh: no XZ payload in " + sys.argv[1])
# The payload is followed by the bzImage's own trailer: decode one stream only.
d = lzma.LZMADecompressor(lzma.FORMAT_XZ)
open(sys.argv[2], "wb").write(d.decompress(data[at:]))
EOF

# The .deb has no modules.dep; depmod over the extracted tree gives it, and
# --show-depends the load order (ext4's soft dependency on crc32c included:
# without a crc32c driver ext4 will not mount).
depmod -b "$tmp/root" "$kver"
for m in virtio_mmio virtio_blk ext4 crc32c_generic; do
    modprobe -d "$tmp/root" -S "$kver" --show-depends "$m"
done | awk '$1 == "insmod" && !seen[$2]++ { print $2 }' >"$tmp/list"
while read -r ko; do
    cp "$ko" "$out/modules/"
    basename "$ko" >>"$out/modules.order"
done <"$tmp/list"
echo "$pkg" >"$out/package"

mv "$out" "$CACHE/$kver"
echo "$CACHE/$kver"
