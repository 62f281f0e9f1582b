#!/usr/bin/env python3
"""Resumes a QEMU snapshot and times it, for tools/bench_lazy.sh.

lazy_vm.py --t0 EPOCH --qmp SOCK --serial FILE --vmstate FILE --after N --nonce HEX
           [--io-pid PID] -- QEMU-COMMAND...

Launches QEMU (its command line has -incoming defer), loads the device state with
x-ignore-shared as tools/vm/vm.sh does, `cont`s it, and prints one JSON line:
  qmp       seconds from t0 until QEMU's monitor answers (QEMU started, RAM mapped);
  rchar_qmp what PID read by then
  running   seconds from t0 (the wake request, taken by the caller) until QMP says running
  tick      seconds from t0 until the console shows the guest's next tick (TICK N+1 with
            the same boot nonce: the guest runs again, it did not reboot)
  cpu       CPU seconds PID spent by then
  rchar     bytes PID (the page source: `cairn mount`) read between launch and that tick
Then quits QEMU. Exit 1 with a reason if the guest does not tick within 120 s.
"""
import argparse
import json
import os
import re
import socket
import subprocess
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "vm"))
from qmp import Qmp  # noqa: E402


def rchar(pid):
    if not pid:
        return 0
    with open(f"/proc/{pid}/io") as f:
        for line in f:
            if line.startswith("rchar:"):
                return int(line.split()[1])
    return 0


def cpu(pid):
    if not pid:
        return 0.0
    with open(f"/proc/{pid}/stat") as f:
        st = f.read().rsplit(")", 1)[1].split()
    return (int(st[11]) + int(st[12])) / os.sysconf("SC_CLK_TCK")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--t0", type=float, required=True)
    ap.add_argument("--qmp", required=True)
    ap.add_argument("--serial", required=True)
    ap.add_argument("--vmstate", required=True)
    ap.add_argument("--after", type=int, required=True)
    ap.add_argument("--nonce", required=True)
    ap.add_argument("--io-pid", type=int, default=0)
    ap.add_argument("qemu", nargs=argparse.REMAINDER)
    a = ap.parse_args()
    cmd = a.qemu[1:] if a.qemu and a.qemu[0] == "--" else a.qemu
    io0, cpu0 = rchar(a.io_pid), cpu(a.io_pid)
    for p in (a.qmp, a.serial):
        if os.path.exists(p):
            os.unlink(p)
    err = open(a.serial + ".stderr", "w")
    vm = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=err, stderr=err)
    out = {}
    try:
        q = Qmp(a.qmp)
        out["qmp"] = time.time() - a.t0
        out["rchar_qmp"] = rchar(a.io_pid) - io0
        q.cmd("migrate-set-capabilities",
              {"capabilities": [{"capability": "x-ignore-shared", "state": True}]})
        q.cmd("migrate-incoming", {"uri": "exec:cat " + a.vmstate})
        while True:
            st = q.cmd("query-status")["status"]
            if st == "running":
                break
            if st == "paused":
                q.cmd("cont")
            elif st != "inmigrate":
                raise RuntimeError(f"state {st} after migrate-incoming")
            time.sleep(0.001)
        out["running"] = time.time() - a.t0
        want = re.compile(rb"^TICK (\d+) (\w+)\r?\n", re.M)
        deadline = time.time() + 120
        while "tick" not in out:
            with open(a.serial, "rb") as f:
                for m in want.finditer(f.read()):
                    if int(m.group(1)) > a.after:
                        if m.group(2).decode() != a.nonce:
                            raise RuntimeError("the guest rebooted: nonce " + m.group(2).decode())
                        out["tick"] = time.time() - a.t0
                        out["rchar"] = rchar(a.io_pid) - io0
                        out["cpu"] = cpu(a.io_pid) - cpu0
                        out["first"] = int(m.group(1))
                        break
            if vm.poll() is not None:
                raise RuntimeError(f"QEMU exited with {vm.returncode}")
            if time.time() > deadline:
                raise RuntimeError("no tick within 120 s")
            time.sleep(0.002)
        q.cmd("quit")
    except (OSError, RuntimeError, EOFError, socket.timeout) as e:
        print(f"lazy_vm.py: {e}", file=sys.stderr)
        with open(a.serial + ".stderr") as f:
            sys.stderr.write(f.read()[-2000:])
        vm.kill()
        vm.wait()
        return 1
    vm.wait(timeout=30)
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
