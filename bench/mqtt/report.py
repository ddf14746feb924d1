#!/usr/bin/env python3
"""Print the markdown table of one scripts/bench-mqtt run from its run directory.

The directory holds: m0.txt / m1.txt (/metrics before the run and after the daemon drained),
sys0.json / sys1.json (the broker's $SYS counters, same moments), gen.json (the load
generator's report) and facts (key=value lines written by scripts/bench-mqtt: clock ticks
of the daemon and broker at publish start / publish end / drained, /proc/stat, memory,
log line counts).
"""

import json
import re
import sys
from pathlib import Path

LINE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)')
LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


def metrics(path):
    out = []
    for line in Path(path).read_text().splitlines():
        if line.startswith("#"):
            continue
        m = LINE.match(line)
        if m:
            labels = dict(LABEL.findall(m.group(2) or ""))
            out.append((m.group(1), labels, float(m.group(3))))
    return out


def msum(ms, name, **want):
    return sum(v for n, labels, v in ms if n == name and all(labels.get(k) == x for k, x in want.items()))


def by_label(ms, name, label):
    out = {}
    for n, labels, v in ms:
        if n == name:
            out[labels.get(label, "")] = out.get(label, 0) + v
    return out


def num(s, default=0.0):
    try:
        return float(str(s).split()[0])
    except (ValueError, IndexError):
        return default


