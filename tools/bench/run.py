#!/usr/bin/env python3
"""Runs every system of systems.py on one corpus, alternating systems run by run, and
hands the figures to report.py.  Called by tools/bench.sh; see there for the knobs."""
import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import time

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import report  # noqa: E402
from systems import make_systems  # noqa: E402

FILE_ORDER = ("memory", "vmstate", "disk")
TIMEOUT = 1800


class Failed(Exception):
    pass


class Mismatch(Failed):
    pass


class Snap:
    def __init__(self, corpus, sb, k):
        self.sandbox, self.k = sb, k
        self.key = f"{sb}-{k}"
        self.tenant = "t" + sb[2:]  # one tenant per sandbox: dedup must cross tenants
        self.dir = os.path.join(corpus, sb, str(k))
        self.files = [(n, os.path.join(self.dir, n)) for n in FILE_ORDER
                      if os.path.exists(os.path.join(self.dir, n))]


def fleet(corpus):
    """Every snapshot in the order a fleet makes them: first snapshots of all sandboxes,
    then the second ones, and so on.  The last one is thus an incremental snapshot
    taken after the rest of the fleet is stored."""
    sbs = sorted(d for d in os.listdir(corpus) if d.startswith("sb"))
    ks = sorted({int(k) for sb in sbs for k in os.listdir(os.path.join(corpus, sb))
                 if k.isdigit()})
    snaps = [Snap(corpus, sb, k) for k in ks for sb in sbs
             if os.path.isdir(os.path.join(corpus, sb, str(k)))]
    if not snaps or snaps[-1].k < 2:
        sys.exit(f"bench: {corpus} needs sandboxes with at least 2 snapshots")
    return snaps


def run(cmd, env, rssfile):
    """Runs one command; returns (seconds, peak RSS in KiB)."""
    want_out = cmd.on_stdout is not None
    t0 = time.perf_counter()
    try:
        r = subprocess.run(["/usr/bin/time", "-f", "%M", "-o", rssfile] + cmd.argv,
                           cwd=cmd.cwd, env=env, timeout=TIMEOUT, stdin=subprocess.DEVNULL,
                           stdout=subprocess.PIPE if want_out else (cmd.stdout or subprocess.DEVNULL),
                           stderr=subprocess.PIPE)
    except subprocess.TimeoutExpired:
        raise Failed(f"`{' '.join(cmd.argv[:2])}` timed out after {TIMEOUT} s")
    except OSError as e:
        raise Failed(f"`{cmd.argv[0]}`: {e}")
    secs = time.perf_counter() - t0
    if r.returncode != 0:
        err = r.stderr.decode(errors="replace").strip().splitlines()
        raise Failed(f"`{' '.join(cmd.argv[:2])}` exited {r.returncode}: "
                     + (err[-1] if err else "no message"))
    with open(rssfile) as f:
        rss = int(f.read().split()[-1])
    if want_out:
        try:
            cmd.on_stdout(r.stdout.decode())
        except (ValueError, KeyError) as e:
            raise Failed(f"`{' '.join(cmd.argv[:2])}`: unreadable output ({e})")
    return secs, rss


def verify(mapping, snap):
    for name, orig in snap.files:
        got = mapping[name]
        if not os.path.exists(got):
            raise Mismatch(f"RESTORE MISMATCH: {name} of {snap.key} missing after restore")
        if subprocess.run(["cmp", "-s", orig, got]).returncode != 0:
            raise Mismatch(f"RESTORE MISMATCH: {name} of {snap.key} differs from the input")


def one_run(name, factory, snaps, target, workroot):
    """One fresh repository: ingest the fleet, measure it, restore one snapshot."""
    work = os.path.join(workroot, name)
    shutil.rmtree(work, ignore_errors=True)
    os.makedirs(work)
    env = dict(os.environ)
    rssfile = os.path.join(workroot, f"{name}.rss")
    res = {"per_snapshot": {}, "ingest_rss_kib": 0}
    try:
        s = factory(env)
        for cmd in s.setup():
            run(cmd, env, rssfile)
        for snap in snaps:
            secs = 0.0
            for cmd in s.ingest(snap):
                t, rss = run(cmd, env, rssfile)
                secs += t
                res["ingest_rss_kib"] = max(res["ingest_rss_kib"], rss)
            res["per_snapshot"][snap.key] = secs
        res["ingest_s"] = sum(res["per_snapshot"].values())
        t0 = time.perf_counter()
        res["stored_bytes"] = s.stored()
        res.update(s.extra())
        res["measure_s"] = time.perf_counter() - t0
        if s.restores:
            out = os.path.join(workroot, f"{name}.out")
            shutil.rmtree(out, ignore_errors=True)
            os.makedirs(out)
            cmds, mapping = s.restore(target, out)
            res["restore_s"], res["restore_rss_kib"] = 0.0, 0
            for cmd in cmds:
                t, rss = run(cmd, env, rssfile)
                res["restore_s"] += t
                res["restore_rss_kib"] = max(res["restore_rss_kib"], rss)
            t0 = time.perf_counter()
            verify(mapping, target)
            res["verify_s"] = time.perf_counter() - t0
            shutil.rmtree(out)
    finally:
        t0 = time.perf_counter()
        shutil.rmtree(work, ignore_errors=True)
        shutil.rmtree(os.path.join(workroot, f"{name}.out"), ignore_errors=True)
        # Untimed: the next system must not pay for this one's dirty pages.
        subprocess.run(["sync"])
        res["cleanup_s"] = time.perf_counter() - t0
    return res


