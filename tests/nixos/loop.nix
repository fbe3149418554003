# The whole aiops loop on NixOS, with the shared scenario (tests/scenario.py, the same cases as
# the Debian VM test): stress -> alert -> recommendation in a fake Slack -> `aiops approve` by an
# operator -> restart confined by polkit -> verified outcome; plus the negatives, durability,
# reboot, and `systemd-analyze security` of our units. Two nodes configured alike, one per track
# of the scenario: `loop` (the remediation loop) and `host` (SIGKILL, Slack outage, reboot, hang).
#
# Run: nix build .#checks.x86_64-linux.vm-loop (or `nix flake check`); interactively:
#   nix run .#checks.x86_64-linux.vm-loop.driverInteractive
{
  self,
  pkgs,
  lib,
}:
let
  # The ports of the scenario's guest contract.
  ports = {
    demoApp = 8080;
    webhook = 9095;
    prometheus = 9090;
    alertmanager = 9093;
    slack = 9999;
  };

  # Secrets, as the scenario's contract has them. They reach the guest at run time through the
  # driver's shared directory (like agenix or sops-nix decrypting at boot), never through the
  # node's configuration: the test asserts they are nowhere in the system closure.
  slackUrl = "http://127.0.0.1:${toString ports.slack}/services/T000/B000/XXXX";
  webhookToken = "nixos-vm-test-token-8c1e5b0d9f";
  secretsDir = "/etc/aiops/secrets";

  scenario = ../scenario.py;
  fakeSlack = ../fake_slack.py;

  # The Debian guest's configuration (tests/vm/guest/config.toml): the values the scenario was
  # tuned and proven with there (Slack retry backoff, cooldown, verification window, rate limit).
  # Everything else comes from the module's own defaults; tests/nix-eval checks that the result
  # is the Debian file, value for value, except the dashboard link.
  debianGuest = lib.importTOML ../vm/guest/config.toml;

  # Both nodes: the scenario's guest contract.
  guest =
    { config, pkgs, ... }:
    {
      imports = [ self.nixosModules.default ];

      virtualisation.memorySize = 3072;
      virtualisation.cores = 2;

      services.aiops = {
        enable = true;
        demoApp.enable = true;
        slackWebhookUrlFile = "${secretsDir}/slack-webhook-url";
        webhookTokenFile = "${secretsDir}/webhook-token";
        settings = {
          inherit (debianGuest) slack;
          # The second approval must fall inside the cooldown (>= 600 s); verification is bounded
          # (<= 180 s) so that an approval returns within the scenario's timeout.
          remediation = {
            inherit (debianGuest.remediation)
              cooldown_secs
              max_actions_per_hour
              verify_timeout_secs
              stale_after_secs
              ;
          };
          # The provisioned dashboard (grafana/dashboards/aiops.json has uid aiops-loop).
          webhook.dashboard_url = "http://127.0.0.1:3000/d/aiops-loop";
        };
      };
      services.prometheus.port = ports.prometheus;
      services.prometheus.alertmanager.port = ports.alertmanager;

      # What the host already runs, written by nobody here (the Debian guest has the same from its
      # packages: tests/vm/image/customize.sh): nginx and Redis with their exporters, and
      # node_exporter with its systemd collector, on loopback. aiops watches nginx and Redis
      # through services.aiops.watch (the Debian guest through [watch.NAME] in its config.toml);
      # the module scrapes their exporters as the jobs named there.
      services.nginx = {
        enable = true;
        statusPage = true;
      };
      services.prometheus.exporters.nginx = {
        enable = true;
        listenAddress = "127.0.0.1";
        port = 9113;
        scrapeUri = "http://127.0.0.1/nginx_status";
      };
      # The unit is redis-server.service, as on Debian.
      services.redis.servers.server = {
        enable = true;
        bind = "127.0.0.1";
        port = 6379;
      };
      services.prometheus.exporters.redis = {
        enable = true;
        listenAddress = "127.0.0.1";
        port = 9121;
        extraFlags = [ "--redis.addr=redis://127.0.0.1:6379" ];
      };
      services.prometheus.exporters.node = {
        enable = true;
        listenAddress = "127.0.0.1";
        port = 9100;
        enabledCollectors = [ "systemd" ];
        extraFlags = [ "--collector.systemd.unit-include=(nginx|redis-server|aiops-demo-app|aiops-webhook)[.]service" ];
      };
      # The host's own job for its node_exporter (not a watched service).
      services.prometheus.scrapeConfigs = [
        {
          job_name = "node";
          static_configs = [ { targets = [ "127.0.0.1:9100" ]; } ];
        }
      ];
      services.aiops.watch = {
        nginx = {
          unit = "nginx.service";
          job = "nginx";
          targets = [ "127.0.0.1:9113" ];
          allowedActions = [ "restart" ];
        };
        redis = {
          unit = "redis-server.service";
          job = "redis";
          targets = [ "127.0.0.1:9121" ];
          allowedActions = [ "restart" ];
        };
      };

      users.users.alice = {
        isNormalUser = true;
        extraGroups = [ config.services.aiops.operatorsGroup ];
      };
      users.users.mallory.isNormalUser = true;

      # Tools the scenario calls (scenario.TOOLS; its readiness case checks each one): curl here
      # (also a NixOS core package), jq for this file's own checks; runuser, nsenter and setsid
      # (util-linux), stat and find (coreutils-full, findutils) are NixOS core packages;
      # systemctl, systemd-run, systemd-analyze and journalctl come with systemd; aiops* with
      # services.aiops.
      environment.systemPackages = [
        pkgs.curl
        pkgs.jq
      ];

      # The Slack stand-in of the contract, as tests/vm/guest/fake-slack.service has it: records
      # each accepted POST body as a JSON line in /var/lib/fake-slack/messages.jsonl. It is also
      # the unit outside the allow-list.
      systemd.services.fake-slack = {
        description = "fake Slack incoming webhook (records messages)";
        wantedBy = [ "multi-user.target" ];
        after = [ "network.target" ];
        before = [ "aiops-webhook.service" ];
        serviceConfig = {
          ExecStart = "${pkgs.python3}/bin/python3 ${fakeSlack} --listen 127.0.0.1:${toString ports.slack} --state-dir /var/lib/fake-slack";
          StateDirectory = "fake-slack";
          StateDirectoryMode = "0755";
          Restart = "on-failure";
          RestartSec = 1;
        };
      };

      # Installs the secrets the driver put in the shared directory, root-only, before the units
      # that load them as credentials start.
      systemd.services.aiops-test-secrets = {
        requiredBy = [
          "aiops-webhook.service"
          "alertmanager.service"
        ];
        before = [
          "aiops-webhook.service"
          "alertmanager.service"
        ];
        unitConfig.RequiresMountsFor = "/tmp/shared";
        serviceConfig = {
          Type = "oneshot";
          RemainAfterExit = true;
        };
        script = ''
          install -d -m 0700 ${secretsDir}
          for name in slack-webhook-url webhook-token; do
            install -m 0600 /tmp/shared/aiops-secrets/$name ${secretsDir}/$name
          done
        '';
      };
    };
