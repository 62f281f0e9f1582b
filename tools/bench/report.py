"""Turns the runs of run.py into figures, targets, a table, bench-results.json,
the generated part of docs/performance.md and docs/bench.png."""
import datetime
import json
import os
import platform
import re
import subprocess
import tempfile

import targets as tg

LABELS = {"cairn": "cairn", "restic": "restic 0.14 (v2, auto)", "borg": "borg 1.2 (zstd,3)",
          "borg-fixed": "borg 1.2 fixed,4096", "casync": "casync", "cat": "cat (read)",
          "cp": "cp --sparse=always", "zstd1": "zstd -1 -T0", "zstd3": "zstd -3 -T0 / zstd -d"}
SHORT = {"cairn": "cairn", "restic": "restic", "borg": "borg", "borg-fixed": "borg fixed",
         "casync": "casync", "cat": "cat", "cp": "cp", "zstd1": "zstd -1", "zstd3": "zstd -3 / -d"}
BEGIN, END = "<!-- bench:begin -->", "<!-- bench:end -->"


def sh(argv):
    try:
        r = subprocess.run(argv, capture_output=True, text=True, timeout=30)
        return (r.stdout or r.stderr).strip().splitlines()[0]
    except (OSError, IndexError, subprocess.SubprocessError):
        return "?"


def machine():
    cpu = "?"
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    osname = "?"
    if os.path.exists("/etc/os-release"):
        for line in open("/etc/os-release"):
            if line.startswith("PRETTY_NAME="):
                osname = line.split("=", 1)[1].strip().strip('"')
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    return {"nproc": os.cpu_count(), "cpu": cpu, "kernel": platform.release(), "os": osname,
            "mem_gib": round(mem / 2**30, 1),
            "loadavg_end": [round(x, 2) for x in os.getloadavg()],
            "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
            "versions": {"restic": " ".join(sh(["restic", "version"]).split()[:2]),
                         "borg": sh(["borg", "--version"]),
                         "casync": "casync " + sh(["casync", "--version"]).split()[-1],
                         "zstd": "zstd " + re.sub(r".*(v[0-9.]+).*", r"\1", sh(["zstd", "--version"])),
                         "cairn": "git " + sh(["git", "describe", "--always", "--dirty"])}}


def best(runs, inc, fresh):
    """Best of the runs for times (the least disturbed run), worst for memory."""
    if not runs:
        return None
    b = {"ingest_s": min(r["ingest_s"] for r in runs),
         "incremental_s": min(r["per_snapshot"][inc] for r in runs),
         "fresh_s": min(r["per_snapshot"][fresh] for r in runs),
         "stored_bytes": runs[-1]["stored_bytes"],
         "ingest_rss_kib": max(r["ingest_rss_kib"] for r in runs)}
    if "restore_s" in runs[0]:
        b["restore_s"] = min(r["restore_s"] for r in runs)
        b["restore_rss_kib"] = max(r["restore_rss_kib"] for r in runs)
    for k in ("pack_bytes", "index_bytes", "chunks", "logical_bytes", "stats_error",
              "store_parts"):
        if k in runs[-1]:
            b[k] = runs[-1][k]
    return b


def build(meta, ideal, runs, errors):
    systems = {}
    for name, rs in runs.items():
        b = best(rs, meta["incremental"], meta["fresh"])
        systems[name] = {"label": LABELS[name], "runs": rs, "best": b,
                         "error": errors.get(name)}
    res = {"machine": machine(), "meta": meta, "ideal": ideal, "systems": systems}
    res["targets"] = tg.evaluate(res)
    return res


def fmt_s(v):
    return "—" if v is None else (f"{v:.2f} s" if v < 100 else f"{v:.0f} s")


def fmt_b(v):
    return "—" if v is None else f"{v / 1e6:.1f} MB"


def fmt_m(v):
    return "—" if v is None else f"{v / 1024:.0f} MiB"


