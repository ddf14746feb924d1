#!/usr/bin/env python3
"""Count what the database holds for the bench profile (measurement `generic`, 30 register
fields r00..r29 in one line per FC03 read, 10 coil fields c00..c09 in one line per FC01
read). Prints one JSON object:

    values        field values stored (every field of every row)
    lines         rows = lines: count(r00) + count(c00) (each line carries exactly one of them)
    window_values field values with a timestamp in [--from-ms, --to-ms)
    window_lines  lines with a timestamp in that window
    series        InfluxDB 1.x: series (measurement + tag set); VictoriaMetrics: series
                  (one per field and device)
    raw_values    VictoriaMetrics only: samples as exported, duplicates included (values
                  counts each (series, timestamp) once)
    field_counts  values per field (every line complete: all r.. equal, all c.. equal)
    query_s       time the counting queries took

InfluxDB 1.x (`--kind influxdb`) is asked with InfluxQL `count(*)`; a row written twice is
one row there. VictoriaMetrics (`--kind victoria`) is flushed (`/internal/force_flush`) and
read back raw through `/api/v1/export`; run without `-dedup.minScrapeInterval`, a line
written twice shows up as raw_values > values.
"""

import argparse
import json
import sys
import time
import urllib.parse
import urllib.request

MEASUREMENT = "generic"
LINE_FIELDS = ("r00", "c00")


def get(url: str, timeout: float = 600) -> bytes:
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return r.read()


def influx_count(base: str, db: str, where: str) -> dict:
    q = f'SELECT count(*) FROM "{MEASUREMENT}"{where}'
    url = f"{base}/query?" + urllib.parse.urlencode({"db": db, "q": q, "epoch": "ms"})
    res = json.loads(get(url))["results"][0]
    if "error" in res:
        raise SystemExit(f"InfluxDB: {res['error']}")
    series = res.get("series") or []
    if not series:
        return {}
    cols, row = series[0]["columns"], series[0]["values"][0]
    return {c[len("count_"):]: v for c, v in zip(cols, row) if c.startswith("count_")}


def influxdb(a) -> dict:
    t = time.monotonic()
    total = influx_count(a.url, a.database, "")
    out = {"values": sum(total.values()), "lines": sum(total.get(f, 0) for f in LINE_FIELDS),
           "fields": len(total), "field_counts": total}
    if a.from_ms is not None:
        w = influx_count(a.url, a.database,
                         f" WHERE time >= {a.from_ms * 1_000_000} AND time < {a.to_ms * 1_000_000}")
        out["window_values"] = sum(w.values())
        out["window_lines"] = sum(w.get(f, 0) for f in LINE_FIELDS)
    url = f"{a.url}/query?" + urllib.parse.urlencode(
        {"db": a.database, "q": f'SHOW SERIES CARDINALITY FROM "{MEASUREMENT}"'})
    try:
        res = json.loads(get(url))["results"][0]
        out["series"] = res["series"][0]["values"][0][0]
    except (KeyError, IndexError, TypeError):
        pass
    out["query_s"] = round(time.monotonic() - t, 2)
    return out


def victoria(a) -> dict:
    t = time.monotonic()
    try:
        get(f"{a.url}/internal/force_flush", timeout=60)
    except OSError:
        pass
    sel = '{__name__=~"%s_.+"}' % MEASUREMENT
    url = f"{a.url}/api/v1/export?" + urllib.parse.urlencode({"match[]": sel})
    values = raw = lines = wv = wl = series = 0
    fields = {}
    with urllib.request.urlopen(url, timeout=600) as r:
        for line in r:
            if not line.strip():
                continue
            s = json.loads(line)
            name = s["metric"]["__name__"]
            field = name[len(MEASUREMENT) + 1:]
            ts = s["timestamps"]
            uniq = set(ts)
            fields[field] = fields.get(field, 0) + len(uniq)
            series += 1
            raw += len(ts)
            values += len(uniq)
            is_line = field in LINE_FIELDS
            if is_line:
                lines += len(uniq)
            if a.from_ms is not None:
                n = sum(1 for x in uniq if a.from_ms <= x < a.to_ms)
                wv += n
                if is_line:
                    wl += n
    out = {"values": values, "lines": lines, "raw_values": raw, "series": series,
           "fields": len(fields), "field_counts": dict(sorted(fields.items()))}
    if a.from_ms is not None:
        out["window_values"] = wv
        out["window_lines"] = wl
    out["query_s"] = round(time.monotonic() - t, 2)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--kind", choices=["influxdb", "victoria"], required=True)
    ap.add_argument("--url", required=True, help="base URL, e.g. http://127.0.0.1:8086")
    ap.add_argument("--database", default="propwatch")
    ap.add_argument("--from-ms", type=int)
    ap.add_argument("--to-ms", type=int)
    a = ap.parse_args()
    if (a.from_ms is None) != (a.to_ms is None):
        ap.error("--from-ms and --to-ms go together")
    out = influxdb(a) if a.kind == "influxdb" else victoria(a)
    json.dump(out, sys.stdout)
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
