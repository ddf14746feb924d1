#!/usr/bin/env python3
"""Watch the daemon's InfluxDB spool directory from outside the daemon.

Every INTERVAL seconds prints one line to stdout:

    <unix ns> <batches> <lines> <apparent bytes> <disk bytes> <oldest seq> <newest seq>

for the `<seq>-<unix ms>-<lines>.lp` files of the spool (the daemon's naming): `lines` is
the sum of the file names' line counts, `disk bytes` is st_blocks * 512 (what the files
occupy on disk), the sequence numbers are 0 when the spool is empty. Runs until SIGTERM or
SIGINT. Reading a directory listing does not touch the daemon, so it can run during a CPU
measurement window.
"""

import os
import signal
import sys
import time


def scan(path: str):
    n = lines = size = disk = 0
    lo = hi = 0
    try:
        it = os.scandir(path)
    except FileNotFoundError:
        return 0, 0, 0, 0, 0, 0
    with it:
        for e in it:
            name = e.name
            if not name.endswith(".lp"):
                continue
            parts = name[:-3].split("-")
            if len(parts) != 3:
                continue
            try:
                seq, nl = int(parts[0]), int(parts[2])
                st = e.stat(follow_symlinks=False)
            except (ValueError, FileNotFoundError):
                continue  # replayed and removed between listing and stat
            n += 1
            lines += nl
            size += st.st_size
            disk += st.st_blocks * 512
            lo = seq if lo == 0 else min(lo, seq)
            hi = max(hi, seq)
    return n, lines, size, disk, lo, hi


def main() -> int:
    if len(sys.argv) not in (2, 3):
        print("usage: spoolwatch.py SPOOL_DIR [INTERVAL_S=0.2]", file=sys.stderr)
        return 2
    path = sys.argv[1]
    interval = float(sys.argv[2]) if len(sys.argv) == 3 else 0.2
    stop = False

    def on_signal(*_):
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    out = sys.stdout
    nxt = time.monotonic()
    while not stop:
        n, lines, size, disk, lo, hi = scan(path)
        out.write(f"{time.time_ns()} {n} {lines} {size} {disk} {lo} {hi}\n")
        out.flush()
        nxt += interval
        delay = nxt - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        else:
            nxt = time.monotonic()
    return 0


if __name__ == "__main__":
    sys.exit(main())
