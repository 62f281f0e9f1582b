#!/usr/bin/env python3
"""`make bench`, the API part (issue 10), against `cairn serve` over loopback:
  1. the bench fleet ingested through the API beside `cat` of all its files;
  2. a second snapshot of a VM through the API beside `cat` of its files (3 fresh stores,
     each: first snapshot, then the timed second; the median is the figure);
  3. 64 keep-alive connections on metadata routes for N seconds while ingests run, twice:
     errors, p50/p99 latency (tools/bench/apiload.c, a C client), and the server's RSS
     sampled every second (before, during, after each round).

usage: api.py --cairn BUILD/cairn --apiload BUILD/cairn-apiload --corpus DIR --work DIR
              [--fleet DIR] [--seconds 30] [--connections 64] [--rounds 2]
A corpus is cairn-corpus output (DIR/sbNN/K/{memory,vmstate,disk}); the fleet (default:
the corpus) is ingested in fleet order: every sandbox's first snapshot, then the second..."""
import argparse, http.client, json, os, re, shutil, statistics, subprocess, sys, threading, time


def rss_kib(pid):
    with open("/proc/%d/status" % pid) as f:
        return int(re.search(r"VmRSS:\s+(\d+)", f.read()).group(1))


def call(conn, method, path, token, body=None):
    headers = {"Authorization": "Bearer " + token}
    data = None
    if body is not None:
        data = json.dumps(body).encode()
        headers["Content-Type"] = "application/json"
    conn.request(method, path, body=data, headers=headers)
    r = conn.getresponse()
    return r.status, r.read()


def cpu_s(pid):
    """The process's user + system CPU seconds so far."""
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def index_files(store):
    """(table files, their MiB) in the store's RocksDB index."""
    d = os.path.join(store, "index")
    ssts = [os.path.join(d, n) for n in os.listdir(d) if n.endswith(".sst")]
    return len(ssts), sum(os.path.getsize(p) for p in ssts) / 2**20


def cpu_seconds(pid):
    """user + sys CPU time of a process so far (every thread)."""
    with open("/proc/%d/stat" % pid) as f:
        v = f.read().rsplit(")", 1)[1].split()
    return (int(v[11]) + int(v[12])) / os.sysconf("SC_CLK_TCK")


def cat_seconds(files):
    t0 = time.perf_counter()
    subprocess.run(["cat"] + files, stdout=subprocess.DEVNULL, check=True)
    return time.perf_counter() - t0


def snapshots(corpus):
    """{sandbox: [ {name: path} per snapshot, in order ]}"""
    out = {}
    for sb in sorted(d for d in os.listdir(corpus) if d.startswith("sb")):
        ks = sorted((int(k) for k in os.listdir(os.path.join(corpus, sb)) if k.isdigit()))
        out[sb] = [{n: os.path.join(corpus, sb, str(k), n) for n in ("memory", "vmstate", "disk")
                    if os.path.exists(os.path.join(corpus, sb, str(k), n))} for k in ks]
    return out


