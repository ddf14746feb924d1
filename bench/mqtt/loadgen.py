#!/usr/bin/env python3
"""MQTT load generator for the propwatch MQTT benchmark (scripts/bench-mqtt).

Publishes lift-terminal JSON in the shape of config/profiles/mqtt-lift-terminal.toml to
    estate/<site>/elevator/<topic id>/status
for the topic ids TOPIC_PREFIX0000, TOPIC_PREFIX0001, ... in round robin, each lift with its
own small state machine (floor walk, direction, speed, door cycle, occupancy, rare alarm /
fault / mode changes) and a millisecond timestamp of now. Every message is valid for the
profile, so each one the daemon accepts yields exactly 10 samples.

Two publishers (--client):
  paho    paho-mqtt 2.x with its network thread (loop_start), one publish() per message:
          what a Python integration would normally use. paho sends every packet with its
          own send() and reads every PUBACK a few bytes per recv(), and its two threads
          share the GIL, so it tops out at a few thousand messages/s.
  raw     a minimal MQTT 3.1.1 publisher on a plain socket (CONNECT, PUBLISH QoS 0/1,
          PUBACK, DISCONNECT): the messages due in one step are written with ONE sendall()
          and PUBACKs are parsed in bulk. Same packets on the wire, far less CPU per
          message, so an unpaced run measures the broker and the daemon, not Python.
Two modes:
  paced   --rate R: message i is due at start + i/R; the loop publishes whatever is due and
          sleeps until the next one is (about 1 ms granularity).
  max     --rate 0: publish as fast as the publisher can.
Both stop after --seconds or --count messages, whichever comes first. With QoS 1 the
publish window ends only when the broker has acknowledged (PUBACK) every message, and at
most --window messages are ever unacknowledged, so the rate is what the broker took, not
what piled up in this process's memory. With QoS 0 the window ends once every message has
been written to the socket.

`--sys` instead prints the broker's $SYS counters (mosquitto, with sys_interval 1) as JSON.

The report is one JSON object on stdout: published, acked, window seconds, achieved rate,
this process's CPU seconds (user+sys, all threads) over the window, how far behind schedule
the paced loop fell, and the largest number of unacknowledged messages.
"""

import argparse
import json
import os
import random
import resource
import select
import socket
import struct
import sys
import threading
import time

import paho.mqtt.client as mqtt

MODES = ("normal", "normal", "normal", "normal", "inspection")


class Lift:
    """One lift terminal's state; step() returns its next status payload."""

    __slots__ = ("floor", "target", "door", "dwell", "passenger", "rng", "mode", "fault", "alarm")

    def __init__(self, rng: random.Random):
        self.rng = rng
        self.floor = rng.randint(-2, 32)
        self.target = self.floor
        self.door = "closed"
        self.dwell = 0
        self.passenger = False
        self.mode = "normal"
        self.fault = 0
        self.alarm = False

    def step(self, ts_ms: int) -> bytes:
        r = self.rng
        if self.floor == self.target:
            # at a landing: door cycle, then maybe a new call
            speed = 0.0
            direction = "stop"
            leveling = True
            if self.door == "closed" and self.dwell == 0 and r.random() < 0.3:
                self.door, self.dwell = "opening", 1
            elif self.door == "opening":
                self.door, self.dwell = "open", r.randint(2, 6)
                self.passenger = r.random() < 0.6
            elif self.door == "open":
                self.dwell -= 1
                if self.dwell <= 0:
                    self.door = "closing"
            elif self.door == "closing":
                self.door, self.dwell = "closed", 0
                if r.random() < 0.7:
                    self.target = r.randint(-2, 32)
        else:
            direction = "up" if self.target > self.floor else "down"
            self.floor += 1 if direction == "up" else -1
            leveling = self.floor == self.target
            speed = round(r.uniform(1.4, 1.75) if not leveling else r.uniform(0.2, 0.5), 2)
        # rare events
        if r.random() < 0.0002:
            self.alarm = not self.alarm
        if r.random() < 0.0001:
            self.mode = r.choice(MODES)
        if r.random() < 0.0002:
            self.fault = 0 if self.fault else r.choice((8, 21, 35, 47))
        return (
            '{"ts": %d, "floor": %d, "dir": "%s", "speed": %s, "door": "%s", '
            '"leveling": %s, "passenger": %s, "alarm": %s, "mode": "%s", '
            '"fault": %d, "power_loss": false}'
            % (
                ts_ms,
                self.floor,
                direction,
                repr(speed),
                self.door,
                "true" if leveling else "false",
                "true" if self.passenger else "false",
                "true" if self.alarm else "false",
                self.mode,
                self.fault,
            )
        ).encode()


