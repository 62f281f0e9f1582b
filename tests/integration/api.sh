#!/usr/bin/env bash
# Issue 10, the whole lifecycle through `cairn serve` over loopback HTTP: snapshot, get
# (and SANDBOX@latest), restore byte-exact, touch, tier, pin, support reads (audited,
# secrets refused), shares (artifacts only), gc (reclaim -> 410), rebuild, delete; the CLI
# working on the same store while the server runs; SIGTERM exits 0.
source "$(dirname "$0")/../lib.sh"
source "$REPO/tests/api_lib.sh"

api_store
mkdir -p "$IN/tree/home/ubuntu/output" "$IN/tree/home/ubuntu/.ssh" "$IN/tree/home/ubuntu/project" \
    "$IN/tpl/home/ubuntu"
echo "result data" >"$IN/tree/home/ubuntu/output/report.txt"
head -c 300000 /dev/urandom >"$IN/tree/home/ubuntu/output/big.bin"
echo "PRIVATE KEY" >"$IN/tree/home/ubuntu/.ssh/id_rsa"
echo "print(1)" >"$IN/tree/home/ubuntu/project/main.py"
echo "base" >"$IN/tpl/etc-release"
mkimg "$IN/tree" "$IN/disk.img" 16M
mkimg "$IN/tpl" "$IN/tpl.img" 16M
head -c 8M /dev/urandom >"$IN/mem"
head -c 12345 /dev/urandom >"$IN/vmstate"

must cairn template add --store "$S" --name base --disk "$IN/tpl.img" >/dev/null
api_serve - ORCH=orchestrator:orch SUP=support:sup GC=gc:gcbot ADM=admin:root <<JSON
{"snapshot_roots": ["$IN"], "restore_roots": ["$OUT"], "limits": {"max_body_bytes": 65536}}
JSON

log "health, request ids"
expect_status 200 GET /healthz ""
assert_json 'j["ok"] is True' "$T/body"
curl -sS -D "$T/hdr" -o /dev/null -H "X-Request-Id: my-id-42" "$U/healthz"
assert_grep '^x-request-id: my-id-42' "$T/hdr" "the client's request id is echoed"

log "snapshot"
body='{"tenant":"t1","sandbox":"sb1","memory":"'$IN'/mem","vmstate":"'$IN'/vmstate","disk":"'$IN'/disk.img","template":"base","tier":"free","classes":{"/home/ubuntu/project/main.py":"artifact"}}'
expect_status 201 POST /v1/snapshots "$ORCH" "$body"
assert_json 'j["sandbox"] == "sb1" and j["tenant"] == "t1" and j["logical_bytes"] == 8388608 + 12345 + 16777216 and j["files"] > 0' "$T/body"
ID=$(json 'j["snapshot"]' "$T/body")
expect_status 200 GET "/v1/snapshots/$ID" "$ORCH"
assert_json 'j["snapshot"] == "'$ID'" and j["kind"] == "full" and j["template"] == "base" and len(j["blobs"]) == 3' "$T/body"
expect_status 200 GET "/v1/snapshots/sb1@latest" "$SUP"
assert_json 'j["snapshot"] == "'$ID'"' "$T/body"

log "the CLI works on the same store while the server runs"
must cairn snapshots --store "$S" --sandbox sb1 --json >"$T/cli.json"
assert_json 'j["snapshots"][0]["snapshot"] == "'$ID'"' "$T/cli.json"
must cairn snapshot --store "$S" --tenant t1 --sandbox sb2 --memory "$IN/mem" >/dev/null

log "restore, byte-exact"
expect_status 200 POST "/v1/snapshots/$ID/restore" "$ORCH" '{"out_dir":"'$OUT'/r1"}'
cmp "$OUT/r1/memory" "$IN/mem" || fail "memory differs"
cmp "$OUT/r1/vmstate" "$IN/vmstate" || fail "vmstate differs"
cmp "$OUT/r1/disk" "$IN/disk.img" || fail "disk differs"

