"""The per-run support disk: fresh binaries, unit files, configuration and test files.

Built with `mkfs.ext4 -d` from a staging directory in well under a second, attached read-only as
/dev/vdb and mounted by the harness at /mnt/aiops-support. Layout:

    bin/aiops bin/aiops-demo-app bin/aiops-webhook   release builds (--bindir)
    systemd/*.service                                 the repository's unit files (@bindir@ kept)
    prometheus/{prometheus,rules,alertmanager}.yml    the repository's Prometheus configuration
    tests/fake_slack.py                               the shared fake Slack
    guest/                                            tests/vm/guest: setup.sh, config, drop-ins
"""

import os
import shutil
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[3]
BINARIES = ["aiops", "aiops-demo-app", "aiops-webhook"]
# Always this size (sparse), so that a guest restored from a snapshot saved with an empty disk of
# the same size sees the run's disk as it is (the guest read the capacity when it booted).
DISK_SIZE = 256 << 20


def missing_binaries(bindir: Path) -> "list[str]":
    return [b for b in BINARIES if not (bindir / b).is_file()]


def build_support_disk(bindir: Path, workdir: Path, extra_units: "Path | None" = None) -> Path:
    stage = workdir / "support"
    if stage.exists():
        shutil.rmtree(stage)
    (stage / "bin").mkdir(parents=True)
    for b in BINARIES:
        src = bindir / b
        if src.is_file():
            shutil.copy2(src, stage / "bin" / b)
    shutil.copytree(REPO / "systemd", stage / "systemd")
    if extra_units is not None:
        for f in extra_units.iterdir():
            shutil.copy2(f, stage / "systemd" / f.name)
    (stage / "prometheus").mkdir()
    for f in ("prometheus.yml", "rules.yml", "alertmanager.yml"):
        src = REPO / "prometheus" / f
        if src.is_file():
            shutil.copy2(src, stage / "prometheus" / f)
    (stage / "tests").mkdir()
    shutil.copy2(REPO / "tests" / "fake_slack.py", stage / "tests" / "fake_slack.py")
    shutil.copytree(REPO / "tests" / "vm" / "guest", stage / "guest")

    size = sum(p.stat().st_size for p in stage.rglob("*") if p.is_file())
    if size * 3 // 2 > DISK_SIZE:
        raise SystemExit(f"vm: the support files ({size >> 20} MiB) do not fit the {DISK_SIZE >> 20} MiB support disk")
    disk = placeholder_disk(workdir / "support.img")
    subprocess.run(
        ["mkfs.ext4", "-q", "-F", "-L", "aiops-support", "-E", "root_owner=0:0", "-d", str(stage), str(disk)],
        check=True,
        stdout=subprocess.DEVNULL,
    )
    shutil.rmtree(stage)
    return disk


def placeholder_disk(path: Path) -> Path:
    """An empty (sparse) disk of the support disk's size: what a snapshot is saved with."""
    with open(path, "wb") as f:
        f.truncate(DISK_SIZE)
    return path


def default_bindir() -> Path:
    target = os.environ.get("CARGO_TARGET_DIR")
    return Path(target) / "release" if target else REPO / "target" / "release"