class PahoPublisher:
    """paho-mqtt with its network thread; PUBACKs counted in on_publish."""

    def __init__(self, a, client_id: str):
        self.cond = threading.Condition()
        self.acked = 0
        self.failed = 0
        self.connected = threading.Event()
        self.disconnected = threading.Event()
        self.connect_rc = None
        c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=True)
        c.on_connect = self._on_connect
        c.on_disconnect = self._on_disconnect
        c.on_publish = self._on_publish
        # paho's own in-flight cap (default 20) would throttle QoS 1 below what the broker
        # can take; --window bounds the unacknowledged messages instead.
        c.max_inflight_messages_set(max(20, a.window))
        c.max_queued_messages_set(0)
        c.connect(a.host, a.port, keepalive=60)
        c.loop_start()
        if not self.connected.wait(10) or self.connect_rc is None or self.connect_rc.is_failure:
            sys.exit(f"loadgen: cannot connect to {a.host}:{a.port}: {self.connect_rc}")
        self.client = c
        self.qos = a.qos

    def _on_connect(self, client, userdata, flags, reason_code, properties):
        self.connect_rc = reason_code
        self.connected.set()

    def _on_disconnect(self, client, userdata, flags, reason_code, properties):
        self.disconnected.set()
        with self.cond:
            self.cond.notify_all()

    def _on_publish(self, client, userdata, mid, reason_code, properties):
        with self.cond:
            self.acked += 1
            self.cond.notify_all()

    def publish_batch(self, msgs):
        publish, qos = self.client.publish, self.qos
        for topic, payload in msgs:
            if publish(topic, payload, qos).rc != mqtt.MQTT_ERR_SUCCESS:
                self.failed += 1

    def wait_acked(self, target: int, timeout: float) -> bool:
        """Wait until at least `target` messages are acknowledged (QoS 1)."""
        deadline = time.monotonic() + timeout
        with self.cond:
            while self.acked < target and not self.disconnected.is_set():
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self.cond.wait(min(left, 0.05))
        return self.acked >= target

    def flush(self, timeout: float) -> None:
        """QoS 0: wait until paho's network thread has written everything."""
        deadline = time.monotonic() + timeout
        while self.client._out_packet and time.monotonic() < deadline:  # noqa: SLF001 (no public API)
            time.sleep(0.002)

    @property
    def lost_connection(self) -> bool:
        return self.disconnected.is_set()

    def close(self) -> None:
        self.client.disconnect()
        self.disconnected.wait(5)
        self.client.loop_stop()


