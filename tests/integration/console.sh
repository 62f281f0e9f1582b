#!/usr/bin/env bash
# Issue 13, the support console, in a real Chromium (Debian's) driven by puppeteer-core
# (tests/package.json): the real `cairn serve` on loopback over a store made by the CLI.
# tests/browser/console.js signs in, searches, opens sandboxes, browses, previews,
# downloads (bytes compared), sees a secret locked, opens it as admin with a reason found
# again in the audit log, renders a hostile file name as text, opens a share link, and
# is refused a wrong token: all by keyboard. Screenshots land in $T/shots (SHOTS=DIR
# keeps them).
source "$(dirname "$0")/../lib.sh"

"$REPO/tools/deps.sh" browser || fail "tools/deps.sh browser could not install Chromium and tests/node_modules"
command -v chromium >/dev/null || fail "no chromium after tools/deps.sh browser"

S=$T/store
must cairn init --store "$S" >/dev/null

# The sandbox's disk: every class, a text file, an image, a 3 MiB file, a secret, and
# a file whose name is HTML that would run a script if it were ever parsed as markup.
HOSTILE='<img src=x onerror=alert(1)>'
"$PY" - "$T/tree" "$T/fixture.json" "$HOSTILE" <<'PYEOF'
import hashlib, json, os, random, struct, sys, zlib
root, fx_path, hostile = sys.argv[1:4]
H = "/home/ubuntu"
r = random.Random(13)
def png(w, h):
    raw = b"".join(b"\0" + b"".join(bytes((x * 7 % 256, y * 9 % 256, 160)) for x in range(w)) for y in range(h))
    chunk = lambda t, d: struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)) +
            chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))
text = "# Quarterly report\n\nRevenue up 12 %.\n<b>not bold</b> & not markup\n"
secret = "OPENAI_API_KEY=sk-test-0123456789abcdef\n"
big = r.randbytes(3 * 1048576 + 123)
files = {
    H + "/output/report.md": text.encode(), H + "/output/chart.png": png(160, 96),
    H + "/output/results.bin": big, H + "/output/" + hostile: b"a file with a hostile name\n",
    H + "/upload/input.csv": b"a,b\n1,2\n", H + "/project/index.html": b"<h1>app</h1>\n",
    H + "/project/.env": secret.encode(), H + "/.ssh/id_ed25519": b"-----BEGIN OPENSSH PRIVATE KEY-----\n",
    H + "/project/node_modules/left-pad/index.js": b"module.exports = 1;\n",
    "/tmp/scratch.txt": b"scratch\n", "/etc/hostname": b"sandbox\n",
}
for p, data in files.items():
    os.makedirs(os.path.dirname(root + p), exist_ok=True)
    with open(root + p, "wb") as f:
        f.write(data)
    os.chmod(root + p, 0o644)
classes = {H + "/output": "artifact", H + "/output/report.md": "artifact", H + "/output/" + hostile: "artifact",
           H + "/upload": "upload", H + "/project": "project", H + "/project/.env": "secret",
           H + "/project/node_modules": "cache", H + "/.ssh": "secret", "/tmp": "temp", "/etc": "runtime"}
json.dump({
    "tenant": "acme", "sandbox": "sb-1", "tenant_sandboxes": ["sb-1", "sb-2"], "reclaimed_sandbox": "sb-old",
    "out_dir": H + "/output", "text_name": "report.md", "text_content": text,
    "image_name": "chart.png", "image_width": 160, "hostile_name": hostile,
    "big_name": "results.bin", "big_size": len(big), "big_sha256": hashlib.sha256(big).hexdigest(),
    "artifacts": sorted(p for p in files if p.startswith(H + "/output/")),
    "secret_dir": H + "/project", "secret": H + "/project/.env", "secret_content": secret,
    "classes": classes, "admin_name": "alice-admin", "support_name": "bob-support",
    "reason": "ticket 4711: the user lost this key and asked for it",
}, open(fx_path, "w"))
PYEOF
ext4_image "$T/tree" "$T/sb1.img" 24M
mkdir -p "$T/tree2/home/ubuntu/output" && echo other >"$T/tree2/home/ubuntu/output/o.txt"
ext4_image "$T/tree2" "$T/sb2.img"

# sb-old first, reclaimed by a gc run 30 days ahead; then the fresh sandboxes.
snap "$S" globex sb-old disk="$T/sb2.img" >/dev/null
must cairn gc --store "$S" --now $(( $(date +%s) + 30 * 86400 )) >/dev/null
snap "$S" acme sb-2 disk="$T/sb2.img" >/dev/null
SNAP=$(snap "$S" acme sb-1 disk="$T/sb1.img")
"$PY" -c 'import json,sys; p=sys.argv[1]; j=json.load(open(p)); j["snapshot"]=sys.argv[2]; json.dump(j, open(p,"w"))' \
    "$T/fixture.json" "$SNAP"

