#!/bin/sh
# mmdebstrap setup hook for the aiops VM test image: $1 is the (still empty) root directory.
# A small initramfs with only what finding the root disk needs: it is unpacked under software
# emulation at every boot, and Debian's default (MODULES=most) is ten times larger.
set -eu
root="$1"
mkdir -p "$root/etc/initramfs-tools/conf.d" "$root/usr/share/initramfs-tools/modules.d"
echo "MODULES=list" > "$root/etc/initramfs-tools/conf.d/aiops-vm.conf"
printf 'virtio_pci\nvirtio_blk\next4\n' > "$root/usr/share/initramfs-tools/modules.d/aiops-vm"
