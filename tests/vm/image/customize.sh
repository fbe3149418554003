#!/bin/sh
# mmdebstrap customize hook for the aiops VM test image: $1 is the root directory.
# Everything that belongs to the image (not to one test run) is set here; the hash of this file is
# part of the image's cache key.
set -eu
root="$1"
here="$(dirname "$0")"

echo aiops-vm > "$root/etc/hostname"
printf '127.0.0.1 localhost\n127.0.1.1 aiops-vm\n::1 localhost ip6-localhost ip6-loopback\n' > "$root/etc/hosts"

# Root is /dev/vda (mounted rw by the kernel); the per-run support disk is /dev/vdb, read-only.
cat > "$root/etc/fstab" <<'FSTAB'
/dev/vda / ext4 rw,errors=remount-ro 0 1
/dev/vdb /mnt/aiops-support ext4 ro,nofail,x-systemd.device-timeout=20s 0 0
FSTAB
mkdir -p "$root/mnt/aiops-support"

# The harness's root shell.
install -D -m 0755 "$here/agent.py" "$root/usr/local/lib/aiops-test/agent.py"
install -D -m 0644 "$here/aiops-test-agent.service" "$root/etc/systemd/system/aiops-test-agent.service"
mkdir -p "$root/etc/systemd/system/sysinit.target.wants"
ln -sf ../aiops-test-agent.service "$root/etc/systemd/system/sysinit.target.wants/aiops-test-agent.service"

# Nothing in the guest may reach out, and timers must not wake up during a test.
for unit in apt-daily.timer apt-daily-upgrade.timer e2scrub_all.timer e2scrub_reap.service \
    fstrim.timer dpkg-db-backup.timer systemd-tmpfiles-clean.timer \
    getty@tty1.service serial-getty@ttyS0.service systemd-networkd-wait-online.service; do
    ln -sf /dev/null "$root/etc/systemd/system/$unit"
done

# One host, no peers: without this Alertmanager looks for a private address to gossip on and exits
# on a machine whose only interface is loopback (and would fail at every boot).
printf 'ARGS="--cluster.listen-address="\n' > "$root/etc/default/prometheus-alertmanager"

# A persistent journal survives the reboot case; keep it small.
mkdir -p "$root/var/log/journal" "$root/etc/systemd/journald.conf.d"
printf '[Journal]\nStorage=persistent\nSystemMaxUse=64M\n' > "$root/etc/systemd/journald.conf.d/aiops-test.conf"

# Under TCG a slow first boot must not trip the default 90 s timeouts of unrelated units.
mkdir -p "$root/etc/systemd/system.conf.d"
printf '[Manager]\nDefaultTimeoutStartSec=180s\n' > "$root/etc/systemd/system.conf.d/aiops-test.conf"

# Shrink the image: documentation and apt lists are not needed in the guest.
rm -rf "$root/usr/share/doc/"* "$root/usr/share/man/"* "$root/var/lib/apt/lists/"* "$root/var/cache/apt/"*.bin
