#!/usr/bin/env bash
# Issue 3, a tenant controls every byte of its image: crafted names ("../..", "/", ".."),
# symlinks out of the extraction folder, images that are not ext4 at all, a directory
# loop, 100000 files and a 1 TiB sparse file. Nothing may crash, hang, or write outside
# the target; the snapshot itself is always stored.
source "$(dirname "$0")/../lib.sh"

S=$T/store
must cairn init --store "$S" >/dev/null
export CAIRN_ACTOR=hostile-test
mkdir -p "$T/src"


# patch IMG OLD=NEW...: rewrites the name of the one directory entry named OLD (same
# length), or with NEW = ino:NAME points it at the inode of the entry NAME (ino:2: the
# root). The directory block's checksum is left stale on purpose.
cat >"$T/patch.py" <<'EOF'
import struct, sys
def entries(img, name):
    res, i = [], img.find(name)
    while i >= 0:
        h = i - 8           # ext4_dir_entry_2: inode u32, rec_len u16, name_len u8, type u8
        if h >= 0 and img[h + 6] == len(name):
            ino, rec = struct.unpack_from("<IH", img, h)
            if ino and rec >= 8 + len(name):
                res.append(h)
        i = img.find(name, i + 1)
    return res
img = bytearray(open(sys.argv[1], "rb").read())
for a in sys.argv[2:]:
    old, new = a.split("=", 1)
    e = entries(img, old.encode())
    assert len(e) == 1, "%s: %d entries" % (old, len(e))
    if new.startswith("ino:"):
        t = new[4:]
        ino = int(t) if t.isdigit() else struct.unpack_from("<I", img, entries(img, t.encode())[0])[0]
        struct.pack_into("<I", img, e[0], ino)
    else:
        assert len(new) == len(old)
        img[e[0] + 8:e[0] + 8 + len(old)] = new.encode()
open(sys.argv[1], "wb").write(img)
EOF

# run CMD...: like expect, but any exit below 124 is accepted (124: timeout, >= 128:
# killed by a signal, i.e. a crash); leaves the code in $rc.
run() {
    rc=0
    "$@" >"$T/out" 2>"$T/err" || rc=$?
    if [ "$rc" -ge 124 ]; then
        { echo "command: $*"; echo "--- stderr"; tail -n 20 "$T/err"; } >&2
        fail "exit $rc (hang or crash) of: $*"
    fi
}

