#!/usr/bin/env bash
# Damaged packs and manifests are found and named: fsck reports them, a restore
# that needs damaged bytes fails with a clear message and writes no wrong file,
# and snapshots that do not need them still restore.
. "$(dirname "$0")/../lib.sh"

S=$T/store
must cairn init --store "$S" >/dev/null
gen "$T/mema" $((4 << 20)) 1 30
gen "$T/memb" $((4 << 20)) 2 30
gen "$T/vma" 9999 3
gen "$T/vmb" 8888 4
A=(memory="$T/mema" vmstate="$T/vma")
B=(memory="$T/memb" vmstate="$T/vmb")
ida=$(snap "$S" acme boxa "${A[@]}")
packs_a=$(cd "$S/packs" && ls ./*.pack | sort)
idb=$(snap "$S" acme boxb "${B[@]}")
packs_b=$(cd "$S/packs" && ls ./*.pack | sort | comm -13 <(echo "$packs_a") -)
[ -n "$packs_a" ] && [ -n "$packs_b" ] || fail "expected new packs for each snapshot: a=[$packs_a] b=[$packs_b]"
pack_a=$S/packs/$(basename "$(echo "$packs_a" | head -n 1)")
pack_b=$S/packs/$(basename "$(echo "$packs_b" | head -n 1)")
fsck_ok "$S" --verify-data

# pack_data_range PACK: start and end of the compressed data, from the
# trailer (its first 8 bytes: footer offset, little-endian).
pack_data_range() {
    "$PY" - "$1" <<'EOF'
import struct, sys, os
p = sys.argv[1]
size = os.path.getsize(p)
with open(p, "rb") as f:
    head = f.read(16)
    f.seek(size - 32)
    trailer = f.read(32)
assert head[:8] == b"CAIRNPK1", "pack header magic: %r" % head[:8]
assert trailer[-8:] == b"CAIRNPKE", "pack trailer magic: %r" % trailer[-8:]
footer = struct.unpack("<Q", trailer[:8])[0]
assert 16 < footer <= size - 32, "footer offset %d, size %d" % (footer, size)
print(16, footer)
EOF
}
flip_bit() {      # flip_bit FILE OFFSET
    "$PY" -c '
import sys
with open(sys.argv[1], "r+b") as f:
    f.seek(int(sys.argv[2])); b = f.read(1); f.seek(int(sys.argv[2]))
    f.write(bytes([b[0] ^ 0x10]))' "$1" "$2"
}

# no_wrong_files OUT SPEC...: a final name in OUT must hold the right bytes.
no_wrong_files() {
    local out=$1 kv; shift
    for kv in "$@"; do
        local f=$out/${kv%%=*}
        [ ! -e "$f" ] || cmp -s "${kv#*=}" "$f" || fail "a failed restore left a wrong $f"
    done
}

# fsck_bad STORE NAME FLAGS...: fsck must exit 1, answer ok=false and name NAME.
fsck_bad() {
    local store=$1 name=$2; shift 2
    expect 1 cairn fsck --store "$store" --json "$@" >"$T/fsck.json"
    log "fsck $*: $(json 'j["problems"][:3]' "$T/fsck.json")"
    assert_json 'j["ok"] is False' "$T/fsck.json" "fsck $* on a damaged store"
    assert_json "any('$name' in p for p in j['problems'])" "$T/fsck.json" "fsck $* names $name"
}

cp -a "$S" "$T/s1"; cp -a "$S" "$T/s2"; cp -a "$S" "$T/s3"

# 1. One bit flipped in the middle of a pack's data.
p1=$T/s1/packs/$(basename "$pack_a")
read -r lo hi < <(pack_data_range "$p1")
flip_bit "$p1" $(( (lo + hi) / 2 ))
fsck_bad "$T/s1" "$(basename "$pack_a" .pack)" --verify-data
expect 1 cairn restore --store "$T/s1" --snapshot "$ida" --out "$T/o1" >/dev/null
log "restore: $(cat "$T/err")"
assert_grep "$ida" "$T/err" "the restore error names the snapshot"
assert_grep 'offset|byte|at [0-9]' "$T/err" "the restore error gives where"
no_wrong_files "$T/o1" "${A[@]}"
verify "$T/s1" "$idb" "${B[@]}"

# 2. A pack cut in half (a lost tail, a partial copy).
p2=$T/s2/packs/$(basename "$pack_b")
truncate -s $(( $(size_of "$p2") / 2 )) "$p2"
fsck_bad "$T/s2" "$(basename "$pack_b" .pack)"
fsck_bad "$T/s2" "$(basename "$pack_b" .pack)" --verify-data
expect 1 cairn restore --store "$T/s2" --snapshot "$idb" --out "$T/o2" >/dev/null
log "restore: $(cat "$T/err")"
assert_grep "$idb" "$T/err" "the restore error names the snapshot"
no_wrong_files "$T/o2" "${B[@]}"
verify "$T/s2" "$ida" "${A[@]}"

# 3. One byte of a manifest changed.
m=$(ls "$T/s3/manifests/$ida".* 2>/dev/null | head -n 1)
[ -n "$m" ] || fail "no manifest named after $ida in $T/s3/manifests: $(ls "$T/s3/manifests")"
flip_bit "$m" $(( $(size_of "$m") / 2 ))
fsck_bad "$T/s3" "$ida"
expect 1 cairn restore --store "$T/s3" --snapshot "$ida" --out "$T/o3" >/dev/null
log "restore: $(cat "$T/err")"
assert_grep "$ida|manifest" "$T/err" "the restore error names the snapshot or its manifest"
no_wrong_files "$T/o3" "${A[@]}"
verify "$T/s3" "$idb" "${B[@]}"

# The undamaged original is still fine.
fsck_ok "$S" --verify-data
log "ok"
