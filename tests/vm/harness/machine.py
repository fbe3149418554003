"""A qemu guest driven with the NixOS test driver's vocabulary.

`Machine` mirrors the methods and semantics of nixpkgs' `nixos/lib/test-driver` Machine that the
shared scenario uses, so `tests/scenario.py` runs unchanged on both:

- `succeed(cmd)` returns the command's stdout and raises (with the output) on a non-zero status;
  `fail(cmd)` is its opposite; `execute(cmd)` returns `(status, stdout)`. As in NixOS, stderr is
  not part of the returned output (it is logged); write `2>&1` to capture it.
- `wait_until_succeeds` / `wait_until_fails` retry until the timeout; `wait_for_unit` fails early
  when the unit reaches `failed`; `wait_for_open_port` waits for a listening TCP port.
- `start`, `shutdown` (clean power-off), `crash` (hard stop), `reboot` (shutdown then start).

Commands reach the guest through a root shell on a virtio console (see tests/vm/image/agent.py):
exact output and exit codes, about 40 ms per command. qemu is always killed when the harness
exits: `kill_all` runs from `atexit` and the signal handlers installed by `install_reaper`, and
the kernel kills qemu if the harness dies anyway (PR_SET_PDEATHSIG).
"""

import atexit
import base64
import json
import os
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING

from .image import Image
from .procs import on_parent_death, spawn

if TYPE_CHECKING:
    from .snapshot import Snapshot

_LIVE: "set[Machine]" = set()

def kill_all() -> None:
    for m in list(_LIVE):
        m.kill()


def install_reaper() -> None:
    """Makes every exit path (normal, exception, SIGINT, SIGTERM, SIGHUP) stop all guests."""
    atexit.register(kill_all)

    def handler(signum, _frame):
        kill_all()
        raise SystemExit(128 + signum)

    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, handler)


class MachineError(AssertionError):
    """A driver call failed: a command's status, a timeout, or the guest went away."""


def connect_unix(path: Path, what: str, timeout: float, alive) -> socket.socket:
    """Connects to a unix socket qemu serves. qemu creates the socket file before it listens on
    it, so this retries until connected; `alive()` raises if qemu has died meanwhile."""
    deadline = time.monotonic() + timeout
    while True:
        alive()
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.connect(str(path))
            return sock
        except OSError:
            sock.close()
        if time.monotonic() > deadline:
            raise MachineError(f"qemu's {what} socket {path} did not accept within {timeout} s")
        time.sleep(0.02)


class Qmp:
    """Just enough of the QEMU Machine Protocol: the handshake, then commands one at a time
    (asynchronous events in between are skipped)."""

    def __init__(self, path: Path, timeout: float, alive):
        self.sock = connect_unix(path, "QMP", timeout, alive)
        self.buf = b""
        self._read(timeout)  # the greeting
        self.execute("qmp_capabilities")

    def _read(self, timeout: float) -> dict:
        deadline = time.monotonic() + timeout
        while b"\n" not in self.buf:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise MachineError(f"no answer on QMP within {timeout} s")
            self.sock.settimeout(remaining)
            try:
                chunk = self.sock.recv(1 << 16)
            except socket.timeout:
                continue
            except OSError as e:
                raise MachineError(f"the QMP connection to qemu broke: {e}") from None
            if not chunk:
                raise MachineError("qemu closed the QMP connection")
            self.buf += chunk
        line, self.buf = self.buf.split(b"\n", 1)
        return json.loads(line)

    def execute(self, command: str, arguments: "dict | None" = None, timeout: float = 30) -> "dict | list":
        msg = {"execute": command}
        if arguments:
            msg["arguments"] = arguments
        try:
            self.sock.sendall(json.dumps(msg).encode() + b"\n")
        except OSError as e:
            raise MachineError(f"the QMP connection to qemu broke: {e}") from None
        while True:
            ans = self._read(timeout)
            if "error" in ans:
                raise MachineError(f"QMP {command}: {ans['error'].get('desc', ans['error'])}")
            if "return" in ans:
                return ans["return"]

    def wait_for_migration(self, timeout: float) -> None:
        """Polls query-migrate until the migration (outgoing or incoming) has completed."""
        deadline = time.monotonic() + timeout
        while True:
            info = self.execute("query-migrate")
            status = info.get("status")
            if status == "completed":
                return
            if status in ("failed", "cancelled"):
                raise MachineError(f"migration {status}: {info.get('error-desc', '')}")
            if time.monotonic() > deadline:
                raise MachineError(f"migration not completed within {timeout} s (status {status})")
            time.sleep(0.05)

    def close(self) -> None:
        self.sock.close()


