"""An HTTPS webhook receiver for tests/tls.rs, on Python's own TLS (OpenSSL through the ssl
module), independent of the daemon's rustls.

    python3 https_receiver.py CERT KEY PORT OUT

Serves 127.0.0.1:PORT with CERT/KEY; every POST body is appended to OUT as one line and
answered 200 {"ok": true}. A client that refuses the certificate ends its own handshake;
the server goes on serving.
"""

import http.server
import ssl
import sys


def main():
    cert, key, port, out = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self):
            n = int(self.headers.get("Content-Length", "0"))
            body = self.rfile.read(n)
            with open(out, "ab") as f:
                f.write(body.replace(b"\n", b" ") + b"\n")
            reply = b'{"ok": true}'
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(reply)))
            self.end_headers()
            self.wfile.write(reply)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", port), Handler)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)
    server.socket = ctx.wrap_socket(server.socket, server_side=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