log "touch, tier, pin, unpin, sandboxes"
expect_status 200 POST /v1/sandboxes/sb1/touch "$ORCH"
expect_status 200 PUT /v1/tenants/t1/tier "$ORCH" '{"tier":"pro"}'
expect_status 200 GET /v1/sandboxes/sb1 "$SUP"
assert_json 'j["tier"] == "pro" and j["state"] == "hibernated" and j["snapshot_list"][0]["snapshot"] == "'$ID'"' "$T/body"
expect_status 200 PUT /v1/tenants/t1/tier "$ORCH" '{"tier":"free"}'
expect_status 200 POST "/v1/snapshots/$ID/pin" "$ORCH"
expect_status 200 DELETE "/v1/snapshots/$ID/pin" "$ORCH"
expect_status 200 GET "/v1/sandboxes?tenant=t1" "$ORCH"
assert_json 'sorted(s["sandbox"] for s in j["sandboxes"]) == ["sb1", "sb2"]' "$T/body"
must cairn sandboxes --store "$S" --json >"$T/cli.json"
"$PY" - "$T/cli.json" "$T/body" <<'PY' || fail "the API's sandbox keys differ from the CLI's --json"
import json, sys
a = json.load(open(sys.argv[1]))["sandboxes"]; b = json.load(open(sys.argv[2]))["sandboxes"]
assert sorted(sorted(x) for x in a) == sorted(sorted(x) for x in b), (a, b)
PY

log "support reads: listed with classes, streamed, tar; secrets refused; audited by token name"
expect_status 200 GET "/v1/snapshots/$ID/files?path=/home/ubuntu&recursive=1" "$SUP"
assert_json '{e["path"]: e["class"] for e in j["entries"]}["/home/ubuntu/.ssh/id_rsa"] == "secret"' "$T/body"
curl -sS -f -H "Authorization: Bearer $SUP" "$U/v1/snapshots/$ID/content?path=/home/ubuntu/output/big.bin" \
    -o "$T/big" || fail "content"
cmp "$T/big" "$IN/tree/home/ubuntu/output/big.bin" || fail "streamed content differs"
expect_status 403 GET "/v1/snapshots/$ID/content?path=/home/ubuntu/.ssh/id_rsa" "$SUP"
assert_json 'j["error"]["code"] == "secret"' "$T/body"
grep -q "PRIVATE" "$T/body" && fail "a secret's bytes in an error"
curl -sS -f -H "Authorization: Bearer $SUP" "$U/v1/snapshots/$ID/archive?path=/home/ubuntu" -o "$T/a.tar" || fail "archive"
tar tf "$T/a.tar" >"$T/a.list"
assert_grep 'home/ubuntu/output/big.bin' "$T/a.list"
grep -q 'id_rsa' "$T/a.list" && fail "a secret in the archive"
mkdir "$T/ax" && tar xf "$T/a.tar" -C "$T/ax" && cmp "$T/ax/home/ubuntu/output/big.bin" "$IN/tree/home/ubuntu/output/big.bin" \
    || fail "archive content differs"
expect_status 200 GET /v1/audit "$ADM"
assert_json '[(e["actor"], e["command"]) for e in j["entries"]][-3:] == [("sup", "ls"), ("sup", "cat"), ("sup", "extract")]' "$T/body"
must cairn audit --store "$S" --json >"$T/cli.json"
assert_json 'j["entries"][-1]["actor"] == "sup"' "$T/cli.json"

