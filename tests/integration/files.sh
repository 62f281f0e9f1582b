#!/usr/bin/env bash
# Issue 3, support reads: a real ext4 image (mke2fs -d) of a tree holding every file type,
# xattrs, hard links, sparse files, a 100-level path, non-UTF-8 and newline names, and the
# folders of a sandbox home; then ls / cat / extract (folder and tar) / audit / policies
# compared with the source tree.
source "$(dirname "$0")/../lib.sh"

S=$T/store
must cairn init --store "$S" >/dev/null
unset CAIRN_ACTOR


# files.py: builds the tree and records what each entry must look like (its class by the
# documented defaults of `cairn policy`), then checks ls output and extracted trees.
cat >"$T/files.py" <<'EOF'
import json, os, random, socket, stat, sys

def hx(p): return p.hex()

def gen(root, out):
    r = random.Random(3)
    exp = {}                                  # path bytes -> {type, class}
    def add(p, typ, cls, **kw):
        exp[p] = dict(type=typ, cls=cls, **kw)
    def d(p, cls, mode=0o755, uid=0):
        os.makedirs(root + p, exist_ok=True)
        os.chmod(root + p, mode); os.lchown(root + p, uid, uid)
        add(p, "dir", cls)
    def f(p, cls, data=None, size=None, mode=0o644, uid=0, **kw):
        if data is None:
            data = r.randbytes(size)
        with open(root + p, "wb") as fh:
            fh.write(data)
        os.chmod(root + p, mode); os.lchown(root + p, uid, uid)
        add(p, "file", cls, **kw)
    H = b"/home/ubuntu"
    U = 1000
    d(b"/home", "runtime"); d(H, "runtime", uid=U)
    d(H + b"/upload", "upload", uid=U)
    f(H + b"/upload/data.csv", "upload", size=50000, uid=U)
    f(H + b"/upload/empty.txt", "upload", b"", uid=U)
    O = H + b"/output"
    d(O, "artifact", uid=U)
    f(O + b"/report.md", "artifact", b"# report\nall good\n", uid=U)
    os.link(root + O + b"/report.md", root + O + b"/report-hard.md")
    add(O + b"/report-hard.md", "hardlink", "artifact", group="report")
    exp[O + b"/report.md"]["group"] = "report"
    os.symlink(b"report.md", root + O + b"/report-link")
    add(O + b"/report-link", "symlink", "artifact", target=b"report.md")
    os.symlink(b"/etc/hostname", root + O + b"/abs-link")
    add(O + b"/abs-link", "symlink", "artifact", target=b"/etc/hostname")
    # sparse: data at 0 and 5 MiB of an 8 MiB file, the rest holes
    with open(root + O + b"/sparse.img", "wb") as fh:
        fh.truncate(8 << 20)
        fh.write(r.randbytes(4096)); fh.seek(5 << 20); fh.write(r.randbytes(10000))
    add(O + b"/sparse.img", "file", "artifact", sparse=True)
    f(O + b"/xattr.txt", "artifact", b"with xattrs\n", uid=U)
    os.setxattr(root + O + b"/xattr.txt", "user.note", b"hello")
    os.setxattr(root + O + b"/xattr.txt", "user.bin", bytes(range(256)))
    exp[O + b"/xattr.txt"]["xattrs"] = {"user.note": "68656c6c6f", "user.bin": bytes(range(256)).hex()}
    f(O + b"/bad\xff\xfe.bin", "artifact", b"not utf-8 name\n", uid=U)
    f(O + b"/new\nline.txt", "artifact", b"newline name\n", uid=U)
    f(O + b"/empty", "artifact", b"", uid=U)
    f(O + b"/secret-mode.txt", "artifact", b"0600\n", mode=0o600, uid=U)
    f(O + b"/run.sh", "artifact", b"#!/bin/sh\necho hi\n", mode=0o755, uid=U)
    f(O + b"/suid.bin", "artifact", b"setuid\n", mode=0o4755, suid=True)
    f(O + b"/big.bin", "artifact", size=3 * 1048576 + 123, uid=U)
    d(O + b"/private", "artifact", mode=0o700, uid=U)
    f(O + b"/private/p.txt", "artifact", b"private\n", uid=U)
    os.mkfifo(root + O + b"/fifo"); add(O + b"/fifo", "fifo", "artifact", special=True)
    if os.geteuid() == 0:
        os.mknod(root + O + b"/null", 0o666 | stat.S_IFCHR, os.makedev(1, 3))
        add(O + b"/null", "chardev", "artifact", special=True)
    cwd = os.getcwd(); os.chdir(root + O)
    s = socket.socket(socket.AF_UNIX); s.bind("sock"); s.close(); os.chdir(cwd)
    add(O + b"/sock", "socket", "artifact", special=True)
    p = O + b"/deep"
    d(p, "artifact")
    for i in range(100):
        p += b"/d%02d" % i
        d(p, "artifact")
    f(p + b"/leaf.txt", "artifact", b"100 levels down\n")
    P = H + b"/project"
    d(P, "project", uid=U); d(P + b"/app", "project", uid=U)
    f(P + b"/app/index.html", "project", b"<h1>app</h1>\n", uid=U)
    f(P + b"/.env", "secret", b"TOKEN=hunter2\n", mode=0o600, uid=U)
    d(P + b"/node_modules", "cache", uid=U); d(P + b"/node_modules/pkg", "cache", uid=U)
    f(P + b"/node_modules/pkg/index.js", "cache", b"module.exports = 1\n", uid=U)
    d(P + b"/__pycache__", "cache", uid=U)
    f(P + b"/__pycache__/m.cpython-311.pyc", "cache", size=700, uid=U)
    d(H + b"/.ssh", "secret", mode=0o700, uid=U)
    f(H + b"/.ssh/id_ed25519", "secret", b"-----BEGIN OPENSSH PRIVATE KEY-----\nxx\n", mode=0o600, uid=U)
    # A hard link to a secret, from an artifact folder: its bytes are the secret's.
    os.link(root + H + b"/.ssh/id_ed25519", root + O + b"/key-copy")
    add(O + b"/key-copy", "hardlink", None, group="key", secretish=True)
    exp[H + b"/.ssh/id_ed25519"]["group"] = "key"
    d(H + b"/.cache", "cache", uid=U); d(H + b"/.cache/pip", "cache", uid=U)
    f(H + b"/.cache/pip/wheel.whl", "cache", size=5000, uid=U)
    f(H + b"/deck.pptx", "project", size=9000, uid=U)
    f(H + b"/notes.txt.swp", "temp", b"swap\n", uid=U)
    f(H + b"/random.txt", "runtime", b"neither\n", uid=U)
    d(b"/tmp", "temp", mode=0o1777)
    f(b"/tmp/scratch.txt", "temp", b"scratch\n")
    d(b"/etc", "runtime"); f(b"/etc/hostname", "runtime", b"sandbox\n")
    d(b"/usr", "runtime"); d(b"/usr/bin", "runtime")
    f(b"/usr/bin/tool", "runtime", size=20000, mode=0o755)
    # fixed, distinct times, children before parents (a child's creation touches its dir)
    for i, p in enumerate(sorted(exp, key=lambda p: -p.count(b"/"))):
        os.utime(root + p, ns=((1600000000 + i * 1000) * 10**9, (1600000000 + i * 1000) * 10**9),
                 follow_symlinks=False)
    for p, e in exp.items():
        st = os.lstat(root + p)
        e.update(mode=stat.S_IMODE(st.st_mode), uid=st.st_uid, gid=st.st_gid,
                 mtime=st.st_mtime_ns, size=st.st_size)
        if "target" in e: e["target"] = hx(e["target"])
    json.dump({hx(p): e for p, e in exp.items()}, open(out, "w"))

