"""A booted guest, saved once per image: a run resumes it instead of booting (about 8 s saved).

The snapshot is the guest as it stands after a cold boot of the cached image, with Debian's
Prometheus and Alertmanager started (Debian's configuration, until a run's setup.sh reloads them
with the repository's), before anything of the run is installed: its disk (a qcow2 overlay on the
image's root.img) and its memory and device state (qemu's migration stream, saved with QMP
`migrate` to a file). A run creates its own overlay on that disk, starts qemu with `-incoming
defer` and loads the state (`migrate-incoming`), then sets the guest's clock, which stood still
since the save. The run's support disk is attached where the snapshot had an empty placeholder of
the same size; the guest drops what it had cached of that disk before mounting it (`blockdev
--flushbufs`). The reboot case still boots for real.

qemu can only load a state saved with the same devices, so the snapshot is keyed by the image,
qemu's version and the qemu command line without the run's paths and the machine's name
(Machine.signature(): every guest of a run resumes the same snapshot), and saved next to the
image (older snapshots are removed). Saving it costs one boot, once; a snapshot that fails to
load is deleted and the run boots instead.
"""

import hashlib
import json
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from .image import Image
from .machine import Machine, MachineError

# Bump when what a snapshot holds changes in a way the key does not show.
SNAPSHOT_VERSION = "3"


@dataclass
class Snapshot:
    disk: Path  # qcow2 overlay on ../root.img: the disk as the booted guest left it
    state: Path  # qemu's migration stream: memory and devices


def qemu_version() -> str:
    out = subprocess.run(["qemu-system-x86_64", "--version"], capture_output=True, text=True, check=True).stdout
    return out.splitlines()[0].strip()


def snapshot_key(image: Image, machine: Machine) -> str:
    recipe = {"version": SNAPSHOT_VERSION, "image": image.key, "qemu": qemu_version(), "command": machine.signature()}
    return hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest()[:16]


def ensure_snapshot(image: Image, make_machine, placeholder_disk, log=print) -> "Snapshot | None":
    """The snapshot for this image and machine, saved first if there is none.

    `make_machine(workdir, disk)` builds the Machine exactly as the run will (with `disk` as its
    support disk); `placeholder_disk(path)` writes an empty support disk of the run's size.
    Returns None (and the run boots) if the snapshot cannot be saved."""
    base = image.root.parent
    work = Path(tempfile.mkdtemp(prefix=".snapshot-", dir=base))
    placeholder = work / "placeholder.img"
    m = None
    try:
        # Building the Machine touches no disk: the key needs only its command line.
        m = make_machine(work, placeholder)
        key = snapshot_key(image, m)
        final = base / f"snapshot-{key}"
        snap = Snapshot(final / "disk.qcow2", final / "state")
        if snap.disk.exists() and snap.state.exists():
            log(f"vm: using saved snapshot {final.name}")
            return snap
        started = time.monotonic()
        log(f"vm: saving a booted guest as snapshot {final.name} (once per image)")
        placeholder_disk(placeholder)
        m.start()
        m.succeed("systemctl is-system-running --wait >/dev/null || true", timeout=240)
        # What every run needs first is started or read from disk here, once, instead of at each
        # run's start (under TCG, starting Prometheus and Alertmanager takes seconds of CPU, and
        # disk reads are slow: a cold Prometheus takes 1.7 s to print its version, a warm one
        # 0.3 s). Prometheus and Alertmanager run with Debian's configuration until a run's
        # setup.sh reloads them with the repository's; polkitd, started on demand by the first
        # polkit check, is started now for the same reason.
        m.succeed(
            "systemctl start prometheus.service prometheus-alertmanager.service polkit.service"
            " && cat /usr/bin/curl >/dev/null"
            " && python3 -c 'import argparse, http.server, json, socketserver, threading'"
        )
        m.wait_until_succeeds("curl -sf http://127.0.0.1:9090/-/ready && curl -sf http://127.0.0.1:9093/-/ready", timeout=120)
        m.succeed("udevadm settle && sync")
        m.save_snapshot(work / snap.state.name)
        # The overlay names root.img relatively, so the cache directory may move.
        subprocess.run(["qemu-img", "rebase", "-u", "-F", "raw", "-b", "../root.img", str(m.overlay)], check=True)
        m.overlay.rename(work / snap.disk.name)
        for f in work.iterdir():
            if f.name not in (snap.disk.name, snap.state.name):
                f.unlink()
        for old in base.glob("snapshot-*"):
            shutil.rmtree(old, ignore_errors=True)
        work.rename(final)
        size = snap.state.stat().st_size >> 20
        log(f"vm: snapshot saved in {time.monotonic() - started:.1f} s ({size} MiB of state)")
        return snap
    except (MachineError, OSError, subprocess.CalledProcessError) as e:
        log(f"vm: could not save a snapshot ({e}); the guest will boot instead")
        return None
    finally:
        if m is not None:
            m.cleanup()
        shutil.rmtree(work, ignore_errors=True)


def discard(snap: Snapshot) -> None:
    shutil.rmtree(snap.disk.parent, ignore_errors=True)
