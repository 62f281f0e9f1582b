#!/usr/bin/env bash
# `cairn uffd-serve` against a client that plays Firecracker's side of the UFFD protocol
# (build/cairn-fc-uffd): every byte a "guest" touches, from several threads in random
# order, matches the snapshot; pages the balloon removed read zeros; hostile clients are
# refused and the server goes on; a lying region list writes nothing outside the
# registered memory; a corrupt pack stops the server instead of serving wrong bytes;
# gc keeps a snapshot a server is using; a recorded working set is prefetched next time.
. "$(dirname "$0")/../lib.sh"

FC=$BUILD/cairn-fc-uffd
[ -x "$FC" ] || fail "no $FC (run make first)"
if [ "$(id -u)" != 0 ] && [ "$(cat /proc/sys/vm/unprivileged_userfaultfd 2>/dev/null)" != 1 ]; then
    skip "userfaultfd needs root here (vm.unprivileged_userfaultfd=0)"
fi

C=$(std_corpus)
S=$T/store
must cairn init --store "$S" >/dev/null
mem1=$C/sb01/1/memory
id1=$(snap "$S" acme box1 memory="$mem1" vmstate="$C/sb01/1/vmstate")

# start_server ID NAME [ARGS]: a page server on $T/NAME.sock, JSON in $T/NAME.json.
start_server() {
    local id=$1 name=$2; shift 2
    rm -f "$T/$name.sock"
    timeout -k 5 120 "$CAIRN_BIN" uffd-serve --store "$S" --snapshot "$id" --socket "$T/$name.sock" \
        --json "$@" >"$T/$name.json" 2>"$T/$name.err" &
    eval "pid_$name=$!"
    at_exit "kill $! 2>/dev/null"
    for _ in $(seq 200); do [ -S "$T/$name.sock" ] && return 0; sleep 0.05; done
    cat "$T/$name.err" >&2
    fail "uffd-serve did not listen on $T/$name.sock"
}
# wait_server NAME RC: the server exits with RC.
wait_server() {
    local pid; eval "pid=\$pid_$1"
    local rc=0
    wait "$pid" || rc=$?
    [ "$rc" = "$2" ] || { cat "$T/$1.err" >&2; fail "uffd-serve $1 exited $rc, expected $2"; }
}

# 1. Four threads, two regions, random order, balloon removes during the second half
#    (removed pages are checked as the balloon removes them and again at the end).
#    Fault-around off: one fault, one page.
start_server "$id1" a --fault-around 0
must "$FC" --socket "$T/a.sock" --expect "$mem1" --threads 4 --regions 2 --balloon 200 --seed 11 >"$T/fc.json"
wait_server a 0
assert_json 'j["mismatches"] == 0 and j["touched"] > 10000' "$T/fc.json" "every touched page matches"
assert_json 'j["removed_pages"] > 100 and j["removed_not_zero"] == 0' "$T/fc.json" "removed pages read zeros"
assert_json 'j["ok"] and j["faults"] >= 10000 and j["removes"] > 0 and j["bytes_read"] > 0' "$T/a.json" \
    "server JSON counts faults, removes, bytes read"
assert_json 'j["cache_hits"] > j["groups_read"]' "$T/a.json" "most data pages come from decompressed groups"
[ ! -e "$T/a.sock" ] || fail "the socket file outlived the server"
log "4 threads: $(json 'j["touch_per_second"]' "$T/fc.json") touches/s; server: $(cat "$T/a.json")"

# 1b. Fault-around (the default, 16): neighbours installed with a faulted page, never
#     over a removed one (removed pages still read zeros at the end) nor over a present
#     one (every 64th page is written by the guest first: its mark must survive).
start_server "$id1" fa
must "$FC" --socket "$T/fa.sock" --expect "$mem1" --threads 4 --regions 2 --balloon 200 --seed 11 \
    --write-every 64 >"$T/fc.json"
wait_server fa 0
assert_json 'j["mismatches"] == 0 and j["removed_pages"] > 100 and j["removed_not_zero"] == 0' "$T/fc.json" \
    "fault-around: pages match, written pages kept, removed pages read zeros"
assert_json 'j["around"] > 1000' "$T/fa.json" "fault-around installed neighbours"
assert_cmp "$(json 'j["faults"]' "$T/fa.json")" -lt "$(json 'j["faults"]' "$T/a.json")" "fewer faults with fault-around"

# 1d. Fault-around never runs past a region's end: two regions side by side in memory
#     hold the file's second and first thirds; walked in order with long runs, a copy
#     that crossed would put the wrong third after the boundary.
start_server "$id1" sw --fault-around 64
must "$FC" --socket "$T/sw.sock" --expect "$mem1" --threads 2 --swap-regions --sequential >"$T/fc.json"
wait_server sw 0
assert_json 'j["mismatches"] == 0 and j["touched"] > 5000' "$T/fc.json" "runs stop at a region's end"
assert_json 'j["around"] > 1000' "$T/sw.json" "long runs were installed"