class Server:
    """A fresh store with its own `cairn serve` on a free loopback port."""

    def __init__(self, cairn, work, name, roots):
        self.dir = os.path.join(work, name)
        self.store = os.path.join(self.dir, "store")
        os.makedirs(self.dir)
        subprocess.run([cairn, "init", "--store", self.store], check=True, stdout=subprocess.DEVNULL)
        with open(os.path.join(self.store, "serve.json"), "w") as f:
            json.dump({"snapshot_roots": roots, "restore_roots": [work],
                       "limits": {"max_long_jobs": 2, "workers": 4}}, f)
        self.token = subprocess.run([cairn, "token", "add", "--store", self.store, "--role", "orchestrator",
                                     "--name", "bench"], check=True, capture_output=True, text=True).stdout.strip()
        logp = os.path.join(self.dir, "serve.log")
        self.log = open(logp, "w")
        self.proc = subprocess.Popen([cairn, "serve", "--store", self.store, "--listen", "127.0.0.1:0"],
                                     stderr=self.log)
        self.port = None
        for _ in range(400):
            m = re.search(r"listening on 127\.0\.0\.1:(\d+)", open(logp).read())
            if m:
                self.port = int(m.group(1))
                break
            time.sleep(0.05)
        if not self.port:
            self.proc.kill()
            sys.exit("api bench: the server did not start (%s)" % logp)

    def conn(self):
        return http.client.HTTPConnection("127.0.0.1", self.port, timeout=600)

    def snapshot(self, conn, sb, files):
        t0 = time.perf_counter()
        st, body = call(conn, "POST", "/v1/snapshots", self.token, dict(tenant="bench", sandbox=sb, **files))
        if st != 201:
            raise SystemExit("api bench: POST /v1/snapshots %s: %d %s" % (sb, st, body[:300]))
        return time.perf_counter() - t0, json.loads(body)

    def stop(self):
        self.proc.terminate()
        rc = self.proc.wait(timeout=120)
        if rc != 0:
            sys.exit("api bench: cairn serve exited %d after SIGTERM" % rc)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--cairn", required=True)
    ap.add_argument("--apiload", required=True)
    ap.add_argument("--corpus", required=True)
    ap.add_argument("--fleet")
    ap.add_argument("--work", required=True)
    ap.add_argument("--seconds", type=float, default=30)
    ap.add_argument("--connections", type=int, default=64)
    ap.add_argument("--rounds", type=int, default=2)
    a = ap.parse_args()
    corpus = os.path.abspath(a.corpus)
    fleet_dir = os.path.abspath(a.fleet or a.corpus)
    work = os.path.abspath(a.work)
    shutil.rmtree(work, ignore_errors=True)
    os.makedirs(work)
    roots = sorted({corpus, fleet_dir})
    result = {}
    servers = []
    try:
        # 1. The fleet, in fleet order, into a fresh store; cat warm, best of 2.
        fleet = snapshots(fleet_dir)
        order = [(sb, fs) for k in range(max(len(v) for v in fleet.values()))
                 for sb, v in fleet.items() if k < len(v) for fs in [v[k]]]
        every = [p for _, fs in order for p in fs.values()]
        cat_fleet = min(cat_seconds(every) for _ in range(2))
        srv = Server(a.cairn, work, "fleet", roots)
        servers.append(srv)
        c = srv.conn()
        cpu0 = cpu_seconds(srv.proc.pid)
        t0 = time.perf_counter()
        for sb, fs in order:
            srv.snapshot(c, sb, fs)
        api_fleet = time.perf_counter() - t0
        fleet_cpu = cpu_seconds(srv.proc.pid) - cpu0
        srv.stop()
        servers.remove(srv)
        total = sum(os.path.getsize(p) for p in every)
        # The server's CPU time (user + sys, all threads) beside the wall time, and the load
        # average: on a shared machine the wall time follows the CPU the server was given.
        print("api bench: the fleet (%d snapshots, %.0f MiB) through the API %.3f s (server CPU %.2f s), cat %.3f s: "
              "%.2fx cat (target <= 2x); load average %.1f" % (len(order), total / 2**20, api_fleet, fleet_cpu,
                                                               cat_fleet, api_fleet / cat_fleet, os.getloadavg()[0]))
        result.update(fleet_s=api_fleet, fleet_cat_s=cat_fleet, fleet_ratio=api_fleet / cat_fleet, fleet_cpu_s=fleet_cpu)

        # 2. A second snapshot of a VM, 3 times on fresh stores.
        snaps = snapshots(corpus)
        sbs = sorted(snaps)
        sb = sbs[0]
        f1, f2 = snaps[sb][0], snaps[sb][1]
        ratios, secs, cats, cpus = [], [], [], []
        for i in range(3):
            srv = Server(a.cairn, work, "second%d" % i, roots)
            servers.append(srv)
            c = srv.conn()
            srv.snapshot(c, sb, f1)
            cat_s = min(cat_seconds(list(f2.values())) for _ in range(2))   # warm, as the API sees them
            cpu0 = cpu_seconds(srv.proc.pid)
            api_s, _ = srv.snapshot(c, sb, f2)
            cpus.append(cpu_seconds(srv.proc.pid) - cpu0)
            srv.stop()
            servers.remove(srv)
            secs.append(api_s)
            cats.append(cat_s)
            ratios.append(api_s / cat_s)
        med = statistics.median(ratios)
        total = sum(os.path.getsize(p) for p in f2.values())
        print("api bench: second snapshot of %s (%.0f MiB) through the API %s s (server CPU %s s), cat %s s: %s; "
              "median %.2fx cat (target <= 1.3x); load average %.1f"
              % (sb, total / 2**20, "/".join("%.3f" % s for s in secs), "/".join("%.2f" % s for s in cpus),
                 "/".join("%.3f" % s for s in cats), "/".join("%.2fx" % r for r in ratios), med, os.getloadavg()[0]))
        result.update(second_snapshot_s=secs, cat_s=cats, ratios=ratios, ratio=med, second_snapshot_cpu_s=cpus)

        # 3. Load: metadata routes on N keep-alive connections while ingests run.
        srv = Server(a.cairn, work, "load", roots)
        servers.append(srv)
        c = srv.conn()
        srv.snapshot(c, sb, f1)
        _, snap = srv.snapshot(c, sb, f2)
        paths = ["/v1/sandboxes", "/v1/snapshots/" + snap["snapshot"], "/v1/sandboxes/" + sb, "/healthz"]
        rss = [rss_kib(srv.proc.pid)]
        rounds = []
        errors = 0
        for rnd in range(a.rounds):
            stop = threading.Event()
            ingests, ingest_errors, samples = [0], [0], []

            def ingester():
                ic = srv.conn()
                k = 0
                while not stop.is_set():
                    s = sbs[k % len(sbs)]
                    fs = snaps[s][(k // len(sbs)) % len(snaps[s])]
                    st, body = call(ic, "POST", "/v1/snapshots", srv.token, dict(tenant="bench", sandbox=s, **fs))
                    if st == 201:
                        ingests[0] += 1
                    elif st != 429:
                        ingest_errors[0] += 1
                        print("api bench: ingest %s: %d %s" % (s, st, body[:200]), file=sys.stderr)
                    k += 1

            def sampler():
                while not stop.wait(1.0):
                    samples.append(rss_kib(srv.proc.pid))

            cpu0, load0 = cpu_s(srv.proc.pid), os.getloadavg()[0]
            th = [threading.Thread(target=ingester), threading.Thread(target=sampler)]
            for t in th:
                t.start()
            out = subprocess.run([a.apiload, "--port", str(srv.port), "--token", srv.token, "--seconds",
                                  str(a.seconds), "--connections", str(a.connections)] + paths,
                                 check=True, capture_output=True, text=True).stdout
            stop.set()
            for t in th:
                t.join()
            load = json.loads(out)
            rss.append(rss_kib(srv.proc.pid))
            nsst, sst_mib = index_files(srv.store)
            cpu, load1 = cpu_s(srv.proc.pid) - cpu0, os.getloadavg()[0]
            load.update(ingests=ingests[0], ingest_errors=ingest_errors[0], rss_samples_kib=samples,
                        rss_after_kib=rss[-1], index_tables=nsst, index_tables_mib=sst_mib,
                        server_cpu_s=cpu, loadavg=[load0, load1])
            rounds.append(load)
            errors += load["errors"] + ingest_errors[0]
            print("api bench: round %d: %d connections on metadata routes for %.0f s beside %d ingests: %d requests, "
                  "%d errors, p50 %.1f ms, p90 %.1f ms, p99 %.1f ms, max %.0f ms (target p99 < 20 ms); server RSS "
                  "%.1f MiB before, %.1f MiB after, samples (MiB) %s; index %d table files (%.1f MiB); "
                  "server CPU %.1f s; load average %.1f -> %.1f"
                  % (rnd + 1, a.connections, a.seconds, ingests[0], load["requests"], load["errors"] + ingest_errors[0],
                     load["p50_ms"], load["p90_ms"], load["p99_ms"], load["max_ms"], rss[-2] / 1024, rss[-1] / 1024,
                     " ".join("%.0f" % (s / 1024) for s in samples), nsst, sst_mib, cpu, load0, load1))
        srv.stop()
        servers.remove(srv)
        result.update(rounds=rounds, rss_kib=rss)
        json.dump(result, open(os.path.join(work, "api-bench.json"), "w"), indent=1)
        sys.exit(1 if errors else 0)
    finally:
        for s in servers:
            if s.proc.poll() is None:
                s.proc.kill()


if __name__ == "__main__":
    main()
