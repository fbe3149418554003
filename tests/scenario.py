"""The aiops promises under a real systemd: one scenario for the Debian and the NixOS VM tests.

    import scenario
    scenario.run({"loop": loop, "host": host})   # NixOS: in testScript (one after the other)
    scenario.run(machines, parallel=True)        # Debian: tests/vm/run (side by side)

Two guests, set up alike (the contract below), each run a track of cases (TRACKS, at the end):
"loop" the remediation loop and what makes it safe to run as shipped, "host" what the host does
to the services (SIGKILL, a Slack outage, a reboot, a hang). `run(machines, log=print, only=None,
parallel=False)` drives each guest with the NixOS test driver's vocabulary only (`succeed`,
`fail`, `execute`, `wait_until_succeeds`, `wait_for_unit`, `wait_for_open_port`, `shutdown`,
`start`), runs each track's cases in order, logs PASS/FAIL with timings, returns the results and
raises `ScenarioFailed` if any case failed. Each case asserts on what its guest does (unit
properties, exit codes, JSON fields of the messages the fake Slack received), so it fails when
the behaviour breaks.

The guest contract, for each guest (what tests/vm/guest/setup.sh sets up on Debian and the NixOS
test's module configuration must set up the same way; tests/nix-eval/run pins the NixOS side of
each point):

- `aiops`, `aiops-demo-app` and `aiops-webhook` on root's PATH and on the users' PATH (`runuser`
  keeps root's PATH); the tools in `TOOLS` on root's PATH (the readiness case checks them all).
- Units `aiops-demo-app.service` and `aiops-webhook.service` from `systemd/` (Type=notify,
  watchdog, hardening), `prometheus.service`, the Alertmanager unit
  (`prometheus-alertmanager.service` on Debian, `alertmanager.service` on NixOS) and
  `fake-slack.service` running tests/fake_slack.py on 127.0.0.1:9999 with state directory
  /var/lib/fake-slack (messages.jsonl, rejected.jsonl, the fail switch file `fail`).
- Ports: demo app 8080, receiver 9095, Prometheus 9090, Alertmanager 9093, fake Slack 9999, all on
  127.0.0.1; Prometheus and Alertmanager configured as the repository's prometheus/*.yml say.
- /etc/aiops/config.toml: state_dir /var/lib/aiops, control socket /run/aiops/control.sock,
  executor "systemd", allow-list `aiops-demo-app.service = ["restart", "clear-cache"]`,
  operators group `aiops-operators`, `remediation.cooldown_secs` >= 600 (the second approval must
  fall inside it), `verify_timeout_secs` <= 180, `webhook.dashboard_url` set. Both guests use the
  values of tests/vm/guest/config.toml (short Slack backoff, 900 s cooldown, 120 s verification).
- Secrets as systemd credentials of aiops-webhook: `webhook-token` from
  /etc/aiops/secrets/webhook-token (root-only; the scenario reads it to post notifications) and
  `slack-webhook-url` = http://127.0.0.1:9999/services/T000/B000/XXXX. Alertmanager presents the
  same token (Debian: a copy at the path prometheus/alertmanager.yml names; NixOS: a credential of
  alertmanager.service).
- Accounts: system user `aiops` (group `aiops`) runs the receiver; `alice` is in
  `aiops-operators`; `mallory` exists and is not. Both have a home under /home.
- The polkit rule from `aiops policy polkit` installed (the aiops account may restart the
  allow-listed units, nothing else).
- /etc, /usr and /var/lib exist and are writable by root on the host (the hardening case proves
  they are read-only inside our services). NixOS has no /usr/local, so nothing here names it.

What differs between the guests and is handled here, not assumed: commands run under
`set -euo pipefail` (both drivers do this), with the guest's own PATH (NixOS: /run/current-system/sw);
a transient unit from `systemd-run` gets the manager's default PATH, which on NixOS holds only
systemd's own tools, so scripts run that way get root's PATH passed on explicitly; stdin of a
command is /dev/null on Debian and the driver's console on NixOS, so nothing here reads stdin.
"""

import json
import os
import re
import shlex
import threading
import time

DEMO = "aiops-demo-app.service"
WEBHOOK = "aiops-webhook.service"
FAKE_SLACK = "fake-slack.service"
PROMETHEUS = "prometheus.service"
ALERTMANAGER_CANDIDATES = ["prometheus-alertmanager.service", "alertmanager.service"]
OUTSIDE_ALLOW_LIST = FAKE_SLACK  # exists on both guests; the aiops account must not restart it

STATE_DIR = "/var/lib/aiops"
CONTROL_SOCKET = "/run/aiops/control.sock"
TOKEN_FILE = "/etc/aiops/secrets/webhook-token"
SLACK_DIR = "/var/lib/fake-slack"
SLACK_LOG = f"{SLACK_DIR}/messages.jsonl"
SLACK_FAIL = f"{SLACK_DIR}/fail"
OPERATOR = "alice"
OUTSIDER = "mallory"
SERVICE_USER = "aiops"

PORT_DEMO = 8080
# What the host already runs and watches ([watch.NAME] in the configuration), and the jobs its
# Prometheus scrapes them under.
HOST_SERVICES = ("nginx.service", "redis-server.service")
HOST_JOBS = ("nginx", "redis", "node")
PORT_WEBHOOK = 9095
PORT_PROMETHEUS = 9090
PORT_ALERTMANAGER = 9093
PORT_SLACK = 9999

# Commands the scenario runs in the guest (coreutils, grep and bash aside).
TOOLS = [
    "aiops", "aiops-demo-app", "aiops-webhook", "curl", "runuser", "nsenter", "stat", "find",
    "systemctl", "systemd-run", "systemd-analyze", "journalctl", "bash", "setsid",
]
# Directories that exist and are writable on the host on Debian and NixOS alike; inside our
# services' sandboxes a write there must fail with EROFS.
READONLY_PROBES = ["/etc/aiops-probe", "/usr/aiops-probe", "/var/lib/aiops-probe"]

EXPOSURE_LIMIT = 2.0
# The settings of the receiver's unit that make up its sandbox (see webhook_sandbox).
SANDBOX_KEYS = {
    "User", "Group", "UMask", "AmbientCapabilities", "CapabilityBoundingSet", "DevicePolicy",
    "IPAddressAllow", "IPAddressDeny", "KeyringMode", "LockPersonality", "MemoryDenyWriteExecute",
    "NoNewPrivileges", "PrivateDevices", "PrivateIPC", "PrivateMounts", "PrivateTmp",
    "PrivateUsers", "ProcSubset", "ProtectClock", "ProtectControlGroups", "ProtectHome",
    "ProtectHostname", "ProtectKernelLogs", "ProtectKernelModules", "ProtectKernelTunables",
    "ProtectProc", "ProtectSystem", "RemoveIPC", "RestrictAddressFamilies", "RestrictNamespaces",
    "RestrictRealtime", "RestrictSUIDSGID", "SystemCallArchitectures", "SystemCallErrorNumber",
    "SystemCallFilter",
}
# Exit codes of `aiops` (crates/aiops/src/exit.rs).
EXIT_REFUSED = 3