class RawPublisher:
    """Minimal MQTT 3.1.1 publisher: batched writes, bulk PUBACK parsing, one thread."""

    def __init__(self, a, client_id: str):
        self.qos = a.qos
        self.acked = 0
        self.failed = 0
        self.lost_connection = False
        self.mid = 0
        self.buf = bytearray()
        self.topic_cache = {}
        s = socket.create_connection((a.host, a.port), timeout=10)
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        cid = client_id.encode()
        # protocol "MQTT" level 4, clean session, keep alive 600 s (we keep talking anyway)
        var = b"\x00\x04MQTT\x04\x02" + struct.pack("!H", 600) + struct.pack("!H", len(cid)) + cid
        s.sendall(b"\x10" + self._varint(len(var)) + var)
        connack = self._recv_exact(s, 4)
        if connack[0] != 0x20 or connack[3] != 0:
            sys.exit(f"loadgen: CONNACK refused: {connack!r}")
        s.settimeout(None)
        self.sock = s

    @staticmethod
    def _varint(n: int) -> bytes:
        out = bytearray()
        while True:
            b, n = n & 0x7F, n >> 7
            out.append(b | (0x80 if n else 0))
            if not n:
                return bytes(out)

    @staticmethod
    def _recv_exact(s, n: int) -> bytes:
        data = b""
        while len(data) < n:
            chunk = s.recv(n - len(data))
            if not chunk:
                sys.exit("loadgen: broker closed the connection")
            data += chunk
        return data

    def publish_batch(self, msgs):
        parts = []
        cache, varint = self.topic_cache, self._varint
        if self.qos == 1:
            for topic, payload in msgs:
                t = cache.get(topic)
                if t is None:
                    tb = topic.encode()
                    t = cache[topic] = struct.pack("!H", len(tb)) + tb
                self.mid = self.mid % 65535 + 1
                parts.append(b"\x32" + varint(len(t) + 2 + len(payload)) + t + struct.pack("!H", self.mid) + payload)
        else:
            for topic, payload in msgs:
                t = cache.get(topic)
                if t is None:
                    tb = topic.encode()
                    t = cache[topic] = struct.pack("!H", len(tb)) + tb
                parts.append(b"\x30" + varint(len(t) + len(payload)) + t + payload)
        try:
            self.sock.sendall(b"".join(parts))
        except OSError:
            self.lost_connection = True
            self.failed += len(parts)
            return
        if self.qos == 1:
            self._read(0)

    def _read(self, timeout: float) -> None:
        """Read what the broker sent (PUBACKs); wait up to `timeout` for the first bytes."""
        r, _, _ = select.select([self.sock], [], [], timeout)
        if not r:
            return
        try:
            data = self.sock.recv(1 << 16)
        except OSError:
            data = b""
        if not data:
            self.lost_connection = True
            return
        self.buf += data
        buf, i, n = self.buf, 0, len(self.buf)
        while i + 2 <= n:
            # header byte, remaining length (PUBACK: 0x40 0x02 id id)
            length, shift, j = 0, 0, i + 1
            while j < n:
                b = buf[j]
                length |= (b & 0x7F) << shift
                shift += 7
                j += 1
                if not b & 0x80:
                    break
            else:
                break
            if j + length > n:
                break
            if buf[i] & 0xF0 == 0x40:
                self.acked += 1
            i = j + length
        del buf[:i]

    def wait_acked(self, target: int, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while self.acked < target and not self.lost_connection:
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            self._read(min(left, 0.05))
        return self.acked >= target

    def flush(self, timeout: float) -> None:
        pass  # sendall() returned: everything is in the kernel

    def close(self) -> None:
        try:
            self.sock.sendall(b"\xe0\x00")
            self.sock.shutdown(socket.SHUT_WR)
            self.sock.settimeout(5)
            while self.sock.recv(1 << 16):
                pass
        except OSError:
            pass
        self.sock.close()


def sys_counters(a) -> int:
    """Print the broker's $SYS counters as JSON, as of a fresh $SYS publication.

    Subscribing first delivers the retained values of the last publication, which may
    predate the newest messages; mosquitto republishes a counter only when it changed, but
    `uptime` changes every time. So wait for the second non-retained `uptime` after
    subscribing: the counters of a whole publication pass made after we asked are then in.
    """
    got = {}
    fresh = threading.Semaphore(0)
    connected = threading.Event()
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"bench-sys-{os.getpid()}")
    c.on_connect = lambda *args: connected.set()

    def on_message(client, userdata, msg):
        try:
            got[msg.topic] = msg.payload.decode()
        except UnicodeDecodeError:
            return
        if msg.topic == "$SYS/broker/uptime" and not msg.retain:
            fresh.release()

    c.on_message = on_message
    c.connect(a.host, a.port, keepalive=30)
    c.loop_start()
    if not connected.wait(10):
        sys.exit("loadgen: cannot connect for $SYS")
    c.subscribe("$SYS/broker/#", qos=0)
    deadline = time.monotonic() + a.sys_wait
    for _ in range(2):
        if not fresh.acquire(timeout=max(0.0, deadline - time.monotonic())):
            print("loadgen: no fresh $SYS publication (is sys_interval 1 set?)", file=sys.stderr)
            break
    c.disconnect()
    c.loop_stop()
    json.dump(got, sys.stdout, sort_keys=True)
    print()
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=1883)
    ap.add_argument("--site", default="bench", help="site id in the topic (default bench)")
    ap.add_argument("--devices", type=int, default=200, help="number of lifts (default 200)")
    ap.add_argument("--topic-prefix", default="SN2026", help="topic id prefix (default SN2026)")
    ap.add_argument("--client", choices=("paho", "raw"), default="paho", help="publisher (default paho)")
    ap.add_argument("--rate", type=float, default=2000, help="total messages/s, 0 = as fast as possible")
    ap.add_argument("--seconds", type=float, default=60, help="publish window (default 60)")
    ap.add_argument("--count", type=int, default=0, help="stop after this many messages (0 = no limit)")
    ap.add_argument("--qos", type=int, choices=(0, 1), default=1)
    ap.add_argument("--window", type=int, default=1000, help="max unacknowledged QoS 1 messages (default 1000)")
    ap.add_argument("--seed", type=int, default=2026)
    ap.add_argument("--client-id", default="", help="default bench-pub-<pid>")
    ap.add_argument("--events", help="a FIFO (or file) that gets the line 'start' when publishing starts and "
                    "'end N' when the publish window ends, N = messages the broker has")
    ap.add_argument("--ack-timeout", type=float, default=30, help="max wait for the last PUBACKs")
    ap.add_argument("--sys", action="store_true", help="print the broker's $SYS counters and exit")
    ap.add_argument("--sys-wait", type=float, default=5, help="max seconds to wait for fresh $SYS (default 5)")
    a = ap.parse_args()
    if a.sys:
        return sys_counters(a)
    if a.devices < 1 or a.rate < 0 or a.seconds <= 0 or not 1 <= a.window <= 60000:
        ap.error("--devices >= 1, --rate >= 0, --seconds > 0, --window 1..60000")
    if a.seconds > 600:
        ap.error("a run is limited to 600 s")

    rng = random.Random(a.seed)
    lifts = [Lift(random.Random(rng.random())) for _ in range(a.devices)]
    topics = [f"estate/{a.site}/elevator/{a.topic_prefix}{i:04d}/status" for i in range(a.devices)]
    client_id = a.client_id or f"bench-pub-{os.getpid()}"
    pub = PahoPublisher(a, client_id) if a.client == "paho" else RawPublisher(a, client_id)
    qos = a.qos
    limit = a.count if a.count > 0 else 1 << 62
    if a.rate > 0:
        # a paced run is exactly rate x seconds messages (fewer with --count); if it falls
        # behind schedule it catches up, and the window gets longer (at most +60 s)
        limit = min(limit, round(a.rate * a.seconds))
    # at most this many messages per write, and never more than the QoS 1 window
    max_batch = min(256, a.window)
    ndev = a.devices

    events = os.open(a.events, os.O_WRONLY | os.O_APPEND) if a.events else None

    def event(text: str) -> None:
        if events is not None:
            os.write(events, text.encode())

    ru0 = resource.getrusage(resource.RUSAGE_SELF)
    t0 = time.monotonic()
    event("start\n")
    end = t0 + a.seconds + (60 if a.rate > 0 else 0)
    sent = 0
    max_behind = 0.0  # how late the paced loop ran behind its schedule, seconds
    max_outstanding = 0
    window_waits = 0
    dev = 0
    interval = 1.0 / a.rate if a.rate > 0 else 0.0
    while sent < limit and not pub.lost_connection:
        now = time.monotonic()
        if now >= end:
            break
        if interval:
            due = min(limit, int((now - t0) * a.rate) + 1)
            if due <= sent:
                time.sleep(max(0.0, t0 + sent * interval - now))
                continue
            behind = now - (t0 + sent * interval)
            if behind > max_behind:
                max_behind = behind
            batch = min(due - sent, max_batch)
        else:
            batch = min(max_batch, limit - sent)
        if qos == 1:
            outstanding = sent - pub.failed - pub.acked
            if outstanding > max_outstanding:
                max_outstanding = outstanding
            if outstanding + batch > a.window:
                window_waits += 1
                if not pub.wait_acked(sent - pub.failed + batch - a.window, a.ack_timeout):
                    print(f"loadgen: no PUBACK within {a.ack_timeout} s", file=sys.stderr)
                    break
        ts = int(time.time() * 1000)
        msgs = []
        for _ in range(batch):
            msgs.append((topics[dev], lifts[dev].step(ts)))
            dev += 1
            if dev == ndev:
                dev = 0
        pub.publish_batch(msgs)
        sent += batch
    t_last_publish = time.monotonic()
    # the window ends when the broker has everything
    if qos == 1:
        pub.wait_acked(sent - pub.failed, a.ack_timeout)
    else:
        pub.flush(a.ack_timeout)
    t1 = time.monotonic()
    ru1 = resource.getrusage(resource.RUSAGE_SELF)
    delivered = pub.acked if qos == 1 else sent - pub.failed
    # the number of messages the broker has: the harness waits for the daemon to take them
    event(f"end {delivered}\n")
    if events is not None:
        os.close(events)
    lost = pub.lost_connection
    pub.close()

    wall = t1 - t0
    cpu = (ru1.ru_utime - ru0.ru_utime) + (ru1.ru_stime - ru0.ru_stime)
    report = {
        "client": a.client,
        "qos": qos,
        "devices": ndev,
        "target_rate": a.rate,
        "published": sent,
        "publish_failed": pub.failed,
        "acked": pub.acked if qos == 1 else None,
        "window_s": round(wall, 4),
        "publish_loop_s": round(t_last_publish - t0, 4),
        "rate": round(delivered / wall, 1) if wall > 0 else 0,
        "cpu_s": round(cpu, 3),
        "cpu_pct": round(100 * cpu / wall, 1) if wall > 0 else 0,
        "max_behind_ms": round(max_behind * 1000, 1),
        "max_outstanding": max_outstanding,
        "window_waits": window_waits,
        "maxrss_kib": ru1.ru_maxrss,
    }
    json.dump(report, sys.stdout)
    print()
    if pub.failed or lost or (qos == 1 and pub.acked < sent):
        print(f"loadgen: {pub.failed} failed, {pub.acked} of {sent} acknowledged, lost connection: {lost}",
              file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