log "shares: the artifacts of the latest snapshot, nothing else"
expect_status 201 POST /v1/sandboxes/sb1/shares "$ORCH" '{"expires_in": 3600}'
SH=$(json 'j["token"]' "$T/body")
expect_status 200 GET /v1/shared/files "$SH"
assert_json 'sorted(e["path"] for e in j["entries"]) == ["/home/ubuntu/output/big.bin", "/home/ubuntu/output/report.txt", "/home/ubuntu/project/main.py"] and all(e["class"] == "artifact" for e in j["entries"])' "$T/body"
expect_status 200 GET "/v1/shared/content?path=/home/ubuntu/output/report.txt" "$SH"
assert_eq "$(cat "$T/body")" "result data" "shared content"
expect_status 404 GET "/v1/shared/content?path=/home/ubuntu/.ssh/id_rsa" "$SH"
expect_status 404 GET "/v1/shared/content?path=/home/ubuntu" "$SH"
expect_status 403 GET "/v1/snapshots/$ID" "$SH"
expect_status 403 GET /v1/sandboxes "$SH"

log "gc: 8 idle days reclaim a free sandbox; its full restore is 410; rebuild brings the files back"
NOW=$(( $(date +%s) + 8 * 86400 ))
expect_status 200 POST /v1/gc "$GC" '{"now": '$NOW', "dry_run": true}'
assert_json 'j["dry_run"] is True and "sb1" in j["reclaimed_sandboxes"]' "$T/body"
expect_status 200 POST /v1/gc "$GC" '{"now": '$NOW'}'
assert_json '"sb1" in j["reclaimed_sandboxes"] and j["ok"] is True' "$T/body"
expect_status 200 GET /v1/sandboxes/sb1 "$ORCH"
assert_json 'j["state"] == "reclaimed"' "$T/body"
LATEST=$(json 'j["latest"]' "$T/body")
expect_status 410 POST "/v1/snapshots/$LATEST/restore" "$ORCH" '{"out_dir":"'$OUT'/r2"}'
assert_json 'j["error"]["code"] == "reclaimed"' "$T/body"
expect_status 404 POST "/v1/snapshots/00000000000000000000/restore" "$ORCH" '{"out_dir":"'$OUT'/r2"}'
expect_status 200 POST /v1/sandboxes/sb1/rebuild "$ORCH" '{"out":"'$OUT'/rebuilt.img"}'
assert_json 'j["template"] == "base" and j["files"] >= 3' "$T/body"
e2fsck -fn "$OUT/rebuilt.img" >/dev/null 2>&1 || fail "the rebuilt image does not pass e2fsck"
debugfs -R "cat /home/ubuntu/output/big.bin" "$OUT/rebuilt.img" 2>/dev/null >"$T/rb"
cmp "$T/rb" "$IN/tree/home/ubuntu/output/big.bin" || fail "rebuilt artifact differs"
debugfs -R "stat /home/ubuntu/.ssh/id_rsa" "$OUT/rebuilt.img" 2>&1 | grep -q "File not found" || fail "a secret in the rebuild"
debugfs -R "cat /etc-release" "$OUT/rebuilt.img" 2>/dev/null | grep -q base || fail "the template's file is missing"

log "delete"
expect_status 200 DELETE /v1/sandboxes/sb2 "$ORCH"
expect_status 200 GET /v1/sandboxes/sb2 "$ORCH"
assert_json 'j["state"] == "deleted"' "$T/body"

log "metrics"
expect_status 200 GET /metrics ""
assert_grep 'cairn_http_requests_total\{route="POST /v1/snapshots",status="201"\} 1' "$T/body"
assert_grep 'cairn_http_request_seconds_bucket\{route="GET /healthz",le="\+Inf"\}' "$T/body"
assert_grep '^cairn_ingested_bytes_total [1-9]' "$T/body"
assert_grep '^cairn_restored_bytes_total [1-9]' "$T/body"
assert_grep '^cairn_gc_runs_total 1$' "$T/body"
assert_grep '^cairn_store_stored_bytes [1-9]' "$T/body"
assert_grep '^cairn_sandboxes\{state="reclaimed"\} 1$' "$T/body"

serve_stop
grep -q "$ORCH\|$SUP\|$GC\|$ADM\|$SH" "$T/serve.log" && fail "a token in the server's log"
must cairn fsck --store "$S" >/dev/null
log "ok"