token() { must cairn token add --store "$S" --role "$1" --name "$2" --json | json 'j["token"]'; }
ADMIN=$(token admin alice-admin)
SUPPORT=$(token support bob-support)
ORCH=$(token orchestrator orch)

PORT=$("$PY" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
URL=http://127.0.0.1:$PORT
"$CAIRN_BIN" serve --store "$S" --listen "127.0.0.1:$PORT" >"$T/serve.out" 2>"$T/serve.err" &
SERVER=$!
at_exit 'kill -TERM $SERVER 2>/dev/null; wait $SERVER 2>/dev/null'
for _ in $(seq 100); do curl -fsS "$URL/healthz" >/dev/null 2>&1 && break; sleep 0.1; done
curl -fsS "$URL/healthz" >/dev/null || { cat "$T/serve.err" >&2; fail "cairn serve did not answer /healthz"; }

must curl -fsS -X POST -H "Authorization: Bearer $ORCH" -H 'Content-Type: application/json' \
    -d '{}' "$URL/v1/sandboxes/sb-1/shares" >"$T/share.json"
SHARE=$(json 'j["token"]' "$T/share.json")

# A secret over the API: only an admin, only with a reason, and the reason is audited
# before a byte is sent (the browser test opens one; these are the refusals).
code() { curl -s -o "$T/body" -w '%{http_code}' "$@"; }
CONTENT="$URL/v1/snapshots/$SNAP/content?path=/home/ubuntu/project/.env"
assert_eq "$(code -H "Authorization: Bearer $SUPPORT" "$CONTENT&reason=ticket%201")" 403 "support with a reason"
assert_json 'j["error"]["code"] == "secret"' "$T/body"
assert_eq "$(code -H "Authorization: Bearer $ADMIN" "$CONTENT")" 403 "admin without a reason"
assert_eq "$(code -H "Authorization: Bearer $ADMIN" "$CONTENT&reason=ab")" 400 "a reason too short"
assert_eq "$(code -H "Authorization: Bearer $ADMIN" "$CONTENT&reason=a%0Aforged%20line")" 400 "a reason with a newline"
! grep -q sk-test "$T/body" || fail "a secret's bytes in an error"
must cairn audit --store "$S" --json >"$T/audit0.json"
assert_json '[e for e in j["entries"] if e.get("include_secrets")] == []' "$T/audit0.json" "a refused secret read is not recorded as a read"
# The console's files: a redirect to the folder, names only (no way out of the table).
assert_eq "$(code "$URL/console")" 301 "/console redirects"
assert_eq "$(code --path-as-is "$URL/console/..%2Fconsole.h")" 404 "an escaped path"
assert_eq "$(code --path-as-is "$URL/console/../index.html")" 404 "a dot-dot path"
assert_eq "$(code -X POST "$URL/console/")" 405 "the console is read-only"

SHOTS=${SHOTS:-$T/shots}
mkdir -p "$SHOTS"
log "driving Chromium against $URL"
CAIRN_URL=$URL ADMIN_TOKEN=$ADMIN SUPPORT_TOKEN=$SUPPORT SHARE_TOKEN=$SHARE OUT=$SHOTS \
FIXTURE=$T/fixture.json NODE_PATH="$REPO/tests/node_modules" \
REVOKE_CMD="$CAIRN_BIN token revoke --store $S --name bob-support >/dev/null" \
    timeout -k 5 300 node "$REPO/tests/browser/console.js" || fail "the browser test failed (screenshots in $SHOTS)"
for s in signin-refused search sandbox sandbox-reclaimed preview-text browse secret-opened audit share; do
    [ -s "$SHOTS/$s.png" ] || fail "no screenshot $s.png"
done

# The server's own record agrees: the reason is in the audit log, under the admin's name.
must cairn audit --store "$S" --json >"$T/audit.json"
REASON=$(json 'j["reason"]' "$T/fixture.json")
assert_json "any(e.get('actor') == 'alice-admin' and e.get('reason') == '$REASON' and '/home/ubuntu/project/.env' in e.get('paths', []) for e in j['entries'])" \
    "$T/audit.json" "the secret read is audited with its reason"
# Tokens never reach a log.
for tok in "$ADMIN" "$SUPPORT" "$SHARE" "$ORCH"; do
    ! grep -qF -- "$tok" "$T/serve.out" "$T/serve.err" || fail "a token appears in the server's output"
done
kill -TERM $SERVER
wait $SERVER || fail "cairn serve exited $? on SIGTERM"
log "ok"