# snap_within LIMIT WHAT SNAP-ARGS...: snap SNAP-ARGS (lib.sh), which must take under LIMIT
# seconds (logged as "WHAT: N s"); sets ID.
snap_within() {
    local limit=$1 what=$2 t0 secs; shift 2
    t0=$EPOCHREALTIME
    ID=$(snap "$@")
    secs=$(awk -v a="$t0" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.2f", b - a }')
    log "$what: ${secs}s"
    awk -v s="$secs" -v l="$limit" 'BEGIN { exit !(s < l) }' || fail "$what took ${secs}s (the bound: ${limit}s)"
}

# nothing_escaped: no file made by a hostile name may exist anywhere but in the sources,
# in $T or in any folder above it.
nothing_escaped() {
    local d=$T hit
    hit=$(find "$T" -path "$T/src" -prune -o -name 'PWNED*' -print | head -3)
    [ -z "$hit" ] || fail "$1: hostile names were written: $hit"
    while [ "$d" != / ]; do
        d=$(dirname "$d")
        hit=$(ls -A "$d" | grep PWNED || true)
        [ -z "$hit" ] || fail "$1: written outside the test folder: $d/$hit"
    done
    [ -z "$(ls -A "$T/victim")" ] || fail "$1: written through a symlink into $T/victim: $(ls -A "$T/victim")"
}
mkdir "$T/victim"

# ---- (a, b) names with "..", "/" and "..", patched into the directory entries ---------
log "(a, b) hostile names"
O=$T/src/names/home/ubuntu/output
mkdir -p "$O/loop/LOOPPARENTDIR1/LOOPCHILDDIR01" "$O/rootloop/ROOTLOOPDIR1"
echo fine >"$O/ok.txt"
echo inside >"$O/loop/LOOPPARENTDIR1/LOOPCHILDDIR01/in.txt"
echo inside >"$O/loop/LOOPPARENTDIR1/parent.txt"
for n in AAAAAAAAAAAAAAAAAAAAAAAAA BBBBBBBBBBB CC DDDDDDDD EEEEEEEEEEEEEEEEEEEEEEEEEEEEEEEEEEEEE; do
    echo ESCAPED >"$O/$n"
done
ext4_image "$T/src/names" "$T/names.img" 16M
must "$PY" "$T/patch.py" "$T/names.img" \
    AAAAAAAAAAAAAAAAAAAAAAAAA=../../../../../../PWNED_A BBBBBBBBBBB=sub/PWNED_B CC=.. \
    DDDDDDDD=/PWNED_D EEEEEEEEEEEEEEEEEEEEEEEEEEEEEEEEEEEEE=../../../../../../../../../../PWNED_E \
    >/dev/null
# the image really holds them (debugfs -n: without checksum checks)
n=$(debugfs -n -R "ls -p /home/ubuntu/output" "$T/names.img" 2>/dev/null | grep -c -e '/PWNED_' -e '/\.\./8/$' || true)
assert_eq "$n" 5 "hostile entries in the patched image"
ID=$(snap "$S" acme names "disk=$T/names.img")
assert_json '"warning" in j and j["files"] > 5' "$T/snap.json" "snapshot of an image with hostile names"
verify "$S" "$ID" "disk=$T/names.img"
must cairn ls --store "$S" --snapshot "$ID" --recursive --json >"$T/ls.json"
assert_json 'any(e["path"] == "/home/ubuntu/output/ok.txt" for e in j["entries"])' "$T/ls.json" \
    "the rest of a folder holding hostile names is indexed"
# listed or skipped, a hostile name never comes out as a path with a ".." or empty component
assert_json 'not any(c in ("", ".", "..") for e in j["entries"] for c in e["path"].split("/")[1:])' \
    "$T/ls.json" "ls shows a hostile name as a path"
grep -qi warning "$T/err" || [ "$(json '"warning" in j' "$T/ls.json")" = true ] \
    || fail "ls of a partial index gives no warning"
run cairn extract --store "$S" --snapshot "$ID" --out "$T/a/out"
cmp -s "$T/a/out/home/ubuntu/output/ok.txt" "$O/ok.txt" || fail "extract (a): ok.txt not extracted"
nothing_escaped "extract of hostile names"
run cairn extract --store "$S" --snapshot "$ID" --tar "$T/a.tar"
"$PY" - "$T/a.tar" <<'EOF' || fail "extract --tar of hostile names"
import sys, tarfile
for m in tarfile.open(sys.argv[1]):
    parts = m.name.split("/")
    assert not m.name.startswith("/") and ".." not in parts, "tar member %r" % m.name
EOF
for p in /home/ubuntu/output/../../../../../../PWNED_A /home/ubuntu/output/sub/PWNED_B /PWNED_D; do
    run cairn cat --store "$S" --snapshot "$ID" "$p"
    [ "$rc" != 0 ] && [ ! -s "$T/out" ] || fail "cat $p: exit $rc, $(head -c 100 "$T/out")"
done

# ---- (e) directory loops: a child entry pointing at its parent, another at the root ----
log "(e) directory loops"
cp "$T/names.img" "$T/loop.img"
must "$PY" "$T/patch.py" "$T/loop.img" LOOPCHILDDIR01=ino:LOOPPARENTDIR1 ROOTLOOPDIR1=ino:2 >/dev/null
debugfs -n -R "ls -p /home/ubuntu/output/rootloop" "$T/loop.img" 2>/dev/null | grep -q '^/2/040755/.*/ROOTLOOPDIR1//$' \
    || fail "the loop to the root was not patched in"
snap_within 20 "snapshot of an image with directory loops" "$S" acme loop "disk=$T/loop.img"
assert_json '"partial" in j.get("warning", "")' "$T/snap.json" "a looping image gives a partial index warning"
must cairn ls --store "$S" --snapshot "$ID" --recursive --json >"$T/ls.json"
assert_json 'any(e["path"] == "/home/ubuntu/output/loop/LOOPPARENTDIR1/parent.txt" for e in j["entries"]) and len(j["entries"]) < 100' \
    "$T/ls.json" "ls of a looping image"
run cairn extract --store "$S" --snapshot "$ID" --out "$T/e/out"
[ "$(find "$T/e/out" | wc -l)" -lt 100 ] || fail "extract of a loop made $(find "$T/e/out" | wc -l) entries"
nothing_escaped "extract of a looping image"

# ---- (c) symlinks out of the folder; a second snapshot with folders of the same names --
log "(c) symlinks"
O=$T/src/links1/home/ubuntu/output
mkdir -p "$O"
ln -s "$T/victim" "$O/esc"
ln -s /etc "$O/etc"
ln -s ../../../../../.. "$O/dotdot"
ln -s chain2 "$O/chain1"
ln -s "$T/victim" "$O/chain2"
ln -s /etc/passwd "$O/pw"
echo fine >"$O/ok.txt"
ext4_image "$T/src/links1" "$T/links1.img" 16M
O=$T/src/links2/home/ubuntu/output
for d in esc dotdot chain1; do mkdir -p "$O/$d"; echo ESCAPED >"$O/$d/PWNED_C"; done
ext4_image "$T/src/links2" "$T/links2.img" 16M
ID1=$(snap "$S" acme links "disk=$T/links1.img")
must cairn extract --store "$S" --snapshot "$ID1" --out "$T/c/out" >/dev/null
for l in esc etc dotdot chain1 chain2 pw; do
    [ -L "$T/c/out/home/ubuntu/output/$l" ] || fail "extract did not make $l a symlink"
    assert_eq "$(readlink "$T/c/out/home/ubuntu/output/$l")" "$(readlink "$T/src/links1/home/ubuntu/output/$l")" \
        "symlink target of $l"
done
nothing_escaped "extract of outward symlinks"
run cairn cat --store "$S" --snapshot "$ID1" /home/ubuntu/output/pw
[ "$rc" != 0 ] && ! grep -q '^root:' "$T/out" || fail "cat of a symlink to /etc/passwd: exit $rc, $(head -c 100 "$T/out")"
# The same folder again, from a snapshot where those names are folders: writing below
# them would go through the links.
ID2=$(snap "$S" acme links "disk=$T/links2.img")
run cairn extract --store "$S" --snapshot "$ID2" --out "$T/c/out"
log "second extract over the symlinks: exit $rc, $(wc -l <"$T/err") lines on stderr"
[ "$rc" != 0 ] && [ -s "$T/err" ] || fail "extract over symlinks in the way: exit $rc and no message"
nothing_escaped "extract through symlinks left by an earlier extract"
for l in esc dotdot chain1; do
    [ -L "$T/c/out/home/ubuntu/output/$l" ] || fail "the symlink $l was replaced"
done

# ---- (d) not ext4: truncated, zeroed superblock, random bytes --------------------------
log "(d) broken images"
mkdir -p "$T/src/ok/home/ubuntu/output"
gen "$T/src/ok/home/ubuntu/output/data.bin" 300000 1
ext4_image "$T/src/ok" "$T/ok.img" 64M
head -c 3M "$T/ok.img" >"$T/trunc3m.img"
head -c 5000 "$T/ok.img" >"$T/trunc5k.img"
cp "$T/ok.img" "$T/zerosb.img"
dd if=/dev/zero of="$T/zerosb.img" bs=1024 seek=1 count=1 conv=notrunc status=none
gen "$T/random.img" $((64 << 20)) 9
for img in trunc3m trunc5k zerosb random; do
    ID=$(snap "$S" acme "$img" "disk=$T/$img.img")
    assert_json '"warning" in j' "$T/snap.json" "snapshot of $img.img has no warning"
    log "$img: $(json 'j["warning"]' "$T/snap.json")"
    verify "$S" "$ID" "disk=$T/$img.img"
    run cairn ls --store "$S" --snapshot "$ID" --recursive
    case $rc in
        1) assert_grep 'no file index' "$T/err" "ls of $img" ;;
        0) [ "$img" != random ] || fail "ls of random bytes lists files: $(head -3 "$T/out")"
           assert_grep 'partial' "$T/err" "ls of $img (indexed) must warn" ;;
        *) fail "ls of $img: exit $rc: $(cat "$T/err")" ;;
    esac
    [ "$img" != random ] || [ "$rc" = 1 ] || fail "ls of random bytes: exit $rc"
    run cairn extract --store "$S" --snapshot "$ID" --out "$T/d/$img"
    [ "$rc" = 0 ] || [ -s "$T/err" ] || fail "extract of $img: exit $rc with no message"
    if [ "$rc" = 1 ] && grep -qi 'no file index' "$T/err"; then
        [ -z "$(ls -A "$T/d/$img" 2>/dev/null)" ] || fail "extract without an index wrote files"
    fi
