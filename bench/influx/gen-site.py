#!/usr/bin/env python3
"""Generate a propwatch site config for the InfluxDB benchmark: the scale benchmark's site
(bench/gen-site.py: N devices of the 40-point bench profile on Modbus TCP at 127.0.0.1)
with an [influx] section inserted before the first array of tables.

Every other option is passed through to bench/gen-site.py.

Examples:
    bench/influx/gen-site.py --api v1 --url http://127.0.0.1:18086 --database propwatch \\
        --spool-dir /tmp/spool -- --devices 125 --base-port 21100 --out /tmp/site.toml
    bench/influx/gen-site.py --api v2 --url http://127.0.0.1:18428 --token-file /tmp/token \\
        --spool-dir /tmp/spool -- --devices 500 --out -
"""

import argparse
import os
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
GEN = os.path.join(HERE, "..", "gen-site.py")


def toml_str(s: str) -> str:
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--api", choices=["v1", "v2"], required=True)
    ap.add_argument("--url", required=True)
    ap.add_argument("--database", default="propwatch", help="v1 database (default propwatch)")
    ap.add_argument("--org", default="estate", help="v2 org (default estate)")
    ap.add_argument("--bucket", default="propwatch", help="v2 bucket (default propwatch)")
    ap.add_argument("--token-file", help="v2 token file")
    ap.add_argument("--spool-dir", required=True)
    ap.add_argument("--gzip", choices=["true", "false"], default="true")
    ap.add_argument("--batch-max-lines", type=int, help="default: the daemon's (5000)")
    ap.add_argument("--batch-max-interval-ms", type=int, help="default: the daemon's (1000)")
    ap.add_argument("--timeout-ms", type=int, help="default: the daemon's (10000)")
    ap.add_argument("--retry-backoff-max-ms", type=int, help="default: the daemon's (30000)")
    ap.add_argument("--out", default="-")
    ap.add_argument("rest", nargs=argparse.REMAINDER, help="-- then options for bench/gen-site.py")
    a = ap.parse_args()
    rest = a.rest[1:] if a.rest[:1] == ["--"] else a.rest
    if a.api == "v2" and not a.token_file:
        ap.error("--api v2 needs --token-file")

    site = subprocess.run([sys.executable, GEN, *rest, "--out", "-"], check=True,
                          capture_output=True, text=True).stdout

    s = ["[influx]", f"api = {toml_str(a.api)}", f"url = {toml_str(a.url)}"]
    if a.api == "v1":
        s.append(f"database = {toml_str(a.database)}")
    else:
        s += [f"org = {toml_str(a.org)}", f"bucket = {toml_str(a.bucket)}",
              f"token_file = {toml_str(os.path.abspath(a.token_file))}"]
    s.append(f"gzip = {a.gzip}")
    for key in ("batch_max_lines", "batch_max_interval_ms", "timeout_ms", "retry_backoff_max_ms"):
        v = getattr(a, key)
        if v is not None:
            s.append(f"{key} = {v}")
    s.append(f"spool_dir = {toml_str(os.path.abspath(a.spool_dir))}")
    section = "\n".join(s) + "\n\n"

    # a [table] after an array of tables is valid TOML, but keep it with the other tables
    lines = site.splitlines(keepends=True)
    at = next((i for i, l in enumerate(lines) if l.startswith("[[")), len(lines))
    text = "".join(lines[:at]) + section + "".join(lines[at:])
    if a.out == "-":
        sys.stdout.write(text)
    else:
        with open(a.out, "w", encoding="utf-8") as f:
            f.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