def load(path):
    return {bytes.fromhex(k): v for k, v in json.load(open(path)).items()}

def ls_entries(path):
    out = {}
    for e in json.load(open(path))["entries"]:
        p = bytes.fromhex(e["path_hex"]) if "path_hex" in e else e["path"].encode()
        assert p not in out, "ls lists %r twice" % p
        out[p] = e
    return out

def check_ls(expf, lsf, classes_override=None):
    exp, got = load(expf), ls_entries(lsf)
    over = json.loads(classes_override) if classes_override else {}
    bad = []
    for p in exp:
        if p not in got:
            bad.append("missing %r" % p); continue
        e, g = exp[p], got[p]
        if "group" in e:
            if g["type"] not in ("file", "hardlink"):
                bad.append("%r: type %s, not file/hardlink" % (p, g["type"]))
        elif g["type"] != e["type"]:
            bad.append("%r: type %s, expected %s" % (p, g["type"], e["type"]))
        if e["type"] in ("file", "hardlink", "symlink") and g["size"] != e["size"]:
            bad.append("%r: size %s, expected %s" % (p, g["size"], e["size"]))
        cls = e["cls"]
        for k, c in over.items():           # exact paths first, then "DIR/**" (DIR included)
            k = k.encode()
            if p == k or (k.endswith(b"/**") and (p == k[:-3] or p.startswith(k[:-2]))):
                cls = c if cls else None
                break
        if cls and g["class"] != cls:
            bad.append("%r: class %s, expected %s" % (p, g["class"], cls))
        for k in ("mode", "uid", "gid"):
            if g[k] != e[k]:
                bad.append("%r: %s %s, expected %s" % (p, k, g[k], e[k]))
        if round(g["mtime"] * 1e9) != e["mtime"] and e["type"] != "symlink":
            bad.append("%r: mtime %s, expected %s" % (p, g["mtime"], e["mtime"] / 1e9))
        if e["type"] == "symlink" and g.get("target", "").encode() != bytes.fromhex(e["target"]):
            bad.append("%r: target %r" % (p, g.get("target")))
    # each hard-link group: one file, the others hardlinks naming it
    for grp in {e["group"] for e in exp.values() if "group" in e}:
        names = sorted(p for p, e in exp.items() if e.get("group") == grp)
        files = [p for p in names if p in got and got[p]["type"] == "file"]
        links = [p for p in names if p in got and got[p]["type"] == "hardlink"]
        if len(files) != 1 or len(links) != len(names) - 1:
            bad.append("hard links %r: %d file(s), %d hardlink(s)" % (names, len(files), len(links)))
        for p in links:
            if files and got[p].get("target", "").encode() != files[0]:
                bad.append("%r: hardlink target %r, expected %r" % (p, got[p].get("target"), files[0]))
    extra = [p for p in got if p not in exp and p != b"/lost+found"]
    if extra:
        bad.append("ls lists entries not in the tree: %r" % extra[:5])
    if bad:
        sys.exit("\n".join(bad[:30]))