# Under software emulation a first detection takes scrape + `for` + group_wait + diagnosis.
ALERT_TIMEOUT = 240
APPROVE_TIMEOUT = 300
# Where the operator's background approval writes its output and exit status.
APPROVE_OUT = "/tmp/aiops-approve.out"
APPROVE_RC = "/tmp/aiops-approve.rc"


class ScenarioFailed(AssertionError):
    def __init__(self, results):
        self.results = results
        failed = [r for r in results if r["status"] == "FAIL"]
        super().__init__(
            "scenario failed: "
            + ", ".join(f"{r['track']}: {r['name']}: {r['detail'].splitlines()[0] if r['detail'] else ''}" for r in failed)
        )


def check(cond, message):
    if not cond:
        raise AssertionError(message)


def version_at_least(version, minimum):
    """Whether a version string such as "3.5.3+ds1" is at least (major, minor)."""
    numbers = re.findall(r"\d+", version)[:2]
    return tuple(int(n) for n in numbers) >= minimum


def q(s):
    return shlex.quote(s)


def as_user(user, cmd):
    """`runuser -u USER -- CMD` (root in the test driver becomes USER without a password)."""
    return f"runuser -u {user} -- {cmd}"


def unit_props(machine, unit, *props):
    out = machine.succeed(f"systemctl show {q(unit)} -p {','.join(props)}")
    values = {}
    for line in out.splitlines():
        k, _, v = line.partition("=")
        values[k] = v
    return values