def cell(fmt, v, ref):
    if v is None:
        return "—"
    if not ref:
        return fmt(v)
    return f"{fmt(v)} ({v / ref:.2g}x)"


def table(res):
    s, meta, ideal = res["systems"], res["meta"], res["ideal"]
    cb = (s.get("cairn") or {}).get("best") or {}
    cols = [("fleet ingest", "ingest_s", fmt_s), (f"incremental ({meta['incremental']})",
            "incremental_s", fmt_s), ("stored (du -sb)", "stored_bytes", fmt_b),
            (f"restore ({meta['restored']})", "restore_s", fmt_s),
            ("peak RSS ingest", "ingest_rss_kib", fmt_m),
            ("peak RSS restore", "restore_rss_kib", fmt_m)]
    head = "| system | " + " | ".join(c[0] for c in cols) + " | stored / ideal |"
    lines = [head, "|" + "---|" * (len(cols) + 2)]
    for name, sysres in s.items():
        b = sysres["best"]
        if b is None:
            err = sysres["error"].replace("|", "/")
            lines.append(f"| {sysres['label']} | FAILED: {err} |"
                         + " |" * len(cols))
            continue
        ref = {} if name == "cairn" else cb
        label = sysres["label"] + (" (FAILED in a later run)" if sysres["error"] else "")
        row = [cell(f, b.get(k), ref.get(k)) for _, k, f in cols]
        st = b.get("stored_bytes")
        row.append(f"{st / ideal['ideal_bytes']:.2f}x" if st else "—")
        lines.append(f"| {label} | " + " | ".join(row) + " |")
    lines.append(f"| page-level ideal | — | — | {fmt_b(ideal['ideal_bytes'])}"
                 + (f" ({ideal['ideal_bytes'] / cb['stored_bytes']:.2g}x)"
                    if cb.get("stored_bytes") else "") + " | — | — | — | 1.00x |")
    return "\n".join(lines)


def markdown(res):
    m, meta, ideal = res["machine"], res["meta"], res["ideal"]
    s = res["systems"]
    cb = (s.get("cairn") or {}).get("best") or {}
    out = [f"## Benchmark (`make bench`, BENCH_SIZE={meta['size']}), generated {m['date']}", "",
           f"- Machine: {m['nproc']} cores, {m['cpu']}, {m['mem_gib']} GiB RAM, "
           f"kernel {m['kernel']}, {m['os']}; load average at the end "
           f"{'/'.join(map(str, m['loadavg_end']))} (1/5/15 min: other work on the machine "
           f"disturbs the times).",
           "- Versions: " + "; ".join(m["versions"].values()) + ".",
           f"- Corpus: {meta['shape']}; {len(meta['snapshots'])} snapshots, "
           f"{ideal['files']} files, {ideal['logical_bytes'] / 2**30:.2f} GiB logical, "
           f"{ideal['zero_pages'] / max(ideal['pages'], 1):.1%} zero pages, "
           f"{ideal['distinct_pages']} distinct non-zero pages "
           f"({ideal['distinct_bytes'] / 1e6:.1f} MB before compression).",
           f"- Method: every system ingests the same snapshots in the same fleet order "
           f"(first snapshots of all sandboxes, then the second ones, ...) into a fresh "
           f"repository, one process per snapshot (casync: per file); runs alternate between "
           f"systems (round-robin, start rotated); best of {meta['runs']} for times, worst "
           f"for RSS. Page cache warm (`cat` of all inputs before each round; caches are "
           f"never dropped). Incremental = {meta['incremental']}, the last snapshot of the "
           f"fleet, whose parent and every other snapshot are already stored. Fresh = "
           f"{meta['fresh']}, the first. Restore = {meta['restored']} into an empty folder, "
           f"then `cmp` against the input. Stored = `du -sb` of the repository (cp: "
           f"allocated bytes). Peak RSS from `/usr/bin/time -f %M`, max over the commands. "
           f"Cairn's times include its fsyncs (durable before acknowledged); cp and zstd "
           f"do not sync. Ratios in parentheses are to Cairn's figure.",
           f"- Bench took {meta['seconds_total']:.0f} s.", ""]
    out.append(table(res))
    if cb.get("index_bytes") is not None:
        out += ["", f"Cairn `stats`: stored_bytes {fmt_b(cb.get('pack_bytes'))} (packs), "
                f"index_bytes {fmt_b(cb['index_bytes'])}, chunks {cb.get('chunks')}; "
                f"the page-level ideal has {ideal['distinct_pages']} distinct pages. "
                "Store folders (`du -sb`): " + ", ".join(
                    f"{d}/ {fmt_b(v)}" for d, v in (cb.get("store_parts") or {}).items()) + "."]
    fails = [(v["label"], v["error"]) for v in s.values() if v["error"]]
    if fails:
        out += ["", "Failures:"] + [f"- {lab}: `{err.replace('`', '')}`" for lab, err in fails]
    out += ["", "### Targets (issue 5 on BENCH_SIZE=full; issue 2)", "",
            "| issue | target | measured | result |", "|---|---|---|---|"]
    for t in res["targets"]:
        out.append(f"| {t['issue']} | {t['target']} | {t['measured']} | "
                   f"{ {True: 'PASS', False: '**MISS**', None: 'n/a'}[t['ok']] } |")
    out += ["", "![ingest, restore and stored bytes, relative to Cairn](bench.png)"]
    return "\n".join(out)


