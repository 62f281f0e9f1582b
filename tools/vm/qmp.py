#!/usr/bin/env python3
"""Minimal QMP client: qmp.py SOCKET COMMAND [JSON-ARGS] ...

Runs each COMMAND (with its optional JSON arguments object) in order on one
connection and prints each "return" as one JSON line.  An "error" answer is
printed on stderr and exits 1, so a failed step of a snapshot is loud.
`qmp.py SOCK wait-migrate [SECONDS]` polls query-migrate until "completed"
(exit 1 on "failed" or timeout): migration to exec: runs in the background.
"""
import json
import socket
import sys
import time


class Qmp:
    def __init__(self, path, timeout=30):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(timeout)
        deadline = time.monotonic() + timeout
        while True:  # QEMU creates the socket a moment after it starts
            try:
                self.sock.connect(path)
                break
            except (FileNotFoundError, ConnectionRefusedError):
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        self.buf = b""
        self.read()  # greeting
        self.cmd("qmp_capabilities")

    def read(self):
        while b"\n" not in self.buf:
            data = self.sock.recv(65536)
            if not data:
                raise EOFError("QMP connection closed")
            self.buf += data
        line, self.buf = self.buf.split(b"\n", 1)
        return json.loads(line)

    def cmd(self, name, args=None):
        msg = {"execute": name}
        if args:
            msg["arguments"] = args
        self.sock.sendall(json.dumps(msg).encode() + b"\n")
        while True:
            r = self.read()
            if "event" in r:
                continue
            if "error" in r:
                raise RuntimeError(f"{name}: {r['error'].get('desc', r['error'])}")
            return r.get("return")


def main(argv):
    if len(argv) < 3:
        print(__doc__, file=sys.stderr)
        return 2
    q = Qmp(argv[1])
    args = argv[2:]
    i = 0
    try:
        while i < len(args):
            name = args[i]
            i += 1
            if name == "wait-migrate":
                limit = 60.0
                if i < len(args) and args[i].replace(".", "", 1).isdigit():
                    limit = float(args[i])
                    i += 1
                deadline = time.monotonic() + limit
                while True:
                    st = q.cmd("query-migrate")
                    status = st.get("status")
                    if status == "completed":
                        print(json.dumps(st))
                        break
                    if status in ("failed", "cancelled") or time.monotonic() > deadline:
                        raise RuntimeError(f"migration {status}: {json.dumps(st)}")
                    time.sleep(0.02)
                continue
            params = None
            if i < len(args) and args[i].startswith("{"):
                params = json.loads(args[i])
                i += 1
            try:
                print(json.dumps(q.cmd(name, params)))
            except EOFError:
                if name != "quit":  # quit may close before it answers
                    raise
    except (RuntimeError, EOFError, OSError) as e:
        print(f"qmp: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