done
nothing_escaped "broken images"

# ---- (g) a 1 TiB sparse file -----------------------------------------------------------
log "(g) 1 TiB sparse file"
mkdir -p "$T/src/huge/home/ubuntu/output"
"$PY" -c '
import sys
with open(sys.argv[1], "wb") as f:
    f.truncate(1 << 40); f.seek(1 << 39); f.write(b"Z" * 4096)' "$T/src/huge/home/ubuntu/output/huge"
ext4_image "$T/src/huge" "$T/huge.img" 64M
snap_within 10 "snapshot + index of a 64 MiB image holding a 1 TiB sparse file" "$S" acme huge "disk=$T/huge.img"
must cairn ls --store "$S" --snapshot "$ID" /home/ubuntu/output/huge --json >"$T/ls.json"
assert_json 'j["entries"][0]["size"] == 1 << 40' "$T/ls.json" "ls size of the 1 TiB file"
set +o pipefail
cairn cat --store "$S" --snapshot "$ID" /home/ubuntu/output/huge 2>"$T/err" | head -c 1048576 >"$T/head"
st=("${PIPESTATUS[@]}")
set -o pipefail
# 141: SIGPIPE once head has its MiB, the normal end of `cat | head`
[ "${st[0]}" = 0 ] || [ "${st[0]}" = 141 ] || fail "cat of the 1 TiB file | head: exit ${st[0]}: $(cat "$T/err")"
cmp -s "$T/head" <(head -c 1048576 /dev/zero) || fail "the first MiB of the sparse file is not zeros"
t0=$EPOCHREALTIME
must cairn extract --store "$S" --snapshot "$ID" /home/ubuntu/output/huge --out "$T/g/out" >/dev/null
must cairn extract --store "$S" --snapshot "$ID" /home/ubuntu/output/huge --tar "$T/huge.tar" >/dev/null
secs=$(awk -v a="$t0" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.2f", b - a }')
log "extract of the 1 TiB file (folder and tar): ${secs}s, tar $(size_of "$T/huge.tar") bytes"
assert_cmp "$(size_of "$T/huge.tar")" -lt $((1 << 20)) "tar of the sparse file must hold only its data"
mkdir -p "$T/g/tar"
tar -xf "$T/huge.tar" -C "$T/g/tar" 2>"$T/tar.err" || fail "tar -xf of the sparse file: $(cat "$T/tar.err")"
for f in "$T/g/out/home/ubuntu/output/huge" "$T/g/tar/home/ubuntu/output/huge"; do
    assert_eq "$(size_of "$f")" $((1 << 40)) "size of the extracted 1 TiB file"
    assert_cmp "$(alloc_of "$f")" -le $((1 << 20)) "allocated bytes of the extracted 1 TiB file"
    "$PY" -c '
import sys
f = open(sys.argv[1], "rb"); f.seek((1 << 39) - 10); b = f.read(4106)
assert b == bytes(10) + b"Z" * 4096, "bytes at 512 GiB differ"' "$f" || fail "content of $f"
done

# ---- (f) 100000 empty files ------------------------------------------------------------
log "(f) 100000 files"
# a tmpfs makes 100000 files in 1 s where a loaded disk can take 30
shm=$T/src
[ -d /dev/shm ] && [ -w /dev/shm ] && shm=$(mktemp -d /dev/shm/cairn-hostile.XXXXXX) && at_exit "rm -rf '$shm'"
"$PY" -c '
import os, sys
for d in range(1000):
    p = "%s/many/home/ubuntu/output/many/d%03d" % (sys.argv[1], d)
    os.makedirs(p)
    for f in range(100):
        os.close(os.open("%s/f%05d" % (p, d * 100 + f), os.O_CREAT | os.O_WRONLY, 0o644))' "$shm"
t0=$EPOCHREALTIME
ext4_image "$shm/many" "$T/many.img" 256M -N 120000
log "mke2fs -d of 100000 files: $(awk -v a="$t0" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.1f", b - a }')s"
rm -rf "$shm/many"
snap_within 60 "snapshot + index of 100000 files" "$S" acme many "disk=$T/many.img"
assert_json 'j["files"] >= 101000 and "warning" not in j' "$T/snap.json" "index of 100000 files"
t0=$EPOCHREALTIME
must cairn ls --store "$S" --snapshot "$ID" /home/ubuntu/output/many --recursive --json >"$T/ls.json"
log "ls --recursive of 100000 files: $(awk -v a="$t0" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.2f", b - a }')s"
assert_json 'sum(e["type"] == "file" for e in j["entries"]) == 100000 and len({e["path"] for e in j["entries"]}) == 101000' \
    "$T/ls.json" "ls --recursive of 100000 files"

log "ok"
