#!/usr/bin/env python3
"""A local stand-in for Slack's incoming webhooks, for the VM tests (Debian and NixOS).

It speaks the incoming-webhook protocol: `POST /services/T.../B.../...` with a JSON body is
answered `200 ok`. Each accepted body is appended, exactly as parsed, as one JSON line to
`messages.jsonl` (flushed and fsynced before the answer, so a count of lines is a count of
acknowledged deliveries). Requests it refuses are recorded in `rejected.jsonl` beside it with the
status they got. Like Slack it answers 400 `invalid_payload` to a body that is not a JSON object
with `text` or `blocks`, and 404 `no_service` to another path.

Outages for tests: if the file `fail` in the state directory exists (or $FAKE_SLACK_FAIL is set),
its content says how to answer instead: `500` (answered `500 internal_error`), or `429` or
`429 SECONDS` (answered `429 rate_limited` with `Retry-After: SECONDS`, default 1). Remove the
file to end the outage.

Python 3 standard library only; listens on loopback.

    fake_slack.py [--listen 127.0.0.1:9999] [--state-dir /var/lib/fake-slack]
"""

import argparse
import json
import os
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

MAX_BODY = 1 << 20


class Sink:
    def __init__(self, state_dir: str):
        self.state_dir = state_dir
        os.makedirs(state_dir, exist_ok=True)
        self.messages = os.path.join(state_dir, "messages.jsonl")
        self.rejected = os.path.join(state_dir, "rejected.jsonl")
        self.fail_file = os.path.join(state_dir, "fail")
        self.lock = threading.Lock()

    def outage(self):
        spec = os.environ.get("FAKE_SLACK_FAIL", "")
        try:
            with open(self.fail_file) as f:
                spec = f.read()
        except FileNotFoundError:
            pass
        return spec.split()

    def append(self, path: str, record) -> None:
        line = json.dumps(record, separators=(",", ":"), sort_keys=True) + "\n"
        with self.lock:
            with open(path, "a", encoding="utf-8") as f:
                f.write(line)
                f.flush()
                os.fsync(f.fileno())


class Handler(BaseHTTPRequestHandler):
    server_version = "fake-slack/1"
    protocol_version = "HTTP/1.1"
    sink: Sink = None  # set in main

    def log_message(self, fmt, *args):
        sys.stderr.write("fake-slack: " + (fmt % args) + "\n")

    def answer(self, status: int, text: str, headers=()):
        body = text.encode()
        self.send_response(status)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        for k, v in headers:
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(body)

    def reject(self, status: int, text: str, body, headers=()):
        self.sink.append(
            self.sink.rejected,
            {"at": time.time(), "path": self.path, "status": status, "answer": text, "body": body},
        )
        self.answer(status, text, headers)

    def do_GET(self):
        if self.path == "/healthz":
            self.answer(200, "ok")
        else:
            self.answer(404, "no_service")

    def do_POST(self):
        try:
            length = int(self.headers.get("Content-Length", "0"))
        except ValueError:
            length = -1
        if length < 0 or length > MAX_BODY:
            self.answer(413, "request_too_large")
            return
        raw = self.rfile.read(length)
        text = raw.decode("utf-8", "replace")
        if not self.path.startswith("/services/"):
            self.reject(404, "no_service", text)
            return
        outage = self.sink.outage()
        if outage and outage[0] == "500":
            self.reject(500, "internal_error", text)
            return
        if outage and outage[0] == "429":
            retry = outage[1] if len(outage) > 1 else "1"
            self.reject(429, "rate_limited", text, [("Retry-After", retry)])
            return
        try:
            body = json.loads(raw)
        except ValueError:
            self.reject(400, "invalid_payload", text)
            return
        if not isinstance(body, dict) or not (body.get("text") or body.get("blocks")):
            self.reject(400, "invalid_payload", text)
            return
        self.sink.append(self.sink.messages, body)
        self.answer(200, "ok")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--listen", default="127.0.0.1:9999")
    parser.add_argument("--state-dir", default=os.environ.get("STATE_DIRECTORY", "/var/lib/fake-slack"))
    args = parser.parse_args()
    host, _, port = args.listen.rpartition(":")
    Handler.sink = Sink(args.state_dir)
    server = ThreadingHTTPServer((host, int(port)), Handler)
    server.daemon_threads = True
    bound = "%s:%d" % server.server_address[:2]
    sys.stderr.write(f"fake-slack: listening on {bound}, recording in {args.state_dir}\n")
    sys.stderr.flush()
    server.serve_forever()


if __name__ == "__main__":
    main()