def check_tree(tree, expf, out, classes, secrets):
    """out must hold exactly the selected entries of the tree, with their bytes, modes,
    owners, mtimes, symlink targets, hard links and holes."""
    exp = load(expf)
    want = set(classes.split(",")) if classes != "all" else None
    sel = {}
    for p, e in exp.items():
        if e.get("special"):
            continue
        if (e["cls"] == "secret" or e.get("secretish")) and secrets != "1":
            continue
        if want is not None and (e["cls"] not in want or e.get("secretish")):
            continue
        sel[p] = e
    bad = []
    for p, e in sel.items():
        o, s = out.encode() + p, tree.encode() + p
        try:
            so, ss = os.lstat(o), os.lstat(s)
        except FileNotFoundError:
            bad.append("not extracted: %r" % p); continue
        if stat.S_IFMT(so.st_mode) != stat.S_IFMT(ss.st_mode):
            bad.append("%r: file type differs" % p); continue
        if stat.S_ISLNK(ss.st_mode):
            if os.readlink(o) != os.readlink(s):
                bad.append("%r: symlink target %r, expected %r" % (p, os.readlink(o), os.readlink(s)))
            continue
        mode = stat.S_IMODE(ss.st_mode) & ~(stat.S_ISUID | stat.S_ISGID)
        if stat.S_IMODE(so.st_mode) != mode:
            bad.append("%r: mode %o, expected %o" % (p, stat.S_IMODE(so.st_mode), mode))
        if (so.st_uid, so.st_gid) != (ss.st_uid, ss.st_gid):
            bad.append("%r: owner %d:%d, expected %d:%d" % (p, so.st_uid, so.st_gid, ss.st_uid, ss.st_gid))
        if so.st_mtime_ns != ss.st_mtime_ns:
            bad.append("%r: mtime %d, expected %d" % (p, so.st_mtime_ns, ss.st_mtime_ns))
        if stat.S_ISREG(ss.st_mode):
            if open(o, "rb").read() != open(s, "rb").read():
                bad.append("%r: bytes differ" % p)
            if e.get("sparse") and so.st_blocks * 512 >= so.st_size // 2:
                bad.append("%r: not sparse (%d bytes allocated of %d)" % (p, so.st_blocks * 512, so.st_size))
            for k, v in e.get("xattrs", {}).items():
                try:
                    got = os.getxattr(o, k).hex()
                except OSError as x:
                    got = str(x)
                if got != v:
                    bad.append("%r: xattr %s lost or changed" % (p, k))
    for grp in {e["group"] for e in sel.values() if "group" in e}:
        inos = {os.lstat(out.encode() + p).st_ino for p, e in sel.items()
                if e.get("group") == grp and os.path.lexists(out.encode() + p)}
        if len(inos) != 1:
            bad.append("hard links of group %s are %d different files" % (grp, len(inos)))
    # nothing else: parents of selected entries are the only extra folders allowed
    parents = {b"/"}
    for p in sel:
        while p != b"/":
            p = os.path.dirname(p); parents.add(p)
    for dp, dns, fns in os.walk(out.encode()):
        for n in dns + fns:
            full = os.path.join(dp, n)
            p = full[len(out.encode()):]
            if p in sel or p == b"/lost+found":
                continue
            if p in parents and os.path.isdir(full) and not os.path.islink(full):
                continue
            bad.append("extracted but not selected: %r" % p)
    if bad:
        sys.exit("\n".join(bad[:30]))