def ideal_of(files, cache):
    """The page-level ideal takes a while to compute: keep it beside the corpus."""
    sig = hashlib.sha256(json.dumps([(f, os.path.getsize(f), os.stat(f).st_mtime_ns)
                                     for f in files]).encode()).hexdigest()[:16]
    path = os.path.join(cache, f"ideal-{sig}.json")
    if not os.path.exists(path):
        here = os.path.dirname(os.path.abspath(__file__))
        out = subprocess.run([sys.executable, os.path.join(here, "ideal.py")] + files,
                             check=True, capture_output=True, text=True).stdout
        with open(path + ".tmp", "w") as f:
            f.write(out)
        os.replace(path + ".tmp", path)
    with open(path) as f:
        return json.load(f)


def warm(files):
    """Warm page cache: every system then reads its input from memory, as `cat` does."""
    subprocess.run(["cat"] + files, stdout=subprocess.DEVNULL, check=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--corpus", required=True)
    ap.add_argument("--cache", required=True)
    ap.add_argument("--cairn", required=True)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--size", default="small")
    ap.add_argument("--shape", default="")
    ap.add_argument("--only", default="", help="comma-separated system names (debugging)")
    ap.add_argument("--doc")
    ap.add_argument("--png")
    a = ap.parse_args()
    t_start = float(os.environ.get("BENCH_T0") or time.time())  # bench.sh's start
    corpus, cache = os.path.abspath(a.corpus), os.path.abspath(a.cache)
    snaps = fleet(corpus)
    files = [p for s in snaps for _, p in s.files]
    target = snaps[-1]
    workroot = os.path.join(cache, "work")
    shutil.rmtree(workroot, ignore_errors=True)
    os.makedirs(workroot)

    print(f"bench: {len(snaps)} snapshots, {len(files)} files; computing the page-level ideal",
          file=sys.stderr)
    ideal = ideal_of(files, cache)
    systems = make_systems(lambda n: os.path.join(workroot, n), os.path.abspath(a.cairn))
    if a.only:
        unknown = set(a.only.split(",")) - {n for n, _ in systems}
        if unknown:
            sys.exit(f"bench: unknown system(s) {', '.join(sorted(unknown))}")
        systems = [s for s in systems if s[0] in a.only.split(",")]
    runs = {name: [] for name, _ in systems}
    errors = {}
    if not os.access(a.cairn, os.X_OK) and "cairn" in runs:
        errors["cairn"] = f"{a.cairn} is not built"
    for r in range(a.runs):
        warm(files)
        # Rotate the starting system each run so the machine's drift hits all alike.
        order = systems[r % len(systems):] + systems[:r % len(systems)]
        for name, factory in order:
            if name in errors:
                continue
            t0 = time.time()
            try:
                res = one_run(name, factory, snaps, target, workroot)
            except Exception as e:  # one system's trouble must not stop the others
                errors[name] = str(e) if isinstance(e, Failed) else f"{type(e).__name__}: {e}"
                loud = isinstance(e, Mismatch)
                print(f"bench: {'!!! ' if loud else ''}{name} FAILED: {e}", file=sys.stderr)
                continue
            runs[name].append(res)
            print(f"bench: run {r + 1}/{a.runs} {name:10s} ingest {res['ingest_s']:7.2f} s"
                  + (f"  restore {res['restore_s']:6.2f} s" if "restore_s" in res else "")
                  + f"  ({time.time() - t0:.0f} s; untimed: measure {res['measure_s']:.1f}"
                  f" verify {res.get('verify_s', 0):.1f} cleanup {res['cleanup_s']:.1f})",
                  file=sys.stderr)
    shutil.rmtree(workroot, ignore_errors=True)

    meta = {"size": a.size, "shape": a.shape, "runs": a.runs, "corpus": corpus,
            "snapshots": [s.key for s in snaps], "incremental": target.key,
            "fresh": snaps[0].key, "restored": target.key,
            "seconds_total": round(time.time() - t_start, 1)}
    results = report.build(meta, ideal, runs, errors)
    report.emit(results, os.path.join(cache, "bench-results.json"), a.doc, a.png)
    print(f"bench: done in {time.time() - t_start:.0f} s", file=sys.stderr)
    mismatch = any(e.startswith("RESTORE MISMATCH") for e in errors.values())
    return 1 if mismatch or "cairn" in errors else 0


if __name__ == "__main__":
    sys.exit(main())
