#!/usr/bin/env python3
"""Tables for scripts/bench-influx.

    report.py RUN_DIR               one run's table (markdown) from the files the script left:
                                    vars (key=value), m_*.txt (/metrics scrapes), spool.log
                                    (bench/influx/spoolwatch.py), db.json
                                    (bench/influx/dbcount.py), run.log (the daemon's log)
    report.py --summary RUN_DIR...  one row per run, sustained and replay runs apart
"""

import json
import os
import re
import sys

DB_NAMES = {"victoria": "VictoriaMetrics", "influxdb": "InfluxDB"}


def load_vars(d):
    v = {}
    with open(os.path.join(d, "vars"), encoding="utf-8") as f:
        for line in f:
            k, _, x = line.rstrip("\n").partition("=")
            x = x.strip('"')
            try:
                v[k] = int(x)
            except ValueError:
                try:
                    v[k] = float(x)
                except ValueError:
                    v[k] = x
    return v


class Metrics:
    def __init__(self, path):
        self.rows = []
        if not os.path.exists(path):
            return
        with open(path, encoding="utf-8") as f:
            for line in f:
                if not line or line[0] == "#":
                    continue
                m = re.match(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s+(\S+)", line)
                if m:
                    self.rows.append((m.group(1), m.group(2) or "", float(m.group(3))))

    def __bool__(self):
        return bool(self.rows)

    def get(self, name, label=None):
        return sum(v for n, l, v in self.rows if n == name and (label is None or label in l))

    def by(self, name, key):
        out = {}
        for n, l, v in self.rows:
            if n == name:
                m = re.search(key + r'="([^"]*)"', l)
                k = m.group(1) if m else ""
                out[k] = out.get(k, 0) + v
        return out


def spool_log(d):
    rows = []
    p = os.path.join(d, "spool.log")
    if os.path.exists(p):
        with open(p) as f:
            for line in f:
                x = line.split()
                if len(x) == 7:
                    rows.append(tuple(int(a) for a in x))
    return rows  # (ns, batches, lines, bytes, disk, oldest seq, newest seq)


def n0(x):
    return f"{x:,.0f}"


def mib(b):
    return f"{b / 1048576:,.1f} MiB"


def gz(v):
    return "gzip" if v.get("gzip", "true") == "true" else "no gzip"


def ok(b):
    return "yes" if b else "**no**"


def delta_classes(a, b, name, key):
    da, db = a.by(name, key), b.by(name, key)
    out = {k: db.get(k, 0) - da.get(k, 0) for k in set(da) | set(db)}
    return {k: v for k, v in out.items() if v}


def fmt_classes(c):
    if not c:
        return "0"
    return f"{n0(sum(c.values()))} (" + ", ".join(f"{k} {n0(v)}" for k, v in sorted(c.items())) + ")"


def warn_lines(d, upto):
    p = os.path.join(d, "run.log")
    groups = {}
    if not os.path.exists(p):
        return 0, groups
    with open(p, encoding="utf-8", errors="replace") as f:
        lines = f.read().splitlines()[:upto]
    n = 0
    for line in lines:
        line = re.sub(r"\x1b\[[0-9;]*m", "", line)
        m = re.match(r"^\S+\s+(WARN|ERROR)\s+(.*)$", line)
        if not m:
            continue
        n += 1
        msg = re.sub(r'\s\S+=("[^"]*"|\S+)', "", m.group(2))
        msg = re.sub(r"^\S+\{[^}]*\}:\s*", "", msg)  # span
        msg = re.sub(r"^[a-z_:]+:\s*", "", msg)  # target
        msg = f"{m.group(1)} {msg.strip()[:100]}"
        groups[msg] = groups.get(msg, 0) + 1
    return n, groups


def cpu(v, a, b, who):
    wall = (v[f"{b}_ns"] - v[f"{a}_ns"]) / 1e9
    if wall <= 0:
        return 0.0
    return (v[f"{b}_{who}"] - v[f"{a}_{who}"]) / v["clk_tck"] / wall * 100


def cpu_row(v, a, b):
    """daemon, db, sim, others (machine busy minus ours), machine total (of ncpu*100)."""
    d, db, s, w = (cpu(v, a, b, k) for k in ("daemon", "db", "sim", "watch"))
    total = cpu(v, a, b, "sys")
    return d, db, s, w, total - d - db - s - w, total


def common(v, d):
    dbname = DB_NAMES.get(v["db"], v["db"])
    ver = v.get("db_version") or "?"
    poll_s = v["poll_ms"] / 1000
    return dbname, ver, poll_s


def db_checks(v, dbj, final, rows):
    enc = final.get("propwatch_influx_lines_encoded_total")
    fc = dbj.get("field_counts", {})
    r = [c for f, c in fc.items() if f.startswith("r")]
    c = [c for f, c in fc.items() if f.startswith("c")]
    complete = bool(r) and bool(c) and len(set(r)) == 1 and len(set(c)) == 1 and len(fc) == 40
    rows.append(("Rows (lines) in the database vs lines encoded (whole run)",
                 f"{n0(dbj['lines'])} vs {n0(enc)}"
                 + (f" (missing {n0(enc - dbj['lines'])})" if dbj["lines"] < enc else "")
                 + (f" (extra {n0(dbj['lines'] - enc)})" if dbj["lines"] > enc else ""),
                 ok(dbj["lines"] == enc)))
    rows.append(("Field values in the database; every line complete",
                 f"{n0(dbj['values'])} = {dbj['values'] / max(dbj['lines'], 1):.2f} per line; "
                 f"{len(fc)} fields, {n0(r[0] if r else 0)} of each r.., {n0(c[0] if c else 0)} of each c..",
                 ok(complete)))
    if "raw_values" in dbj:
        dup = dbj["raw_values"] - dbj["values"]
        rows.append(("Duplicates in the database (raw samples exported − distinct)",
                     f"{n0(dup)}", ok(dup == 0)))
    rows.append(("Series in the database; counting took", f"{n0(dbj.get('series', 0))}; {dbj.get('query_s', 0)} s", ""))


def table_sustained(d, v):
    dbname, ver, poll_s = common(v, d)
    m0, m1 = Metrics(os.path.join(d, "m_w0.txt")), Metrics(os.path.join(d, "m_w1.txt"))
    final = Metrics(os.path.join(d, "m_final.txt"))
    dbj = json.load(open(os.path.join(d, "db.json")))
    ctr = ((v["scrape1_start_ns"] + v["scrape1_end_ns"]) - (v["scrape0_start_ns"] + v["scrape0_end_ns"])) / 2e9
    cwall = (v["w1_ns"] - v["w0_ns"]) / 1e9
    g = lambda m, n, l=None: m.get(n, l)
    lw = g(m1, "propwatch_influx_lines_written_total") - g(m0, "propwatch_influx_lines_written_total")
    le = g(m1, "propwatch_influx_lines_encoded_total") - g(m0, "propwatch_influx_lines_encoded_total")
    sm = g(m1, "propwatch_samples_total") - g(m0, "propwatch_samples_total")
    per_line = sm / le if le else float("nan")
    bw = g(m1, "propwatch_influx_batches_total", 'result="written"') - g(m0, "propwatch_influx_batches_total", 'result="written"')
    lps = lw / ctr
    pps = lps * per_line
    target = v["points"] / poll_s
    err_w = delta_classes(m0, m1, "propwatch_influx_errors_total", "class")
    err_all = final.by("propwatch_influx_errors_total", "class")
    err_all = {k: x for k, x in err_all.items() if x}
    spooled = final.get("propwatch_influx_batches_total", 'result="spooled"')
    sp = spool_log(d)
    sp_max = max((r[1] for r in sp), default=0)  # the whole run: the watcher stops at its end
    dcpu, dbcpu, scpu, wcpu, others, total = cpu_row(v, "w0", "w1")
    dead = final.get("propwatch_influx_dead_letter_lines_total")
    dropped = final.get("propwatch_influx_spool_dropped_lines_total")
    wn, wg = warn_lines(d, v.get("log_lines_before_quiesce", 10**9))
    wsec = (v["db_window_to_ms"] - v["db_window_from_ms"]) / 1000
    rows = [
        ("Run", f"`sustained-{v['db']}`: {dbname} {ver}, API {v['api']}, {gz(v)}; {v['devices']} devices × "
                f"{v['points'] // v['devices']} points at {v['poll_ms']} ms", ""),
        (f"Window (after {v['warmup']} s warm-up)", f"{cwall:.1f} s", ""),
        ("**Lines written/s** (propwatch_influx_lines_written_total)", f"**{lps:,.1f}** (encoded {le / ctr:,.1f}/s)",
         ok(abs(lw - le) <= 0.02 * le + 2 * v["devices"])),
        ("**Points/s written** (field values: lines/s × values per line)",
         f"**{pps:,.0f}** (expected {target:,.0f}; {per_line:.2f} values per line; samples {sm / ctr:,.0f}/s)",
         ok(pps >= 0.98 * target)),
        ("Batches written in the window", f"{n0(bw)} = {bw / ctr:.2f}/s, {lw / bw if bw else 0:,.0f} lines per batch", ""),
        ("**Daemon CPU** (% of one core)", f"**{dcpu:.1f} %** = {dcpu * 1e4 / lps if lps else 0:.1f} µs per line, "
         f"{dcpu * 1e4 / pps if pps else 0:.2f} µs per point", ""),
        ("**Daemon peak RSS** (VmHWM) at end of window", f"**{v['w1_daemon_hwm_kb'] / 1024:.1f} MiB** (VmRSS {v['w1_daemon_rss_kb'] / 1024:.1f} MiB; "
         f"after the edge scrape {v['w1s_daemon_hwm_kb'] / 1024:.1f} MiB)", ""),
        ("propwatch_influx_errors_total: window / whole run", f"{fmt_classes(err_w)} / {fmt_classes(err_all)}",
         ok(not err_w and not err_all)),
        ("Spool: batches spooled (whole run); spool files seen on disk (every 0.1 s); spool_lines at end",
         f"{n0(spooled)}; max {sp_max}; {n0(final.get('propwatch_influx_spool_lines'))}",
         ok(spooled == 0 and sp_max == 0 and final.get("propwatch_influx_spool_lines") == 0)),
        ("Dead-lettered / dropped lines", f"{n0(dead)} / {n0(dropped)}", ok(dead == 0 and dropped == 0)),
        (f"Database: values with a timestamp in the window ({wsec:.1f} s)",
         f"{n0(dbj['window_values'])} = {dbj['window_values'] / wsec:,.0f}/s in {n0(dbj['window_lines'])} lines = "
         f"{dbj['window_lines'] / wsec:,.1f} lines/s", ok(abs(dbj["window_values"] / wsec - target) <= 0.02 * target)),
    ]
    db_checks(v, dbj, final, rows)
    rows += [
        (f"{dbname} CPU (% of one core); peak RSS", f"{dbcpu:.1f} %; VmHWM {v['w1_db_hwm_kb'] / 1024:,.0f} MiB", ""),
        ("Simulator CPU; spool watcher CPU", f"{scpu:.1f} %; {wcpu:.1f} %", ""),
        (f"Other processes' CPU; machine busy ({v['ncpu']} CPUs = {v['ncpu'] * 100} %)", f"{others:.1f} %; {total:.1f} %", ""),
        ("WARN/ERROR lines in the daemon log (until the simulator stopped)",
         f"{wn}" + ("" if not wg else ": " + "; ".join(f"{k} ×{c}" for k, c in wg.items())), ok(wn == 0)),
        ("Daemon stop (SIGTERM) after the run", f"exit {v['daemon_exit']} in {v['daemon_stop_ms']} ms; spool files left {v['spool_files_after']}",
         ok(v["daemon_exit"] == 0 and v["spool_files_after"] == 0)),
        ("Load average at end of window (1/5/15 min)", str(v.get("loadavg_w1", "")), ""),
    ]
    summary = {
        "kind": "sustained", "db": f"{dbname} {ver} ({v['api']}, {gz(v)})", "devices": v["devices"],
        "lps": lps, "pps": pps, "target": target, "dcpu": dcpu, "hwm": v["w1_daemon_hwm_kb"] / 1024,
        "dbcpu": dbcpu, "db_hwm": v["w1_db_hwm_kb"] / 1024, "errors": sum(err_all.values()),
        "spooled": spooled, "db_ok": dbj["lines"] == final.get("propwatch_influx_lines_encoded_total"),
        "db_lines": dbj["lines"], "enc": final.get("propwatch_influx_lines_encoded_total"),
        "win_pps": dbj["window_values"] / wsec, "others": others, "total": total, "scpu": scpu,
    }
    return rows, summary


def table_replay(d, v):
    dbname, ver, poll_s = common(v, d)
    m0, m1 = Metrics(os.path.join(d, "m_w0.txt")), Metrics(os.path.join(d, "m_w1.txt"))
    mr, me = Metrics(os.path.join(d, "m_restart.txt")), Metrics(os.path.join(d, "m_empty.txt"))
    mp0, mp = Metrics(os.path.join(d, "m_post0.txt")), Metrics(os.path.join(d, "m_post.txt"))
    final = Metrics(os.path.join(d, "m_final.txt"))
    dbj = json.load(open(os.path.join(d, "db.json")))
    W, E, R, S = ("propwatch_influx_lines_written_total", "propwatch_influx_lines_encoded_total",
                  "propwatch_influx_replayed_lines_total", "propwatch_samples_total")
    ctr = ((v["scrape1_start_ns"] + v["scrape1_end_ns"]) - (v["scrape0_start_ns"] + v["scrape0_end_ns"])) / 2e9
    le = m1.get(E) - m0.get(E)
    per_line = (m1.get(S) - m0.get(S)) / le if le else float("nan")
    lps_pre = (m1.get(W) - m0.get(W)) / ctr
    target = v["points"] / poll_s
    dpre = cpu(v, "w0", "w1", "daemon")
    # outage
    outage = (v["restart_cmd_ns"] - v["down_ns"]) / 1e9
    stop_s = (v["down_ns"] - v["down_cmd_ns"]) / 1e9
    d_out = cpu(v, "down", "restart", "daemon")
    err_out = delta_classes(m1, mr, "propwatch_influx_errors_total", "class")
    spooled_out = mr.get("propwatch_influx_batches_total", 'result="spooled"') - m1.get("propwatch_influx_batches_total", 'result="spooled"')
    sl_r, sb_r = mr.get("propwatch_influx_spool_lines"), mr.get("propwatch_influx_spool_bytes")
    sp = spool_log(d)
    at_restart = [r for r in sp if r[0] <= v["restart_cmd_ns"]]
    r_restart = at_restart[-1] if at_restart else (0,) * 7
    peak = max(sp, key=lambda r: r[3]) if sp else (0,) * 7
    peak_disk = max((r[4] for r in sp), default=0)
    peak_batches = max((r[1] for r in sp), default=0)
    peak_lines = max((r[2] for r in sp), default=0)
    # replay
    ready_s = (v["up_ns"] - v["restart_cmd_ns"]) / 1e9
    after_up = [r for r in sp if r[0] >= v["up_ns"]]
    oldest0 = r_restart[5]
    first = next((r for r in after_up if r[5] != oldest0), None)
    empty_ns = v["empty_watch_ns"]
    t_first = (first[0] - v["up_ns"]) / 1e9 if first else float("nan")
    t_empty_up = (empty_ns - v["up_ns"]) / 1e9
    t_empty_restart = (empty_ns - v["restart_cmd_ns"]) / 1e9
    drain = (empty_ns - first[0]) / 1e9 if first else float("nan")
    replayed = me.get(R) - mr.get(R)
    written_rep = me.get(W) - mr.get(W)
    rate = replayed / drain if drain and drain > 0 else float("nan")
    d_rep = cpu(v, "up", "empty", "daemon")
    db_rep = cpu(v, "up", "empty", "db")
    err_rep = delta_classes(mr, me, "propwatch_influx_errors_total", "class")
    # after
    post_wall = (v["post1_ns"] - v["post0_ns"]) / 1e9
    lps_post = (mp.get(W) - mp0.get(W)) / post_wall if mp and mp0 else float("nan")
    spooled_post = mp.get("propwatch_influx_batches_total", 'result="spooled"') - mp0.get("propwatch_influx_batches_total", 'result="spooled"')
    d_post = cpu(v, "post0", "post1", "daemon")
    dead = final.get("propwatch_influx_dead_letter_lines_total")
    dropped = final.get("propwatch_influx_spool_dropped_lines_total")
    err_all = {k: x for k, x in final.by("propwatch_influx_errors_total", "class").items() if x}
    wn, wg = warn_lines(d, v.get("log_lines_before_quiesce", 10**9))
    wsec = (v["db_window_to_ms"] - v["db_window_from_ms"]) / 1000
    rows = [
        ("Run", f"`replay-{v['db']}`: {dbname} {ver}, API {v['api']}, {gz(v)}; {v['devices']} devices × "
                f"{v['points'] // v['devices']} points at {v['poll_ms']} ms = {target:,.0f} points/s", ""),
        (f"Before the outage ({ctr:.0f} s after {v['warmup']} s warm-up)",
         f"{lps_pre:,.1f} lines/s = {lps_pre * per_line:,.0f} points/s ({per_line:.2f} per line); daemon CPU {dpre:.1f} %",
         ok(lps_pre * per_line >= 0.98 * target)),
        ("**Outage**: database stopped (SIGTERM) until restarted", f"**{outage:.1f} s** (it took {stop_s:.1f} s to exit)", ""),
        ("  daemon CPU during the outage", f"{d_out:.1f} % of one core", ""),
        ("  errors during the outage (propwatch_influx_errors_total)", fmt_classes(err_out), ""),
        ("  batches spooled", f"{n0(spooled_out)} = {spooled_out / outage:.2f}/s", ""),
        ("  spool at the restart (gauges)", f"{n0(sl_r)} lines = {sl_r / outage:,.1f}/s of outage; {mib(sb_r)}", ""),
        ("  spool at the restart (directory, last look before the restart)",
         f"{r_restart[1]} files, {n0(r_restart[2])} lines, {mib(r_restart[3])}, {mib(r_restart[4])} on disk",
         # the watcher looks every 0.1 s: it may miss the batch spooled just before the scrape
         ok(0 <= sl_r - r_restart[2] <= sl_r / max(r_restart[1], 1) * 1.5)),
        ("  daemon VmHWM before / at end of the outage", f"{v['w1_daemon_hwm_kb'] / 1024:.1f} / {v['restart_daemon_hwm_kb'] / 1024:.1f} MiB "
         f"(VmRSS {v['restart_daemon_rss_kb'] / 1024:.1f} MiB)", ""),
        (f"{dbname} ready after the restart command", f"{ready_s:.2f} s", ""),
        ("First replayed batch after the database was ready", f"{t_first:.2f} s (writer backoff)", ""),
        ("**Spool back to 0** (directory empty, then propwatch_influx_spool_lines = 0)",
         f"**{t_empty_up:.1f} s after the database was ready** ({t_empty_restart:.1f} s after the restart command; "
         f"draining took {drain:.1f} s)", ""),
        ("**Replay rate** (propwatch_influx_replayed_lines_total / drain time)",
         f"**{n0(replayed)} lines in {drain:.1f} s = {rate:,.0f} lines/s = {rate * per_line:,.0f} points/s**", ""),
        ("  all lines written meanwhile (replay + live)", f"{n0(written_rep)} = {written_rep / (t_empty_up or 1):,.0f}/s from ready to empty", ""),
        ("  errors during the replay", fmt_classes(err_rep), ok(not err_rep)),
        ("  daemon / database CPU from ready to empty", f"{d_rep:.1f} % / {db_rep:.1f} % of one core", ""),
        ("  daemon VmHWM after the replay", f"{v['empty_daemon_hwm_kb'] / 1024:.1f} MiB (VmRSS {v['empty_daemon_rss_kb'] / 1024:.1f} MiB)", ""),
        ("**Peak spool size on disk** (spool watcher, every 0.1 s)",
         f"**{mib(peak[3])}** ({n0(peak[3])} bytes in {peak[1]} files, {n0(peak[2])} lines = {peak[3] / max(peak[2], 1):.0f} B/line); "
         f"{mib(peak_disk)} allocated", ""),
        (f"After the replay ({post_wall:.0f} s)", f"{lps_post:,.1f} lines/s written live, {n0(spooled_post)} batches spooled, daemon CPU {d_post:.1f} %",
         ok(spooled_post == 0 and lps_post * per_line >= 0.98 * target)),
        ("**Dropped lines** (propwatch_influx_spool_dropped_lines_total); dead-lettered", f"**{n0(dropped)}**; {n0(dead)}",
         ok(dropped == 0 and dead == 0)),
        (f"Database: values with a timestamp inside the outage ({wsec:.1f} s)",
         f"{n0(dbj['window_values'])} = {dbj['window_values'] / wsec:,.0f}/s in {n0(dbj['window_lines'])} lines",
         ok(abs(dbj["window_values"] / wsec - target) <= 0.02 * target)),
    ]
    db_checks(v, dbj, final, rows)
    rows += [
        ("propwatch_influx_errors_total, whole run", fmt_classes(err_all), ""),
        ("WARN/ERROR lines in the daemon log (until the simulator stopped)",
         f"{wn}" + ("" if not wg else ": " + "; ".join(f"{k} ×{c}" for k, c in wg.items())), ""),
        ("Daemon stop (SIGTERM) after the run", f"exit {v['daemon_exit']} in {v['daemon_stop_ms']} ms; spool files left {v['spool_files_after']}",
         ok(v["daemon_exit"] == 0 and v["spool_files_after"] == 0)),
    ]
    summary = {
        "kind": "replay", "db": f"{dbname} {ver} ({v['api']}, {gz(v)})", "devices": v["devices"], "target": target,
        "outage": outage, "spool_lines": sl_r, "peak_bytes": peak[3], "peak_disk": peak_disk,
        "t_first": t_first, "t_empty": t_empty_up, "drain": drain, "rate": rate, "rate_pts": rate * per_line,
        "dropped": dropped, "dead": dead, "db_ok": dbj["lines"] == final.get(E), "db_lines": dbj["lines"],
        "enc": final.get(E), "d_out": d_out, "d_rep": d_rep, "db_rep": db_rep, "hwm": v["empty_daemon_hwm_kb"] / 1024,
    }
    return rows, summary


def table(d):
    v = load_vars(d)
    return (table_sustained if v["mode"] == "sustained" else table_replay)(d, v)


def main():
    args = sys.argv[1:]
    if args and args[0] == "--summary":
        sus, rep = [], []
        for d in args[1:]:
            if not os.path.exists(os.path.join(d, "db.json")):
                continue
            _, s = table(d)
            (sus if s["kind"] == "sustained" else rep).append(s)
        if sus:
            print("| Database | Devices | Lines/s | Points/s (target) | Daemon CPU | Daemon VmHWM | DB CPU | DB VmHWM | Errors | Spooled | DB rows = lines encoded |")
            print("|---|---|---|---|---|---|---|---|---|---|---|")
            for s in sus:
                print(f"| {s['db']} | {s['devices']} | {s['lps']:,.1f} | {s['pps']:,.0f} ({s['target']:,.0f}) | {s['dcpu']:.1f} % | "
                      f"{s['hwm']:.1f} MiB | {s['dbcpu']:.1f} % | {s['db_hwm']:,.0f} MiB | {s['errors']:.0f} | {s['spooled']:.0f} | "
                      f"{ok(s['db_ok'])} ({n0(s['db_lines'])}) |")
            print()
        if rep:
            print("| Database | Points/s | Outage | Spooled lines | Peak spool on disk | First replay after DB ready | Spool 0 after DB ready | Replay rate | Dropped | DB rows = lines encoded |")
            print("|---|---|---|---|---|---|---|---|---|---|")
            for s in rep:
                print(f"| {s['db']} | {s['target']:,.0f} | {s['outage']:.0f} s | {n0(s['spool_lines'])} | {mib(s['peak_bytes'])} | "
                      f"{s['t_first']:.1f} s | {s['t_empty']:.1f} s | {s['rate']:,.0f} lines/s = {s['rate_pts']:,.0f} points/s | "
                      f"{n0(s['dropped'])} | {ok(s['db_ok'])} ({n0(s['db_lines'])}) |")
        return 0
    if len(args) != 1:
        print(__doc__, file=sys.stderr)
        return 2
    rows, _ = table(args[0])
    print("| Measure | Result | OK |")
    print("|---|---|---|")
    for r in rows:
        print("| " + " | ".join(str(x) for x in r) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
