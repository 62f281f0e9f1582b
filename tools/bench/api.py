#!/usr/bin/env python3
"""`make bench`, the API part (issue 10): a second snapshot of a VM through `cairn serve`
beside `cat` of its files, and 64 keep-alive connections on metadata routes for a while
(ingests running beside them): errors, p50/p99 latency, the server's RSS before and after.

usage: api.py --cairn BUILD/cairn --corpus DIR --work DIR [--seconds 30] [--connections 64]
The corpus is cairn-corpus output (DIR/sbNN/K/{memory,vmstate,disk})."""
import argparse, http.client, json, os, re, shutil, subprocess, sys, threading, time


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
    payload = r.read()
    return r.status, payload


def cat_seconds(files):
    t0 = time.perf_counter()
    subprocess.run(["cat"] + files, stdout=subprocess.DEVNULL, check=True)
    return time.perf_counter() - t0


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--cairn", required=True)
    ap.add_argument("--corpus", required=True)
    ap.add_argument("--work", required=True)
    ap.add_argument("--seconds", type=float, default=30)
    ap.add_argument("--connections", type=int, default=64)
    a = ap.parse_args()
    corpus = os.path.abspath(a.corpus)
    work = os.path.abspath(a.work)
    shutil.rmtree(work, ignore_errors=True)
    os.makedirs(work)
    store = os.path.join(work, "store")
    subprocess.run([a.cairn, "init", "--store", store], check=True, stdout=subprocess.DEVNULL)
    with open(os.path.join(store, "serve.json"), "w") as f:
        json.dump({"snapshot_roots": [corpus], "restore_roots": [work],
                   "limits": {"max_long_jobs": 2, "workers": 4}}, f)

    def token(role, name):
        return subprocess.run([a.cairn, "token", "add", "--store", store, "--role", role, "--name", name],
                              check=True, capture_output=True, text=True).stdout.strip()
    orch = token("orchestrator", "bench")
    log = open(os.path.join(work, "serve.log"), "w")
    srv = subprocess.Popen([a.cairn, "serve", "--store", store, "--listen", "127.0.0.1:0"], stderr=log)
    port = None
    for _ in range(200):
        m = re.search(r"listening on 127\.0\.0\.1:(\d+)", open(os.path.join(work, "serve.log")).read())
        if m:
            port = int(m.group(1))
            break
        time.sleep(0.05)
    if not port:
        srv.kill()
        sys.exit("api bench: the server did not start")
    try:
        sbs = sorted(d for d in os.listdir(corpus) if d.startswith("sb"))
        def files(sb, k):
            d = os.path.join(corpus, sb, str(k))
            return {n: os.path.join(d, n) for n in ("memory", "vmstate", "disk") if os.path.exists(os.path.join(d, n))}
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
        sb = sbs[0]
        f1, f2 = files(sb, 1), files(sb, 2)
        st, body = call(conn, "POST", "/v1/snapshots", orch, dict(tenant="bench", sandbox=sb, **f1))
        assert st == 201, body
        cat_s = min(cat_seconds(list(f2.values())) for _ in range(2))   # warm, as the API sees them
        t0 = time.perf_counter()
        st, body = call(conn, "POST", "/v1/snapshots", orch, dict(tenant="bench", sandbox=sb, **f2))
        api_s = time.perf_counter() - t0
        assert st == 201, body
        snap = json.loads(body)["snapshot"]
        total = sum(os.path.getsize(p) for p in f2.values())
        print("api bench: second snapshot of %s (%.0f MiB) through the API %.3f s, cat %.3f s: %.2fx cat "
              "(target <= 1.3x)" % (sb, total / 2**20, api_s, cat_s, api_s / cat_s))

        # Load: metadata routes on N keep-alive connections while ingests run.
        stop = time.monotonic() + a.seconds
        lat, errors, lock = [], [0], threading.Lock()
        paths = ["/v1/sandboxes", "/v1/snapshots/" + snap, "/v1/sandboxes/" + sb, "/healthz"]

        def client(i):
            c = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
            mine, bad, k = [], 0, i
            while time.monotonic() < stop:
                p = paths[k % len(paths)]
                k += 1
                t = time.perf_counter()
                try:
                    s, _ = call(c, "GET", p, orch)
                    if s != 200:
                        bad += 1
                except Exception:
                    bad += 1
                    c = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
                mine.append(time.perf_counter() - t)
            with lock:
                lat.extend(mine)
                errors[0] += bad

        ingests = [0]
        def ingester():
            c = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
            k = 0
            while time.monotonic() < stop:
                s = sbs[k % len(sbs)]
                fs = files(s, 1 + (k // len(sbs)) % 2)
                st, body = call(c, "POST", "/v1/snapshots", orch, dict(tenant="bench", sandbox=s, **fs))
                if st == 201:
                    ingests[0] += 1
                elif st != 429:
                    with lock:
                        errors[0] += 1
                k += 1

        rss0 = rss_kib(srv.pid)
        threads = [threading.Thread(target=client, args=(i,)) for i in range(a.connections)]
        threads.append(threading.Thread(target=ingester))
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        rss1 = rss_kib(srv.pid)
        lat.sort()
        n = len(lat)
        p = lambda q: lat[min(n - 1, int(q * n))] * 1000 if n else float("nan")
        print("api bench: %d connections on metadata routes for %.0f s beside %d ingests: %d requests, %d errors, "
              "p50 %.1f ms, p99 %.1f ms (target < 20 ms; measured by a Python client on the same cores), "
              "server RSS %.1f MiB before, %.1f MiB after"
              % (a.connections, a.seconds, ingests[0], n, errors[0], p(0.5), p(0.99), rss0 / 1024, rss1 / 1024))
        result = dict(second_snapshot_s=api_s, cat_s=cat_s, ratio=api_s / cat_s, requests=n, errors=errors[0],
                      p50_ms=p(0.5), p99_ms=p(0.99), rss_before_kib=rss0, rss_after_kib=rss1, ingests=ingests[0])
        json.dump(result, open(os.path.join(work, "api-bench.json"), "w"), indent=1)
        srv.terminate()
        rc = srv.wait(timeout=120)
        if rc != 0:
            sys.exit("api bench: cairn serve exited %d after SIGTERM" % rc)
        sys.exit(1 if errors[0] else 0)
    finally:
        if srv.poll() is None:
            srv.kill()


if __name__ == "__main__":
    main()