cmd = sys.argv[1]
if cmd == "gen": gen(sys.argv[2].encode(), sys.argv[3])
elif cmd == "check_ls": check_ls(*sys.argv[2:])
elif cmd == "check_tree": check_tree(*sys.argv[2:])
elif cmd == "regular":     # NUL-separated paths of regular files, with their class
    for p, e in sorted(load(sys.argv[2]).items()):
        if e["type"] == "file" or e.get("group"):
            sys.stdout.buffer.write(p + b"\0" + (e["cls"] or "secret").encode() + b"\0")
EOF

log "building the tree and its image"
must "$PY" "$T/files.py" gen "$T/tree" "$T/exp.json" >/dev/null
ext4_image "$T/tree" "$T/disk.img" 64M
[ "$(id -u)" = 0 ] || log "not root: no character device in the tree"

ID1=$(snap "$S" acme sb "disk=$T/disk.img")
nfiles=$(json 'j.get("files", -1)' "$T/snap.json")
nexp=$(json 'len(j)' "$T/exp.json")
assert_cmp "$nfiles" -ge "$nexp" "snapshot --json files (entries of the tree)"
[ "$(json '"warning" in j' "$T/snap.json")" = false ] \
    || fail "a clean image gave a warning: $(json 'j["warning"]' "$T/snap.json")"

# audit helpers: the number of records, and checks of the newest one
audit_n() { must cairn audit --store "$S" --json | json 'len(j["entries"])'; }
audit_last() { must cairn audit --store "$S" --json >"$T/audit.json"; assert_json "$1" "$T/audit.json" "${2:-audit record}"; }
A='j["entries"][-1]'

# ---- ls ------------------------------------------------------------------------------
n0=$(audit_n)
must cairn ls --store "$S" --snapshot "$ID1" / --recursive --json --actor alice >"$T/ls.json"
is_json_object "$T/ls.json" || fail "ls --json is not one JSON object"
"$PY" "$T/files.py" check_ls "$T/exp.json" "$T/ls.json" || fail "ls --recursive --json differs from the tree"
assert_eq "$(audit_n)" $((n0 + 1)) "audit records after one ls"
audit_last "$A[\"command\"] == \"ls\" and $A[\"actor\"] == \"alice\" and $A[\"sandbox\"] == \"sb\" and $A[\"tenant\"] == \"acme\" and $A[\"snapshot\"] == \"$ID1\" and $A[\"paths\"] == [\"/\"] and $A[\"include_secrets\"] == False and len($A[\"time\"]) > 0" \
    "audit record of ls"