# 1c. Four threads touching side by side (in order): consecutive faults read in one batch
#     go in with one copy; bytes and removed pages still right.
start_server "$id1" bt --threads 1
must "$FC" --socket "$T/bt.sock" --expect "$mem1" --threads 4 --regions 2 --balloon 200 --seed 12 \
    --sequential >"$T/fc.json"
wait_server bt 0
assert_json 'j["mismatches"] == 0 and j["removed_pages"] > 100 and j["removed_not_zero"] == 0' "$T/fc.json" \
    "batched copies: pages match, removed pages read zeros"
# How many faults arrive together depends on scheduling (57 to several hundred of ~4,700 data
# faults seen here under load): any batched copy shows the path works; without it it is 0.
assert_json 'j["batched"] > 0' "$T/bt.json" "consecutive faults answered by one copy"

# 2. Older Firecrackers: page_size_kib (bytes despite the name) or no page size; 3 regions.
for field in page_size_kib none; do
    start_server "$id1" b
    must "$FC" --socket "$T/b.sock" --expect "$mem1" --threads 2 --regions 3 --touch 300 \
        --page-size-field $field >"$T/fc.json"
    wait_server b 0
    assert_json 'j["mismatches"] == 0' "$T/fc.json" "pages match with $field"
done

# 3. Hostile clients: each refused, then a real VM is served by the same server.
start_server "$id1" h
must "$FC" --socket "$T/h.sock" --garbage 100000 >/dev/null
must "$FC" --socket "$T/h.sock" --garbage 0 >/dev/null
memsize=$(size_of "$mem1")
bad=(
    'not json at all'
    '{"base_host_virt_addr": {BASE}, "size": 4096, "offset": 0}'
    '[]'
    "[{\"base_host_virt_addr\": {BASE}, \"size\": 8192, \"offset\": $memsize}]"
    "[{\"base_host_virt_addr\": {BASE}, \"size\": $((memsize + 4096)), \"offset\": 0}]"
    '[{"base_host_virt_addr": {BASE}, "size": 4096, "offset": 18446744073709547520}]'
    '[{"base_host_virt_addr": 18446744073709547520, "size": 8192, "offset": 0}]'
    '[{"base_host_virt_addr": {BASE}, "size": 4096, "offset": 100}]'
    '[{"base_host_virt_addr": {BASE}, "size": 6000, "offset": 0}]'
    '[{"base_host_virt_addr": {BASE}, "size": 4096, "offset": 0, "page_size": 3000}]'
    '[{"base_host_virt_addr": {BASE}, "size": 1073741824, "offset": 0, "page_size": 1073741824}]'
    '[{"base_host_virt_addr": {BASE}, "size": -4096, "offset": 0}]'
    '[{"base_host_virt_addr": {BASE}, "size": 8192, "offset": 0}, {"base_host_virt_addr": {BASE}, "size": 4096, "offset": 8192}]'
    '[{"base_host_virt_addr": "0x1000", "size": 4096, "offset": 0}]'
    '[{"size": 4096, "offset": 0}]'
)
for j in "${bad[@]}"; do
    expect 0 "$FC" --socket "$T/h.sock" --expect "$mem1" --send-json "$j" >/dev/null \
        || fail "not refused: $j"
done
must "$FC" --socket "$T/h.sock" --expect "$mem1" --threads 2 --touch 200 >"$T/fc.json"
wait_server h 0
assert_json 'j["mismatches"] == 0' "$T/fc.json" "served after hostile clients"
assert_json "j['refused'] == $(( ${#bad[@]} + 2 ))" "$T/h.json" "every hostile connection refused"
grep -q "outside the snapshot's memory" "$T/h.err" || fail "no reason logged for an out-of-file region"

# 3b. A client that connects and says nothing does not hold the server: a VM that
#     connects right after it is served at once (not after the 5 s handshake timeout),
#     and the silent one is dropped when the VM wins.
start_server "$id1" q
"$PY" -c 'import socket, sys, time
s = socket.socket(socket.AF_UNIX); s.connect(sys.argv[1]); time.sleep(20)' "$T/q.sock" &
silent=$!
at_exit "kill $silent 2>/dev/null"
sleep 0.2
t0=$EPOCHREALTIME
must "$FC" --socket "$T/q.sock" --expect "$mem1" --threads 2 --touch 200 >"$T/fc.json"
took=$(awk -v a="$t0" -v b="$EPOCHREALTIME" 'BEGIN { printf "%d", (b - a) * 1000 }')
wait_server q 0
kill "$silent" 2>/dev/null || true
assert_json 'j["mismatches"] == 0' "$T/fc.json" "served after a silent client"
assert_cmp "$took" -lt 3000 "the VM behind a silent client waited ${took} ms (the handshake timeout is 5000)"
assert_json 'j["refused"] == 1' "$T/q.json" "the silent client is dropped once the VM is served"