class Machine:
    def __init__(
        self,
        image: Image,
        workdir: Path,
        name: str = "machine",
        memory_mb: int = 1024,
        cpus: int = 2,
        extra_disks: "list[Path]" = (),
        append: str = "",
        log=print,
        verbose: bool = False,
    ):
        self.name = name
        self.image = image
        self.workdir = Path(workdir)
        self.memory_mb = memory_mb
        self.cpus = cpus
        self.extra_disks = list(extra_disks)
        self.append = append
        self._log = log
        self.verbose = verbose
        self.overlay = self.workdir / f"{name}.qcow2"
        self.serial_log = self.workdir / f"{name}-serial.log"
        self.pidfile = self.workdir / f"{name}.pid"
        # Unix socket paths are limited to 108 bytes: keep them short, under /tmp.
        self._sockdir = Path(tempfile.mkdtemp(prefix="aiops-vm-"))
        self.shell_path = self._sockdir / "shell.sock"
        self.qmp_path = self._sockdir / "qmp.sock"
        self.process: "subprocess.Popen | None" = None
        self._sock: "socket.socket | None" = None
        self._buf = b""
        self._next_id = 0
        self.boots = 0

    # ---- lifecycle -------------------------------------------------------------------------

    def log(self, msg: str) -> None:
        self._log(f"{self.name}: {msg}")

    def is_up(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def qemu_command(self, incoming: bool = False) -> "list[str]":
        append = " ".join(
            [
                "root=/dev/vda rw console=ttyS0 panic=-1 net.ifnames=0",
                "systemd.show_status=error loglevel=4 random.trust_cpu=on",
                # Under TCG the kernel falls back to the HPET clocksource (every clock read an
                # emulated MMIO access, and no vDSO); qemu's TSC follows the host's, so use it.
                # The guest runs nothing untrusted: no speculation mitigations, no crypto self-tests
                # (the KDF's own self-test takes half a second).
                "tsc=reliable mitigations=off cryptomgr.notests initcall_blacklist=crypto_kdf108_init",
                self.append,
            ]
        ).strip()
        cmd = [
            "qemu-system-x86_64",
            "-name", self.name,
            # q35 without default devices: no floppy, IDE, VGA or parallel port to probe at boot.
            "-machine", "q35",
            "-nodefaults",
            "-vga", "none",
            # KVM on these machines is a software hypervisor that hangs a stock kernel: use TCG.
            # -cpu max exposes the host's instruction set extensions, so host-built binaries run.
            "-accel", "tcg",
            "-cpu", "max",
            "-m", str(self.memory_mb),
            "-smp", str(self.cpus),
            "-nographic",
            "-monitor", "none",
            "-qmp", f"unix:{self.qmp_path},server=on,wait=off",
            "-chardev", f"file,id=serial,path={self.serial_log},append=on",
            "-serial", "chardev:serial",
            "-no-reboot",
            "-pidfile", str(self.pidfile),
            "-kernel", str(self.image.kernel),
            "-initrd", str(self.image.initrd),
            "-append", append,
            "-drive", f"file={self.overlay},format=qcow2,if=virtio,cache=unsafe",
            # No network device: everything the tests talk to runs inside the guest.
            "-nic", "none",
            "-device", "virtio-rng-pci",
            # A new generation ID on every start: a guest restored from a snapshot reseeds its
            # random number generator instead of repeating the snapshot's random numbers.
            "-device", "vmgenid,guid=auto",
            "-device", "virtio-serial-pci",
            "-chardev", f"socket,id=shell,path={self.shell_path},server=on,wait=off",
            "-device", "virtconsole,chardev=shell",
        ]
        for disk in self.extra_disks:
            cmd += ["-drive", f"file={disk},format=raw,if=virtio,readonly=on"]
        if incoming:
            cmd += ["-incoming", "defer"]
        return cmd

    def signature(self) -> "list[str]":
        """The qemu command without this run's paths and the machine's name: what a saved
        snapshot must match (every guest of a run resumes the same snapshot)."""
        cmd = []
        args = self.qemu_command()
        for i, arg in enumerate(args):
            if i > 0 and args[i - 1] == "-name":
                arg = "NAME"
            for disk in self.extra_disks:
                arg = arg.replace(str(disk), "DISK")
            arg = arg.replace(str(self.workdir / self.name), "WORKDIR/NAME")
            cmd.append(arg.replace(str(self._sockdir), "SOCKDIR").replace(str(self.workdir), "WORKDIR"))
        return cmd

    def start(self, timeout: float = 180, restore: "Snapshot | None" = None) -> None:
        """Boots the guest (the overlay keeps its disk across reboots) and waits for its shell.

        With `restore` (first start only), the guest is not booted but resumed from a saved
        snapshot of a booted guest (see snapshot.py): its disk under the overlay, its memory and
        devices loaded by qemu, its clock then set to now."""
        if self.is_up():
            return
        if restore is not None and self.boots > 0:
            raise MachineError("a snapshot can only be restored on the first start")
        if not self.overlay.exists():
            backing, fmt = (restore.disk, "qcow2") if restore is not None else (self.image.root, "raw")
            subprocess.run(
                ["qemu-img", "create", "-q", "-f", "qcow2", "-F", fmt, "-b", str(backing), str(self.overlay)],
                check=True,
            )
        self._remove_sockets()
        self.boots += 1
        how = "restoring the snapshot" if restore is not None else f"boot {self.boots}"
        self.log(f"starting qemu ({how})")
        with open(self.serial_log, "ab") as f:
            f.write(f"\n===== {how} =====\n".encode())
        self.process = spawn(
            self.qemu_command(incoming=restore is not None),
            stdin=subprocess.DEVNULL,
            stdout=open(self.workdir / f"{self.name}-qemu.log", "ab"),
            stderr=subprocess.STDOUT,
            preexec_fn=on_parent_death(signal.SIGKILL),
        )
        _LIVE.add(self)
        started = time.monotonic()
        deadline = started + timeout
        if restore is not None:
            qmp = Qmp(self.qmp_path, timeout, self._check_alive)
            try:
                qmp.execute("migrate-incoming", {"uri": f"file:{restore.state}"})
                qmp.wait_for_migration(timeout)
                # The guest was stopped when it was saved, and qemu restores that too.
                qmp.execute("cont")
            finally:
                qmp.close()
        self._sock = connect_unix(self.shell_path, "shell", max(deadline - time.monotonic(), 0), self._check_alive)
        self._buf = b""
        # Ping until the agent answers; unanswered pings are drained by id.
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise MachineError(f"the guest's shell did not answer within {timeout} s")
            try:
                self._request({}, min(0.3, remaining))
                break
            except TimeoutError:
                continue
        if restore is not None:
            # The guest's clock stood still since the snapshot was saved.
            self.succeed(f"date -u -s @{time.time():.3f} >/dev/null")
        self.log(f"shell connected after {time.monotonic() - started:.1f} s")

    def save_snapshot(self, state: Path, timeout: float = 120) -> None:
        """Stops the guest, saves its memory and devices to `state` (qemu's migration stream)
        and ends qemu. The overlay then holds the disk that goes with it."""
        qmp = Qmp(self.qmp_path, 30, self._check_alive)
        try:
            qmp.execute("stop")
            qmp.execute("migrate", {"uri": f"file:{state}"})
            qmp.wait_for_migration(timeout)
            qmp.execute("quit")
        finally:
            qmp.close()
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.kill()
        _LIVE.discard(self)
        self._close()

    def _check_alive(self) -> None:
        if self.process is None or self.process.poll() is not None:
            status = None if self.process is None else self.process.returncode
            raise MachineError(f"qemu is not running (exit status {status}); see {self.serial_log}")

    def shutdown(self, timeout: float = 120) -> None:
        """Powers the guest off cleanly and waits for qemu to exit."""
        if not self.is_up():
            return
        self.log("shutting down")
        self._send({"id": -1, "cmd": "systemctl poweroff --no-block", "timeout": 30})
        try:
            self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.log(f"guest did not power off within {timeout} s; killing qemu")
            self.kill()
        self._close()

    def reboot(self, timeout: float = 120) -> None:
        """A clean reboot: `systemctl reboot` (qemu runs with -no-reboot, so it exits), then start."""
        self.shutdown(timeout)
        self.start()

    def crash(self) -> None:
        """Simulates a power cut: qemu is killed without warning the guest."""
        self.log("crash: killing qemu")
        self.kill()

    def kill(self) -> None:
        p = self.process
        if p is not None and p.poll() is None:
            p.kill()
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass
        # The pidfile covers a qemu that outlived its Popen object: kill it only if it is ours.
        try:
            pid = int(self.pidfile.read_text().strip())
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
            if str(self.overlay).encode() in cmdline:
                os.kill(pid, signal.SIGKILL)
        except (OSError, ValueError):
            pass
        _LIVE.discard(self)
        self._close()

    def _close(self) -> None:
        if self._sock is not None:
            try:
                self._sock.close()
            except OSError:
                pass
            self._sock = None

    def cleanup(self) -> None:
        self.kill()
        self._remove_sockets()
        try:
            self._sockdir.rmdir()
        except OSError:
            pass

    def _remove_sockets(self) -> None:
        for path in (self.shell_path, self.qmp_path):
            path.unlink(missing_ok=True)

    def reset(self) -> None:
        """Kills qemu and deletes the overlay: the next start() is a first start on a fresh disk
        (how the harness falls back to booting when a snapshot does not load)."""
        self.kill()
        self.overlay.unlink(missing_ok=True)
        self.boots = 0

    # ---- the shell protocol -----------------------------------------------------------------

    def _send(self, req: dict) -> None:
        if self._sock is None:
            raise MachineError("the guest is not running (call start())")
        self._sock.sendall(base64.b64encode(json.dumps(req).encode()) + b"\n")

    def _request(self, req: dict, timeout: float) -> dict:
        self._next_id += 1
        req = dict(req, id=self._next_id)
        self._send(req)
        deadline = time.monotonic() + timeout
        while True:
            while b"\n" in self._buf:
                line, self._buf = self._buf.split(b"\n", 1)
                try:
                    ans = json.loads(base64.b64decode(line.strip()))
                except ValueError:
                    continue
                # Only the agent's answers count: a request that reached the guest's console
                # before the agent made it raw comes back as the tty's echo, with the same id.
                if ans.get("id") == req["id"] and ("pong" in ans or "status" in ans):
                    return ans
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"no answer from the guest within {timeout:.0f} s")
            self._check_alive()
            self._sock.settimeout(min(remaining, 1.0))
            try:
                chunk = self._sock.recv(1 << 16)
            except socket.timeout:
                continue
            if not chunk:
                self._check_alive()
                raise MachineError("the guest's shell closed the connection")
            self._buf += chunk

    # ---- the NixOS driver's vocabulary -------------------------------------------------------

    def execute(self, command: str, check_return: bool = True, timeout: "float | None" = 900) -> "tuple[int, str]":
        timeout = 900 if timeout is None else timeout
        if self.verbose:
            self.log(f"$ {command}")
        try:
            # Like the NixOS driver, which runs `( set -euo pipefail; CMD )`.
            ans = self._request({"cmd": f"set -euo pipefail\n{command}", "timeout": timeout}, timeout + 15)
        except TimeoutError as e:
            raise MachineError(f"command timed out: {command}: {e}") from None
        err = ans.get("stderr", "")
        if err and self.verbose:
            for line in err.rstrip("\n").splitlines()[-40:]:
                self.log(f"  stderr: {line}")
        if ans.get("timed_out"):
            raise MachineError(
                f"command timed out after {timeout} s: {command}\nstdout:\n{ans['stdout']}\nstderr:\n{err}"
            )
        self._last_stderr = err
        return ans["status"], ans["stdout"]

    def succeed(self, *commands: str, timeout: "float | None" = None) -> str:
        output = ""
        for command in commands:
            status, out = self.execute(command, timeout=timeout)
            if status != 0:
                raise MachineError(
                    f"command `{command}` failed (exit code {status})\nstdout:\n{out}\nstderr:\n{self._last_stderr}"
                )
            output += out
        return output

    def fail(self, *commands: str, timeout: "float | None" = None) -> str:
        output = ""
        for command in commands:
            status, out = self.execute(command, timeout=timeout)
            if status == 0:
                raise MachineError(f"command `{command}` unexpectedly succeeded\nstdout:\n{out}")
            output += out
        return output

    def wait_until_succeeds(self, command: str, timeout: float = 900) -> str:
        deadline = time.monotonic() + timeout
        while True:
            status, out = self.execute(command, timeout=max(5.0, min(60.0, deadline - time.monotonic())))
            if status == 0:
                return out
            if time.monotonic() > deadline:
                raise MachineError(
                    f"`{command}` did not succeed within {timeout} s (last exit code {status})\n"
                    f"stdout:\n{out}\nstderr:\n{self._last_stderr}"
                )
            time.sleep(0.5)

    def wait_until_fails(self, command: str, timeout: float = 900) -> str:
        deadline = time.monotonic() + timeout
        while True:
            status, out = self.execute(command, timeout=max(5.0, min(60.0, deadline - time.monotonic())))
            if status != 0:
                return out
            if time.monotonic() > deadline:
                raise MachineError(f"`{command}` did not fail within {timeout} s\nstdout:\n{out}")
            time.sleep(0.5)

    def get_unit_info(self, unit: str) -> "dict[str, str]":
        status, out = self.execute(f"systemctl --no-pager show '{unit}'")
        if status != 0:
            raise MachineError(f"retrieving systemctl info for unit {unit} failed: {out}")
        info = {}
        for line in out.splitlines():
            key, sep, value = line.partition("=")
            if sep:
                info[key] = value
        return info

    def wait_for_unit(self, unit: str, timeout: float = 900) -> None:
        """Waits until `unit` is active; fails at once if it reaches `failed` or cannot start."""
        deadline = time.monotonic() + timeout
        while True:
            info = self.get_unit_info(unit)
            state = info.get("ActiveState")
            if state == "active":
                return
            if state == "failed":
                raise MachineError(f"unit `{unit}` reached state failed:\n{self._unit_summary(unit)}")
            if state == "inactive" and info.get("LoadState") == "not-found":
                raise MachineError(f"unit `{unit}` does not exist")
            if state == "inactive":
                # Not queued to start and not starting: it will never become active by itself.
                jobs = self.execute("systemctl list-jobs --no-legend --no-pager")[1]
                if unit not in jobs and self.execute("systemctl is-system-running")[1].strip() not in (
                    "initializing",
                    "starting",
                ):
                    raise MachineError(f"unit `{unit}` is inactive and there are no pending jobs")
            if time.monotonic() > deadline:
                raise MachineError(
                    f"unit `{unit}` did not become active within {timeout} s (state {state})\n"
                    f"{self._unit_summary(unit)}"
                )
            time.sleep(0.5)

    def _unit_summary(self, unit: str) -> str:
        return self.execute(
            f"systemctl status --no-pager -l -n 30 '{unit}' 2>&1; true", timeout=30
        )[1]

    def require_unit_state(self, unit: str, require_state: str = "active") -> None:
        state = self.get_unit_info(unit).get("ActiveState")
        if state != require_state:
            raise MachineError(f"expected unit `{unit}` to be in state {require_state} but it is in state {state}")

    def wait_for_open_port(self, port: int, addr: str = "localhost", timeout: float = 900) -> None:
        self.wait_until_succeeds(f"ss -Htln 'sport = :{int(port)}' | grep -q LISTEN", timeout=timeout)

    def wait_for_closed_port(self, port: int, addr: str = "localhost", timeout: float = 900) -> None:
        self.wait_until_fails(f"ss -Htln 'sport = :{int(port)}' | grep -q LISTEN", timeout=timeout)

    def wait_for_file(self, filename: str, timeout: float = 900) -> None:
        self.wait_until_succeeds(f"test -e '{filename}'", timeout=timeout)

    def systemctl(self, q: str, user: "str | None" = None) -> "tuple[int, str]":
        if user is not None:
            q = q.replace("'", "\\'")
            return self.execute(f"su -l {user} --shell /bin/sh -c $'XDG_RUNTIME_DIR=/run/user/`id -u` systemctl --user {q}'")
        return self.execute(f"systemctl {q}")