in
pkgs.testers.runNixOSTest {
  name = "aiops-loop";

  nodes.loop = guest;
  nodes.host = guest;

  testScript = ''
    import importlib.util
    import os
    import re
    import shlex

    # The secrets, handed over outside the Nix configuration (see the nodes' aiops-test-secrets);
    # the driver's shared directory is the same for every node.
    secrets = os.path.join(loop.shared_dir, "aiops-secrets")
    os.makedirs(secrets, exist_ok=True)
    for name, value in (("slack-webhook-url", ${builtins.toJSON slackUrl}), ("webhook-token", ${builtins.toJSON webhookToken})):
        with open(os.path.join(secrets, name), "w") as f:
            f.write(value + "\n")

    start_all()
    for machine in (loop, host):
        machine.wait_for_unit("multi-user.target")

    with subtest("secrets are root-only files, loaded as credentials, and nowhere in the store"):
        for machine in (loop, host):
            for name in ("slack-webhook-url", "webhook-token"):
                machine.succeed(f"test \"$(stat -c '%U %a' ${secretsDir}/{name})\" = 'root 600'")
            machine.wait_for_unit("aiops-webhook.service")
            machine.wait_for_unit("alertmanager.service")
            # Each credential is there, inside the unit's own view of /run/credentials.
            for unit, name in (
                ("aiops-webhook.service", "slack-webhook-url"),
                ("aiops-webhook.service", "webhook-token"),
                ("alertmanager.service", "webhook-token"),
            ):
                machine.succeed(f"systemctl cat {unit} | grep -F 'LoadCredential={name}:${secretsDir}/{name}'")
                machine.succeed(
                    f"nsenter -t $(systemctl show {unit} -p MainPID --value) -m -- test -s /run/credentials/{unit}/{name}"
                )
        # Both nodes run the same system: one closure to search.
        closure = loop.succeed("nix-store -qR /run/current-system").split()
        # What NixOS generated for these services: units, /etc, configuration files, scripts.
        generated = [
            p for p in closure
            if re.search(r"-(unit-|system-units|etc$|aiops|alertmanager|prometheus|grafana-provisioning|.*checked|config\.ini)", p)
        ]
        paths = " ".join(shlex.quote(p) for p in generated)
        # Positive controls: the search does see the generated configuration and units...
        loop.succeed(f"grep -rqF operators_group {paths}")
        loop.succeed(f"grep -rqF webhook-token:${secretsDir}/webhook-token {paths}")
        # ...and finds neither secret value (grep exits 1: no match; 2 would be an error). The
        # driver runs commands under `set -e`, so the status is caught, not left to end the shell.
        for secret in (${builtins.toJSON slackUrl}, ${builtins.toJSON webhookToken}):
            loop.succeed(f"status=0; grep -rqF -- {shlex.quote(secret)} {paths} || status=$?; test $status -eq 1")

    with subtest("Prometheus, Alertmanager and Grafana are wired by the module"):
        loop.wait_for_open_port(${toString ports.prometheus})
        loop.wait_until_succeeds(
            "curl -sf http://127.0.0.1:${toString ports.prometheus}/api/v1/targets"
            + " | jq -e '[.data.activeTargets[].labels.job] | contains([\"aiops-demo-app\", \"aiops-webhook\", \"aiops-alertmanager\", \"aiops-prometheus\"])'",
            timeout=120,
        )
        loop.succeed(
            "curl -sf http://127.0.0.1:${toString ports.prometheus}/api/v1/rules"
            + " | jq -e '[.data.groups[].rules[].name] | index(\"HighErrorRatio\")'"
        )
        loop.wait_for_unit("grafana.service")
        loop.wait_for_open_port(3000)
        loop.wait_until_succeeds(
            "curl -sf -u admin:admin http://127.0.0.1:3000/api/datasources/uid/aiops-prometheus | jq -e '.url == \"http://127.0.0.1:${toString ports.prometheus}\"'",
            timeout=120,
        )
        # The link in every message leads to the provisioned dashboard.
        loop.wait_until_succeeds(
            "curl -sf -u admin:admin http://127.0.0.1:3000/api/dashboards/uid/aiops-loop | jq -e '.dashboard.uid == \"aiops-loop\"'",
            timeout=120,
        )

    with subtest("the polkit rule is the one `aiops policy polkit` prints"):
        rules = loop.succeed("cat /etc/polkit-1/rules.d/10-nixos.rules")
        print(rules)
        assert '["aiops-demo-app.service"].indexOf(action.lookup("unit"))' in rules, rules

    with subtest("systemd-analyze security of our units"):
        for unit in ("aiops-webhook.service", "aiops-demo-app.service"):
            print(loop.succeed(f"SYSTEMD_COLORS=0 systemd-analyze security --no-pager {unit} 2>&1"))

    # The shared scenario: the same cases and assertions as the Debian VM test, each track on its
    # node, one after the other (the Debian harness runs them side by side).
    spec = importlib.util.spec_from_file_location("scenario", "${scenario}")
    assert spec is not None and spec.loader is not None
    scenario = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(scenario)
    scenario.run({"loop": loop, "host": host}, log=print)
  '';
}
