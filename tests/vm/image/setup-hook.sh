#!/bin/sh
# mmdebstrap setup hook for the aiops VM test image: $1 is the (still empty) root directory.
# The test guest boots an initramfs of its own (tests/vm/harness/initramfs.py); Debian's, which
# the kernel package still builds, is kept small (MODULES=list instead of most) so that building
# it does not slow the image build down.
set -eu
root="$1"
mkdir -p "$root/etc/initramfs-tools/conf.d" "$root/usr/share/initramfs-tools/modules.d"
echo "MODULES=list" > "$root/etc/initramfs-tools/conf.d/aiops-vm.conf"
printf 'virtio_pci\nvirtio_blk\next4\n' > "$root/usr/share/initramfs-tools/modules.d/aiops-vm"
