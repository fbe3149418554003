#!/usr/bin/python3
"""Root shell for the VM test harness, on the virtio console /dev/hvc0.

Baked into the test image only. One request per line, one answer per line, each a base64-encoded
JSON object, so output and exit codes come back exactly (no echo, no prompt parsing, no line
length limit):

    request:  {"id": 7, "cmd": "systemctl is-active foo", "timeout": 30}
    answer:   {"id": 7, "status": 0, "stdout": "active\n", "stderr": "", "timed_out": false}

A request without "cmd" is a ping and is answered {"id": N, "pong": true}. Commands run one at a
time with bash, stdin from /dev/null, and stdout/stderr in files rather than pipes, so a command
that leaves a background process behind still returns at once. A command that outlives its
timeout is killed with its whole process group and answered with status 124.
"""

import base64
import json
import os
import signal
import subprocess
import sys
import tempfile
import termios
import time
import tty

ENV = {
    "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "HOME": "/root",
    "LANG": "C.UTF-8",
    "TERM": "dumb",
    "SYSTEMD_PAGER": "",
    "SYSTEMD_COLORS": "0",
    "USER": "root",
    "LOGNAME": "root",
}


def open_port(path):
    """Opens the console in raw mode, retrying while the device is not there yet."""
    for _ in range(600):
        try:
            fd = os.open(path, os.O_RDWR | os.O_NOCTTY)
        except OSError:
            time.sleep(0.1)
            continue
        try:
            tty.setraw(fd)
            attrs = termios.tcgetattr(fd)
            attrs[3] &= ~termios.ECHO
            termios.tcsetattr(fd, termios.TCSANOW, attrs)
        except termios.error:
            pass
        return fd
    sys.exit(f"agent: {path} did not appear within 60 s")


def run(cmd, timeout):
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        proc = subprocess.Popen(
            ["/bin/bash", "-c", cmd],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=err,
            cwd="/root" if os.path.isdir("/root") else "/",
            env=ENV,
            start_new_session=True,
        )
        timed_out = False
        try:
            status = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            timed_out = True
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            proc.wait()
            status = 124
        out.seek(0)
        err.seek(0)
        return {
            "status": status if status >= 0 else 128 - status,
            "stdout": out.read().decode("utf-8", "replace"),
            "stderr": err.read().decode("utf-8", "replace"),
            "timed_out": timed_out,
        }


def main():
    path = sys.argv[1] if len(sys.argv) > 1 else "/dev/hvc0"
    fd = open_port(path)
    buf = b""
    while True:
        try:
            chunk = os.read(fd, 65536)
        except OSError:
            chunk = b""
        if not chunk:
            # The host side is not connected: wait and read again.
            time.sleep(0.2)
            continue
        buf += chunk
        while b"\n" in buf:
            line, buf = buf.split(b"\n", 1)
            line = line.strip()
            if not line:
                continue
            try:
                req = json.loads(base64.b64decode(line))
            except ValueError:
                continue
            if "cmd" in req:
                ans = run(req["cmd"], float(req.get("timeout") or 900))
            else:
                ans = {"pong": True}
            ans["id"] = req.get("id")
            data = base64.b64encode(json.dumps(ans).encode()) + b"\n"
            while data:
                data = data[os.write(fd, data):]


if __name__ == "__main__":
    main()
