#!/usr/bin/env python3
"""Write the starting seeds of every fuzz target into fuzz/corpus/<target>/seed-*.

The layouts follow the harnesses' readers (fuzz/src/*.rs). Once fuzzed, `cargo fuzz cmin`
keeps what adds coverage; run this again only to start a corpus from scratch."""
import json, os, struct, glob

root = os.path.dirname(os.path.abspath(__file__))
repo = os.path.dirname(root)

def write(target, name, data):
    d = os.path.join(root, "corpus", target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, "seed-" + name), "wb") as f:
        f.write(data if isinstance(data, bytes) else data.encode())

def s(text, limit=255):
    b = text.encode()[:limit]
    return bytes([len(b)]) + b

# ---- modbus_reply: device, read, mode, ...
for dev in range(10):
    for read in range(3):
        body = bytes((dev + i) % 256 for i in range(250))
        write("modbus_reply", f"words-{dev}-{read}", bytes([dev, read, 0, 0]) + body)
        write("modbus_reply", f"bits-{dev}-{read}", bytes([dev, read, 1, 0]) + body[:32])
        for mode in (2, 2 | 8 | 16, 2 | 4 | 8 | 16, 2 | 4):
            n = 2 * (4 + 4 * read)
            write("modbus_reply", f"wire{mode}-{dev}-{read}", bytes([dev, read, mode]) + body[:n])
write("modbus_reply", "exception", bytes([0, 0, 2 | 8, 0x83, 0x02]))
write("modbus_reply", "nan", bytes([9, 0, 0, 0]) + b"\x7f\xc0\x00\x00" * 60)
write("modbus_reply", "inf", bytes([9, 0, 0, 0]) + b"\x7f\x80\x00\x00" * 60)

# ---- mqtt_payload: sel (bit0 small limit, bits 1-2 topic kind), [limit u16], device, [topic], payload
docs = [
    {"ts": 1795000000000, "floor": 7, "dir": "up", "speed": 1.5, "door": "closed", "leveling": False,
     "passenger": True, "alarm": False, "mode": "normal", "fault": 0, "power_loss": False},
    {"floor": "12", "door": 1, "speed": "NaN"},
    {"floor": None, "passenger": 1, "alarm": 0, "mode": 2},
    {"ts": "yesterday", "floor": [1], "door": "ajar", "mode": 1.5},
    {"ts": 1e300, "speed": 1e308, "fault": -1},
    [],
]
for i, d in enumerate(docs):
    write("mqtt_payload", f"doc-{i}", bytes([0, i % 2]) + json.dumps(d).encode())
write("mqtt_payload", "notjson", bytes([0, 0]) + b"floor=7")
write("mqtt_payload", "nan-literal", bytes([0, 0]) + b'{"floor": NaN}')
write("mqtt_payload", "huge-exp", bytes([0, 0]) + b'{"speed": 1e999}')
write("mqtt_payload", "will-online", bytes([2, 0]) + b"online")
write("mqtt_payload", "will-offline", bytes([2, 1]) + b" offline\n")
write("mqtt_payload", "will-bad", bytes([2, 1]) + b"\xff\xfe")
write("mqtt_payload", "oversize", bytes([1, 0, 0, 0]) + b"{" + b" " * 200 + b"}")
write("mqtt_payload", "topic", bytes([4, 0]) + s("estate/lvyuan/elevator/SN20231001/status") + b'{"floor": 3}')
write("mqtt_payload", "topic-will", bytes([4, 0]) + s("estate/lvyuan/elevator/SN20231002/lwt") + b"offline")
write("mqtt_payload", "topic-other", bytes([4, 0]) + s("estate/lvyuan/elevator//status") + b"{}")

# ---- config: sel%3 == 0 site, 1 profile in the demo (index sel/3 % 7), 2 profile alone
profiles = sorted(glob.glob(os.path.join(repo, "config/profiles/*.toml")))
for name in ("demo.toml", "site.example.toml"):
    write("config", "site-" + name, b"\x00" + open(os.path.join(repo, "config", name), "rb").read())
for k, p in enumerate(profiles):
    text = open(p, "rb").read()
    write("config", f"profile-in-demo-{k}", bytes([1 + 3 * k]) + text)
    write("config", f"profile-{k}", b"\x02" + text)
write("config", "empty-site", b"\x00")
write("config", "bad-toml", b"\x00[site\nid = 1")

# ---- line_protocol: sel (bit0 small site, bits1-2 precision), [kind, tags], n, samples
def sample(b, point, extra=b""):
    return bytes([b]) + struct.pack(">H", point) + extra
def num(x):
    return struct.pack(">d", x)
demo = bytes([0, 8]) + sample(0x42, 0, num(230.5)) + b"\x00\x00\x00" + sample(0x01, 1) + sample(0x02, 2, num(-0.0)) \
    + sample(0x03 | (0 << 2), 3) + sample(0x03 | (1 << 2), 4) + sample(0x80 | 2, 5, num(1.0)) + sample(0x00, 6) + sample(0x02, 7, num(1e21))
