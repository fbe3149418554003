#!/bin/sh
# mmdebstrap customize hook for the aiops VM test image: $1 is the root directory, $2 the unpacked
# root of the current Prometheus and Alertmanager (.ci/current-tools).
# Everything that belongs to the image (not to one test run) is set here; the hash of this file is
# part of the image's cache key.
set -eu
root="$1"
current="$2"
here="$(dirname "$0")"

# What Nix users run: Prometheus 3.x and Alertmanager 0.3x over bookworm's 2.42 and 0.25, whose
# units, accounts, directories and defaults stay (the binaries run on bookworm as they are).
for bin in prometheus promtool prometheus-alertmanager amtool; do
    install -m 0755 "$current/usr/bin/$bin" "$root/usr/bin/$bin"
done
chroot "$root" /usr/bin/prometheus --version | head -1
chroot "$root" /usr/bin/prometheus-alertmanager --version | head -1

echo aiops-vm > "$root/etc/hostname"
printf '127.0.0.1 localhost\n127.0.1.1 aiops-vm\n::1 localhost ip6-localhost ip6-loopback\n' > "$root/etc/hosts"

# Root is /dev/vda (mounted rw by the kernel). The per-run support disk /dev/vdb is mounted by the
# harness itself (read-only, at /mnt/aiops-support), so no boot step waits for udev to see it.
printf '/dev/vda / ext4 rw,errors=remount-ro 0 1\n' > "$root/etc/fstab"
mkdir -p "$root/mnt/aiops-support"

# The harness's root shell.
install -D -m 0755 "$here/agent.py" "$root/usr/local/lib/aiops-test/agent.py"
install -D -m 0644 "$here/aiops-test-agent.service" "$root/etc/systemd/system/aiops-test-agent.service"
mkdir -p "$root/etc/systemd/system/sysinit.target.wants"
ln -sf ../aiops-test-agent.service "$root/etc/systemd/system/sysinit.target.wants/aiops-test-agent.service"

# Nothing in the guest may reach out, and timers must not wake up during a test.
for unit in apt-daily.timer apt-daily-upgrade.timer e2scrub_all.timer e2scrub_reap.service \
    fstrim.timer dpkg-db-backup.timer systemd-tmpfiles-clean.timer \
    getty@tty1.service serial-getty@ttyS0.service systemd-networkd-wait-online.service \
    modprobe@dm_mod.service modprobe@drm.service modprobe@fuse.service modprobe@loop.service \
    modprobe@efi_pstore.service sys-kernel-debug.mount sys-kernel-tracing.mount \
    sys-fs-fuse-connections.mount dev-hugepages.mount; do
    ln -sf /dev/null "$root/etc/systemd/system/$unit"
done

# Under software emulation every module udev loads costs boot time: skip what the tests never use
# (-cpu max advertises SVM/VMX, so udev would load kvm, for instance).
mkdir -p "$root/etc/modprobe.d"
for mod in kvm kvm_amd kvm_intel floppy pcspkr parport parport_pc ppdev bochs drm drm_kms_helper \
    snd_pcsp sr_mod cdrom sg psmouse serio_raw evdev joydev i2c_i801 i2c_smbus lpc_ich iTCO_wdt \
    ahci libahci libata; do
    echo "blacklist $mod"
    echo "install $mod /bin/false"
done > "$root/etc/modprobe.d/aiops-vm-blacklist.conf"

# Debian's Prometheus and Alertmanager are enabled by their packages; in the image they do not
# start at boot: the snapshot (harness/snapshot.py) starts them, setup.sh loads the repository's
# configuration into them and enables them (the reboot case starts them again).
rm -f "$root/etc/systemd/system/multi-user.target.wants/prometheus.service" \
    "$root/etc/systemd/system/multi-user.target.wants/prometheus-alertmanager.service"
# One host, no peers: without this Alertmanager looks for a private address to gossip on and
# exits on a machine whose only interface is loopback.
printf 'ARGS="--cluster.listen-address="\n' > "$root/etc/default/prometheus-alertmanager"

# The host's own services, configured as their administrator would, on loopback only (the demo
# app has 8080): nginx serves a site and its stub_status on 127.0.0.1:8081 for
# prometheus-nginx-exporter (:9113); Redis listens on 127.0.0.1:6379 (Debian's default) for
# prometheus-redis-exporter (:9121); node_exporter (:9100) runs its systemd collector for the
# watched units and only the collectors the rules read, to keep the guest quiet under TCG.
rm -f "$root/etc/nginx/sites-enabled/default"
cat > "$root/etc/nginx/sites-enabled/aiops-test" <<'NGINX'
server {
    listen 127.0.0.1:8081;
    root /var/www/html;
    location = /stub_status { stub_status; }
}
NGINX
printf 'ARGS="-nginx.scrape-uri=http://127.0.0.1:8081/stub_status -web.listen-address=127.0.0.1:9113"\n' \
    > "$root/etc/default/prometheus-nginx-exporter"
printf 'ARGS="-web.listen-address=127.0.0.1:9121 -redis.addr=redis://127.0.0.1:6379"\n' \
    > "$root/etc/default/prometheus-redis-exporter"
printf '%s\n' 'ARGS="--web.listen-address=127.0.0.1:9100 --collector.disable-defaults --collector.systemd --collector.systemd.unit-include=(nginx|redis-server|aiops-demo-app|aiops-webhook)[.]service --collector.pressure --collector.vmstat --collector.filesystem --collector.meminfo"' \
    > "$root/etc/default/prometheus-node-exporter"

# The accounts of the guest contract (tests/scenario.py): the service account that runs the
# receiver, an operator and a user who is not one. They belong to the guest like the NixOS test
# node's users.users; made here once rather than by every run (useradd takes a second under TCG).
chroot "$root" groupadd --system aiops
chroot "$root" useradd --system --gid aiops --home-dir /var/lib/aiops --no-create-home \
    --shell /usr/sbin/nologin aiops
chroot "$root" groupadd --system aiops-operators
chroot "$root" useradd --create-home --shell /bin/bash --groups aiops-operators alice
chroot "$root" useradd --create-home --shell /bin/bash mallory

# A persistent journal survives the reboot case; keep it small.
mkdir -p "$root/var/log/journal" "$root/etc/systemd/journald.conf.d"
printf '[Journal]\nStorage=persistent\nSystemMaxUse=64M\n' > "$root/etc/systemd/journald.conf.d/aiops-test.conf"

# Under TCG a slow first boot must not trip the default 90 s timeouts of unrelated units.
mkdir -p "$root/etc/systemd/system.conf.d"
printf '[Manager]\nDefaultTimeoutStartSec=180s\n' > "$root/etc/systemd/system.conf.d/aiops-test.conf"

# Shrink the image: documentation and apt lists are not needed in the guest.
rm -rf "$root/usr/share/doc/"* "$root/usr/share/man/"* "$root/var/lib/apt/lists/"* "$root/var/cache/apt/"*.bin
