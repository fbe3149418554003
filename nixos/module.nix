# services.aiops: the aiops loop on one NixOS host.
#
# - The systemd units come from the package (`systemd.packages`), the same files the Debian VM test
#   installs; this module only adds what NixOS must: wantedBy, restart triggers, credentials.
# - `settings` (RFC 42) renders /etc/aiops/config.toml, exactly aiops_core::config::Config
#   (deny_unknown_fields: a key the programs do not know fails them at start).
# - Secrets are paths to files outside the store, handed over with LoadCredential.
# - Approvals are confined by polkit: the service user may only restart the allow-listed units.
# - Prometheus, Alertmanager and Grafana are wired with defaults the user can override, each behind
#   its own `enable`.
{
  config,
  lib,
  pkgs,
  ...
}:
let
  cfg = config.services.aiops;
  inherit (lib)
    literalExpression
    mkDefault
    mkEnableOption
    mkIf
    mkMerge
    mkOption
    types
    ;

  settingsFormat = pkgs.formats.toml { };
  configFile = settingsFormat.generate "aiops-config.toml" cfg.settings;

  # The account aiops-webhook.service runs as (User= in the unit file); the polkit rule names it.
  serviceUser = "aiops";

  actions = [
    "restart"
    "clear-cache"
  ];

  # "127.0.0.1:8080" -> 8080; "[::1]:9095" -> 9095.
  portOf = addr: lib.toInt (lib.last (lib.splitString ":" addr));
  # Where a local client reaches a listener (a wildcard listen address is reached on loopback).
  reachable =
    addr:
    let
      port = toString (portOf addr);
    in
    if lib.hasPrefix "0.0.0.0:" addr then
      "127.0.0.1:${port}"
    else if lib.hasPrefix "[::]:" addr then
      "[::1]:${port}"
    else
      addr;

  webhookTarget = reachable cfg.settings.webhook.listen;
  demoAppTarget = reachable cfg.settings.demo_app.listen;
  promCfg = config.services.prometheus;
  amCfg = config.services.prometheus.alertmanager;
  loopbackOr = addr: if addr == "" || addr == "0.0.0.0" then "127.0.0.1" else addr;
  prometheusTarget = "${loopbackOr promCfg.listenAddress}:${toString promCfg.port}";
  alertmanagerTarget = "${loopbackOr amCfg.listenAddress}:${toString amCfg.port}";

  restartableUnits = lib.attrNames (lib.filterAttrs (_: lib.elem "restart") cfg.allowedActions);

  polkitRule = import ./polkit-rule.nix {
    user = serviceUser;
    units = restartableUnits;
  };

  # Where systemd puts a LoadCredential'd file for a unit ($CREDENTIALS_DIRECTORY).
  credentialPath = unit: name: "/run/credentials/${unit}/${name}";

  secretFileOption =
    what: credential:
    mkOption {
      # A string, never a Nix path: a path literal would be copied into the world-readable store.
      type = types.nullOr types.str;
      default = null;
      example = "/run/secrets/aiops/${credential}";
      description = ''
        Absolute path of a file holding ${what}, outside the Nix store (e.g. written by
        agenix or sops-nix, mode 0600). It is handed to the service with
        `LoadCredential=${credential}:PATH`, so only systemd (root) reads it; the program finds it
        in `$CREDENTIALS_DIRECTORY/${credential}`.
      '';
    };

  secretAssertions =
    option: value:
    lib.optional (value != null) {
      assertion = lib.hasPrefix "/" value && !lib.hasPrefix "${builtins.storeDir}/" value;
      message = "services.aiops.${option} must be an absolute path outside the Nix store (the file holds a secret); got ${value}.";
    };

  unitNameOk = name: builtins.match "[A-Za-z0-9:_.@-]+[.]service" name != null;
