#!/usr/bin/env python3
"""The page-level ideal of a set of files: every distinct non-zero 4 KiB page, once,
concatenated in first-seen order and compressed with `zstd -3`. No store that
deduplicates by page can be smaller without a better compressor, so stored bytes are
quoted against it.

usage: ideal.py FILE... -> one JSON object on stdout
A file's tail shorter than 4 KiB is its own page (as a store would keep it)."""
import hashlib
import json
import os
import subprocess
import sys
import threading

PAGE = 4096
ZERO = bytes(PAGE)
STEP = 256 * PAGE


def data_extents(fd, size):
    """(start, end) of the non-hole parts: holes are zero pages and cost nothing to skip."""
    pos = 0
    while pos < size:
        try:
            start = os.lseek(fd, pos, os.SEEK_DATA)
        except OSError:  # ENXIO: only a hole is left
            return
        end = os.lseek(fd, start, os.SEEK_HOLE)
        yield start, end
        pos = end


def main(files):
    seen = set()
    stats = {"files": len(files), "logical_bytes": 0, "pages": 0, "zero_pages": 0,
             "distinct_pages": 0, "distinct_bytes": 0}
    zstd = subprocess.Popen(["zstd", "-3", "-q", "-c"], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE)
    # Count the compressed bytes on a thread: a full pipe would otherwise deadlock us.
    out = {"n": 0}

    def drain():
        while True:
            b = zstd.stdout.read(1 << 20)
            if not b:
                return
            out["n"] += len(b)
    t = threading.Thread(target=drain)
    t.start()
    for path in files:
        size = os.path.getsize(path)
        stats["logical_bytes"] += size
        stats["pages"] += (size + PAGE - 1) // PAGE
        data_pages = 0
        with open(path, "rb") as f:
            fd = f.fileno()
            for start, end in data_extents(fd, size):
                start -= start % PAGE  # SEEK_DATA is block-aligned; be safe anyway
                f.seek(start)
                pos = start
                while pos < end:
                    buf = f.read(min(STEP, end - pos + (-(end - pos)) % PAGE))
                    if not buf:
                        break
                    for off in range(0, len(buf), PAGE):
                        page = buf[off:off + PAGE]
                        data_pages += 1
                        if page == ZERO[:len(page)]:
                            stats["zero_pages"] += 1
                            continue
                        h = hashlib.blake2b(page, digest_size=16).digest()
                        if h in seen:
                            continue
                        seen.add(h)
                        stats["distinct_pages"] += 1
                        stats["distinct_bytes"] += len(page)
                        zstd.stdin.write(page)
                    pos += len(buf)
        # pages in holes were never read: they are zero pages too
        stats["zero_pages"] += (size + PAGE - 1) // PAGE - data_pages
    zstd.stdin.close()
    t.join()
    if zstd.wait() != 0:
        sys.exit("ideal: zstd failed")
    stats["ideal_bytes"] = out["n"]
    json.dump(stats, sys.stdout)
    print()


if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    main(sys.argv[1:])