write("line_protocol", "demo", demo)
for p in range(4):
    times = bytes([1, 4]) + sample(0x42, 0, num(1.0)) + bytes([2]) + struct.pack(">H", 7) + struct.pack(">Q", 1 << 39) \
        + sample(0x42, 1, num(2.0)) + bytes([3]) + struct.pack(">H", 9) + struct.pack(">Q", 12345678) \
        + sample(0x41, 2) + bytes([0, 0, 0]) + sample(0x02, 3, num(3.0))
    write("line_protocol", f"times-{p}", bytes([p << 1]) + times[1:])
small = bytes([1]) + s("电表 power,meter") + s("楼栋") + s("3 栋,东") + s("a=b") + s('x"y\\') \
    + bytes([3]) + sample(0x02, 0, num(1.5)) + sample(0x01, 1) + sample(0x02, 2, num(-2.5))
write("line_protocol", "small-site", small)
write("line_protocol", "small-empty-tag", bytes([1]) + s("kind") + s("k") + s("") + s("") + s("") + bytes([1]) + sample(0x02, 0, num(1.0)))

# ---- http_api: sel (ops in bits 6-7), method, route, id, query, auth (bits 0-2 token, 3-5 type), body
ROUTES = {"/": 0, "metrics": 1, "readyz": 3, "status": 4, "device": 6, "points": 7, "stream": 8, "whoami": 9, "reload": 10,
          "alarms": 11, "alarm-ack": 13, "shelve": 15, "incidents": 17, "incident-ack": 19, "resolve": 21,
          "note": 22, "oos": 25, "record.csv": 31, "kpi": 33, "roster": 34, "oncall": 35, "outbox": 36,
          "test": 38, "audit": 39, "verify": 40, "link": 41, "raw": 44}
GET, POST, HEAD = 0, 1, 4
def req(method, route, id_sel=0, query="", auth=0, body=b"", ops=()):
    return bytes([len(ops) << 6]) + b"".join(ops) + bytes([method, ROUTES[route], id_sel]) + s(query) + bytes([auth]) + body
for r in ("/", "metrics", "readyz", "status", "points", "whoami", "reload", "alarms", "incidents", "kpi", "roster", "oncall", "outbox",
          "audit", "verify", "record.csv"):
    write("http_api", "get-" + r.replace("/", "page"), req(GET, r))
write("http_api", "device", req(GET, "device", 6))
write("http_api", "points-q", req(GET, "points", 0, "device=pump-plc-1"))
write("http_api", "alarms-period", req(GET, "alarms", 0, "from=2026-01-01&to=9223372036854775807"))
write("http_api", "record-period", req(GET, "record.csv", 0, "from=-9223372036854775808&to=9223372036854775807"))
write("http_api", "kpi-period", req(GET, "kpi", 0, "from=1970-01-01&to=2262-04-11T23:47:16Z"))
write("http_api", "audit-limit", req(GET, "audit", 0, "limit=-5&from=0"))
write("http_api", "oncall-at", req(GET, "oncall", 0, "at=2026-12-31T21:00:00%2B08:00"))
write("http_api", "ack", req(POST, "alarm-ack", 0, "", 0, b'{"by": "fuzz", "note": "x"}'))
write("http_api", "shelve", req(POST, "shelve", 0, "", 0, b'{"by": "fuzz", "reason": "r", "minutes": 18446744073709551615}'))
write("http_api", "incident-ack", req(POST, "incident-ack", 0, "", 0, b'{"by": "fuzz"}'))
write("http_api", "resolve", req(POST, "resolve", 0, "", 0, b'{"by": "fuzz", "cause": "c", "measures": "m"}'))
write("http_api", "note", req(POST, "note", 0, "", 0, b'{"by": "fuzz", "text": "t"}'))
write("http_api", "oos", req(POST, "oos", 6, "", 0, b'{"by": "fuzz", "reason": "maintenance"}'))
write("http_api", "test-channel", req(POST, "test", 9, "", 0, b'{"people": ["zhangwei"]}'))
write("http_api", "bad-json", req(POST, "alarm-ack", 0, "", 0, b'{"by": 1'))
write("http_api", "no-token", req(POST, "alarm-ack", 0, "", 6 << 3 | 5, b'{"by": "x"}'))
write("http_api", "viewer-write", req(POST, "alarm-ack", 0, "", 2, b'{"by": "x"}'))
write("http_api", "link", req(GET, "link", 0, "p=zhangwei&exp=9223372036854775807&sig=AAAA"))
write("http_api", "link-post", req(POST, "link", 0, "", 3 << 3 | 5, b"p=zhangwei&exp=-1&sig=%%&name=x"))
write("http_api", "reload", req(POST, "reload"))
write("http_api", "head", req(HEAD, "status"))
write("http_api", "raw", bytes([0, GET, ROUTES["raw"], 200]) + s("api/v1/../x") + s("") + bytes([0]))
# set point 3 to NaN (value kind 2 = any f64), point 5 to true and its device offline
ops = (struct.pack(">H", 3) + bytes([2]) + num(float("nan")), struct.pack(">H", 5) + bytes([0x80 | 4]))
write("http_api", "nan-point", req(GET, "status", ops=ops))
write("http_api", "nan-points", req(GET, "points", ops=ops))
write("http_api", "nan-metrics", req(GET, "metrics", ops=ops[:1]))