def write_doc(path, text):
    block = f"{BEGIN}\n{text}\n{END}"
    old = open(path).read() if os.path.exists(path) else ""
    if BEGIN in old and END in old:
        new = old[:old.index(BEGIN)] + block + old[old.index(END) + len(END):]
    elif old:
        new = old.rstrip("\n") + "\n\n" + block + "\n"
    else:
        new = ("# Performance\n\nThe part between the bench markers is written by "
               "`make bench`; the analysis around it is by hand.\n\n" + block + "\n")
    with open(path + ".tmp", "w") as f:
        f.write(new)
    os.replace(path + ".tmp", path)


def plot(res, png):
    s = res["systems"]
    cb = (s.get("cairn") or {}).get("best") or {}
    here = os.path.dirname(os.path.abspath(__file__))
    with tempfile.TemporaryDirectory() as d:
        panels = []
        for key, title, unit, scale in (("ingest_s", "fleet ingest", "s", 1),
                                        ("restore_s", "restore one snapshot", "s", 1),
                                        ("stored_bytes", "stored bytes", "MB", 1e-6)):
            colour = {"cairn": 1, "cat": 3, "cp": 3, "zstd1": 3, "zstd3": 3}
            rows = [(SHORT[n], v["best"][key], colour.get(n, 2)) for n, v in s.items()
                    if v["best"] and v["best"].get(key)]
            if key == "stored_bytes":
                rows.append(("ideal", res["ideal"]["ideal_bytes"], 4))
            ref = cb.get(key)
            with open(os.path.join(d, key), "w") as f:
                for lab, v, c in rows:
                    y = v / ref if ref else v * scale
                    f.write(f'"{lab}" {y:.6g} {c}\n')
            ylab = "relative to cairn (log scale)" if ref else f"{unit} (log scale)"
            i = len(panels) + 1
            panels.append(f'f{i}="{os.path.join(d, key)}"; t{i}="{title}"; y{i}="{ylab}"')
        subprocess.run(["gnuplot", "-e", "; ".join(panels) + f'; out="{png}"; norm={1 if cb else 0}; '
                        f'sub="{res["meta"]["shape"]}, {res["machine"]["date"]}"',
                        os.path.join(here, "plot.gp")], check=True)


def emit(res, json_path, doc, png):
    with open(json_path, "w") as f:
        json.dump(res, f, indent=1)
    text = markdown(res)
    print(text)
    if png:
        try:
            plot(res, os.path.abspath(png))
        except (OSError, subprocess.CalledProcessError) as e:
            print(f"bench: plot failed: {e}")
    if doc:
        write_doc(doc, text)
