#!/usr/bin/env bash
# The server's read view over many ingests (api/storeref.c, store/index.c):
#   - every ingest answered 201 is in the metadata calls made right after it (the
#     sandbox's snapshot list, the snapshot's record, the sandbox list's count);
#   - the index stays a bounded number of table files: snapshot and sandbox keys grow in
#     commit order, and each writer's flush at close used to add a table file RocksDB never
#     merged (one or two per ingest: 44 after 30), which every reopen of the read
#     view and its memory paid for.
source "$(dirname "$0")/../lib.sh"
source "$REPO/tests/api_lib.sh"

N=24
S=$T/store
IN=$T/in
mkdir -p "$IN"
must cairn init --store "$S" >/dev/null
api_serve '{"snapshot_roots": ["'$IN'"], "restore_roots": ["'$T'"]}' ORCH=orchestrator:orch

for i in $(seq "$N"); do
    sb=sb$((i % 2))
    head -c 64K /dev/urandom >"$IN/mem"
    expect_status 201 POST /v1/snapshots "$ORCH" '{"tenant":"t1","sandbox":"'$sb'","memory":"'$IN'/mem"}'
    id=$(json 'j["snapshot"]' "$T/body")
    expect_status 200 GET "/v1/snapshots/$id" "$ORCH"
    assert_json 'j["snapshot"] == "'$id'"' "$T/body" "GET /v1/snapshots/$id right after its ingest"
    expect_status 200 GET "/v1/sandboxes/$sb" "$ORCH"
    assert_json 'any(x["snapshot"] == "'$id'" for x in j["snapshot_list"])' "$T/body" \
        "$sb's snapshot list right after ingest $i"
done
expect_status 200 GET /v1/sandboxes "$ORCH"
assert_json 'sum(s["snapshots"] for s in j["sandboxes"]) == '$N "$T/body" "snapshots counted after $N ingests"

tables=$(find "$S/index" -name '*.sst' | wc -l)
log "$N ingests: $tables table files in the index"
# 3 small families x 6 (INDEX_MAX_TABLES) + the chunks family's level 0 (RocksDB compacts
# it at 4 files) and level 1.
assert_cmp "$tables" -le 24 "table files in the index after $N API ingests"
serve_stop
# The CLI's writers close the same way.
for i in $(seq 12); do must cairn snapshot --store "$S" --tenant t1 --sandbox sb2 --memory "$IN/mem" >/dev/null; done
tables=$(find "$S/index" -name '*.sst' | wc -l)
assert_cmp "$tables" -le 24 "table files in the index after 12 more CLI ingests"
log "ok"
