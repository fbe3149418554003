"""The Debian guest image: built once with mmdebstrap, cached by a hash of its recipe.

The recipe is the package list, the mmdebstrap options, the apt sources file, the customize hook
and everything it copies in (tests/vm/image/), the current Prometheus and Alertmanager it installs
over Debian 12's (their package versions), and IMAGE_VERSION. Change any of them and the next
run builds a new image; an unchanged recipe reuses the cached one (about 60-90 s saved). Building
needs root (mmdebstrap --mode=root, and files owned by many users in the root file system).
"""

import hashlib
import json
import lzma
import os
import re
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from . import initramfs
from .procs import on_parent_death, pid_alive

# Bump to force a rebuild when something outside the hashed files changes the image.
IMAGE_VERSION = "6"

SUITE = "bookworm"

# python3 (not python3-minimal): the agent needs json and the fake Slack needs http.server.
PACKAGES = [
    "systemd-sysv",
    "udev",
    "dbus",
    "kmod",
    "iproute2",
    "procps",
    "curl",
    "polkitd",
    "python3",
    "prometheus",
    "prometheus-alertmanager",
    "linux-image-amd64",
    # The test guest's own initramfs runs busybox (harness/initramfs.py).
    "busybox-static",
    # What the host already runs, written by nobody here, and watched through the configuration
    # ([watch.NAME]): nginx and Redis with the distribution's exporters, and node_exporter with
    # its systemd collector (image/customize.sh configures them as their administrator would).
    "nginx",
    "prometheus-nginx-exporter",
    "redis-server",
    "prometheus-redis-exporter",
    "prometheus-node-exporter",
]

# mmdebstrap installs no Recommends by default; say so explicitly so that no recommended package
# (prometheus' own node-exporter collectors, say) can slip in through a changed default.
APT_OPTIONS = ['APT::Install-Recommends "false"']

IMAGE_DIR = Path(__file__).resolve().parent.parent / "image"
REPO = Path(__file__).resolve().parents[3]

# The guest runs what Nix users run: Prometheus 3.x and Alertmanager 0.3x, from Debian's unstable
# suite (unpacked by .ci/current-tools, not installed), over bookworm's packages, whose units,
# accounts and directories stay.
CURRENT_TOOLS = REPO / ".ci" / "current-tools"
CURRENT_BINARIES = ["prometheus", "promtool", "prometheus-alertmanager", "amtool"]

EATMYDATA_HOOKS = "/usr/share/mmdebstrap/hooks/eatmydata"

DEFAULT_SOURCES = "/etc/apt/sources.list.d/debian.sources"
FALLBACK_MIRROR = "http://deb.debian.org/debian"

DISK_SIZE = 4 << 30


@dataclass
class Image:
    """A built image: the root file system, the kernel taken out of it and an initramfs made from it.

    `kernel` is the uncompressed ELF (vmlinux), which qemu boots through its PVH entry point:
    under TCG, the bzImage's own xz decompressor costs about 2.5 s of every boot."""

    root: Path
    kernel: Path
    initrd: Path
    key: str


def cache_dir() -> Path:
    env = os.environ.get("AIOPS_VM_CACHE")
    if env:
        return Path(env)
    return Path(os.path.expanduser("~/.cache/aiops-vm"))


def _sources() -> str:
    """The apt source mmdebstrap uses: the host's deb822 file (its exact mirror), else Debian's."""
    if os.path.exists(DEFAULT_SOURCES):
        return DEFAULT_SOURCES
    return FALLBACK_MIRROR


def current_tools(log=print) -> Path:
    """The unpacked root of the current Prometheus and Alertmanager: the one .ci/setup fetched, else
    fetched now (`--print` only looks, so a cached set costs no apt-cache run)."""
    found = subprocess.run([str(CURRENT_TOOLS), "--print"], capture_output=True, text=True)
    if found.returncode == 0:
        out = found.stdout
    else:
        try:
            out = subprocess.run([str(CURRENT_TOOLS)], check=True, capture_output=True, text=True).stdout
        except subprocess.CalledProcessError as e:
            sys.stderr.write(e.stderr)
            raise SystemExit("vm: .ci/current-tools could not fetch the current Prometheus and Alertmanager")
    root = Path(out.strip().splitlines()[-1]).parent
    for name in CURRENT_BINARIES:
        if not (root / "root/usr/bin" / name).is_file():
            raise SystemExit(f"vm: {root}/root/usr/bin has no {name}; delete {root} and rerun")
    return root


def recipe_key(tools: Path) -> str:
    h = hashlib.sha256()
    h.update(f"image-version={IMAGE_VERSION}\nsuite={SUITE}\n".encode())
    h.update(("packages=" + ",".join(PACKAGES) + "\n").encode())
    h.update(("aptopts=" + "|".join(APT_OPTIONS) + "\n").encode())
    h.update(f"eatmydata={os.path.isdir(EATMYDATA_HOOKS)}\n".encode())
    src = _sources()
    h.update(f"sources={src}\n".encode())
    if os.path.exists(src):
        h.update(Path(src).read_bytes())
    h.update(b"current-tools=" + (tools / "packages.txt").read_bytes())
    for f in sorted(IMAGE_DIR.iterdir()):
        if f.is_file():
            h.update(f"file={f.name}\n".encode())
            h.update(f.read_bytes())
    return h.hexdigest()[:16]


