#!/usr/bin/env bash
# The command line a person or a script relies on: help, the store location
# (--store, $CAIRN_STORE, ./cairn-data), plain and --json output.
. "$(dirname "$0")/../lib.sh"

cmds=(init snapshot restore snapshots stats fsck)
must cairn --help >"$T/help"
assert_grep usage "$T/help" "cairn --help prints usage"
for c in "${cmds[@]}"; do assert_grep "\\b$c\\b" "$T/help" "cairn --help lists $c"; done
for c in "${cmds[@]}"; do
    must cairn "$c" --help >"$T/help.$c"
    assert_grep usage "$T/help.$c" "cairn $c --help prints usage"
    assert_grep "\\b$c\\b" "$T/help.$c" "cairn $c --help names the command"
done
assert_grep '--tenant' "$T/help.snapshot" "snapshot --help lists --tenant"
assert_grep '--tier' "$T/help.snapshot" "snapshot --help lists --tier"
assert_grep '--out' "$T/help.restore" "restore --help lists --out"
assert_grep '--rebuild-index' "$T/help.fsck" "fsck --help lists --rebuild-index"
expect 2 cairn >/dev/null
assert_grep usage "$T/err" "cairn with no command prints usage on stderr"

gen "$T/mem" $((1 << 20)) 1 50
gen "$T/vm" 4321 2

# Default store: ./cairn-data of the current directory.
mkdir "$T/cwd"; cd "$T/cwd"
must cairn init >/dev/null
[ -f "$T/cwd/cairn-data/cairn.conf" ] || fail "cairn init without --store did not make ./cairn-data"
must cairn snapshot --tenant acme --sandbox box --memory "$T/mem" >"$T/plain.out"
id=$(tail -n 1 "$T/plain.out")
[ -n "$id" ] || fail "snapshot without --json printed no id"
verify "$T/cwd/cairn-data" "$id" memory="$T/mem"
cd "$T"

# $CAIRN_STORE, and --store over it.
export CAIRN_STORE=$T/envstore
must cairn init >/dev/null
[ -f "$T/envstore/cairn.conf" ] || fail "cairn init ignored CAIRN_STORE"
[ ! -e "$T/cairn-data" ] || fail "cairn init with CAIRN_STORE also made ./cairn-data"
must cairn snapshot --tenant acme --sandbox box --memory "$T/mem" --vmstate "$T/vm" >"$T/plain2.out"
id2=$(tail -n 1 "$T/plain2.out")
must cairn restore --snapshot "$id2" --out "$T/r" >/dev/null
cmp -s "$T/mem" "$T/r/memory" && cmp -s "$T/vm" "$T/r/vmstate" || fail "restore through CAIRN_STORE differs"
rm -rf "$T/r"
assert_eq "$(count_snapshots "$T/envstore" box)" 1 "snapshots in the CAIRN_STORE store"
must cairn init --store "$T/flagstore" >/dev/null
[ -f "$T/flagstore/cairn.conf" ] || fail "--store did not win over CAIRN_STORE"
assert_eq "$(must cairn snapshots --sandbox box --json | json 'len(j["snapshots"])')" 1 \
    "CAIRN_STORE store untouched by a --store command"
unset CAIRN_STORE

# Every command answers --json with one JSON object.
S=$T/envstore
for args in "snapshots --sandbox box" "stats" "fsck"; do
    read -ra a <<<"$args"
    must cairn "${a[@]}" --store "$S" --json >"$T/j"
    is_json_object "$T/j" || fail "cairn $args --json: not one JSON object: $(head -c 300 "$T/j")"
done
snap "$S" acme box memory="$T/mem" >/dev/null
for k in snapshot logical_bytes new_bytes seconds; do
    assert_json "'$k' in j" "$T/snap.json" "snapshot --json has $k"
done

# A tier is accepted, and a second init never destroys a store.
must cairn snapshot --store "$S" --tenant acme --sandbox pro1 --tier pro --memory "$T/mem" >/dev/null
must cairn snapshot --store "$S" --tenant acme --sandbox free1 --tier free --memory "$T/mem" >/dev/null
expect 1 cairn init --store "$S" >/dev/null
assert_grep 'already a Cairn store' "$T/err" "a second init says why it refuses"
verify "$S" "$id2" memory="$T/mem" vmstate="$T/vm"
fsck_ok "$S"

# Restore into an existing empty directory works like into a new one.
mkdir "$T/emptyout"
must cairn restore --store "$S" --snapshot "$id2" --out "$T/emptyout" >/dev/null
cmp -s "$T/mem" "$T/emptyout/memory" || fail "restore into an existing empty dir differs"
log "ok"