in
{
  options.services.aiops = {
    enable = mkEnableOption "the aiops loop: the webhook receiver, diagnosis and approval executor";

    package = lib.mkPackageOption pkgs "aiops" {
      extraDescription = ''
        The flake's `nixosModules.default` sets this to the flake's own package; without the
        flake, add its `overlays.default` to nixpkgs.
      '';
    };

    settings = mkOption {
      default = { };
      description = ''
        Configuration written to {file}`/etc/aiops/config.toml`, the file every aiops program
        reads. Its shape is exactly `aiops_core::config::Config` (see docs/CONFIGURATION.md):
        unknown keys make the programs refuse to start. Never put secrets here; use
        {option}`services.aiops.slackWebhookUrlFile` and
        {option}`services.aiops.webhookTokenFile`.
      '';
      example = literalExpression ''
        {
          remediation.cooldown_secs = 600;
          webhook.dashboard_url = "https://grafana.example.org/d/aiops";
        }
      '';
      type = types.submodule {
        freeformType = settingsFormat.type;
        options = {
          demo_app.listen = mkOption {
            type = types.str;
            default = "127.0.0.1:8080";
            description = "Listen address of the demo app; Prometheus scrapes it there.";
          };
          webhook = {
            listen = mkOption {
              type = types.str;
              default = "127.0.0.1:9095";
              description = "Listen address of the receiver; Alertmanager posts to it and Prometheus scrapes it.";
            };
            operators_group = mkOption {
              type = types.str;
              default = cfg.operatorsGroup;
              defaultText = literalExpression "config.services.aiops.operatorsGroup";
              description = "Members of this group (and root) may approve and reject.";
            };
          };
          prometheus.url = mkOption {
            type = types.str;
            default = "http://${prometheusTarget}";
            defaultText = literalExpression ''"http://127.0.0.1:''${toString config.services.prometheus.port}"'';
            description = "The Prometheus the diagnosis engine queries for evidence.";
          };
          alertmanager.url = mkOption {
            type = types.str;
            default = "http://${alertmanagerTarget}";
            defaultText = literalExpression ''"http://127.0.0.1:''${toString config.services.prometheus.alertmanager.port}"'';
            description = "The Alertmanager `aiops recommend` asks which alerts fire.";
          };
          remediation = {
            executor = mkOption {
              type = types.enum [
                "systemd"
                "demo"
              ];
              default = "systemd";
              description = "Who carries out an approved restart: systemd, confined by the generated polkit rule.";
            };
            allowed = mkOption {
              type = types.attrsOf (types.listOf (types.enum actions));
              default = cfg.allowedActions;
              defaultText = literalExpression "config.services.aiops.allowedActions";
              description = "Set {option}`services.aiops.allowedActions` instead: the polkit rule is generated from it.";
            };
            demo_app_url = mkOption {
              type = types.str;
              default = "http://${demoAppTarget}";
              defaultText = literalExpression ''"http://''${config.services.aiops.settings.demo_app.listen}"'';
              description = "Base URL of the demo app, for the `clear-cache` action.";
            };
          };
          diagnosis.job = mkOption {
            type = types.str;
            default = "aiops-demo-app";
            description = "The Prometheus job of the watched service (the module scrapes the demo app under this name).";
          };
        };
      };
    };

    slackWebhookUrlFile = secretFileOption "the Slack incoming-webhook URL" "slack-webhook-url";

    webhookTokenFile = secretFileOption "the bearer token Alertmanager must present to the receiver" "webhook-token";

    demoApp.enable = mkEnableOption "the demo web service (`aiops-demo-app.service`) that the loop watches and can heal";

    allowedActions = mkOption {
      type = types.attrsOf (types.listOf (types.enum actions));
      default = lib.optionalAttrs cfg.demoApp.enable {
        "aiops-demo-app.service" = [
          "restart"
          "clear-cache"
        ];
      };
      defaultText = literalExpression ''
        lib.optionalAttrs config.services.aiops.demoApp.enable {
          "aiops-demo-app.service" = [ "restart" "clear-cache" ];
        }
      '';
      example = {
        "myapp.service" = [ "restart" ];
      };
      description = ''
        Unit → actions an approval may carry out on it. Nothing else can ever run: this is
        rendered into `remediation.allowed` and into a polkit rule that lets the `aiops` user
        restart exactly the units allowed `restart`, and no other systemd action.
      '';
    };

    operatorsGroup = mkOption {
      type = types.str;
      default = "aiops-operators";
      description = "The group whose members may approve and reject actions (created by the module). Add operators with `users.users.<name>.extraGroups`.";
    };

    openFirewall = mkOption {
      type = types.bool;
      default = false;
      description = ''
        Open the receiver's port (and the demo app's, when enabled) in the firewall. Only useful
        together with a non-loopback listen address in {option}`services.aiops.settings`.
      '';
    };

    prometheus.enable = mkOption {
      type = types.bool;
      default = true;
      description = "Enable {option}`services.prometheus` with scrape configs for the aiops components, our alert rules and our Alertmanager. Each value is a default you can override.";
    };

    alertmanager.enable = mkOption {
      type = types.bool;
      default = true;
      description = "Enable {option}`services.prometheus.alertmanager`, routing every alert to the aiops receiver with the bearer token of {option}`services.aiops.webhookTokenFile`.";
    };

    grafana.enable = mkOption {
      type = types.bool;
      default = true;
      description = "Enable {option}`services.grafana` with a provisioned Prometheus datasource and the aiops dashboard. A random `secret_key` is generated on the host unless you set one.";
    };
  };

  config = mkIf cfg.enable (mkMerge [
    {
      assertions =
        secretAssertions "slackWebhookUrlFile" cfg.slackWebhookUrlFile
        ++ secretAssertions "webhookTokenFile" cfg.webhookTokenFile
        ++ [
          {
            assertion = cfg.settings.remediation.allowed == cfg.allowedActions;
            message = "services.aiops: set services.aiops.allowedActions rather than settings.remediation.allowed; the polkit rule that confines restarts is generated from allowedActions.";
          }
          {
            assertion = lib.all unitNameOk (lib.attrNames cfg.allowedActions);
            message = "services.aiops.allowedActions: every key must be a systemd service name like \"myapp.service\"; got ${lib.concatStringsSep ", " (lib.attrNames cfg.allowedActions)}.";
          }
          {
            # The unit's StateDirectory=aiops and RuntimeDirectory=aiops are its only writable paths.
            assertion = (cfg.settings.state_dir or "/var/lib/aiops") == "/var/lib/aiops";
            message = "services.aiops.settings.state_dir must stay /var/lib/aiops: aiops-webhook.service may write only its StateDirectory.";
          }
          {
            assertion = lib.hasPrefix "/run/aiops/" (cfg.settings.webhook.control_socket or "/run/aiops/control.sock");
            message = "services.aiops.settings.webhook.control_socket must be inside /run/aiops (the unit's RuntimeDirectory).";
          }
          {
            assertion = lib.all (a: a != [ ]) (lib.attrValues cfg.allowedActions);
            message = "services.aiops.allowedActions: a unit lists no actions; remove it or list \"restart\"/\"clear-cache\".";
          }
        ];

      environment.etc."aiops/config.toml".source = configFile;
      environment.systemPackages = [ cfg.package ];

      users.users.${serviceUser} = {
        isSystemUser = true;
        group = serviceUser;
        description = "aiops webhook receiver and approval executor";
      };
      users.groups.${serviceUser} = { };
      users.groups.${cfg.operatorsGroup} = { };

      # The unit files shipped in the package; NixOS ignores their [Install] sections, hence wantedBy.
      systemd.packages = [ cfg.package ];

      systemd.services.aiops-webhook = {
        wantedBy = [ "multi-user.target" ];
        restartTriggers = [ configFile ];
        environment.AIOPS_CONFIG = "/etc/aiops/config.toml";
        serviceConfig.LoadCredential =
          lib.optional (
            cfg.slackWebhookUrlFile != null
          ) "slack-webhook-url:${cfg.slackWebhookUrlFile}"
          ++ lib.optional (cfg.webhookTokenFile != null) "webhook-token:${cfg.webhookTokenFile}";
      };

      security.polkit.enable = true;
      security.polkit.extraConfig = ''
        // aiops: generated by the NixOS module services.aiops from services.aiops.allowedActions;
        // the same rule as `aiops policy polkit` prints from remediation.allowed.
        ${polkitRule}
      '';

      networking.firewall.allowedTCPPorts = mkIf cfg.openFirewall (
        [ (portOf cfg.settings.webhook.listen) ]
        ++ lib.optional cfg.demoApp.enable (portOf cfg.settings.demo_app.listen)
      );
    }

    (mkIf cfg.demoApp.enable {
      systemd.services.aiops-demo-app = {
        wantedBy = [ "multi-user.target" ];
        restartTriggers = [ configFile ];
        environment.AIOPS_CONFIG = "/etc/aiops/config.toml";
      };
    })

    (mkIf cfg.prometheus.enable {
      services.prometheus = {
        enable = mkDefault true;
        listenAddress = mkDefault "127.0.0.1";
        # The rules' `for:` and the documented 25 s detection floor assume these intervals.
        globalConfig = {
          scrape_interval = mkDefault "5s";
          scrape_timeout = mkDefault "4s";
          evaluation_interval = mkDefault "5s";
        };
        ruleFiles = [ "${cfg.package}/share/aiops/prometheus/rules.yml" ];
        scrapeConfigs = [
          {
            job_name = "aiops-webhook";
            static_configs = [ { targets = [ webhookTarget ]; } ];
          }
          {
            job_name = "prometheus";
            static_configs = [ { targets = [ prometheusTarget ]; } ];
          }
        ]
        ++ lib.optional cfg.demoApp.enable {
          job_name = cfg.settings.diagnosis.job;
          static_configs = [ { targets = [ demoAppTarget ]; } ];
        }
        ++ lib.optional cfg.alertmanager.enable {
          job_name = "alertmanager";
          static_configs = [ { targets = [ alertmanagerTarget ]; } ];
        };
        alertmanagers = lib.optional cfg.alertmanager.enable {
          static_configs = [ { targets = [ alertmanagerTarget ]; } ];
        };
      };
    })

    (mkIf cfg.alertmanager.enable {
      services.prometheus.alertmanager = {
        enable = mkDefault true;
        listenAddress = mkDefault "127.0.0.1";
        # One host, no peers: without this Alertmanager looks for a private address to gossip on
        # and exits on a host that has none (only loopback, or only public addresses).
        extraFlags = mkIf (amCfg.clusterPeers == [ ]) [ "--cluster.listen-address=" ];
        # The same routing as prometheus/alertmanager.yml (tests/nix-eval checks they agree).
        # The token reaches the DynamicUser alertmanager as a systemd credential, never the store.
        configuration = mkDefault {
          route = {
            receiver = "aiops";
            group_by = [
              "alertname"
              "service"
            ];
            group_wait = "5s";
            group_interval = "15s";
            repeat_interval = "1h";
          };
          receivers = [
            {
              name = "aiops";
              webhook_configs = [
                (
                  {
                    url = "http://${webhookTarget}/";
                    send_resolved = true;
                  }
                  // lib.optionalAttrs (cfg.webhookTokenFile != null) {
                    http_config.authorization = {
                      type = "Bearer";
                      credentials_file = credentialPath "alertmanager.service" "webhook-token";
                    };
                  }
                )
              ];
            }
          ];
          inhibit_rules = [
            {
              source_matchers = [ ''alertname = "TargetDown"'' ];
              target_matchers = [ ''alertname =~ "HighErrorRatio|HighLatencyP99|HighCpuUsage|MemoryGrowth"'' ];
              equal = [ "service" ];
            }
          ];
        };
      };
      systemd.services.alertmanager = mkIf (amCfg.enable && cfg.webhookTokenFile != null) {
        serviceConfig.LoadCredential = [ "webhook-token:${cfg.webhookTokenFile}" ];
      };
    })

    (mkIf cfg.grafana.enable {
      services.grafana = {
        enable = mkDefault true;
        # Grafana has no default secret key since NixOS 26.05; this one is generated on the host
        # (aiops-grafana-secret.service) and read through a credential, never from the store.
        settings.security.secret_key = mkDefault "$__file{${credentialPath "grafana.service" "secret-key"}}";
        provision = {
          enable = mkDefault true;
          # As grafana/provisioning/ has them (tests/nix-eval checks they agree): the dashboard
          # refers to the datasource by its uid.
          datasources.settings.datasources = [
            {
              name = "Prometheus (aiops)";
              uid = "aiops-prometheus";
              type = "prometheus";
              access = "proxy";
              url = "http://${prometheusTarget}";
              isDefault = true;
              editable = false;
              jsonData = {
                timeInterval = "5s";
                httpMethod = "POST";
              };
            }
          ];
          dashboards.settings.providers = [
            {
              name = "aiops";
              orgId = 1;
              folder = "aiops";
              type = "file";
              disableDeletion = true;
              allowUiUpdates = false;
              updateIntervalSeconds = 30;
              options.path = "${cfg.package}/share/aiops/grafana/dashboards";
            }
          ];
        };
      };

      systemd.services.aiops-grafana-secret = mkIf config.services.grafana.enable {
        description = "Generate Grafana's secret key for aiops";
        before = [ "grafana.service" ];
        requiredBy = [ "grafana.service" ];
        serviceConfig = {
          Type = "oneshot";
          RemainAfterExit = true;
          StateDirectory = "aiops-grafana";
          StateDirectoryMode = "0700";
          UMask = "0077";
        };
        script = ''
          key="$STATE_DIRECTORY/secret-key"
          if [ ! -s "$key" ]; then
            ${pkgs.coreutils}/bin/head -c 48 /dev/urandom | ${pkgs.coreutils}/bin/base64 -w0 > "$key.tmp"
            ${pkgs.coreutils}/bin/mv "$key.tmp" "$key"
          fi
        '';
      };
      systemd.services.grafana = mkIf config.services.grafana.enable {
        after = [ "aiops-grafana-secret.service" ];
        serviceConfig.LoadCredential = [ "secret-key:/var/lib/aiops-grafana/secret-key" ];
      };
    })
  ]);
}