def _need(tool: str, package: str) -> None:
    if shutil.which(tool) is None:
        raise SystemExit(
            f"vm: {tool} is not installed; install it with: apt-get install -y {package}"
        )


def _mounts_below(path: Path) -> "list[str]":
    """Mount points at or below `path` (from /proc/self/mountinfo), deepest first."""
    root = os.path.realpath(path)
    points = []
    with open("/proc/self/mountinfo", encoding="utf-8", errors="replace") as f:
        for line in f:
            fields = line.split()
            if len(fields) < 5:
                continue
            # Spaces and other special characters are escaped as octal (\040).
            point = re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), fields[4])
            if point == root or point.startswith(root + "/"):
                points.append(point)
    return sorted(set(points), key=len, reverse=True)


def remove_build_dir(work: Path, log=print) -> bool:
    """Deletes an image build directory, but only once nothing is mounted below it.

    mmdebstrap mounts proc, sys, devpts and a bind of the host's /dev/shm into the root file
    system it builds; a build that was interrupted can leave them mounted, and deleting through
    them would delete the host's files. Unmounts them (deepest first); if any stays mounted the
    directory is left in place, with a message. Returns whether it was removed."""
    if not work.exists():
        return True
    for point in _mounts_below(work):
        if subprocess.run(["umount", point], stderr=subprocess.DEVNULL).returncode != 0:
            # Busy: detach it from the tree; the kernel frees it once no one uses it.
            subprocess.run(["umount", "--lazy", point], stderr=subprocess.DEVNULL)
    left = _mounts_below(work)
    if left:
        log(f"vm: NOT deleting {work}: still mounted below it: {', '.join(left)}; unmount them, then delete it")
        return False
    shutil.rmtree(work, ignore_errors=True)
    return True


def _in_use(path: Path) -> bool:
    """Whether a running process names `path` on its command line (an mmdebstrap still at work)."""
    needle = str(path).encode()
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            if needle in cmdline.read_bytes():
                return True
        except OSError:
            continue
    return False


def _remove_stale_builds(base: Path, log=print) -> None:
    """Build directories whose builder is gone (a harness killed during mmdebstrap)."""
    for work in base.glob(".build-*"):
        try:
            pid = int((work / "builder.pid").read_text())
        except (OSError, ValueError):
            pid = 0
        if (pid and pid_alive(pid)) or _in_use(work):
            continue  # another harness, or its mmdebstrap, is building right now
        if remove_build_dir(work, log):
            log(f"vm: removed {work.name}, left by an interrupted image build")


