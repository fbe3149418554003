#!/bin/sh
# Installs aiops into the Debian test guest, as a package plus an administrator would; the NixOS
# module does the same from its options (tests/scenario.py documents the contract both keep).
# Runs as root from the read-only support disk; idempotent, so a re-run after a reboot is harmless.
#
#   /mnt/aiops-support/guest/setup.sh
#
# Prometheus and Alertmanager load the repository's configuration first (a reload: the snapshot
# runs them already), then the demo app, the fake Slack and the receiver start once their units
# are in (the accounts come with the image); the polkit rule is made meanwhile.
# Nothing waits for a start: whether each service comes up (a bad configuration shows as a failed
# unit) is what the scenario asserts.
set -eu
S="${AIOPS_SUPPORT:-/mnt/aiops-support}"
BINDIR=/usr/local/bin

step() { echo "setup: [$(cut -d" " -f1 /proc/uptime) s] $*"; }

# ---- secrets ------------------------------------------------------------------------------------
step "secrets"
install -d -m 0755 /etc/aiops
install -d -m 0700 /etc/aiops/secrets
if [ ! -s /etc/aiops/secrets/webhook-token ]; then
    (umask 077; od -An -N24 -tx1 /dev/urandom | tr -d ' \n' > /etc/aiops/secrets/webhook-token)
fi
(umask 077; printf 'http://127.0.0.1:9999/services/T000/B000/XXXX\n' > /etc/aiops/secrets/slack-webhook-url)
chmod 0600 /etc/aiops/secrets/webhook-token /etc/aiops/secrets/slack-webhook-url

# ---- Prometheus and Alertmanager from Debian, with the repository's configuration ----------------
# First: the first incident's detection waits for Prometheus's first scrapes of the app. The guest
# resumed from the snapshot runs both already (Debian's configuration; Alertmanager's cluster
# option is the image's): they reload, which costs a fraction of a start under TCG; a booted
# guest starts them.
step "prometheus and alertmanager"
# The host's watched services are scraped too (their jobs appended to the list that ends the
# file), and their alert rules are the ones `aiops rules` generates from the configuration's
# [watch.NAME] entries (the NixOS module runs the same command at build time).
sed 's|^  - rules.yml$|  - rules.yml\n  - aiops-watch.rules.yml|' "$S/prometheus/prometheus.yml" \
    | cat - "$S/guest/scrape-watched.yml" > /etc/prometheus/prometheus.yml
chmod 0644 /etc/prometheus/prometheus.yml
grep -qx '  - aiops-watch.rules.yml' /etc/prometheus/prometheus.yml
"$S/bin/aiops" --config "$S/guest/config.toml" rules > /etc/prometheus/aiops-watch.rules.yml
chmod 0644 /etc/prometheus/aiops-watch.rules.yml
install -m 0644 "$S/prometheus/rules.yml" /etc/prometheus/rules.yml
install -m 0644 "$S/prometheus/alertmanager.yml" /etc/prometheus/alertmanager.yml
# Debian's Alertmanager runs as `prometheus`; prometheus/alertmanager.yml names this copy.
install -m 0640 -o root -g prometheus /etc/aiops/secrets/webhook-token /etc/aiops/webhook-token
# (promtool/amtool checks run in the pipeline's own tests; here a file either fails the start or
# is refused by the reload, which the scenario's readiness case sees.)
systemctl reload-or-restart --no-block prometheus.service prometheus-alertmanager.service

# ---- binaries, configuration, units -------------------------------------------------------------
step "binaries into $BINDIR"
for b in aiops aiops-demo-app aiops-webhook; do
    if [ -x "$S/bin/$b" ]; then
        install -m 0755 "$S/bin/$b" "$BINDIR/$b"
    else
        echo "setup: WARNING: $S/bin/$b is missing (not built yet?)" >&2
    fi
done
install -m 0644 "$S/guest/config.toml" /etc/aiops/config.toml

# ---- accounts -----------------------------------------------------------------------------------
# The image has them (tests/vm/image/customize.sh): the receiver's account, an operator, an outsider.
id aiops >/dev/null && id alice >/dev/null && id mallory >/dev/null
test "$(id -gn aiops)" = aiops
id -Gn alice | grep -qw aiops-operators

step "systemd units"
for u in aiops-demo-app aiops-webhook; do
    sed "s|@bindir@|$BINDIR|g" "$S/systemd/$u.service" > "/etc/systemd/system/$u.service"
done
install -d /etc/systemd/system/aiops-webhook.service.d
install -m 0644 "$S/guest/credentials.conf" /etc/systemd/system/aiops-webhook.service.d/credentials.conf
install -D -m 0755 "$S/tests/fake_slack.py" /usr/local/lib/aiops-test/fake_slack.py
install -m 0644 "$S/guest/fake-slack.service" /etc/systemd/system/fake-slack.service
# Enabled for the reboot case the way a package's postinst does it (deb-systemd-helper makes the
# links itself): `systemctl enable` costs a second each under TCG, and for Debian's Prometheus
# and Alertmanager it also runs update-rc.d for their SysV scripts (5 s).
wants=/etc/systemd/system/multi-user.target.wants
mkdir -p "$wants"
for u in prometheus prometheus-alertmanager; do
    ln -sf "/lib/systemd/system/$u.service" "$wants/$u.service"
done
for u in fake-slack aiops-demo-app aiops-webhook; do
    ln -sf "/etc/systemd/system/$u.service" "$wants/$u.service"
done
# systemd reads a unit's file (and drop-ins) when the unit is first referenced, so in a guest where
# none of these units ran yet, the starts below load the new files without a `daemon-reload`
# (2 s under TCG, 5 s while another guest sets up). A re-run, or a run after a reboot, reloads.
for u in aiops-demo-app aiops-webhook fake-slack; do
    if [ -e "/run/systemd/units/invocation:$u.service" ]; then
        systemctl daemon-reload
        break
    fi
done
systemctl restart --no-block aiops-demo-app.service fake-slack.service aiops-webhook.service

# ---- polkit: the service account may restart the allow-listed units, nothing else ----------------
step "polkit rule"
rule=/etc/polkit-1/rules.d/50-aiops.rules
# The rule is whatever the CLI renders from the allow-list (the NixOS module renders the same text).
"$BINDIR/aiops" --config /etc/aiops/config.toml policy polkit > "$rule.tmp"
chmod 0644 "$rule.tmp"
mv "$rule.tmp" "$rule"
cat "$rule"
step "done"