class Scenario:
    def __init__(self, machine, log):
        self.m = machine
        self.log = log
        self.alertmanager = None
        self.loop = {}  # facts the whole-loop case hands to later cases
        self.hung = None  # the watchdog case's facts while the app is stopped
        self.before_reboot = None  # what the reboot case saw before powering off
        self.starts_at = "2026-01-01T00:00:00Z"
        self.reboot_at = ""

    # ---- helpers -------------------------------------------------------------------------------

    def slack_messages(self):
        out = self.m.succeed(f"cat {SLACK_LOG} 2>/dev/null || true")
        return [json.loads(line) for line in out.splitlines() if line.strip()]

    @staticmethod
    def message_text(msg):
        """All the text of a Slack message: `text` plus every string inside `blocks`."""
        parts = [msg.get("text") or ""]

        def walk(node):
            if isinstance(node, dict):
                for k, v in node.items():
                    if k in ("text", "alt_text", "url", "value") and isinstance(v, str):
                        parts.append(v)
                    else:
                        walk(v)
            elif isinstance(node, list):
                for v in node:
                    walk(v)

        walk(msg.get("blocks") or [])
        walk(msg.get("attachments") or [])
        return "\n".join(parts)

    def wait_for_message(self, predicate, timeout, what, since=0):
        """Waits until a fake-Slack message (index >= since) satisfies predicate(msg, text)."""
        started = time.monotonic()
        deadline = started + timeout
        while True:
            msgs = self.slack_messages()
            for i, msg in enumerate(msgs[since:], start=since):
                text = self.message_text(msg)
                if predicate(msg, text):
                    self.log(f"  Slack message {what} after {time.monotonic() - started:.1f} s")
                    return i, msg, text
            if time.monotonic() > deadline:
                tail = "\n---\n".join(self.message_text(m)[:600] for m in msgs[-3:])
                raise AssertionError(
                    f"no Slack message {what} within {timeout} s ({len(msgs)} messages; last ones:\n{tail})"
                )
            time.sleep(1)

    def invocation(self, unit):
        return self.m.succeed(f"systemctl show {q(unit)} -p InvocationID --value").strip()

    def nrestarts(self, unit):
        return int(self.m.succeed(f"systemctl show {q(unit)} -p NRestarts --value").strip() or "0")

    def main_pid(self, unit):
        pid = int(self.m.succeed(f"systemctl show {q(unit)} -p MainPID --value").strip() or "0")
        check(pid > 0, f"{unit} has no main process")
        return pid

    def pending(self, user="root"):
        cmd = "aiops --json pending"
        out = self.m.succeed(cmd if user == "root" else as_user(user, cmd))
        data = json.loads(out)
        if isinstance(data, dict):
            data = data.get("actions") or data.get("pending") or []
        return data

    def audit_file(self):
        return f"{STATE_DIR}/audit.jsonl"

    def audit_entries(self):
        return [json.loads(line) for line in self.m.succeed(f"cat {self.audit_file()}").splitlines() if line.strip()]

    # ---- cases ---------------------------------------------------------------------------------

    def services_ready(self):
        """Every service reaches active; ours through Type=notify (READY=1 within the timeout)."""
        # The guest contract's tools, on root's PATH and (the programs) on an operator's.
        missing = self.m.succeed(
            f"for t in {' '.join(TOOLS)}; do command -v \"$t\" >/dev/null || echo \"$t\"; done"
        ).split()
        check(not missing, f"not on root's PATH in the guest: {missing}")
        self.m.succeed(as_user(OPERATOR, "sh -c 'command -v aiops'"))
        for unit in (DEMO, WEBHOOK):
            self.notify_ready(unit)
        for candidate in ALERTMANAGER_CANDIDATES:
            status, _ = self.m.execute(f"systemctl cat {candidate} >/dev/null 2>&1")
            if status == 0:
                self.alertmanager = candidate
                break
        check(self.alertmanager is not None, f"none of {ALERTMANAGER_CANDIDATES} exists")
        for unit in (PROMETHEUS, self.alertmanager, FAKE_SLACK):
            self.m.wait_for_unit(unit, timeout=120)
        for port in (PORT_WEBHOOK, PORT_PROMETHEUS, PORT_ALERTMANAGER, PORT_SLACK):
            self.m.wait_for_open_port(port, timeout=60)
        self.m.succeed(f"curl -sf http://127.0.0.1:{PORT_WEBHOOK}/healthz")
        # Prometheus and Alertmanager run the contract's configuration, not a default one that a
        # refused reload would have left in place: the repository's rules are loaded, and
        # Alertmanager sends to the receiver. (grep reads all its input: under pipefail an early
        # exit would SIGPIPE curl.)
        self.m.wait_until_succeeds(
            f"curl -sf http://127.0.0.1:{PORT_PROMETHEUS}/api/v1/rules | grep '\"name\":\"HighErrorRatio\"' >/dev/null",
            timeout=60,
        )
        # Alertmanager 0.27 and later print a webhook's URL as "<secret>" in their status, so the
        # route is recognised by the receiver it names and that receiver's webhook: the aiops
        # receiver exists (/api/v2/receivers) and the root route sends to it.
        self.m.wait_until_succeeds(
            f"curl -sf http://127.0.0.1:{PORT_ALERTMANAGER}/api/v2/receivers | grep '\"name\":\"aiops\"' >/dev/null",
            timeout=60,
        )
        # The guest runs what Nix users run (nixpkgs 26.05: Prometheus 3.x, Alertmanager 0.3x; the
        # Debian guest installs the same over bookworm's 2.42 and 0.25).
        prom = json.loads(self.m.succeed(f"curl -sf http://127.0.0.1:{PORT_PROMETHEUS}/api/v1/status/buildinfo"))
        am = json.loads(self.m.succeed(f"curl -sf http://127.0.0.1:{PORT_ALERTMANAGER}/api/v2/status"))
        am_config = am["config"]["original"]
        check(
            "webhook_configs" in am_config and re.search(r"(?m)^\s*receiver: aiops$", am_config),
            f"Alertmanager does not route to the aiops receiver's webhook:\n{am_config}",
        )
        versions = (prom["data"]["version"], am["versionInfo"]["version"])
        self.log(f"  guest runs Prometheus {versions[0]}, Alertmanager {versions[1]}")
        check(
            version_at_least(versions[0], (3, 0)) and version_at_least(versions[1], (0, 27)),
            f"the guest runs Prometheus {versions[0]} and Alertmanager {versions[1]}, not the current 3.x and 0.3x",
        )
        self.demo_serves()

    def host_services_scraped(self):
        """The services the host already runs (nginx and Redis from the distribution, with its
        exporters, and node_exporter's systemd collector) are up and scraped under the jobs their
        [watch.NAME] entries name, and the watched units are on the allow-list's polkit rule."""
        for unit in HOST_SERVICES:
            self.m.wait_for_unit(unit, timeout=120)
        for job in HOST_JOBS:
            self.m.wait_until_succeeds(
                f"curl -sf 'http://127.0.0.1:{PORT_PROMETHEUS}/api/v1/query?query=up%7Bjob%3D%22{job}%22%7D%3D%3D1' | grep -q '\"value\"'",
                timeout=90,
            )
        # The exporters measure the real services, not only themselves.
        for query in ("nginx_up", "redis_up"):
            out = json.loads(self.m.succeed(f"curl -sf 'http://127.0.0.1:{PORT_PROMETHEUS}/api/v1/query?query={query}'"))
            values = [r["value"][1] for r in out["data"]["result"]]
            check(values == ["1"], f"{query} is {values}: the exporter does not reach its service")
        out = json.loads(self.m.succeed(
            f"curl -sf 'http://127.0.0.1:{PORT_PROMETHEUS}/api/v1/query?query=node_systemd_unit_state%7Bstate%3D%22active%22%7D%3D%3D1'"
        ))
        active = sorted(r["metric"]["name"] for r in out["data"]["result"])
        self.log(f"  node_exporter sees active: {active}")
        for unit in HOST_SERVICES:
            check(unit in active, f"node_exporter's systemd collector does not report {unit} active: {active}")
        # Their generated alert rules (`aiops rules`) are loaded: one group per watched service,
        # with static service and unit labels.
        groups = json.loads(self.m.succeed(f"curl -sf http://127.0.0.1:{PORT_PROMETHEUS}/api/v1/rules"))["data"]["groups"]
        by_name = {g["name"]: g for g in groups}
        for service, unit in zip(("nginx", "redis"), HOST_SERVICES):
            group = by_name.get(f"aiops-watch-{service}")
            check(group is not None, f"no rule group aiops-watch-{service} loaded: {sorted(by_name)}")
            alerts = {r["name"]: r for r in group["rules"]}
            for name in ("TargetDown", "UnitFailed", "UnitCrashLooping"):
                check(name in alerts, f"aiops-watch-{service} has no {name}: {sorted(alerts)}")
            labels = alerts["UnitFailed"]["labels"]
            check(labels.get("service") == service and labels.get("unit") == unit, f"UnitFailed of {service} is labelled {labels}")
        rule = self.m.succeed("cat /etc/polkit-1/rules.d/10-nixos.rules /etc/polkit-1/rules.d/50-aiops.rules 2>/dev/null || true")
        for unit in HOST_SERVICES:
            check(unit in rule, f"the polkit rule does not allow restarting the watched {unit}:\n{rule}")

    def receiver_up(self):
        """The receiver and the fake Slack are up (a case run alone may start before them)."""
        for unit in (WEBHOOK, FAKE_SLACK):
            self.m.wait_for_unit(unit, timeout=120)
        self.m.wait_for_open_port(PORT_WEBHOOK, timeout=60)

    def notify_ready(self, unit):
        """`unit` is active through Type=notify, with a watchdog and a STATUS= line."""
        self.m.wait_for_unit(unit, timeout=120)
        p = unit_props(self.m, unit, "Type", "ActiveState", "SubState", "NotifyAccess", "StatusText", "WatchdogUSec")
        self.log(f"  {unit}: {p}")
        check(p["Type"] == "notify", f"{unit} is Type={p['Type']}, expected notify")
        check(p["ActiveState"] == "active" and p["SubState"] == "running", f"{unit}: {p}")
        check(p["WatchdogUSec"] not in ("0", "infinity", ""), f"{unit} has no watchdog: {p}")
        check(p["StatusText"] != "", f"{unit} sent no STATUS= line")

    def demo_serves(self):
        self.m.wait_for_open_port(PORT_DEMO, timeout=60)
        self.m.succeed(f"curl -sf http://127.0.0.1:{PORT_DEMO}/healthz")

    def state_directory(self):
        """StateDirectory: owned by the service account, mode 0700; files inside are private."""
        out = self.m.succeed(f"stat -c '%U:%G %a' {STATE_DIR}").strip()
        check(out == f"{SERVICE_USER}:{SERVICE_USER} 700", f"{STATE_DIR} is {out}, expected aiops:aiops 700")
        leaky = self.m.succeed(f"find {STATE_DIR} -perm /go=rwx -print").strip()
        check(leaky == "", f"group- or world-accessible files in {STATE_DIR} (UMask=0077 not applied?):\n{leaky}")
        check(
            self.m.execute(as_user(OPERATOR, f"ls {STATE_DIR}"))[0] != 0,
            f"{OPERATOR} can list {STATE_DIR}: the state must be reachable only through the gate",
        )

    def hardening_holds(self):
        """Inside the running services' mount namespace the file system is read-only except the
        state directory; the process has no capabilities, no new privileges, a seccomp filter."""
        # The control: on the host these directories exist and root may write there, so an EROFS
        # below comes from the sandbox (a missing directory would fail with ENOENT instead).
        # Only a started service has its sandbox: a process caught between fork and exec does not.
        for unit in (WEBHOOK, DEMO):
            self.m.wait_for_unit(unit, timeout=120)
        parents = sorted({os.path.dirname(path) for path in READONLY_PROBES})
        self.m.succeed(" && ".join(f"test -d {d} && test -w {d}" for d in parents))
        for unit in (WEBHOOK, DEMO):
            pid = self.main_pid(unit)
            status = self.m.succeed(f"cat /proc/{pid}/status")
            fields = dict(
                (k.strip(), v.strip()) for k, _, v in (line.partition(":") for line in status.splitlines())
            )
            check(fields.get("NoNewPrivs") == "1", f"{unit}: NoNewPrivs={fields.get('NoNewPrivs')}")
            check(fields.get("Seccomp") == "2", f"{unit}: Seccomp={fields.get('Seccomp')} (no filter)")
            for cap in ("CapEff", "CapPrm", "CapBnd", "CapAmb"):
                check(int(fields.get(cap, "1"), 16) == 0, f"{unit}: {cap}={fields.get(cap)}")
            for path in READONLY_PROBES:
                out = self.m.fail(f"nsenter -t {pid} -m -- /bin/sh -c {q(f'echo x > {path}')} 2>&1")
                check("Read-only file system" in out, f"{unit}: writing {path}: {out!r}")
            out = self.m.fail(f"nsenter -t {pid} -m -- ls /home/{OPERATOR} 2>&1")
            self.log(f"  {unit}: /home is hidden ({out.strip()})")
        # The positive control: the state directory is writable by the service account inside.
        pid = self.main_pid(WEBHOOK)
        uid = self.m.succeed(f"id -u {SERVICE_USER}").strip()
        gid = self.m.succeed(f"id -g {SERVICE_USER}").strip()
        self.m.succeed(
            f"nsenter -t {pid} -m -S {uid} -G {gid} -- /bin/sh -c "
            + q(f"echo x > {STATE_DIR}/.hardening-probe && rm {STATE_DIR}/.hardening-probe")
        )
        self.m.succeed(" && ".join(f"test ! -e {path}" for path in READONLY_PROBES))

    def process_metrics(self):
        """The hardening (ProtectProc=invisible, PrivateUsers, ...) leaves the process metrics
        intact: each service reads its own /proc/self and the boot time from /proc/stat."""
        now = float(self.m.succeed("date +%s").strip())
        for unit, port in ((DEMO, PORT_DEMO), (WEBHOOK, PORT_WEBHOOK)):
            out = self.m.succeed(f"curl -sf http://127.0.0.1:{port}/metrics")
            values = {}
            for name in ("process_resident_memory_bytes", "process_start_time_seconds", "process_open_fds", "process_cpu_seconds_total"):
                m = re.search(rf"^{name}(?:{{[^}}]*}})? ([0-9.e+]+)$", out, re.M)
                check(m is not None, f"{name} missing from {unit}'s /metrics")
                values[name] = float(m.group(1))
                # CPU seconds may honestly be 0 (the stock collector counts whole seconds).
                check(values[name] > 0 or name == "process_cpu_seconds_total", f"{unit}: {name} is {m.group(1)}")
            age = now - values["process_start_time_seconds"]
            check(0 <= age < 3600, f"{unit}: process_start_time_seconds is {age:.0f} s in the past")
            self.log(f"  {unit}: {values}")

    def security_exposure(self):
        """`systemd-analyze security` of each of our units, printed, below the limit."""
        for unit in (DEMO, WEBHOOK):
            out = self.m.succeed(f"SYSTEMD_COLORS=0 systemd-analyze security --no-pager {unit} 2>&1")
            self.log(out.rstrip())
            m = re.search(r"Overall exposure level for \S+: ([0-9.]+)", out)
            check(m is not None, f"no exposure level in the output for {unit}")
            level = float(m.group(1))
            check(level < EXPOSURE_LIMIT, f"{unit}: exposure {level} is not below {EXPOSURE_LIMIT}")
            self.log(f"  {unit}: exposure {level} < {EXPOSURE_LIMIT}")
        # The resource bounds of the unit files are in force, and the running processes sit
        # well inside them (the receiver caps its own threads below TasksMax=).
        for unit, memory_max, tasks_max in ((DEMO, 512 << 20, 256), (WEBHOOK, 512 << 20, 128)):
            props = dict(
                line.split("=", 1)
                for line in self.m.succeed(
                    f"systemctl show -p MemoryMax,TasksMax,MemoryCurrent,TasksCurrent {unit}"
                ).split()
            )
            self.log(f"  {unit}: {props}")
            check(props["MemoryMax"] == str(memory_max), f"{unit}: MemoryMax is {props['MemoryMax']}, not {memory_max}")
            check(props["TasksMax"] == str(tasks_max), f"{unit}: TasksMax is {props['TasksMax']}, not {tasks_max}")
            check(int(props["TasksCurrent"]) < tasks_max // 2, f"{unit}: {props['TasksCurrent']} tasks of {tasks_max}")
            check(int(props["MemoryCurrent"]) < memory_max // 4, f"{unit}: {props['MemoryCurrent']} bytes of {memory_max}")

    def webhook_sandbox(self):
        """`systemd-run` options that recreate the receiver's own sandbox (user and hardening
        settings read from its unit file with drop-ins), to run a command exactly as confined."""
        text = self.m.succeed(f"systemctl cat {WEBHOOK}")
        section, props = None, []
        for line in text.splitlines():
            line = line.strip()
            if line.startswith("["):
                section = line
            elif section == "[Service]" and "=" in line and not line.startswith("#"):
                key, _, value = line.partition("=")
                if key in SANDBOX_KEYS:
                    # An empty value is meaningful (CapabilityBoundingSet= means none).
                    props.append(f"-p {q(key + '=' + value)}")
        check(any(p.startswith("-p User=") or "'User=" in p for p in props), f"{WEBHOOK} has no User=")
        # stdin from /dev/null: with --pipe the unit would get the driver's console on NixOS.
        return "systemd-run --wait --pipe --quiet --collect </dev/null " + " ".join(props)

    def service_account_confinement(self):
        """polkit refuses the aiops account everything but restarting the allow-listed unit:
        another unit's restart, the allowed unit's stop and kill, directly and from inside the
        receiver's sandbox (over D-Bus, as the executor does); an operator's own systemctl too.
        The allowed restart is the positive control, a case of its own."""
        no_ask = "systemctl --no-ask-password"
        sandbox = self.webhook_sandbox()

        def denied(cmd):
            out = self.m.fail(cmd)
            check(re.search(r"authentication required|access denied", out, re.I), f"`{cmd}` failed for another reason than polkit: {out}")
            return out

        before = self.invocation(OUTSIDE_ALLOW_LIST)
        out = denied(as_user(SERVICE_USER, f"{no_ask} restart {OUTSIDE_ALLOW_LIST} 2>&1"))
        self.log(f"  aiops: restart {OUTSIDE_ALLOW_LIST}: {out.strip()}")
        out = denied(f"{sandbox} {no_ask} restart {OUTSIDE_ALLOW_LIST} 2>&1")
        self.log(f"  aiops in the receiver's sandbox: restart {OUTSIDE_ALLOW_LIST}: {out.strip()}")
        check(self.invocation(OUTSIDE_ALLOW_LIST) == before, f"{OUTSIDE_ALLOW_LIST} was restarted")
        pid = self.main_pid(DEMO)
        out = denied(as_user(SERVICE_USER, f"{no_ask} stop {DEMO} 2>&1"))
        self.log(f"  aiops: stop {DEMO}: {out.strip()}")
        denied(as_user(SERVICE_USER, f"{no_ask} kill {DEMO} 2>&1"))
        denied(f"{sandbox} {no_ask} stop {DEMO} 2>&1")
        out = denied(as_user(OPERATOR, f"{no_ask} restart {DEMO} 2>&1"))
        self.log(f"  {OPERATOR}: restart {DEMO}: {out.strip()}")
        check(self.main_pid(DEMO) == pid, f"{DEMO} was stopped or restarted by a refused call")

    def service_account_may_restart_allowed(self):
        """The positive control of the polkit case: the rule is not "deny everything", and the
        hardening leaves the executor its way to systemd. The whole loop's approved restart is
        exactly this (the receiver's executor, as the aiops account inside the receiver's sandbox,
        restarting the allow-listed unit over D-Bus); without it, the same restart is made here
        from a copy of that sandbox."""
        restarted = self.loop.get("restarted")
        if restarted is not None:
            events = {e.get("event"): e for e in self.audit_entries() if e.get("action_id") == self.loop["action"]}
            check(
                "executing" in events and "succeeded" in events,
                f"the audit log does not show {self.loop['action']} executed and succeeded: {sorted(events)}",
            )
            self.log(
                f"  the whole loop's restart of {DEMO} (new invocation {restarted[:8]}) was made by the "
                f"executor through this rule: {json.dumps(events['executing'].get('actor'))} -> succeeded"
            )
            return
        self.m.wait_for_unit(DEMO, timeout=60)
        pid = self.main_pid(DEMO)
        self.m.succeed(f"{self.webhook_sandbox()} systemctl --no-ask-password restart {DEMO}")
        self.m.wait_for_unit(DEMO, timeout=60)
        check(self.main_pid(DEMO) != pid, f"the allowed restart of {DEMO} did not happen")

    def watchdog_hang(self):
        """The app hangs: SIGSTOP its main process. The watchdog fires up to WatchdogSec after
        the app's last ping; the next cases, which leave the app alone, run meanwhile."""
        self.m.wait_for_unit(DEMO, timeout=120)
        self.hung = {"nrestarts": self.nrestarts(DEMO), "invocation": self.invocation(DEMO)}
        self.m.succeed(f"kill -STOP {self.main_pid(DEMO)}")

    def watchdog_restarts_hung_app(self):
        """The hung app: the watchdog fires, systemd kills and restarts it, NRestarts grows."""
        if self.hung is None:
            self.watchdog_hang()
        n0, inv0 = self.hung["nrestarts"], self.hung["invocation"]
        self.hung = None
        self.m.wait_until_succeeds(
            f"test $(systemctl show {DEMO} -p NRestarts --value) -gt {n0}", timeout=120
        )
        self.m.wait_for_unit(DEMO, timeout=60)
        check(self.invocation(DEMO) != inv0, "no new invocation after the watchdog restart")
        result = self.m.succeed(f"journalctl -u {DEMO} --no-pager -o cat | grep -i 'watchdog timeout' | tail -1")
        check(result.strip() != "", "the journal does not show a watchdog timeout")
        self.log(f"  NRestarts {n0} -> {self.nrestarts(DEMO)}; {result.strip()}")
        # The restarted app reached active through Type=notify again, and serves.
        self.notify_ready(DEMO)
        self.demo_serves()

    def incident_starts(self):
        """An incident: the app answers 60% of requests with errors, under steady traffic.

        It is each guest's first case: Prometheus and Alertmanager detect it (scrape + rule
        evaluation + `for` + group_wait, then the diagnosis) while the next cases, which do not
        restart the app, do their work."""
        self.m.wait_for_unit(DEMO, timeout=120)
        self.loop["since"] = len(self.slack_messages())
        self.start_stress("aiops-stress-1", "errors --ratio 0.6")
        self.m.wait_until_succeeds(
            # grep reads all its input (no -q): under pipefail an early exit would SIGPIPE curl.
            f"curl -sf http://127.0.0.1:{PORT_DEMO}/metrics | grep '^demo_fault_active{{kind=\"errors\"}} 1' >/dev/null",
            timeout=60,
        )
        self.loop["fault_on"] = time.monotonic()

    def recommendation(self):
        """Waits for the incident's recommendation in Slack (evidence shown, an `aiops approve`
        command) and checks that its action is pending for an operator; returns the action id."""
        if "fault_on" not in self.loop:
            self.incident_starts()
        if "action_id" in self.loop:
            return self.loop["action_id"]
        self.m.succeed(f"test -S {CONTROL_SOCKET}")
        remaining = ALERT_TIMEOUT - (time.monotonic() - self.loop["fault_on"])
        _, msg, text = self.wait_for_message(
            lambda m, t: "HighErrorRatio" in t and re.search(r"aiops approve \S+", t),
            max(remaining, 10),
            "with HighErrorRatio and an `aiops approve` command",
            self.loop["since"],
        )
        self.log(f"  detection: fault on -> recommendation in Slack in {time.monotonic() - self.loop['fault_on']:.1f} s")
        self.log("  recommendation received:\n    " + text.replace("\n", "\n    ")[:3000])
        check(isinstance(msg.get("blocks"), list) and msg["blocks"], "the message has no Block Kit blocks")
        action_id = re.search(r"aiops approve (\S+)", text).group(1).strip("`*_")
        check(
            re.search(r"error ratio", text, re.I) and re.search(r"\d+(\.\d+)?\s*%", text),
            "the message shows no evidence (the error ratio, in %)",
        )
        pending = self.pending(OPERATOR)
        self.log(f"  pending: {json.dumps(pending)[:800]}")
        check(any(action_id in json.dumps(p) for p in pending), f"{action_id} is not pending")
        self.loop["action_id"] = action_id
        return action_id

    def whole_loop(self):
        """stress -> alert -> recommendation in Slack -> alice approves -> new InvocationID
        (mallory, trying the same meanwhile, is refused) -> verified outcome (CLI and Slack) ->
        audit chain verifies.

        While the approval verifies the recovery, the second incident (for the cooldown case)
        starts on the restarted app: a latency fault, which the error ratio does not see."""
        action_id = self.recommendation()

        inv0 = self.invocation(DEMO)
        # alice approves from her own session, in the background (it returns once verified).
        before_approval = len(self.slack_messages())
        approve = as_user(OPERATOR, f"aiops approve {q(action_id)}") + f" >{APPROVE_OUT} 2>&1; echo $? >{APPROVE_RC}"
        self.m.succeed(f"rm -f {APPROVE_OUT} {APPROVE_RC}; setsid -f sh -c {q(approve)} </dev/null >/dev/null 2>&1")
        # What the operator reads before approving is still there while the restart verifies.
        shown = self.m.succeed(as_user(OPERATOR, f"aiops show {q(action_id)}"))
        self.log("  aiops show:\n    " + shown.strip().replace("\n", "\n    ")[:3000])
        check(re.search(r"job:http_request|rate\(|http_requests_total", shown), "`aiops show` does not show the PromQL behind the evidence")
        self.m.wait_until_succeeds(
            f"test -s {APPROVE_RC} || test \"$(systemctl show {DEMO} -p InvocationID --value)\" != {q(inv0)}",
            timeout=APPROVE_TIMEOUT,
        )
        inv1 = self.invocation(DEMO)
        if inv1 != inv0:
            self.m.wait_for_unit(DEMO, timeout=60)
            self.second_incident_starts()
        # mallory, not an operator, tries the same while the approved restart verifies: refused
        # for who she is, and no restart of her own.
        status, out = self.m.execute(as_user(OUTSIDER, f"aiops approve {q(action_id)} 2>&1"))
        self.log(f"  {OUTSIDER}: aiops approve -> {status}: {out.strip()}")
        check(status == EXIT_REFUSED, f"{OUTSIDER}'s approval exited {status}, expected {EXIT_REFUSED} (refused)")
        check(re.search(r"may not|not in group|not allowed", out, re.I), f"the refusal does not say why: {out}")
        check(self.invocation(DEMO) == inv1, f"{OUTSIDER}'s refused approval restarted {DEMO}")
        self.m.wait_until_succeeds(f"test -s {APPROVE_RC}", timeout=APPROVE_TIMEOUT)
        status = int(self.m.succeed(f"cat {APPROVE_RC}").strip())
        out = self.m.succeed(f"cat {APPROVE_OUT}")
        self.log(f"  {OPERATOR}: aiops approve {action_id} -> {status}:\n    " + out.strip().replace("\n", "\n    "))
        check(status == 0, f"{OPERATOR}'s approval exited {status}")
        check(re.search(r"verified|succeeded|fixed", out, re.I), "the approval did not report a verified outcome")
        check(inv1 != inv0, f"{DEMO} has the same InvocationID after the approved restart")
        self.m.wait_for_unit(DEMO, timeout=60)
        self.wait_for_message(
            lambda m, t: (action_id in t or "aiops-demo-app" in t) and re.search(r"verified|succeeded|fixed", t, re.I),
            120,
            f"reporting the verified outcome of {action_id}",
            before_approval,
        )
        out = self.m.succeed("aiops audit verify 2>&1")
        self.log(f"  aiops audit verify: {out.strip()}")
        history = self.m.succeed("aiops --json history")
        check(action_id in history and OPERATOR in history, "the history does not name the action and its approver")
        self.loop["action"] = action_id
        self.loop["restarted"] = inv1

    def start_stress(self, unit, mode):
        """`aiops stress MODE` for 240 s at 5 requests/s as transient unit `unit`, after stopping
        any stress the scenario started before (one incident at a time)."""
        self.m.execute("systemctl stop aiops-stress-1 aiops-stress-2 2>/dev/null; true")
        self.m.succeed(
            f"systemd-run --unit={unit} --collect --quiet "
            f"$(command -v aiops) stress {mode} --duration 240s --rate 5"
        )

    def second_incident_starts(self):
        """A latency fault on the freshly restarted app: HighLatencyP99 for the same unit."""
        self.loop["since_second"] = len(self.slack_messages())
        self.start_stress("aiops-stress-2", "latency --delay-ms 600")
        self.loop["second_on"] = time.monotonic()

    def cooldown_refuses_second_restart(self):
        """A second incident on the same unit inside the cooldown: its restart is refused.

        A different alert (HighLatencyP99, started on the app the whole loop restarted) makes a
        new recommendation for the same unit without waiting for the first alert to resolve."""
        check(self.loop.get("action"), "needs the whole loop to have restarted the app first")
        if "second_on" not in self.loop:
            self.second_incident_starts()
        remaining = ALERT_TIMEOUT - (time.monotonic() - self.loop["second_on"])
        _, _, text = self.wait_for_message(
            lambda m, t: "HighLatencyP99" in t and "firing" in t.lower(),
            max(remaining, 10),
            "for HighLatencyP99",
            self.loop["since_second"],
        )
        self.log(f"  detection: latency fault on -> recommendation in Slack in {time.monotonic() - self.loop['second_on']:.1f} s")
        inv = self.invocation(DEMO)
        check(inv == self.loop["restarted"], f"{DEMO} restarted again before the second approval")
        m = re.search(r"aiops approve (\S+)", text)
        if m is None:
            # Refused when proposed: the message itself must say why.
            check(re.search(r"cooldown", text, re.I), f"no approve command and no cooldown in:\n{text}")
            self.log("  the second recommendation was refused at once: cooldown")
        else:
            second = m.group(1).strip("`*_")
            check(second != self.loop["action"], "the second incident reused the executed action")
            status, out = self.m.execute(as_user(OPERATOR, f"aiops approve {q(second)} 2>&1"), timeout=APPROVE_TIMEOUT)
            self.log(f"  second approval -> {status}: {out.strip()}")
            check(status == EXIT_REFUSED, f"the second approval exited {status}, expected {EXIT_REFUSED} (refused)")
            check(re.search(r"cooldown", out, re.I), "the refusal does not name the cooldown")
            self.loop["second"] = second
        check(self.invocation(DEMO) == inv, "the app was restarted inside its cooldown")
        self.m.execute("systemctl stop aiops-stress-2 2>/dev/null; true")

    def durability_sigkill(self):
        """SIGKILL the receiver during a burst: every acknowledged notification reaches Slack."""
        self.receiver_up()
        n = 60
        since = len(self.slack_messages())
        restarts0 = self.nrestarts(WEBHOOK)
        script = r"""
set -u
T=$(cat TOKEN)
now=$(date -u +%Y-%m-%dT%H:%M:%SZ)
: > /tmp/burst.codes
for i in $(seq 1 N); do
  fp=$(printf '%016x' "$i")
  body='{"version":"4","groupKey":"{}:{alertname=\"AiopsVmProbe\", probe=\"'$i'\"}","truncatedAlerts":0,"status":"firing","receiver":"aiops","groupLabels":{"alertname":"AiopsVmProbe","probe":"'$i'"},"commonLabels":{"alertname":"AiopsVmProbe","probe":"'$i'","severity":"warning","service":"aiops-vm-probe"},"commonAnnotations":{"summary":"vm-probe-'$i'-x"},"externalURL":"http://127.0.0.1:9093","alerts":[{"status":"firing","labels":{"alertname":"AiopsVmProbe","probe":"'$i'","severity":"warning","service":"aiops-vm-probe"},"annotations":{"summary":"vm-probe-'$i'-x"},"startsAt":"'$now'","endsAt":"0001-01-01T00:00:00Z","generatorURL":"http://127.0.0.1:9090/graph","fingerprint":"'$fp'"}]}'
  code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 10 -H "Authorization: Bearer $T" \
    -H 'Content-Type: application/json' --data-binary "$body" http://127.0.0.1:PORT/)
  echo "$i $code" >> /tmp/burst.codes
done
echo done >> /tmp/burst.codes
""".replace("TOKEN", TOKEN_FILE).replace("PORT", str(PORT_WEBHOOK)).replace("N", str(n))
        self.m.succeed(f"cat > /tmp/burst.sh <<'EOF'\n{script}\nEOF")
        # The unit gets root's PATH: the manager's default PATH has no curl on NixOS.
        self.m.succeed(
            "systemd-run --unit=aiops-burst --collect --quiet --setenv=PATH=\"$PATH\" $(command -v bash) /tmp/burst.sh"
        )
        self.m.wait_until_succeeds("test $(wc -l < /tmp/burst.codes) -ge 15", timeout=120)
        self.m.succeed(f"systemctl kill --kill-whom=main --signal=SIGKILL {WEBHOOK}")
        self.m.wait_until_succeeds("grep -q done /tmp/burst.codes", timeout=300)
        self.m.wait_for_unit(WEBHOOK, timeout=120)
        check(self.nrestarts(WEBHOOK) > restarts0, "the receiver was not restarted after SIGKILL")
        codes = {}
        for line in self.m.succeed("cat /tmp/burst.codes").splitlines():
            parts = line.split()
            if len(parts) == 2:
                codes[int(parts[0])] = parts[1]
        acked = sorted(i for i, c in codes.items() if c.startswith("2"))
        refused = sorted(i for i, c in codes.items() if not c.startswith("2"))
        self.log(f"  {len(acked)} acknowledged, {len(refused)} not acknowledged while it was down: {refused}")
        check(len(codes) == n, f"the burst sent {len(codes)} of {n} notifications")
        check(len(acked) >= n // 2, f"only {len(acked)} of {n} notifications were acknowledged")
        deadline = time.monotonic() + 240
        while True:
            seen = {}
            for msg in self.slack_messages()[since:]:
                for probe in set(re.findall(r"vm-probe-(\d+)-x", self.message_text(msg))):
                    seen[int(probe)] = seen.get(int(probe), 0) + 1
            lost = [i for i in acked if i not in seen]
            if not lost:
                break
            if time.monotonic() > deadline:
                raise AssertionError(f"acknowledged notifications never reached Slack: {lost}")
            time.sleep(2)
        dup = {i: c for i, c in seen.items() if c > 1}
        self.log(f"  all {len(acked)} acknowledged notifications delivered; duplicates: {dup or 'none'}")

    def slack_outage(self):
        """Slack answering 500 and then 429 loses nothing: delivered once it recovers."""
        self.receiver_up()
        since = len(self.slack_messages())
        count = f"if [ -f {SLACK_DIR}/rejected.jsonl ]; then wc -l < {SLACK_DIR}/rejected.jsonl; else echo 0; fi"
        rejected = int(self.m.succeed(count).strip())
        self.m.succeed(f"echo 500 > {SLACK_FAIL}")
        try:
            self.starts_at = self.m.succeed("date -u +%Y-%m-%dT%H:%M:%SZ").strip()
            code = self.post_notification("AiopsVmOutage", "vm-outage-probe", "00000000000000aa")
            check(code.startswith("2"), f"the receiver answered {code}")
            # Slack refuses a delivery: the probe's, or that of a message queued before it (the
            # outbox is FIFO, so the incident's recommendation, when it is detected during the
            # outage, is tried first and holds the probe back).
            self.m.wait_until_succeeds(
                f"test $({count}) -gt {rejected}", timeout=120
            )
            self.m.succeed(f"echo 429 1 > {SLACK_FAIL}")
            self.m.wait_until_succeeds(f"grep -q rate_limited {SLACK_DIR}/rejected.jsonl", timeout=120)
            check(
                not any("vm-outage-probe" in self.message_text(m) for m in self.slack_messages()[since:]),
                "a message was recorded as delivered during the outage",
            )
        finally:
            self.m.succeed(f"rm -f {SLACK_FAIL}")
        self.wait_for_message(lambda m, t: "vm-outage-probe" in t, 120, "for the notification sent during the outage", since)

    def post_notification(self, alertname, summary, fingerprint):
        """POSTs one Alertmanager (version 4) notification to the receiver with the token."""
        alert = {
            "status": "firing",
            "labels": {"alertname": alertname, "severity": "warning", "service": "aiops-vm-probe"},
            "annotations": {"summary": summary},
            "startsAt": "STARTS_AT",
            "endsAt": "0001-01-01T00:00:00Z",
            "generatorURL": "http://127.0.0.1:9090/graph",
            "fingerprint": fingerprint,
        }
        body = {
            "version": "4",
            "groupKey": '{}:{alertname="%s"}' % alertname,
            "truncatedAlerts": 0,
            "status": "firing",
            "receiver": "aiops",
            "groupLabels": {"alertname": alertname},
            "commonLabels": alert["labels"],
            "commonAnnotations": alert["annotations"],
            "externalURL": "http://127.0.0.1:9093",
            "alerts": [alert],
        }
        text = json.dumps(body).replace("STARTS_AT", self.starts_at)
        return self.m.succeed(
            f"curl -sS -o /dev/null -w '%{{http_code}}' -H \"Authorization: Bearer $(cat {TOKEN_FILE})\" "
            f"-H 'Content-Type: application/json' --data-binary {q(text)} http://127.0.0.1:{PORT_WEBHOOK}/"
        ).strip()

    def reboot(self):
        """The guest powers off and boots again. Before it does, the incident's recommendation is
        pending (an action to carry across), a notification goes through the receiver to Slack,
        and what the gate holds is noted (the next cases compare)."""
        self.recommendation()
        self.receiver_up()
        self.starts_at = self.m.succeed("date -u +%Y-%m-%dT%H:%M:%SZ").strip()
        since = len(self.slack_messages())
        code = self.post_notification("AiopsVmReboot", "vm-reboot-probe-before", "00000000000000bb")
        check(code.startswith("2"), f"the receiver answered {code}")
        self.wait_for_message(lambda m, t: "vm-reboot-probe-before" in t, 120, "for the probe sent before the reboot", since)
        status, out = self.m.execute("aiops --json pending 2>/dev/null")
        self.before_reboot = {
            "pending": out if status == 0 else None,
            "audit": self.m.execute(f"cat {self.audit_file()} 2>/dev/null")[1],
            "slack_since": since,
        }
        self.reboot_at = self.m.succeed("date -u +%Y-%m-%dT%H:%M:%S").strip()
        down = time.monotonic()
        self.m.shutdown()
        off = time.monotonic()
        self.m.start()
        self.log(f"  power-off {off - down:.1f} s; boot to a shell {time.monotonic() - off:.1f} s")

    def reboot_keeps_receiver_state(self):
        """The receiver remembers what it posted before the reboot: the same notification
        re-sent after it is not posted again (a later one is)."""
        if self.before_reboot is None:
            self.reboot()
        since = self.before_reboot["slack_since"]
        self.receiver_up()
        count = len(self.slack_messages())
        check(count >= since + 1, "the fake Slack lost its messages across the reboot")
        code = self.post_notification("AiopsVmReboot", "vm-reboot-probe-before", "00000000000000bb")
        check(code.startswith("2"), f"the receiver answered {code} after the reboot")
        code = self.post_notification("AiopsVmRebootAfter", "vm-reboot-probe-after", "00000000000000cc")
        check(code.startswith("2"), f"the receiver answered {code} after the reboot")
        # Notifications are processed and delivered in order: once the later one is in Slack,
        # the repeat has been handled.
        self.wait_for_message(lambda m, t: "vm-reboot-probe-after" in t, 120, "for the probe sent after the reboot", count)
        repeats = [m for m in self.slack_messages()[since:] if "vm-reboot-probe-before" in self.message_text(m)]
        check(len(repeats) == 1, f"the notification sent before the reboot was posted {len(repeats)} times")

    def reboot_keeps_pending_and_audit(self):
        """The pending actions and the audit log from before the reboot are all still there,
        and the audit chain still verifies."""
        before = self.before_reboot
        if before is None:
            self.reboot()
            before = self.before_reboot
        self.receiver_up()
        check(before["pending"] is not None, "`aiops --json pending` did not work before the reboot")
        pending_before = json.loads(before["pending"])
        check(pending_before, "no pending action to carry across the reboot (the incident's recommendation is one)")
        check(before["audit"].strip(), "the audit log was empty before the reboot")
        # Every action that was pending is still known with the same identity. It is still
        # pending, unless the alert resolved after the reboot (the app restarted with the guest,
        # so the fault is gone) and the receiver marked it obsolete since.
        for before_action in pending_before:
            aid = before_action["id"]
            out = self.m.succeed(f"aiops --json show {q(aid)}")
            after_action = find_action(json.loads(out), aid)
            check(after_action is not None, f"action {aid} is gone after the reboot: {out[:500]}")
            for key in ("kind", "unit", "created_at", "alert"):
                check(
                    after_action.get(key) == before_action.get(key),
                    f"action {aid}: {key} changed across the reboot: {before_action.get(key)!r} -> {after_action.get(key)!r}",
                )
            state = after_action.get("state")
            if state != "pending":
                last = (after_action.get("history") or [{}])[-1]
                check(
                    state in ("obsolete", "expired") and str(last.get("at", "")) > self.reboot_at,
                    f"action {aid} is {state} after the reboot (last transition {last})",
                )
            self.log(f"  action {aid}: pending before, {state} after the reboot")
        audit_after = self.m.succeed(f"cat {self.audit_file()}")
        check(audit_after.startswith(before["audit"]), "the audit log lost or changed entries across the reboot")
        self.m.succeed("aiops audit verify")
        self.log(f"  pending actions and {len(before['audit'].splitlines())} audit entries survived the reboot")

# Two guests, set up alike, each with a story of its own, so that neither waits for the other's
# waits (a VM test framework runs them side by side; tests/vm/run does, the NixOS test runs them
# one after the other):
#
# - "loop": the remediation loop, and what makes it safe to run as shipped (readiness, hardening,
#   confinement): stress -> alert -> recommendation -> approval -> verified restart -> cooldown.
# - "host": what the host does to the services: SIGKILL, a Slack outage, a real reboot, a hang.
#   Its own incident leaves the pending action that the reboot must keep.
#
# Within each story the order keeps the wall-clock time down under software emulation by running
# cases inside the waits that nothing can shorten: Prometheus and Alertmanager detecting the
# incident (the cases that leave the app running run meanwhile), the whole loop verifying its
# restart (the cooldown's incident is detected meanwhile), and the watchdog's deadline after the
# app hangs, right after the reboot (WatchdogSec after its last ping; the cases that leave the
# app alone run meanwhile). Each case asserts on its own; a case run alone (--only) starts what
# it needs itself.
TRACKS = {
    "loop": [
        ("incident: error fault on (detected during the next cases)", Scenario.incident_starts),
        ("services reach active via Type=notify", Scenario.services_ready),
        ("service account confined by polkit", Scenario.service_account_confinement),
        ("hardening: writes outside allowed paths fail", Scenario.hardening_holds),
        ("process metrics intact under hardening", Scenario.process_metrics),
        ("the host's own services (nginx, Redis) are up and scraped", Scenario.host_services_scraped),
        ("state directory owner and mode", Scenario.state_directory),
        ("systemd-analyze security exposure < 2.0; MemoryMax=, TasksMax= in force", Scenario.security_exposure),
        ("whole loop: stress to verified restart", Scenario.whole_loop),
        ("polkit lets the service account restart the allow-listed unit", Scenario.service_account_may_restart_allowed),
        ("cooldown refuses a second restart", Scenario.cooldown_refuses_second_restart),
    ],
    "host": [
        ("incident: error fault on (its action stays pending, for the reboot)", Scenario.incident_starts),
        ("SIGKILL during a burst loses nothing", Scenario.durability_sigkill),
        ("Slack outage (500, 429) loses nothing", Scenario.slack_outage),
        ("reboot: the guest powers off and boots again", Scenario.reboot),
        ("watchdog: the app hangs (SIGSTOP; restarted during the next cases)", Scenario.watchdog_hang),
        ("reboot: receiver remembers what it posted", Scenario.reboot_keeps_receiver_state),
        ("reboot keeps pending actions and audit", Scenario.reboot_keeps_pending_and_audit),
        ("watchdog restarts the hung app", Scenario.watchdog_restarts_hung_app),
    ],
}


def selected(only=None):
    """The tracks with the cases to run: all, or those whose "track: name" contains one of `only`."""
    picked = {}
    for track, cases in TRACKS.items():
        keep = [(n, c) for n, c in cases if not only or any(o in f"{track}: {n}" for o in only)]
        if keep:
            picked[track] = keep
    return picked


def run(machines, log=print, only=None, parallel=False):
    """Runs each track's cases (or those `only` selects) on its machine and returns the results.

    `machines` maps each track to its guest ({"loop": loop, "host": host}); a track that has
    nothing selected needs no machine. With `parallel`, the tracks run at the same time, one
    thread each (the Debian harness); otherwise one after the other."""
    if not isinstance(machines, dict):
        raise TypeError(f"run() takes a guest per track, {{{', '.join(f'{t!r}: machine' for t in TRACKS)}}}, not {machines!r}")
    tracks = selected(only)
    missing = sorted(set(tracks) - set(machines))
    if missing:
        raise ValueError(f"no machine for the track(s) {missing}: run() takes a guest per track of {list(TRACKS)}")
    results = {track: [] for track in tracks}
    if parallel and len(tracks) > 1:
        lock = threading.Lock()

        def locked_log(msg):
            with lock:
                log(msg)

        jobs = {
            t: (lambda t=t, cases=cases: run_track(t, machines[t], cases, locked_log, results[t]))
            for t, cases in tracks.items()
        }
        # run_track reports every case's failure itself; anything that still escapes is a bug
        # of the scenario, reported as a failure of that track rather than lost with its thread.
        for t, e in in_parallel(jobs).items():
            detail = f"{type(e).__name__}: {e}"
            results[t].append({"track": t, "name": "(the track itself)", "status": "FAIL", "seconds": 0.0, "detail": detail})
    else:
        for t, cases in tracks.items():
            run_track(t, machines[t], cases, log, results[t])
    merged = [r for track in tracks for r in results[track]]
    if any(r["status"] == "FAIL" for r in merged):
        raise ScenarioFailed(merged)
    return merged


def in_parallel(jobs):
    """Runs each of `jobs` ({name: callable}) in a thread of its own and waits for all; returns
    the exceptions they raised, by name. The threads are daemons: a harness that is told to stop
    does not wait for them."""
    failures = {}

    def wrap(name, job):
        try:
            job()
        except BaseException as e:  # noqa: BLE001 - handed to the caller
            failures[name] = e

    threads = [threading.Thread(target=wrap, args=(name, job), name=name, daemon=True) for name, job in jobs.items()]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return failures


def run_track(track, machine, cases, log, results):
    """Runs `cases` in order on `machine`, appending one result each to `results`."""

    def track_log(msg):
        log("\n".join(f"[{track}] {line}" for line in str(msg).split("\n")))

    s = Scenario(machine, track_log)
    for name, case in cases:
        track_log(f"=== {name}")
        started = time.monotonic()
        try:
            case(s)
            status, detail = "PASS", ""
        except Exception as e:  # noqa: BLE001 - every failure is reported, then the next case runs
            status, detail = "FAIL", f"{type(e).__name__}: {e}"
        took = time.monotonic() - started
        results.append({"track": track, "name": name, "status": status, "seconds": took, "detail": detail})
        track_log(f"--- {status} {name} ({took:.1f} s)" + (f"\n{detail}" if detail else ""))
        if not machine_is_up(machine):
            track_log("the guest is down; stopping here")
            break


def find_action(data, action_id):
    """The object with "id" == action_id anywhere in a JSON reply (a list, or a show reply)."""
    if isinstance(data, dict):
        if data.get("id") == action_id:
            return data
        data = list(data.values())
    if isinstance(data, list):
        for item in data:
            found = find_action(item, action_id)
            if found is not None:
                return found
    return None


def machine_is_up(machine):
    is_up = getattr(machine, "is_up", None)
    if callable(is_up):
        return is_up()
    return getattr(machine, "booted", True)