# A folder without --recursive: its direct children only; a file: itself.
must cairn ls --store "$S" --snapshot "$ID1" /home/ubuntu/upload --json --actor alice >"$T/ls1.json"
assert_json 'sorted(e["path"] for e in j["entries"]) == ["/home/ubuntu/upload/data.csv", "/home/ubuntu/upload/empty.txt"]' \
    "$T/ls1.json" "ls of a folder"
must cairn ls --store "$S" --snapshot "$ID1" /home/ubuntu/deck.pptx --json --actor alice >"$T/ls2.json"
assert_json '[(e["path"], e["size"], e["class"]) for e in j["entries"]] == [("/home/ubuntu/deck.pptx", 9000, "project")]' \
    "$T/ls2.json" "ls of a file"
# The text listing escapes the bytes a terminal would interpret.
must cairn ls --store "$S" --snapshot "$ID1" /home/ubuntu/output --actor alice >"$T/ls.txt"
grep -q 'bad\\xff\\xfe.bin' "$T/ls.txt" || fail "ls does not show the non-UTF-8 name escaped: $(grep bad "$T/ls.txt")"
grep -q 'new\\x0aline.txt' "$T/ls.txt" || fail "ls does not show the newline escaped: $(grep -a line "$T/ls.txt")"
expect 1 cairn ls --store "$S" --snapshot "$ID1" /home/ubuntu/nope --actor alice >/dev/null

# ---- cat -----------------------------------------------------------------------------
log "cat of every regular file"
n0=$(audit_n) ncat=0
while IFS= read -r -d '' p && IFS= read -r -d '' cls; do
    [ "$cls" = secret ] && continue
    must cairn cat --store "$S" --snapshot "$ID1" "$p" --actor bob >"$T/cat.out"
    cmp -s "$T/cat.out" "$T/tree$p" || fail "cat $(printf %q "$p") differs from the source"
    ncat=$((ncat + 1))
done < <("$PY" "$T/files.py" regular "$T/exp.json")
assert_cmp "$ncat" -ge 20 "regular files checked with cat"
assert_eq "$(audit_n)" $((n0 + ncat)) "one audit record per cat"
audit_last "$A[\"command\"] == \"cat\" and $A[\"actor\"] == \"bob\" and $A[\"include_secrets\"] == False"
expect 1 cairn cat --store "$S" --snapshot "$ID1" /home/ubuntu/output --actor bob >/dev/null

# ---- secrets -------------------------------------------------------------------------
for p in /home/ubuntu/.ssh/id_ed25519 /home/ubuntu/project/.env /home/ubuntu/output/key-copy; do
    expect 1 cairn cat --store "$S" --snapshot "$ID1" "$p" --actor bob >"$T/sec.out"
    [ ! -s "$T/sec.out" ] || fail "cat of secret $p without --include-secrets printed bytes"
    grep -qi secret "$T/err" || fail "refusal of $p does not say why: $(cat "$T/err")"
    n0=$(audit_n)
    must cairn cat --store "$S" --snapshot "$ID1" "$p" --include-secrets --actor carol >"$T/sec.out"
    cmp -s "$T/sec.out" "$T/tree$p" || fail "cat --include-secrets $p differs from the source"
    assert_eq "$(audit_n)" $((n0 + 1)) "audit records after cat --include-secrets"
    audit_last "$A[\"command\"] == \"cat\" and $A[\"actor\"] == \"carol\" and $A[\"paths\"] == [\"$p\"] and $A[\"include_secrets\"] == True" \
        "audit record of cat --include-secrets $p"
done

