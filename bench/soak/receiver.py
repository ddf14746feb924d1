#!/usr/bin/env python3
"""Webhook receiver for scripts/soak: records every delivery, then answers 200.

    receiver.py --port P --log FILE

Each POST is appended to FILE as one JSON line *before* the answer:
  {"seq": N, "pid": PID, "t_ms": unix ms, "path": "/hook", "outbox": [ids], "kind", "incident",
   "bytes": len(body), "sha256": body digest}
and, once the 200 has been written to the socket, a second line {"seq": N, "pid": PID,
"answered_ms": unix ms}. A record without its `answered` line is a request the receiver took
but did not answer (it was stopped in between), so the sender rightly sends it again.
`seq` counts per process; (pid, seq) is unique. GET /health answers 200 (readiness).
GET /control?hold_ms=N holds the answer to the next deliveries N ms after recording them (the
soak kills the daemon in that moment: the at-least-once window); hold_ms=0 ends it.
The soak stops and starts this process to take the receiver down for a while.
"""

import argparse
import hashlib
import http.server
import json
import os
import sys
import threading
import time
import urllib.parse

LOCK = threading.Lock()
SEQ = [0]
HOLD_MS = [0]


def now_ms():
    return int(time.time() * 1000)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--log", required=True)
    args = ap.parse_args()
    log = open(args.log, "a", buffering=1, encoding="utf-8")
    pid = os.getpid()

    def write(rec):
        with LOCK:
            log.write(json.dumps(rec, ensure_ascii=False) + "\n")
            log.flush()

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *a):  # quiet
            pass

        def do_GET(self):
            if self.path.startswith("/control"):
                q = urllib.parse.parse_qs(urllib.parse.urlparse(self.path).query)
                HOLD_MS[0] = int(q.get("hold_ms", ["0"])[0])
            body = b'{"ok":true}'
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_POST(self):
            n = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(n) if n else b""
            try:
                doc = json.loads(body)
            except ValueError:
                doc = {}
            with LOCK:
                SEQ[0] += 1
                seq = SEQ[0]
            write({
                "seq": seq,
                "pid": pid,
                "t_ms": now_ms(),
                "path": self.path,
                "outbox": doc.get("outbox") if isinstance(doc, dict) else None,
                "kind": doc.get("kind") if isinstance(doc, dict) else None,
                "incident": doc.get("incident") if isinstance(doc, dict) else None,
                "bytes": len(body),
                "sha256": hashlib.sha256(body).hexdigest(),
            })
            if HOLD_MS[0]:
                time.sleep(HOLD_MS[0] / 1000)
            answer = b'{"ok":true}'
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(answer)))
            self.end_headers()
            try:
                self.wfile.write(answer)
                self.wfile.flush()
            except OSError:  # the sender is gone
                return
            write({"seq": seq, "pid": pid, "answered_ms": now_ms()})

    class Server(http.server.ThreadingHTTPServer):
        allow_reuse_address = True
        daemon_threads = True

    srv = Server(("127.0.0.1", args.port), Handler)
    print(f"receiver pid {pid} listening on 127.0.0.1:{args.port}", file=sys.stderr, flush=True)
    srv.serve_forever()


if __name__ == "__main__":
    main()