def ensure_image(log=print, rebuild: bool = False) -> Image:
    """Returns the cached image for the current recipe, building it first if needed."""
    tools = current_tools(log)
    key = recipe_key(tools)
    base = cache_dir()
    final = base / f"debian-{SUITE}-{key}"
    image = Image(final / "root.img", final / "vmlinux", final / "initrd.img", key)
    if not rebuild and all(p.exists() for p in (image.root, image.kernel, image.initrd)):
        log(f"vm: using cached image {final}")
        return image
    if os.geteuid() != 0:
        raise SystemExit(
            "vm: building the guest image needs root (mmdebstrap --mode=root creates files owned by "
            f"other users); run tests/vm/run as root once, or point AIOPS_VM_CACHE at a cache that "
            f"already holds {final.name}"
        )
    _need("mmdebstrap", "mmdebstrap")
    _need("mkfs.ext4", "e2fsprogs")
    base.mkdir(parents=True, exist_ok=True)
    _remove_stale_builds(base, log)
    started = time.monotonic()
    work = Path(tempfile.mkdtemp(prefix=f".build-{key}-", dir=base))
    (work / "builder.pid").write_text(str(os.getpid()))
    proc = None
    try:
        rootfs = work / "rootfs"
        cmd = [
            "mmdebstrap",
            "--mode=root",
            "--variant=minbase",
            "--include=" + ",".join(PACKAGES),
            *(f"--aptopt={o}" for o in APT_OPTIONS),
            # dpkg without fsync while building (mmdebstrap removes eatmydata again at the end).
            *([f"--hook-dir={EATMYDATA_HOOKS}"] if os.path.isdir(EATMYDATA_HOOKS) else []),
            f'--setup-hook={IMAGE_DIR / "setup-hook.sh"} "$1"',
            f'--customize-hook={IMAGE_DIR / "customize.sh"} "$1" {tools / "root"}',
            SUITE,
            str(rootfs),
            _sources(),
        ]
        log(f"vm: building image {key} (mmdebstrap, about 1-2 minutes)")
        build_log = work / "mmdebstrap.log"
        with open(build_log, "wb") as out:
            # If the harness dies without cleaning up (SIGKILL), the kernel sends mmdebstrap
            # SIGTERM, on which it unmounts what it mounted and exits.
            proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, preexec_fn=on_parent_death(signal.SIGTERM))
            proc.wait()
        if proc.returncode != 0:
            sys.stderr.write(build_log.read_text(errors="replace")[-6000:])
            raise SystemExit(f"vm: mmdebstrap failed with status {proc.returncode}")
        _check_rootfs(rootfs)
        kernels = sorted((rootfs / "boot").glob("vmlinuz-*"))
        if not kernels:
            raise SystemExit("vm: the image has no kernel in /boot")
        (work / "vmlinux").write_bytes(extract_vmlinux(kernels[-1].read_bytes()))
        kver = kernels[-1].name.removeprefix("vmlinuz-")
        (work / "initrd.img").write_bytes(initramfs.build(rootfs, kver, IMAGE_DIR / "initramfs-init"))
        with open(work / "root.img", "wb") as f:
            f.truncate(DISK_SIZE)
        subprocess.run(
            ["mkfs.ext4", "-q", "-F", "-L", "aiops-root", "-d", str(rootfs), str(work / "root.img")],
            check=True,
        )
        (work / "recipe.json").write_text(
            json.dumps({"key": key, "suite": SUITE, "packages": PACKAGES, "version": IMAGE_VERSION}, indent=2)
        )
        if not remove_build_dir(rootfs, log):
            raise SystemExit(f"vm: {rootfs} still has mounts below it after mmdebstrap finished")
        build_log.unlink()
        (work / "builder.pid").unlink()
        if final.exists():
            shutil.rmtree(final)
        os.rename(work, final)
        # Older images (other recipes) are only disk space now.
        for old in base.glob(f"debian-{SUITE}-*"):
            if old != final:
                shutil.rmtree(old, ignore_errors=True)
    finally:
        # Interrupted (a signal, an error): let mmdebstrap unmount what it mounted, then clean up.
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
        remove_build_dir(work, log)
    log(f"vm: image {key} built in {time.monotonic() - started:.0f} s")
    return image


XZ_MAGIC = b"\xfd7zXZ\x00"
# XEN_ELFNOTE_PHYS32_ENTRY: the 32-bit PVH entry point qemu's -kernel needs for an ELF kernel.
PVH_NOTE = 18


def extract_vmlinux(bzimage: bytes) -> bytes:
    """The ELF kernel inside a bzImage whose payload is xz-compressed (Debian's), checked to
    carry the PVH entry note (CONFIG_PVH) so that qemu can boot it without a decompressor."""
    at = bzimage.find(XZ_MAGIC)
    if at < 0:
        raise SystemExit("vm: the kernel is not an xz-compressed bzImage (CONFIG_KERNEL_XZ)")
    elf = lzma.LZMADecompressor(format=lzma.FORMAT_XZ).decompress(bzimage[at:])
    if elf[:4] != b"\x7fELF" or not _has_note(elf, b"Xen", PVH_NOTE):
        raise SystemExit("vm: the kernel has no PVH entry point (CONFIG_PVH); qemu cannot boot its ELF")
    return elf


def _has_note(elf: bytes, owner: bytes, kind: int) -> bool:
    """Whether a 64-bit little-endian ELF has a PT_NOTE entry with this owner and type."""
    phoff, = struct.unpack_from("<Q", elf, 0x20)
    phentsize, phnum = struct.unpack_from("<HH", elf, 0x36)
    for i in range(phnum):
        p_type, _flags, p_offset, _vaddr, _paddr, p_filesz = struct.unpack_from("<IIQQQQ", elf, phoff + i * phentsize)
        if p_type != 4:  # PT_NOTE
            continue
        pos, end = p_offset, p_offset + p_filesz
        while pos + 12 <= end:
            namesz, descsz, ntype = struct.unpack_from("<III", elf, pos)
            name = elf[pos + 12 : pos + 12 + namesz].rstrip(b"\x00")
            if name == owner and ntype == kind:
                return True
            pos += 12 + (namesz + 3) // 4 * 4 + (descsz + 3) // 4 * 4
    return False


def _check_rootfs(rootfs: Path) -> None:
    """Facts the tests rely on, checked once at build time."""
    status = (rootfs / "var/lib/dpkg/status").read_text(errors="replace")
    installed = {
        block.split("\n", 1)[0].removeprefix("Package: ")
        for block in status.split("\n\n")
        if "Status: install ok installed" in block
    }
    # Recommends stay out: node_exporter's would bring its textfile collectors' timers.
    if "prometheus-node-exporter-collectors" in installed:
        raise SystemExit("vm: prometheus-node-exporter-collectors was pulled into the image (Recommends?)")
    for pkg in PACKAGES:
        if pkg not in installed:
            raise SystemExit(f"vm: package {pkg} is missing from the image")
