"""The test guest's initramfs: busybox, the modules that reach the root disk, and a small /init.

Debian's initramfs (initramfs-tools) runs udev to find the root disk, which took about 2 s of
every boot under software emulation. The guest's disk is always /dev/vda, ext4, on virtio, so
this one loads exactly those modules (dependencies resolved from modules.dep), mounts the disk
and switches to systemd (tests/vm/image/initramfs-init). It is an uncompressed cpio archive (the
kernel unpacks it without a decompressor), built from the image's own root file system.
"""

from pathlib import Path

# What /dev/vda needs: the virtio PCI transport, the block driver, ext4 and the crc32c it asks the
# crypto API for (a soft dependency, so not in modules.dep: crc32c_generic is named here).
MODULES = ["virtio_pci", "virtio_blk", "crc32c_generic", "ext4"]


def module_order(moddir: Path, wanted: "list[str]") -> "list[str]":
    """Paths (relative to moddir) of `wanted` and their dependencies, each after what it needs."""
    deps = {}
    for line in (moddir / "modules.dep").read_text().splitlines():
        mod, sep, rest = line.partition(":")
        if sep:
            deps[mod] = rest.split()
    by_name = {Path(m).name.removesuffix(".ko").replace("-", "_"): m for m in deps}
    order: "list[str]" = []

    def add(mod: str) -> None:
        if mod in order:
            return
        for dep in deps[mod]:
            add(dep)
        order.append(mod)

    for name in wanted:
        if name not in by_name:
            raise SystemExit(f"vm: module {name} is not in {moddir}/modules.dep (built in, or renamed?)")
        add(by_name[name])
    return order


def _entry(name: str, mode: int, data: bytes = b"", nlink: int = 1, rdev: "tuple[int, int]" = (0, 0), ino: int = 0) -> bytes:
    """One cpio "newc" record."""
    encoded = name.encode() + b"\0"
    fields = (ino, mode, 0, 0, nlink, 0, len(data), 0, 0, rdev[0], rdev[1], len(encoded), 0)
    head = b"070701" + "".join(f"{v:08x}" for v in fields).encode() + encoded
    head += b"\0" * (-len(head) % 4)
    return head + data + b"\0" * (-len(data) % 4)


def build(rootfs: Path, kver: str, init: Path) -> bytes:
    busybox = rootfs / "bin" / "busybox"
    elf = busybox.read_bytes()
    if b"/lib64/ld-linux" in elf[:4096]:
        raise SystemExit(f"vm: {busybox} is dynamically linked; the image needs busybox-static")
    moddir = rootfs / "lib" / "modules" / kver
    modules = module_order(moddir, MODULES)
    records = []
    for d in ("bin", "dev", "lib", "lib/modules", "proc", "root", "sys"):
        records.append(("d", d, 0o040755, b""))
    records.append(("c", "dev/console", 0o020600, b""))
    records.append(("f", "init", 0o100755, init.read_bytes()))
    records.append(("f", "bin/busybox", 0o100755, elf))
    names = []
    for mod in modules:
        name = Path(mod).name
        names.append(name)
        records.append(("f", f"lib/modules/{name}", 0o100644, (moddir / mod).read_bytes()))
    records.append(("f", "modules", 0o100644, "".join(f"{n}\n" for n in names).encode()))
    out = bytearray()
    for ino, (kind, name, mode, data) in enumerate(records, start=1):
        out += _entry(name, mode, data, nlink=2 if kind == "d" else 1, rdev=(5, 1) if kind == "c" else (0, 0), ino=ino)
    out += _entry("TRAILER!!!", 0)
    return bytes(out)