# ---- extract to a folder -------------------------------------------------------------
log "extract --out"
n0=$(audit_n)
must cairn extract --store "$S" --snapshot "$ID1" --out "$T/x1" --actor dave --json >"$T/x1.json"
assert_json 'j["ok"] == True and j["secrets_skipped"] >= 3' "$T/x1.json" "extract --json"
"$PY" "$T/files.py" check_tree "$T/tree" "$T/exp.json" "$T/x1" all 0 || fail "extract --out differs from the tree"
assert_eq "$(audit_n)" $((n0 + 1)) "audit records after one extract"
audit_last "$A[\"command\"] == \"extract\" and $A[\"actor\"] == \"dave\" and $A[\"include_secrets\"] == False"
# Support engineers never get device nodes, FIFOs or setuid files from a tenant's image.
[ -z "$(find "$T/x1" \( -type c -o -type b -o -type p -o -type s -o -perm -4000 -o -perm -2000 \) -print -quit)" ] \
    || fail "extract made a special or setuid file: $(find "$T/x1" \( -type c -o -type p -o -type s -o -perm -4000 \) | head -3)"

must cairn extract --store "$S" --snapshot "$ID1" --out "$T/x2" --include-secrets --actor dave >/dev/null
"$PY" "$T/files.py" check_tree "$T/tree" "$T/exp.json" "$T/x2" all 1 || fail "extract --include-secrets differs from the tree"
audit_last "$A[\"command\"] == \"extract\" and $A[\"include_secrets\"] == True"

# Some paths, some classes.
must cairn extract --store "$S" --snapshot "$ID1" --out "$T/x3" --class upload,artifact --actor dave >/dev/null
"$PY" "$T/files.py" check_tree "$T/tree" "$T/exp.json" "$T/x3" upload,artifact 0 || fail "extract --class upload,artifact"
must cairn extract --store "$S" --snapshot "$ID1" /home/ubuntu/upload /etc/hostname --out "$T/x4" --actor dave >/dev/null
audit_last "$A[\"paths\"] == [\"/home/ubuntu/upload\", \"/etc/hostname\"]" "audit paths of extract PATH..."
[ "$(cd "$T/x4" && find . ! -type d | sort | tr '\n' ' ')" = "./etc/hostname ./home/ubuntu/upload/data.csv ./home/ubuntu/upload/empty.txt " ] \
    || fail "extract of two paths wrote: $(cd "$T/x4" && find . ! -type d)"
cmp -s "$T/x4/etc/hostname" "$T/tree/etc/hostname" || fail "extract PATH: bytes differ"

# ---- extract to a tar ----------------------------------------------------------------
log "extract --tar"
must cairn extract --store "$S" --snapshot "$ID1" --tar "$T/all.tar" --actor erin >/dev/null
mkdir "$T/t1"
tar -xf "$T/all.tar" -C "$T/t1" --xattrs --xattrs-include='user.*' 2>"$T/tar.err" \
    || fail "tar -xf of extract --tar: $(head -5 "$T/tar.err")"
"$PY" "$T/files.py" check_tree "$T/tree" "$T/exp.json" "$T/t1" all 0 || fail "tar -xf of extract --tar differs from the tree"
audit_last "$A[\"command\"] == \"extract\" and $A[\"actor\"] == \"erin\""
mkdir "$T/t2"
cairn extract --store "$S" --snapshot "$ID1" --tar - --class upload,artifact --actor erin 2>"$T/tar2.err" \
    | tar -xf - -C "$T/t2" --xattrs --xattrs-include='user.*' || fail "extract --tar - | tar -x: $(head -5 "$T/tar2.err")"
"$PY" "$T/files.py" check_tree "$T/tree" "$T/exp.json" "$T/t2" upload,artifact 0 || fail "extract --tar - --class upload,artifact"

# ---- the actor is required ------------------------------------------------------------
n0=$(audit_n)
expect 2 cairn ls --store "$S" --snapshot "$ID1" >/dev/null
expect 2 cairn cat --store "$S" --snapshot "$ID1" /etc/hostname >/dev/null
[ ! -s "$T/out" ] || fail "cat without an actor printed bytes"
expect 2 cairn extract --store "$S" --snapshot "$ID1" --out "$T/noactor" >/dev/null
[ ! -e "$T/noactor" ] || fail "extract without an actor wrote $T/noactor"
assert_eq "$(audit_n)" "$n0" "audit records after reads without an actor"
CAIRN_ACTOR=frank must cairn cat --store "$S" --snapshot "$ID1" /etc/hostname >"$T/cat.out"
cmp -s "$T/cat.out" "$T/tree/etc/hostname" || fail "cat with CAIRN_ACTOR"
audit_last "$A[\"actor\"] == \"frank\"" "CAIRN_ACTOR is the audited actor"

