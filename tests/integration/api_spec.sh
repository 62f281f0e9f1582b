#!/usr/bin/env bash
# Issue 10: docs/api.yaml and the server agree. The documented routes are exactly the
# server's route table (api/routes.c), with the same roles; each documented operation,
# called over loopback HTTP, answers one of its documented statuses (and 401 without a
# token when it needs one); every other method on a documented path is 405 and
# undocumented paths are 404 "no_route".
source "$(dirname "$0")/../lib.sh"
source "$REPO/tests/api_lib.sh"
"$PY" -c 'import yaml' 2>/dev/null || skip "python3-yaml is not installed (tools/deps.sh installs it)"

S=$T/store
mkdir -p "$T/in/tree/home/ubuntu/output" "$T/dst"
echo a >"$T/in/tree/home/ubuntu/output/a.txt"
mkimg "$T/in/tree" "$T/in/disk.img" 8M
head -c 1M /dev/urandom >"$T/in/mem"
must cairn init --store "$S" >/dev/null
api_serve '{"snapshot_roots": ["'$T'/in"], "restore_roots": ["'$T'/dst"]}' \
    TOK_orchestrator=orchestrator:o TOK_support=support:s TOK_gc=gc:g TOK_admin=admin:a
export TOK_orchestrator TOK_support TOK_gc TOK_admin
for sb in sb1 sbdel; do
    expect_status 201 POST /v1/snapshots "$TOK_orchestrator" \
        '{"tenant":"t1","sandbox":"'$sb'","memory":"'$T'/in/mem","disk":"'$T'/in/disk.img"}'
done
export SNAP=$(json 'j["snapshot"]' "$T/body")
expect_status 201 POST /v1/sandboxes/sb1/shares "$TOK_orchestrator" '{}'
export TOK_share=$(json 'j["token"]' "$T/body")
export U REPO

"$PY" - <<'PY' || fail "docs/api.yaml and the server disagree (see above)"
import json, os, re, subprocess, sys, yaml

spec = yaml.safe_load(open(os.path.join(os.environ["REPO"], "docs/api.yaml")))
U = os.environ["U"]
bad = []

# 1. The documented routes are the server's table, roles included.
names = {"ORCH": "orchestrator", "SUPPORT": "support", "API_ROLE_ORCH": "orchestrator",
         "API_ROLE_SUPPORT": "support", "API_ROLE_GC": "gc", "API_ROLE_ADMIN": "admin",
         "API_ROLE_SHARE": "share"}
src = open(os.path.join(os.environ["REPO"], "api/routes.c")).read()
table = {}
for m, p, roles in re.findall(r'\{"([A-Z]+)", "(/[^"]*)", ([A-Z_| 0]+),', src):
    rs = set() if roles.strip() == "0" else {names[x.strip()] for x in roles.split("|")}
    table[(m, p)] = rs
documented = {}
for p, ops in spec["paths"].items():
    for m, op in ops.items():
        if m == "parameters":
            continue
        documented[(m.upper(), p)] = set(op["x-roles"])
for k in sorted(set(table) | set(documented)):
    if k not in table:
        bad.append("documented but not served: %s %s" % k)
    elif k not in documented:
        bad.append("served but not documented: %s %s" % k)
    elif table[k] != documented[k]:
        bad.append("%s %s: roles %s in the server, %s in the docs" % (k + (sorted(table[k]), sorted(documented[k]))))

# 1b. Each route's query parameter names (the server refuses any other) are the documented ones.
def qnames(params):
    out = set()
    for q in params or []:
        if "$ref" in q:
            q = spec["components"]["parameters"][q["$ref"].rsplit("/", 1)[1]]
        if q.get("in") == "query":
            out.add(q["name"])
    return out
for m, p, q in re.findall(r'\{"([A-Z]+)", "(/[^"]*)", [^,]+, [^,]+, \w+, (?:NULL|"[^"]*"), (NULL|"[^"]*")\}', src):
    served = set() if q == "NULL" else set(q.strip('"').split())
    op = spec["paths"].get(p, {}).get(m.lower())
    if op is None:
        continue
    doc = qnames(spec["paths"][p].get("parameters")) | qnames(op.get("parameters"))
    if served != doc:
        bad.append("%s %s: query parameters %s in the server, %s in the docs" % (m, p, sorted(served), sorted(doc)))
if len(re.findall(r'\{"([A-Z]+)", "(/[^"]*)", [^,]+, [^,]+, \w+, (?:NULL|"[^"]*"), (NULL|"[^"]*")\}', src)) != len(table):
    bad.append("api_spec cannot read every route's query parameters in api/routes.c")

def call(m, path, token, body):
    args = ["curl", "-sS", "-o", "/dev/null", "-D", "-", "-w", "\n%{http_code}", "-X", m, "--max-time", "60"]
    if token:
        args += ["-H", "Authorization: Bearer " + token]
    if body is not None:
        args += ["-H", "Content-Type: application/json", "--data-binary", body]
    out = subprocess.run(args + [U + path], capture_output=True, text=True).stdout
    code = int(out.strip().rsplit("\n", 1)[-1])
    return code, out

def concrete(m, p):
    if p.startswith("/v1/snapshots/"):
        v = os.environ["SNAP"]
    elif p.startswith("/v1/tenants/"):
        v = "t1"
    else:
        v = "sbdel" if (m, p) == ("DELETE", "/v1/sandboxes/{id}") else "sb1"
    return p.replace("{id}", v).replace("{share}", "0123456789abcdef")

# 2. Each operation answers as documented.
for (m, p), roles in sorted(documented.items()):
    op = spec["paths"][p][m.lower()]
    statuses = {int(s) for s in op["responses"]}
    tok = os.environ["TOK_" + sorted(roles)[0]] if roles else None
    body = "{}" if "requestBody" in op else None
    code, hdr = call(m, concrete(m, p), tok, body)
    if code not in statuses:
        bad.append("%s %s answered %d, documented %s" % (m, p, code, sorted(statuses)))
    if "x-request-id:" not in hdr.lower():
        bad.append("%s %s: no X-Request-Id" % (m, p))
    if roles:
        code, _ = call(m, concrete(m, p), None, body)
        if code != 401 or 401 not in statuses:
            bad.append("%s %s without a token: %d (documented 401: %s)" % (m, p, code, 401 in statuses))

# 3. Nothing else answers.
for p in spec["paths"]:
    for m in ["GET", "POST", "PUT", "DELETE", "PATCH"]:
        if (m, p) in documented:
            continue
        code, _ = call(m, concrete(m, p), os.environ["TOK_admin"], None)
        if code != 405:
            bad.append("undocumented %s %s answered %d, not 405" % (m, p, code))
for p in ["/", "/v1", "/v1/", "/v2/snapshots", "/v1/snapshot", "/v1/snapshots/", "/v1/snapshots/%s/" % os.environ["SNAP"],
          "/v1/snapshots/%s/restore/x" % os.environ["SNAP"], "/v1/tenants/t1", "/v1/shared", "/healthz/x",
          "/metrics/", "/v1/sandboxes/sb1/files", "/V1/sandboxes", "/v1/audit/1"]:
    for m in ["GET", "POST"]:
        code, _ = call(m, p, os.environ["TOK_admin"], None)
        if code != 404:
            bad.append("undocumented %s %s answered %d, not 404" % (m, p, code))

for b in bad:
    print("api_spec: " + b, file=sys.stderr)
print("api_spec: %d documented operations checked" % len(documented), file=sys.stderr)
sys.exit(1 if bad else 0)
PY
serve_stop
log "ok"
