#!/usr/bin/env bash
# Wrong input gets the documented exit status (1 failed, 2 bad usage), a
# message on stderr, no hang, and leaves the store exactly as it was.
. "$(dirname "$0")/../lib.sh"

S=$T/store
must cairn init --store "$S" >/dev/null
gen "$T/mem" $((2 << 20)) 1 50
gen "$T/vm" 5000 2
id0=$(snap "$S" acme box memory="$T/mem" vmstate="$T/vm")
fp0=$(store_fp "$S")
[ -n "$fp0" ] || fail "a snapshot left no pack or manifest in $S"

unchanged() {
    [ "$(store_fp "$S")" = "$fp0" ] || fail "$1: packs or manifests changed:
$(diff <(echo "$fp0") <(store_fp "$S"))"
    assert_eq "$(count_snapshots "$S" box)" 1 "$1: snapshot count"
    fsck_ok "$S"
}

# bad RC WHAT CMD...: CMD must exit RC with a message, the store untouched.
bad() {
    local rc=$1 what=$2; shift 2
    expect "$rc" "$@" >/dev/null
    cp "$T/err" "$T/bad.err"
    [ -s "$T/bad.err" ] || fail "$what: exit $rc but nothing on stderr"
    unchanged "$what"
}
# refused WHAT CMD...: exit 1 or 2 (either reading is defensible), as bad.
refused() {
    local what=$1 rc=0; shift
    "$@" >"$T/out" 2>"$T/err" || rc=$?
    case $rc in 1|2) ;; *) fail "$what: exit $rc, expected 1 or 2; stderr: $(head -c 300 "$T/err")" ;; esac
    cp "$T/err" "$T/bad.err"
    [ -s "$T/bad.err" ] || fail "$what: exit $rc but nothing on stderr"
    unchanged "$what"
}

snapshot() { cairn snapshot --store "$S" --tenant acme --sandbox box "$@"; }

# Input files that cannot be snapshotted.
bad 1 "missing file" snapshot --memory "$T/nosuchfile"
assert_grep nosuchfile "$T/bad.err" "the message names the missing file"
bad 1 "missing file beside a good one" snapshot --memory "$T/mem" --disk "$T/nosuchdisk"
mkdir "$T/adir"
bad 1 "a directory" snapshot --memory "$T/adir"
mkfifo "$T/fifo"
CAIRN_TIMEOUT=10 bad 1 "a FIFO with no writer (must not block)" snapshot --disk "$T/fifo"
CAIRN_TIMEOUT=10 bad 1 "/dev/zero (endless: must be refused, not read)" snapshot --memory /dev/zero
CAIRN_TIMEOUT=10 bad 1 "/dev/null (not a regular file)" snapshot --vmstate /dev/null

# Snapshot ids that do not name a snapshot.
unknown=$(echo "$id0" | tr '0-9a-f' '1-9a-f0')
[ "$unknown" != "$id0" ] || unknown=${id0}x
bad 1 "unknown snapshot id" cairn restore --store "$S" --snapshot "$unknown" --out "$T/r1"
assert_grep "$unknown" "$T/bad.err" "the message names the unknown id"
[ ! -e "$T/r1/memory" ] || fail "restore of an unknown id wrote a memory file"

# A path in place of an id must not reach outside manifests/: a copy of a real
# manifest sits where a naive DIR/manifests/ID.cmf would find it.
for f in "$S"/manifests/*; do cp "$f" "$T/decoy.${f##*.}"; done
for bogus in ../../decoy "../manifests/$id0" /etc/passwd "$id0/" "" \
             "$(printf 'x%.0s' $(seq 300))" "$id0 " '*'; do
    refused "malformed id '$bogus'" cairn restore --store "$S" --snapshot "$bogus" --out "$T/r2"
    [ ! -e "$T/r2/memory" ] || fail "malformed id '$bogus' restored a memory file"
    rm -rf "$T/r2"
done

# Restore into a path that is a regular file: refused, the file untouched.
echo precious >"$T/afile"
bad 1 "--out is a regular file" cairn restore --store "$S" --snapshot "$id0" --out "$T/afile"
assert_eq "$(cat "$T/afile")" precious "--out file content"

# Directories that are not stores are never turned into one by accident.
mkdir "$T/empty"
expect 1 cairn stats --store "$T/empty" >/dev/null
[ -s "$T/err" ] || fail "stats on a non-store: no message"
expect 1 cairn snapshot --store "$T/empty" --tenant acme --sandbox box --memory "$T/mem" >/dev/null
expect 1 cairn snapshots --store "$T/empty" --sandbox box >/dev/null
expect 1 cairn restore --store "$T/empty" --snapshot "$id0" --out "$T/r3" >/dev/null
assert_eq "$(ls -A "$T/empty")" "" "a non-store dir after commands on it"
expect 1 cairn fsck --store "$T/empty" >/dev/null
expect 1 cairn stats --store "$T/nowhere" >/dev/null
[ ! -e "$T/nowhere" ] || fail "stats on a missing store created it"
expect 1 cairn snapshot --store "$T/nowhere" --tenant acme --sandbox box --memory "$T/mem" >/dev/null
[ ! -e "$T/nowhere" ] || fail "snapshot on a missing store created it"
expect 1 cairn stats --store "$T/afile" >/dev/null
assert_eq "$(cat "$T/afile")" precious "a file given as --store"

# Bad usage: exit 2, and nothing done.
bad 2 "snapshot without --tenant" cairn snapshot --store "$S" --sandbox box --memory "$T/mem"
bad 2 "snapshot without --sandbox" cairn snapshot --store "$S" --tenant acme --memory "$T/mem"
bad 2 "snapshot flag without its value" snapshot --memory "$T/mem" --disk
bad 2 "bad --tier" snapshot --tier gold --memory "$T/mem"
assert_grep tier "$T/bad.err" "the message names --tier"
bad 2 "empty --tier" snapshot --tier "" --memory "$T/mem"
bad 2 "restore without --snapshot" cairn restore --store "$S" --out "$T/r4"
bad 2 "restore without --out" cairn restore --store "$S" --snapshot "$id0"
bad 2 "snapshots without --sandbox" cairn snapshots --store "$S"
bad 2 "unknown option" cairn stats --store "$S" --frobnicate
bad 2 "unknown command" cairn frobnicate --store "$S"
assert_grep frobnicate "$T/bad.err" "the message names the unknown command"
bad 2 "no command" cairn
bad 2 "stray argument" cairn stats --store "$S" extra
[ ! -e "$T/r4" ] || fail "a usage error created the --out dir"

# The good snapshot is still good after all of that.
verify "$S" "$id0" memory="$T/mem" vmstate="$T/vm"
fsck_ok "$S" --verify-data
log "ok"