# 4. A region list naming memory the client did not register: the server answers the
#    real faults with zeros and writes nothing into the memory the list named.
start_server "$id1" l
must "$FC" --socket "$T/l.sock" --expect "$mem1" --lie >"$T/fc.json"
wait_server l 0
assert_json 'j["nonzero"] == 0 and not j["canary_changed"]' "$T/fc.json" "lying region list"

# 5. gc keeps a snapshot that a page server holds (lease), drops it once the server is gone.
id2=$(snap "$S" acme box1 memory="$C/sb01/2/memory" vmstate="$C/sb01/2/vmstate")
start_server "$id1" g
must cairn gc --store "$S" --json >"$T/gc.json"
assert_json 'j["kept_leased"] == 1 and j["dropped_snapshots"] == 0' "$T/gc.json" "gc skips a leased snapshot"
must "$FC" --socket "$T/g.sock" --expect "$mem1" --threads 2 --touch 500 >"$T/fc.json"
wait_server g 0
assert_json 'j["mismatches"] == 0' "$T/fc.json" "leased snapshot served after gc"
must cairn gc --store "$S" --json >"$T/gc.json"
assert_json 'j["kept_leased"] == 0 and j["dropped_snapshots"] == 1' "$T/gc.json" "gc drops it after the lease"
fsck_ok "$S"

# 6. Working set: a wake records the pages touched first; the sandbox's next snapshot
#    keeps the list; the wake after that installs those pages before the guest asks.
mem2=$C/sb01/2/memory
start_server "$id2" w1 --record 30
must "$FC" --socket "$T/w1.sock" --expect "$mem2" --threads 2 --touch 100 --seed 5 >"$T/fc1.json"
wait_server w1 0
assert_json 'j["recorded"] > 1000 and j["prefetched"] == 0' "$T/w1.json" "first wake records"
id3=$(snap "$S" acme box1 memory="$mem2" vmstate="$C/sb01/2/vmstate")
[ -f "$S/cache/wset-$id3.bin" ] || fail "the next snapshot did not keep the working set"
start_server "$id3" w2 --record 30
must "$FC" --socket "$T/w2.sock" --expect "$mem2" --threads 2 --touch 100 --seed 5 --delay-ms 1000 >"$T/fc2.json"
wait_server w2 0
assert_json 'j["mismatches"] == 0' "$T/fc2.json" "prefetched pages match"
f1=$(json 'j["faults"]' "$T/w1.json"); f2=$(json 'j["faults"]' "$T/w2.json")
p2=$(json 'j["prefetched"]' "$T/w2.json")
assert_cmp "$p2" -ge "$(json 'j["recorded"]' "$T/w1.json")" "the whole working set was prefetched"
assert_cmp "$f2" -lt $(( f1 / 2 )) "faults with prefetch ($f2) vs without ($f1)"
log "working set: without prefetch $f1 faults, $(json 'j["bytes_read"]' "$T/w1.json") B read," \
    "$(json 'j["seconds"]' "$T/fc1.json") s touching; with: $f2 faults, $p2 prefetched," \
    "$(json 'j["bytes_read"]' "$T/w2.json") B read, $(json 'j["seconds"]' "$T/fc2.json") s touching"

# 7. A corrupt pack: the server stops rather than install a page that fails its id. The
#    "VM" is then stuck on that fault (as a real one would be), so it is killed.
pack=$(ls "$S"/packs/*.pack | head -1)
damage "$pack" 8192 0xFF
start_server "$id3" c --no-prefetch
timeout -k 2 5 "$FC" --socket "$T/c.sock" --expect "$mem2" --threads 1 >/dev/null 2>&1 || true
wait_server c 1
grep -Eqi "corrupt|checksum|damaged|zstd" "$T/c.err" || fail "no verification error: $(cat "$T/c.err")"

# 8. Nobody connects: after --accept-timeout the server exits 0, its socket removed and its
#    lease released (a gc may take the snapshot again). SIGTERM removes the socket too, so
#    the same path can serve the next wake.
start_server "$id3" idle --accept-timeout 1
lease=$S/leases/$id3
flock -n -x "$lease" true && fail "a listening page server holds no lease on its snapshot"
wait_server idle 0
[ ! -e "$T/idle.sock" ] || fail "the socket outlived the idle server"
assert_json 'j["ok"] and j["timed_out"] and j["faults"] == 0' "$T/idle.json" "idle server says it timed out"
[ ! -e "$lease" ] || flock -n -x "$lease" true || fail "the idle server's lease outlived it"
start_server "$id3" term
kill -TERM "$pid_term"
wait_server term 143
[ ! -e "$T/term.sock" ] || fail "the socket outlived SIGTERM"
start_server "$id3" term --accept-timeout 1 --cache-mib 100000
wait_server term 0
log "idle servers exit; sockets removed on timeout and on SIGTERM"