def main() -> int:
    d = Path(sys.argv[1])
    f = {}
    for line in (d / "facts").read_text().splitlines():
        if "=" in line:
            k, v = line.split("=", 1)
            f[k] = v
    m0, m1 = metrics(d / "m0.txt"), metrics(d / "m1.txt")
    s0 = json.loads((d / "sys0.json").read_text() or "{}")
    s1 = json.loads((d / "sys1.json").read_text() or "{}")
    g = json.loads((d / "gen.json").read_text())
    clk = float(f["clk_tck"])
    ticks = lambda k: float(f[k]) / clk  # noqa: E731
    t0, t1, t2 = (float(f[k]) / 1e9 for k in ("t0_ns", "t1_ns", "t2_ns"))
    win = t1 - t0  # publish start .. broker acknowledged the last message
    full = t2 - t0  # publish start .. the daemon had taken everything
    ncpu = int(f["nproc"])

    acc = msum(m1, "propwatch_mqtt_messages_total", outcome="accepted") - msum(
        m0, "propwatch_mqtt_messages_total", outcome="accepted")
    rej = msum(m1, "propwatch_mqtt_messages_total", outcome="rejected") - msum(
        m0, "propwatch_mqtt_messages_total", outcome="rejected")
    r0, r1 = by_label(m0, "propwatch_mqtt_rejected_total", "reason"), by_label(
        m1, "propwatch_mqtt_rejected_total", "reason")
    reasons = {k: r1[k] - r0.get(k, 0) for k in r1 if r1[k] - r0.get(k, 0)}
    samples = msum(m1, "propwatch_samples_total", source="mqtt") - msum(m0, "propwatch_samples_total", source="mqtt")
    srej = msum(m1, "propwatch_samples_rejected_total") - msum(m0, "propwatch_samples_rejected_total")
    conn_ok = msum(m1, "propwatch_mqtt_connects_total", result="ok") - msum(m0, "propwatch_mqtt_connects_total", result="ok")
    conn_bad = msum(m1, "propwatch_mqtt_connects_total") - msum(m0, "propwatch_mqtt_connects_total") - conn_ok
    connected = msum(m1, "propwatch_mqtt_connected")
    up = msum(m1, "propwatch_device_up")
    qdepth = msum(m1, "propwatch_core_queue_depth")
    pub = g["published"] - g["publish_failed"]
    lost = pub - acc - rej

    def sysd(key):
        return num(s1.get(key)) - num(s0.get(key))

    dropped = sysd("$SYS/broker/publish/messages/dropped")
    b_recv = sysd("$SYS/broker/publish/messages/received")
    b_sent = sysd("$SYS/broker/publish/messages/sent")

    d_cpu = (ticks("d1") - ticks("d0")) / win * 100
    d_cpu_full = (ticks("d2") - ticks("d0")) / full * 100
    b_cpu = (ticks("b1") - ticks("b0")) / win * 100
    g_cpu = g["cpu_pct"]
    # other processes: per-process CPU between the two snapshots (a process that started in
    # the window counts in full; one that ended in it is missed)
    def snap(path):
        out = {}
        for line in Path(path).read_text().splitlines():
            pid, comm, t = line.split()
            out[pid] = (comm, float(t))
        return out
    a0, a1 = snap(d / "ticks0"), snap(d / "ticks1")
    mine = set(f["measured_pids"].split())
    others = {}
    for pid, (comm, t) in a1.items():
        if pid in mine:
            continue
        dt = t - a0.get(pid, (comm, 0.0))[1]
        if dt > 0:
            others[comm] = others.get(comm, 0.0) + dt
    other = sum(others.values()) / clk / win * 100
    top = sorted(others.items(), key=lambda kv: -kv[1])[:3]
    qos = g["qos"]
    paced = g["target_rate"] > 0

    def ok(b):
        return "yes" if b else "**no**"

    rows = []
    add = lambda *r: rows.append(r + ("",) * (3 - len(r)))  # noqa: E731
    mode = f"paced at {g['target_rate']:,.0f} msgs/s" if paced else "unpaced (as fast as the generator goes)"
    add("Run", f"`{f['name']}`: {g['client']} publisher, QoS {qos}, {mode}, {g['devices']} lifts, 10 points per message")
    add("Publish window (first publish .. last PUBACK)" if qos == 1 else "Publish window (first publish .. last write)",
        f"{win:.1f} s")
    add("Published by the generator", f"{pub:,} msgs = {pub / win:,.0f} msgs/s"
        + (f" (target {g['target_rate']:,.0f}; paced loop at most {g['max_behind_ms']:.0f} ms behind)" if paced else "")
        + (f", {g['acked']:,} PUBACKed" if qos == 1 else ""),
        ok(g["acked"] == pub) if qos == 1 else "")
    add("**Accepted by the daemon** (propwatch_mqtt_messages_total{outcome=\"accepted\"})",
        f"**{acc:,.0f}** = {100 * acc / pub if pub else 0:.2f} % of published; "
        f"**{acc / full:,.0f} msgs/s** from first publish until drained ({full:.1f} s)",
        ok(acc == pub))
    add("Rejected messages / by reason", f"{rej:,.0f}" + (f" ({', '.join(f'{k} {v:,.0f}' for k, v in sorted(reasons.items()))})" if reasons else ""),
        ok(rej == 0 and not reasons))
    add("Lost (published − accepted − rejected)", f"{lost:,.0f}", ok(lost == 0))
    add("Broker: publishes received / sent / dropped ($SYS)",
        f"{b_recv:,.0f} / {b_sent:,.0f} / {dropped:,.0f}", ok(dropped == 0))
    add("Samples (propwatch_samples_total{source=\"mqtt\"})",
        f"{samples:,.0f} = {samples / win:,.0f}/s over the window, {samples / acc if acc else 0:.2f} per accepted message"
        + (f"; {srej:,.0f} values rejected" if srej else ""), ok(acc == 0 or abs(samples / acc - 10) < 1e-9))
    d_sys = (ticks("ds1") - ticks("ds0")) / win * 100
    add("**Daemon CPU** (% of one core, publish window)", f"**{d_cpu:.1f} %** (user {d_cpu - d_sys:.1f} %, system {d_sys:.1f} %)")
    add("  until drained", f"{d_cpu_full:.1f} % over {full:.1f} s (drained {float(f['drain_s']):.2f} s after the last "
        + ("PUBACK" if qos == 1 else "write") + ("; /metrics polled every 0.1 s meanwhile)" if float(f['drain_s']) > 0.2 else ")"))
    add("  per accepted message", f"{(ticks('d2') - ticks('d0')) / acc * 1e6 if acc else 0:.1f} µs CPU")
    add("Daemon peak RSS (VmHWM)", f"{int(f['d_hwm_kb']) / 1024:.1f} MiB (VmRSS {int(f['d_rss_kb']) / 1024:.1f} MiB, {f['d_threads']} threads)")
    add("Mosquitto CPU (same machine)", f"{b_cpu:.1f} % (VmHWM {int(f['b_hwm_kb']) / 1024:.1f} MiB)")
    add("Generator CPU (same machine)", f"{g_cpu:.1f} % ("
        + ("paho-mqtt: main + network thread" if g["client"] == "paho" else "raw publisher, batched writes") + ")"
        + (f"; up to {g['max_outstanding']:,} unacked, window full {g['window_waits']:,} times" if qos == 1 and not paced else ""))
    add(f"Other processes' CPU in the window ({ncpu} CPUs = {ncpu * 100} %)", f"{other:.1f} %"
        + (" (" + ", ".join(f"{c} {t / clk / win * 100:.1f} %" for c, t in top if t / clk / win * 100 >= 0.5) + ")"
           if any(t / clk / win * 100 >= 0.5 for c, t in top) else ""))
    add("Devices up at end", f"{up:.0f} / {g['devices']}", ok(up == g["devices"]))
    add("MQTT connected at end; connects in run (ok / failed)", f"{connected:.0f}; {conn_ok:.0f} / {conn_bad:.0f}",
        ok(connected == 1 and conn_ok == 0 and conn_bad == 0))
    add("Core queue depth at end", f"{qdepth:.0f}")
    add("WARN/ERROR lines in the daemon log during the run", f"{f['d_warns']}" + (f" ({f['d_warn_kinds']})" if f.get("d_warn_kinds") else ""),
        ok(f["d_warns"] == "0"))
    add("Mosquitto warnings during the run", f"{f['b_warns']}" + (f" ({f['b_warn_kinds']})" if f.get("b_warn_kinds") else ""),
        ok(f["b_warns"] == "0"))
    add(f"Load average at end (1/5/15 min, {ncpu} CPUs)", f["loadavg"])

    print("| Measure | Result | OK |")
    print("|---|---|---|")
    for r in rows:
        print("| " + " | ".join(r) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
