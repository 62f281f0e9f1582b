"""The targets of issue 5 (the peers) and issue 2 (the core), judged from the measured
figures only.  A target whose inputs are missing (a failed system) is n/a, never PASS."""

MIB = 1024
PEERS = ("restic", "borg", "borg-fixed", "casync")


def evaluate(res):
    s = {n: v["best"] for n, v in res["systems"].items() if v["best"]}
    labels = {n: v["label"] for n, v in res["systems"].items()}
    c = s.get("cairn")
    ideal = res["ideal"]["ideal_bytes"]
    meta = res["meta"]
    out = []

    def add(issue, target, measured, ok):
        out.append({"issue": issue, "target": target, "measured": measured, "ok": ok})

    def fastest(key):
        have = [(s[p][key], p) for p in PEERS if p in s and s[p].get(key)]
        return min(have) if have else (None, None)

    def get(name, key):
        return s.get(name, {}).get(key)

    # issue 5 -------------------------------------------------------------------
    for key, what in (("ingest_s", "fleet ingest"), ("restore_s", "restore of one snapshot")):
        v, p = fastest(key)
        cv = c.get(key) if c else None
        if cv and v:
            add(5, f"{what} >= 3x faster than the fastest peer",
                f"cairn {cv:.2f} s, fastest peer {labels[p]} {v:.2f} s: {v / cv:.2f}x",
                v >= 3 * cv)
        else:
            add(5, f"{what} >= 3x faster than the fastest peer", "missing figures", None)
        lim, lname = (("zstd1", "ingest_s"), "zstd -1 -T0") if key == "ingest_s" else \
            (("zstd3", "restore_s"), "zstd -d")
        lv = get(*lim)
        add(5, f"{what} no slower than {lname}",
            f"cairn {cv:.2f} s, {lname} {lv:.2f} s" if cv and lv else "missing figures",
            cv <= lv if cv and lv else None)
    st = c.get("stored_bytes") if c else None
    add(5, "stored bytes (whole store) <= 1.05x the page-level ideal",
        f"{st / ideal:.3f}x ({st / 1e6:.1f} MB / {ideal / 1e6:.1f} MB)" if st else
        "missing figures", st <= 1.05 * ideal if st else None)
    if c and c.get("restore_rss_kib"):
        peak = max(c["ingest_rss_kib"], c["restore_rss_kib"])
        others = {p: max(s[p]["ingest_rss_kib"], s[p].get("restore_rss_kib") or 0)
                  for p in ("restic", "borg", "borg-fixed") if p in s}
        add(5, "peak RSS of ingest and restore <= 64 MiB, below restic's and borg's",
            f"cairn {peak / MIB:.0f} MiB; " + ", ".join(f"{labels[p]} {v / MIB:.0f} MiB"
                                                        for p, v in others.items()),
            peak <= 64 * MIB and all(peak < v for v in others.values()))
    else:
        add(5, "peak RSS of ingest and restore <= 64 MiB", "missing figures", None)

    # issue 2 -------------------------------------------------------------------
    inc, cat = (c or {}).get("incremental_s"), get("cat", "incremental_s")
    add(2, f"incremental snapshot ({meta['incremental']}) <= 2x `cat` of its files",
        f"cairn {inc:.3f} s, cat {cat:.3f} s: {inc / cat:.2f}x" if inc and cat else
        "missing figures", inc <= 2 * cat if inc and cat else None)
    fr, z1 = (c or {}).get("fresh_s"), get("zstd1", "fresh_s")
    add(2, f"fresh ingest ({meta['fresh']}) throughput >= 0.8x `zstd -1 -T0`",
        f"cairn {fr:.2f} s, zstd -1 {z1:.2f} s: {z1 / fr:.2f}x" if fr and z1 else
        "missing figures", z1 / fr >= 0.8 if fr and z1 else None)
    rs, zd = (c or {}).get("restore_s"), get("zstd3", "restore_s")
    add(2, "restore <= `zstd -d` of the zstd -3 data",
        f"cairn {rs:.2f} s, zstd -d {zd:.2f} s" if rs and zd else "missing figures",
        rs <= zd if rs and zd else None)
    pb = (c or {}).get("pack_bytes")
    add(2, "stored_bytes (packs, `cairn stats`) <= 1.10x the page-level ideal",
        f"{pb / ideal:.3f}x ({pb / 1e6:.1f} MB)" if pb else "missing figures",
        pb <= 1.10 * ideal if pb else None)
    ib, ch = (c or {}).get("index_bytes"), (c or {}).get("chunks")
    add(2, "index_bytes / chunks <= 40",
        f"{ib / ch:.1f} B ({ib} / {ch})" if ib is not None and ch else "missing figures",
        ib / ch <= 40 if ib is not None and ch else None)
    return out
