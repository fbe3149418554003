#!/bin/sh
# Installs aiops into the Debian test guest, as a package plus an administrator would; the NixOS
# module does the same from its options (tests/scenario.py documents the contract both keep).
# Runs as root from the read-only support disk; idempotent, so a re-run after a reboot is harmless.
#
#   /mnt/aiops-support/guest/setup.sh
set -eu
S="${AIOPS_SUPPORT:-/mnt/aiops-support}"
BINDIR=/usr/local/bin

step() { echo "setup: [$(cut -d" " -f1 /proc/uptime) s] $*"; }

# ---- binaries -----------------------------------------------------------------------------------
step "binaries into $BINDIR"
for b in aiops aiops-demo-app aiops-webhook; do
    if [ -x "$S/bin/$b" ]; then
        install -m 0755 "$S/bin/$b" "$BINDIR/$b"
    else
        echo "setup: WARNING: $S/bin/$b is missing (not built yet?)" >&2
    fi
done

# ---- accounts -----------------------------------------------------------------------------------
step "users and groups"
getent group aiops >/dev/null || groupadd --system aiops
id -u aiops >/dev/null 2>&1 ||
    useradd --system --gid aiops --home-dir /var/lib/aiops --no-create-home --shell /usr/sbin/nologin aiops
getent group aiops-operators >/dev/null || groupadd --system aiops-operators
id -u alice >/dev/null 2>&1 || useradd --create-home --shell /bin/bash --groups aiops-operators alice
id -u mallory >/dev/null 2>&1 || useradd --create-home --shell /bin/bash mallory

# ---- configuration and secrets ------------------------------------------------------------------
step "/etc/aiops"
install -d -m 0755 /etc/aiops
install -m 0644 "$S/guest/config.toml" /etc/aiops/config.toml
install -d -m 0700 /etc/aiops/secrets
if [ ! -s /etc/aiops/secrets/webhook-token ]; then
    (umask 077; od -An -N24 -tx1 /dev/urandom | tr -d ' \n' > /etc/aiops/secrets/webhook-token)
fi
(umask 077; printf 'http://127.0.0.1:9999/services/T000/B000/XXXX\n' > /etc/aiops/secrets/slack-webhook-url)
chmod 0600 /etc/aiops/secrets/webhook-token /etc/aiops/secrets/slack-webhook-url
# Debian's Alertmanager runs as `prometheus`; prometheus/alertmanager.yml names this copy.
install -m 0640 -o root -g prometheus /etc/aiops/secrets/webhook-token /etc/aiops/webhook-token

# ---- units --------------------------------------------------------------------------------------
step "systemd units"
for u in aiops-demo-app aiops-webhook; do
    sed "s|@bindir@|$BINDIR|g" "$S/systemd/$u.service" > "/etc/systemd/system/$u.service"
done
install -d /etc/systemd/system/aiops-webhook.service.d
install -m 0644 "$S/guest/credentials.conf" /etc/systemd/system/aiops-webhook.service.d/credentials.conf
install -D -m 0755 "$S/tests/fake_slack.py" /usr/local/lib/aiops-test/fake_slack.py
install -m 0644 "$S/guest/fake-slack.service" /etc/systemd/system/fake-slack.service

# ---- polkit: the service account may restart the allow-listed units, nothing else ----------------
step "polkit rule"
rule=/etc/polkit-1/rules.d/50-aiops.rules
# The rule is whatever the CLI renders from the allow-list (the NixOS module renders the same text).
"$BINDIR/aiops" --config /etc/aiops/config.toml policy polkit > "$rule.tmp"
chmod 0644 "$rule.tmp"
mv "$rule.tmp" "$rule"
cat "$rule"

# ---- Prometheus and Alertmanager from Debian, with the repository's configuration ----------------
step "prometheus and alertmanager"
install -m 0644 "$S/prometheus/prometheus.yml" /etc/prometheus/prometheus.yml
install -m 0644 "$S/prometheus/rules.yml" /etc/prometheus/rules.yml
install -m 0644 "$S/prometheus/alertmanager.yml" /etc/prometheus/alertmanager.yml
# (promtool/amtool checks run in the pipeline's own tests; here a bad file shows as a failed unit.)
# One host, no peers: without this Alertmanager looks for a private address to gossip on and
# exits on a machine whose only interface is loopback.
printf 'ARGS="--cluster.listen-address="\n' > /etc/default/prometheus-alertmanager

# ---- start --------------------------------------------------------------------------------------
step "starting services"
# Enabled for the reboot case. Debian's Prometheus and Alertmanager also ship SysV scripts, for
# which `systemctl enable` runs update-rc.d (5 s under TCG); add-wants makes the same
# multi-user.target link without it. One reload for all the new and changed units.
systemctl add-wants --quiet --no-reload multi-user.target prometheus.service prometheus-alertmanager.service
systemctl enable --quiet --no-reload fake-slack.service aiops-demo-app.service aiops-webhook.service
systemctl daemon-reload
systemctl reset-failed prometheus-alertmanager.service || true
# Nothing here waits for a start: the boot may still be running, and whether each service comes
# up (a bad configuration shows as a failed unit) is what the scenario's first case asserts.
systemctl restart --no-block prometheus.service prometheus-alertmanager.service fake-slack.service \
    aiops-demo-app.service aiops-webhook.service
step "done"