# ---- policies and explicit classes; SANDBOX@latest -------------------------------------
printf '%s\n' '# ours first' '/home/ubuntu/random.txt artifact' '/home/ubuntu/output/** temp' >"$T/policy"
printf 'upload\t/etc/hostname\nproject\t/usr/bin\nartifact\t/home/ubuntu/output/report.md\n' >"$T/classes"
expect 0 cairn snapshot --store "$S" --tenant acme --sandbox sb --disk "$T/disk.img" \
    --policy "$T/policy" --classes "$T/classes" --json >"$T/snap2.json"
ID2=$(json 'j["snapshot"]' "$T/snap2.json")
[ "$ID2" != "$ID1" ] || fail "second snapshot has the first one's id"
must cairn ls --store "$S" --snapshot sb@latest --recursive --json --actor alice >"$T/ls2.json"
assert_json "j[\"snapshot\"] == \"$ID2\"" "$T/ls2.json" "sb@latest is the newest snapshot"
over='{"/home/ubuntu/output/report.md": "artifact", "/home/ubuntu/random.txt": "artifact",
       "/etc/hostname": "upload", "/usr/bin/**": "project", "/home/ubuntu/output/**": "temp"}'
"$PY" "$T/files.py" check_ls "$T/exp.json" "$T/ls2.json" "$over" \
    || fail "--policy / --classes did not give the documented classes"
audit_last "$A[\"snapshot\"] == \"$ID2\"" "audit of sb@latest names the snapshot"
# classes are fixed at snapshot time: the first snapshot keeps the defaults
must cairn ls --store "$S" --snapshot "$ID1" /home/ubuntu/random.txt --json --actor alice >"$T/ls3.json"
assert_json 'j["entries"][0]["class"] == "runtime"' "$T/ls3.json" "first snapshot's class changed"

# The store's policy file applies when no --policy is given, before the defaults.
printf '/home/ubuntu/notes.txt.swp upload\n' >"$S/policy"
must cairn policy --store "$S" >"$T/policy.out"
grep -q 'notes.txt.swp' "$T/policy.out" || fail "cairn policy does not show the store's policy file"
snap "$S" acme sb3 "disk=$T/disk.img" >/dev/null
must cairn ls --store "$S" --snapshot sb3@latest /home/ubuntu/notes.txt.swp --json --actor alice >"$T/ls4.json"
assert_json 'j["entries"][0]["class"] == "upload"' "$T/ls4.json" "the store's policy file"
rm -f "$S/policy"

# Words after "--" are paths, even ones that look like options: `ls -- -h` lists "/-h".
mkdir -p "$T/dash"
echo dash >"$T/dash/-h"
ext4_image "$T/dash" "$T/dash.img" 8M
snap "$S" acme dash "disk=$T/dash.img" >/dev/null
must cairn ls --store "$S" --snapshot dash@latest --json --actor alice -- -h >"$T/lsdash.json"
assert_json 'len(j["entries"]) == 1 and j["entries"][0]["path"] == "/-h"' "$T/lsdash.json" "ls -- -h"

# restore takes SANDBOX@latest wherever a snapshot id is taken.
must cairn restore --store "$S" --snapshot dash@latest --out "$T/dashout" --json >"$T/rdash.json"
cmp -s "$T/dash.img" "$T/dashout/disk" || fail "restore of dash@latest differs from the disk"
assert_json "j[\"snapshot\"] == \"$(json 'j["snapshots"][0]["snapshot"]' <(cairn snapshots --store "$S" --sandbox dash --json))\"" \
    "$T/rdash.json" "restore --json names the resolved snapshot id"
expect 1 cairn restore --store "$S" --snapshot nobody@latest --out "$T/nobody" >/dev/null
[ ! -e "$T/nobody/disk" ] || fail "restore of a sandbox with no snapshot wrote a file"

log "ok: $nfiles entries, $ncat files compared with cat"
