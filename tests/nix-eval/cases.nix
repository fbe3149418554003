# The module evaluation tests, in pure Nix: each case evaluates nixos/module.nix (against
# stubs.nix) with some configuration and checks what it generates. Used two ways:
#   - tests/nix-eval/run (here and in CI): `nix-instantiate --eval --strict --json` on this file,
#     then the artifacts are checked with real programs (aiops, amtool, promtool);
#   - flake.nix's `checks.<system>.module-eval`, with the real nixpkgs lib.
{
  nixpkgsLib ? null,
  lib ? import (/. + nixpkgsLib + "/lib"),
}:
let
  evalWith = import ./eval.nix { inherit lib; };

  slackFile = "/run/secrets/aiops/slack-webhook-url";
  tokenFile = "/run/secrets/aiops/webhook-token";

  base = {
    services.aiops = {
      enable = true;
      demoApp.enable = true;
      slackWebhookUrlFile = slackFile;
      webhookTokenFile = tokenFile;
    };
  };
  withBase = extra: evalWith (lib.recursiveUpdate base extra);

  default = evalWith base;
  cfg = default.config;
  webhook = cfg.systemd.services.aiops-webhook;
  demo = cfg.systemd.services.aiops-demo-app;
  configFile = cfg.environment.etc."aiops/config.toml".source;
  settings = cfg.services.aiops.settings;
  am = cfg.services.prometheus.alertmanager;
  amReceiver = lib.head (lib.head am.configuration.receivers).webhook_configs;
  prom = cfg.services.prometheus;
  jobs = map (s: s.job_name) prom.scrapeConfigs;
  # The targets of a job ([] when there is no such job, so that a case fails rather than the run).
  jobTargets =
    scrapeConfigs: job:
    lib.concatMap (j: lib.concatMap (s: s.targets) j.static_configs) (
      lib.filter (j: j.job_name == job) scrapeConfigs
    );
  targetsOf = jobTargets prom.scrapeConfigs;

  # Prometheus' configuration as nixpkgs' prometheus module renders it (promConfig: null values and
  # _module dropped), for `promtool check config` in the runner. (`rules`, which it would add as
  # one more rule file, is not used here.)
  promConfigOf =
    c:
    let
      p = c.services.prometheus;
    in
    {
      alerting = { inherit (p) alertmanagers; };
      global = filterValidPrometheus p.globalConfig;
      remote_read = filterValidPrometheus p.remoteRead;
      remote_write = filterValidPrometheus p.remoteWrite;
      rule_files = lib.optionals (!p.enableAgentMode) p.ruleFiles;
      scrape_configs = filterValidPrometheus p.scrapeConfigs;
    };
  filterValidPrometheus =
    x:
    if lib.isAttrs x && !(lib.isDerivation x) then
      lib.mapAttrs (_: filterValidPrometheus) (
        lib.filterAttrs (n: v: n != "_module" && v != null) x
      )
    else if lib.isList x then
      map filterValidPrometheus x
    else
      x;

  check = name: ok: detail: {
    inherit name ok;
    detail = if ok then "" else detail;
  };
  expectEqual =
    name: actual: expected:
    check name (actual == expected) "expected ${builtins.toJSON expected}, got ${builtins.toJSON actual}";
  # A failed NixOS assertion whose message contains `needle`.
  expectAssertion =
    name: evaluated: needle:
    let
      hits = lib.filter (lib.hasInfix needle) evaluated.failedAssertions;
    in
    check name (
      hits != [ ]
    ) "expected a failed assertion mentioning ${needle}; failed assertions: ${builtins.toJSON evaluated.failedAssertions}";
  # Evaluation itself must fail (type error, unknown option); the runner also checks the message.
  expectEvalError =
    name: value:
    let
      r = builtins.tryEval (builtins.deepSeq value value);
    in
    check name (!r.success) "evaluation succeeded: ${builtins.toJSON r.value}";

  noSecrets = withBase {
    services.aiops = {
      slackWebhookUrlFile = null;
      webhookTokenFile = null;
    };
  };

  custom = withBase {
    services.aiops.allowedActions = {
      "zeta.service" = [ "restart" ];
      "alpha.service" = [
        "clear-cache"
        "restart"
      ];
      "cache-only.service" = [ "clear-cache" ];
    };
  };

  overridden = withBase {
    services.prometheus.port = 9191;
    services.prometheus.globalConfig.scrape_interval = "15s";
    services.prometheus.alertmanager.configuration = {
      route.receiver = "mine";
      receivers = [ { name = "mine"; } ];
    };
    services.grafana.enable = false;
    services.aiops.settings.remediation.cooldown_secs = 600;
  };

  unwired = withBase {
    services.aiops.prometheus.enable = false;
    services.aiops.alertmanager.enable = false;
    services.aiops.grafana.enable = false;
  };

  firewall = withBase { services.aiops.openFirewall = true; };

  # A host that already runs Prometheus, Alertmanager and Grafana, configured the way their NixOS
  # modules are usually configured, before aiops is added to it. Prometheus listens on IPv6
  # loopback only.
  hostAmConfiguration = {
    route = {
      receiver = "ops";
      group_by = [ "alertname" ];
      routes = [
        {
          receiver = "ops-pager";
          matchers = [ ''severity="page"'' ];
        }
      ];
    };
    receivers = [
      {
        name = "ops";
        webhook_configs = [ { url = "http://127.0.0.1:5001/ops"; } ];
      }
      {
        name = "ops-pager";
        webhook_configs = [ { url = "http://127.0.0.1:5001/pager"; } ];
      }
    ];
  };
  hostStackWith = amConfiguration: {
    services.prometheus = {
      enable = true;
      listenAddress = "[::1]";
      scrapeConfigs = [
        {
          job_name = "prometheus";
          static_configs = [ { targets = [ "[::1]:9090" ]; } ];
        }
        {
          job_name = "node";
          static_configs = [ { targets = [ "127.0.0.1:9100" ]; } ];
        }
      ];
    };
    services.prometheus.alertmanager = {
      enable = true;
      configuration = amConfiguration;
    };
    services.grafana = {
      enable = true;
      settings.security.secret_key = "$__file{/run/secrets/grafana/secret-key}";
      provision = {
        enable = true;
        datasources.settings.datasources = [
          {
            name = "Prometheus";
            uid = "host-prometheus";
            type = "prometheus";
            url = "http://[::1]:9090";
            isDefault = true;
          }
        ];
      };
    };
  };
  # The host's configuration and ours as separate modules, merged by the module system.
  hostWith =
    amConfiguration: extra:
    evalWith {
      imports = [
        base
        (hostStackWith amConfiguration)
        extra
      ];
    };
  withHost = hostWith hostAmConfiguration;
  existingHost = withHost { };
  host = existingHost.config;
  hostAm = host.services.prometheus.alertmanager;
  hostJobs = map (j: j.job_name) host.services.prometheus.scrapeConfigs;
  hostDatasources = host.services.grafana.provision.datasources.settings.datasources;

  # The existing host with services of its own watched: nginx and PostgreSQL through their
  # exporters (targets the module scrapes), and node_exporter, which the host already scrapes as
  # job "node" (no targets).
  watchNginx = {
    unit = "nginx.service";
    job = "nginx";
    targets = [ "127.0.0.1:9113" ];
    profiles = [ "nginx-exporter" ];
    allowedActions = [ "restart" ];
    thresholds.errorRatio = 0.1;
  };
  watchPostgresql = {
    unit = "postgresql.service";
    job = "postgres";
    targets = [ "127.0.0.1:9187" ];
    scrapeInterval = "15s";
    profiles = [ "postgres-exporter" ];
    allowedActions = [
      "clear-cache"
      "restart"
    ];
    thresholds = {
      memoryNearMax = 0.95;
      crashLoopRestarts = 5;
      latencyP99Seconds = 2;
      forSecs = 60;
    };
  };
  watchServices = {
    nginx = watchNginx;
    postgresql = watchPostgresql;
    node.job = "node";
  };
  watchedWith = extra: withHost (lib.recursiveUpdate { services.aiops.watch = watchServices; } extra);
  watchedHost = watchedWith { };
  wcfg = watchedHost.config;
  wprom = wcfg.services.prometheus;
  wsettings = wcfg.services.aiops.settings;
  wConfigFile = wcfg.environment.etc."aiops/config.toml".source;
  wRulesFile = lib.last wprom.ruleFiles;
  wJob = job: lib.findFirst (j: j.job_name == job) null wprom.scrapeConfigs;
  # One watched service on the existing host, for the refusals.
  watchOne = w: withHost { services.aiops.watch.web = w; };

  disabled = evalWith { services.aiops.enable = false; };

  results = [
    (expectEqual "the default configuration passes every assertion" default.failedAssertions [ ])

    # Units: the package's unit files are the source of truth; NixOS adds only what it must.
    (check "systemd.packages ships the package's unit files" (lib.elem cfg.services.aiops.package cfg.systemd.packages) "systemd.packages = ${builtins.toJSON cfg.systemd.packages}")
    (expectEqual "aiops-webhook.service is wanted by multi-user.target" webhook.wantedBy [
      "multi-user.target"
    ])
    (expectEqual "aiops-webhook.service gets both secrets with LoadCredential" webhook.serviceConfig.LoadCredential [
      "slack-webhook-url:${slackFile}"
      "webhook-token:${tokenFile}"
    ])
    (expectEqual "aiops-webhook.service restarts when the configuration changes" webhook.restartTriggers [
      configFile
    ])
    (check "the module defines no ExecStart of its own (the unit file has it)" (
      !(webhook.serviceConfig ? ExecStart) && !(demo.serviceConfig ? ExecStart)
    ) "serviceConfig: ${builtins.toJSON webhook.serviceConfig}")
    (expectEqual "aiops-demo-app.service is wanted by multi-user.target" demo.wantedBy [
      "multi-user.target"
    ])
    (expectEqual "aiops-demo-app.service restarts when the configuration changes" demo.restartTriggers [
      configFile
    ])
    (check "the demo app is not wanted unless demoApp.enable" (
      !((withBase { services.aiops.demoApp.enable = false; }).config.systemd.services ? aiops-demo-app)
    ) "aiops-demo-app is still defined")

    # The configuration file.
    (expectEqual "the configuration is rendered from settings to /etc/aiops/config.toml" configFile.value settings)
    (expectEqual "settings: operators group" settings.webhook.operators_group "aiops-operators")
    (expectEqual "settings: remediation.allowed comes from allowedActions" settings.remediation.allowed {
      "aiops-demo-app.service" = [
        "restart"
        "clear-cache"
      ];
    })
    (expectEqual "settings: Prometheus and Alertmanager URLs follow their modules" [
      settings.prometheus.url
      settings.alertmanager.url
      overridden.config.services.aiops.settings.prometheus.url
    ] [ "http://127.0.0.1:9090" "http://127.0.0.1:9093" "http://127.0.0.1:9191" ])
    (check "the configuration names no secret (neither value nor path)" (
      !(lib.hasInfix "/run/secrets" (builtins.toJSON settings))
    ) (builtins.toJSON settings))

    # Users and groups.
    (check "the service user aiops is a system user in group aiops" (
      cfg.users.users.aiops.isSystemUser && cfg.users.users.aiops.group == "aiops" && cfg.users.groups ? aiops
    ) (builtins.toJSON cfg.users.users.aiops))
    (check "the operators group is created" (cfg.users.groups ? aiops-operators) (builtins.toJSON (lib.attrNames cfg.users.groups)))
    (check "operatorsGroup renames the group everywhere" (
      let
        c = (withBase { services.aiops.operatorsGroup = "sre"; }).config;
      in
      c.users.groups ? sre && c.services.aiops.settings.webhook.operators_group == "sre"
    ) "group sre missing or not rendered")

    # Confinement.
    (check "polkit is enabled" cfg.security.polkit.enable "security.polkit.enable is false")
    (check "the polkit rule lets user aiops restart exactly the allowed units" (
      lib.hasInfix ''["aiops-demo-app.service"].indexOf(action.lookup("unit")) >= 0'' cfg.security.polkit.extraConfig
      && lib.hasInfix ''subject.user === "aiops"'' cfg.security.polkit.extraConfig
      && lib.hasInfix ''action.lookup("verb") === "restart"'' cfg.security.polkit.extraConfig
      && lib.hasInfix ''action.id === "org.freedesktop.systemd1.manage-units"'' cfg.security.polkit.extraConfig
      # one grant and nothing else
      && lib.length (lib.splitString "polkit.Result." cfg.security.polkit.extraConfig) == 2
    ) cfg.security.polkit.extraConfig)
    (check "only units allowed \"restart\" enter the polkit rule (the demo app's from its watch entry), sorted" (
      lib.hasInfix ''["aiops-demo-app.service","alpha.service","zeta.service"].indexOf('' custom.config.security.polkit.extraConfig
    ) custom.config.security.polkit.extraConfig)
    (expectEqual "custom allowedActions pass the assertions" custom.failedAssertions [ ])
    (expectEqual "custom allowedActions reach remediation.allowed unchanged, joined by the demo app's watch entry" custom.config.services.aiops.settings.remediation.allowed (custom.config.services.aiops.allowedActions // {
      "aiops-demo-app.service" = [
        "restart"
        "clear-cache"
      ];
    }))

    # Prometheus.
    (check "a Prometheus of ours is enabled on loopback and evaluates every 5 s, its global scrape interval left alone" (
      prom.enable
      && prom.listenAddress == "127.0.0.1"
      && filterValidPrometheus prom.globalConfig == { evaluation_interval = "5s"; }
    ) (builtins.toJSON (filterValidPrometheus prom.globalConfig)))
    (expectEqual "Prometheus scrapes the receiver, itself, the demo app and Alertmanager, as aiops-* jobs" (lib.sort lib.lessThan jobs) [
      "aiops-alertmanager"
      "aiops-demo-app"
      "aiops-prometheus"
      "aiops-webhook"
    ])
    (check "every job of ours scrapes every 5 s (timeout 4 s) by itself" (
      lib.all (j: j.scrape_interval == "5s" && j.scrape_timeout == "4s") prom.scrapeConfigs
    ) (builtins.toJSON (filterValidPrometheus prom.scrapeConfigs)))
    (expectEqual "scrape targets are the listen addresses" (map targetsOf [
      "aiops-demo-app"
      "aiops-webhook"
    ]) [ [ "127.0.0.1:8080" ] [ "127.0.0.1:9095" ] ])
    (expectEqual "Prometheus loads the packaged rules" prom.ruleFiles [
      "${cfg.services.aiops.package}/share/aiops/prometheus/rules.yml"
    ])
    (expectEqual "Prometheus sends alerts to the local Alertmanager" prom.alertmanagers [
      { static_configs = [ { targets = [ "127.0.0.1:9093" ]; } ]; }
    ])

    # Alertmanager.
    (check "Alertmanager is enabled on loopback" (am.enable && am.listenAddress == "127.0.0.1") "enable=${lib.boolToString am.enable} listenAddress=${am.listenAddress}")
    (expectEqual "Alertmanager posts to the receiver" amReceiver.url "http://127.0.0.1:9095/")
    (expectEqual "Alertmanager reads the bearer token from its own credential" amReceiver.http_config.authorization {
      type = "Bearer";
      credentials_file = "/run/credentials/alertmanager.service/webhook-token";
    })
    (expectEqual "alertmanager.service loads the token file as that credential" cfg.systemd.services.alertmanager.serviceConfig.LoadCredential [
      "webhook-token:${tokenFile}"
    ])
    (expectEqual "Alertmanager runs without clustering on one host (no private address needed)" am.extraFlags [
      "--cluster.listen-address="
    ])
    (expectEqual "with cluster peers the module leaves Alertmanager's clustering alone" (withBase {
      services.prometheus.alertmanager.clusterPeers = [ "10.0.0.2" ];
    }).config.services.prometheus.alertmanager.extraFlags [ ])

    # Grafana.
    (check "Grafana gets the Prometheus datasource and the dashboards folder" (
      cfg.services.grafana.enable
      && (lib.head cfg.services.grafana.provision.datasources.settings.datasources).url == "http://127.0.0.1:9090"
      && (lib.head cfg.services.grafana.provision.dashboards.settings.providers).options.path == "${cfg.services.aiops.package}/share/aiops/grafana/dashboards"
    ) (builtins.toJSON cfg.services.grafana.provision))
    (check "Grafana's secret key comes from a generated credential, not the store" (
      cfg.services.grafana.settings.security.secret_key == "$__file{/run/credentials/grafana.service/secret-key}"
      && cfg.systemd.services.grafana.serviceConfig.LoadCredential == [ "secret-key:/var/lib/aiops-grafana/secret-key" ]
      && lib.elem "grafana.service" cfg.systemd.services.aiops-grafana-secret.requiredBy
    ) (builtins.toJSON cfg.systemd.services.grafana.serviceConfig))

    # Without secrets.
    (expectEqual "no secrets configured: no LoadCredential" noSecrets.config.systemd.services.aiops-webhook.serviceConfig.LoadCredential [ ])
    (check "no token: Alertmanager sends no Authorization header" (
      !((lib.head (lib.head noSecrets.config.services.prometheus.alertmanager.configuration.receivers).webhook_configs) ? http_config)
      && !(noSecrets.config.systemd.services ? alertmanager)
    ) "http_config or an alertmanager override is still there")

    # Every default can be overridden.
    (expectEqual "the user's values win over the module's defaults (their Alertmanager route and receiver kept, ours added)" [
      overridden.config.services.prometheus.globalConfig.scrape_interval
      overridden.config.services.prometheus.alertmanager.configuration.route.receiver
      overridden.config.services.grafana.enable
      overridden.config.services.aiops.settings.remediation.cooldown_secs
      (map (r: r.name) overridden.config.services.prometheus.alertmanager.configuration.receivers)
    ] [ "15s" "mine" false 600 [ "mine" "aiops" ] ])
    (check "a disabled Grafana gets no unit overrides from us" (
      !(overridden.config.systemd.services ? grafana) && !(overridden.config.systemd.services ? aiops-grafana-secret)
    ) "grafana overrides still defined")
    (check "the wiring can be switched off" (
      !unwired.config.services.prometheus.enable
      && !unwired.config.services.prometheus.alertmanager.enable
      && !unwired.config.services.grafana.enable
      && unwired.config.services.prometheus.scrapeConfigs == [ ]
    ) "prometheus/alertmanager/grafana still enabled")
    (expectEqual "openFirewall opens the receiver's and the demo app's ports" firewall.config.networking.firewall.allowedTCPPorts [
      8080
      9095
    ])
    (expectEqual "a disabled module generates nothing" [
      disabled.config.systemd.services
      disabled.config.security.polkit.extraConfig
      disabled.config.environment.etc
    ] [ { } "" { } ])

    # A host that already runs Prometheus, Alertmanager and Grafana.
    (expectEqual "existing host: the configuration passes every assertion (the real modules' included)" existingHost.failedAssertions [ ])
    (expectEqual "existing host: its jobs are kept and ours added under names of their own" hostJobs [
      "prometheus"
      "node"
      "aiops-webhook"
      "aiops-prometheus"
      "aiops-demo-app"
      "aiops-alertmanager"
    ])
    (check "existing host: no two scrape jobs share a name (promtool refuses that)" (
      lib.length hostJobs == lib.length (lib.unique hostJobs)
    ) (builtins.toJSON hostJobs))
    (expectEqual "existing host: its global intervals are its own (the module sets none)" (filterValidPrometheus host.services.prometheus.globalConfig) { })
    (check "existing host: its jobs keep Prometheus' default interval, ours scrape every 5 s" (
      lib.all (
        j: if lib.hasPrefix "aiops-" j.job_name then j.scrape_interval == "5s" else j.scrape_interval == null
      ) host.services.prometheus.scrapeConfigs
    ) (builtins.toJSON (filterValidPrometheus host.services.prometheus.scrapeConfigs)))
    (expectEqual "existing host: listen addresses and clustering are the host's" [
      host.services.prometheus.listenAddress
      hostAm.listenAddress
      hostAm.extraFlags
    ] [ "[::1]" "" [ ] ])
    (expectEqual "existing host: an IPv6 listen address is reached as [::1]:9090" [
      host.services.aiops.settings.prometheus.url
      (jobTargets host.services.prometheus.scrapeConfigs "aiops-prometheus")
      (lib.last hostDatasources).url
      host.services.aiops.settings.alertmanager.url
    ] [ "http://[::1]:9090" [ "[::1]:9090" ] "http://[::1]:9090" "http://127.0.0.1:9093" ])
    (expectEqual "existing host: its Alertmanager route and receivers are kept, ours added" [
      hostAm.configuration.route.receiver
      hostAm.configuration.route.group_by
      (map (r: r.name) hostAm.configuration.receivers)
      (map (r: r.receiver) hostAm.configuration.route.routes)
    ] [ "ops" [ "alertname" ] [ "ops" "ops-pager" "aiops" ] [ "aiops" "ops-pager" ] ])
    (expectEqual "existing host: the route to aiops comes first, matches our services and lets the host's routes see them too" (lib.head hostAm.configuration.route.routes) {
      receiver = "aiops";
      matchers = [ ''service=~"aiops-demo-app|aiops-webhook"'' ];
      continue = true;
      group_by = [
        "alertname"
        "service"
      ];
      group_wait = "5s";
      group_interval = "15s";
      repeat_interval = "1h";
    })
    (expectEqual "existing host: our receiver posts to aiops with the token credential" (lib.last hostAm.configuration.receivers) (lib.head am.configuration.receivers))
    (expectEqual "existing host: a configuration of the host's at mkDefault priority is merged with too" (map (r: r.name) (hostWith (lib.mkDefault hostAmConfiguration) { }).config.services.prometheus.alertmanager.configuration.receivers) [ "ops" "ops-pager" "aiops" ])
    (expectEqual "existing host: Prometheus gets our Alertmanager as a target once, also when it already sends to it" [
      host.services.prometheus.alertmanagers
      (withHost {
        services.prometheus.alertmanagers = [ { static_configs = [ { targets = [ "127.0.0.1:9093" ]; } ]; } ];
      }).config.services.prometheus.alertmanagers
    ] [
      [ { static_configs = [ { targets = [ "127.0.0.1:9093" ]; } ]; } ]
      [ { static_configs = [ { targets = [ "127.0.0.1:9093" ]; } ]; } ]
    ])
    (expectEqual "existing host: Grafana keeps its secret key; no key of ours is generated" [
      host.services.grafana.settings.security.secret_key
      (host.systemd.services ? aiops-grafana-secret)
      (host.systemd.services.grafana.serviceConfig.LoadCredential or null)
    ] [ "$__file{/run/secrets/grafana/secret-key}" false null ])
    (expectEqual "existing host: its default datasource stays the only default; ours is provisioned beside it" (map (d: [
      d.uid
      (d.isDefault or false)
    ]) hostDatasources) [ [ "host-prometheus" true ] [ "aiops-prometheus" false ] ])
    (expectEqual "a Grafana of ours without another default makes our datasource the default" (lib.head cfg.services.grafana.provision.datasources.settings.datasources).isDefault true)
    (expectAssertion "defaultDatasource = true on a host with its own default is refused (Grafana would not start)" (withHost {
      services.aiops.grafana.defaultDatasource = true;
    }) "more than one provisioned Grafana datasource is the default")
    (expectAssertion "existing host: a Grafana of the host's without a secret key meets Grafana's own assertion" (withHost {
      services.grafana.settings.security.secret_key = lib.mkForce null;
    }) "Grafana's secret key")
    (expectAssertion "existing host: an Alertmanager configText cannot be merged into and is refused" (hostWith null {
      services.prometheus.alertmanager.configText = "route: { receiver: ops }\nreceivers: [ { name: ops } ]\n";
    }) "configText is set, so the aiops receiver and its route cannot be merged")
    (expectAssertion "existing host: a configuration set with mkForce, without our receiver, is refused" (withHost {
      services.prometheus.alertmanager.configuration = lib.mkForce {
        route.receiver = "ops";
        receivers = [ { name = "ops"; } ];
      };
    }) ''has no receiver "aiops"'')
    (expectAssertion "existing host: a receiver of the host's named aiops is refused" (hostWith (hostAmConfiguration // {
      receivers = hostAmConfiguration.receivers ++ [ { name = "aiops"; } ];
    }) { }) ''already has a receiver named "aiops"'')
    (expectAssertion "existing host: Grafana provisioning from a path cannot take our datasource" (withHost {
      services.grafana.provision.datasources = lib.mkForce { path = "/etc/grafana-datasources"; };
    }) "provision.datasources.path or dashboards.path is set")
    (expectEqual "a wildcard IPv6 listen address is reached on [::1]" (withBase {
      services.prometheus.listenAddress = "[::]";
    }).config.services.aiops.settings.prometheus.url "http://[::1]:9090")
    (expectAssertion "a Prometheus listenAddress with a port meets the real module's assertion" (withBase {
      services.prometheus.listenAddress = "127.0.0.1:9090";
    }) "Do not specify the port for Prometheus to listen on")

    # Watched services (services.aiops.watch).
    (expectEqual "watch: the demo app is the watched service aiops-demo-app (demo_watch() in config.rs)" settings.watch {
      aiops-demo-app = {
        unit = "aiops-demo-app.service";
        job = "aiops-demo-app";
        targets = [ ];
        profiles = [ "aiops-demo" ];
        allowed_actions = [
          "restart"
          "clear-cache"
        ];
        alert_rules = false;
        thresholds = {
          error_ratio = 0.05;
          latency_p99_seconds = 1.0;
          crash_loop_restarts = 3;
          memory_near_max = 0.9;
          for_secs = 30;
        };
      };
    })
    (check "watch: without the demo app and without entries, no [watch] is rendered" (
      !((withBase { services.aiops.demoApp.enable = false; }).config.services.aiops.settings ? watch)
    ) "settings.watch is rendered")
    (expectEqual "watch: two watched services on an existing host pass every assertion" watchedHost.failedAssertions [ ])
    (expectEqual "watch: entries render into settings.watch in the config file's schema, nulls left out" [
      wsettings.watch.nginx
      wsettings.watch.node
      (lib.attrNames wsettings.watch)
    ] [
      {
        unit = "nginx.service";
        job = "nginx";
        targets = [ "127.0.0.1:9113" ];
        profiles = [ "nginx-exporter" ];
        allowed_actions = [ "restart" ];
        alert_rules = true;
        thresholds = {
          error_ratio = 0.1;
          latency_p99_seconds = 1.0;
          crash_loop_restarts = 3;
          memory_near_max = 0.9;
          for_secs = 30;
        };
      }
      {
        job = "node";
        targets = [ ];
        profiles = [ ];
        allowed_actions = [ ];
        alert_rules = true;
        thresholds = {
          error_ratio = 0.05;
          latency_p99_seconds = 1.0;
          crash_loop_restarts = 3;
          memory_near_max = 0.9;
          for_secs = 30;
        };
      }
      [ "aiops-demo-app" "nginx" "node" "postgresql" ]
    ])
    (expectEqual "watch: thresholds render under their snake_case names" wsettings.watch.postgresql.thresholds {
      error_ratio = 0.05;
      latency_p99_seconds = 2;
      crash_loop_restarts = 5;
      memory_near_max = 0.95;
      for_secs = 60;
    })
    (expectEqual "watch: a scrape job per entry with targets, after the host's and ours; none for a job the host scrapes" (map (j: j.job_name) wprom.scrapeConfigs) [
      "prometheus"
      "node"
      "aiops-webhook"
      "aiops-prometheus"
      "aiops-demo-app"
      "aiops-alertmanager"
      "nginx"
      "postgres"
    ])
    (expectEqual "watch: each job scrapes its targets at its own interval (timeout: Prometheus caps the global one at it)" (map (job: filterValidPrometheus (wJob job)) [ "nginx" "postgres" ]) (map (filterValidPrometheus) [
      ((wJob "nginx") // { scrape_interval = "5s"; scrape_timeout = null; static_configs = [ { targets = [ "127.0.0.1:9113" ]; labels = { }; } ]; })
      ((wJob "postgres") // { scrape_interval = "15s"; scrape_timeout = null; static_configs = [ { targets = [ "127.0.0.1:9187" ]; labels = { }; } ]; })
    ]))
    (expectEqual "watch: the host's own jobs are unchanged" (map (j: filterValidPrometheus j) (lib.take 2 wprom.scrapeConfigs)) (map (j: filterValidPrometheus j) (lib.take 2 host.services.prometheus.scrapeConfigs)))
    (expectEqual "watch: Prometheus loads the packaged rules and the watched services' generated rule file" [
      (lib.head wprom.ruleFiles)
      (lib.length wprom.ruleFiles)
      wRulesFile.name
    ] [ "${wcfg.services.aiops.package}/share/aiops/prometheus/rules.yml" 2 "aiops-watch-rules.yml" ])
    (expectEqual "watch: the rule file is built by running `aiops rules` on the rendered configuration file" wRulesFile.buildCommand ''
      ${wcfg.services.aiops.package}/bin/aiops rules --config ${wConfigFile} > $out
    '')
    (expectEqual "watch: no generated rule file while no entry wants alert rules (the demo app's are rules.yml)" (lib.length host.services.prometheus.ruleFiles) 1)
    (expectEqual "watch: the Alertmanager route matches the watched services' service labels" (lib.head wcfg.services.prometheus.alertmanager.configuration.route.routes).matchers [
      ''service=~"aiops-demo-app|nginx|node|postgresql|aiops-webhook"''
    ])
    (expectEqual "watch: the watched units' actions join the allow-list (in the actions' order, as the Rust side merges them)" wsettings.remediation.allowed {
      "aiops-demo-app.service" = [
        "restart"
        "clear-cache"
      ];
      "nginx.service" = [ "restart" ];
      "postgresql.service" = [
        "restart"
        "clear-cache"
      ];
    })
    (check "watch: the polkit rule lets aiops restart the watched units allowed restart" (
      lib.hasInfix ''["aiops-demo-app.service","nginx.service","postgresql.service"].indexOf(action.lookup("unit")) >= 0'' wcfg.security.polkit.extraConfig
    ) wcfg.security.polkit.extraConfig)
    (expectEqual "watch: allowedActions and a watch entry for one unit are merged" (watchedWith {
      services.aiops.allowedActions."nginx.service" = [ "clear-cache" ];
    }).config.services.aiops.settings.remediation.allowed."nginx.service" [ "restart" "clear-cache" ])
    (expectEqual "watch: the demo app's entry can be overridden (actions, alert rules)" (
      let
        c = (withBase {
          services.aiops.watch.aiops-demo-app = {
            allowedActions = [ "restart" ];
            alertRules = true;
          };
        }).config;
      in
      [
        c.services.aiops.settings.remediation.allowed
        (lib.length c.services.prometheus.ruleFiles)
        (lib.hasInfix ''["aiops-demo-app.service"]'' c.security.polkit.extraConfig)
      ]
    ) [ { "aiops-demo-app.service" = [ "restart" ]; } 2 true ])
    (check "watch: a demo app whose entry has no job is not scraped" (
      !(lib.elem "aiops-demo-app" (map (j: j.job_name) (withBase { services.aiops.watch.aiops-demo-app.job = null; }).config.services.prometheus.scrapeConfigs))
    ) "aiops-demo-app is still scraped")
    (expectAssertion "watch: a target that is not host:port is refused" (watchOne {
      job = "web";
      targets = [ "127.0.0.1" ];
    }) ''services.aiops.watch.web.targets has "127.0.0.1", which is not host:port'')
    (expectAssertion "watch: a target with a URL instead of host:port is refused" (watchOne {
      job = "web";
      targets = [ "http://127.0.0.1:8000/metrics" ];
    }) "services.aiops.watch.web.targets has")
    (expectAssertion "watch: a job name the host already scrapes, with targets, is refused" (watchOne {
      job = "node";
      targets = [ "127.0.0.1:9100" ];
    }) "services.aiops.watch.web.job = \"node\": the host already has a scrape job of that name")
    (expectAssertion "watch: a job name of ours (aiops-*) is refused" (watchOne {
      job = "aiops-webhook";
      targets = [ "127.0.0.1:9095" ];
    }) "services.aiops.watch.web.job = \"aiops-webhook\": job names starting with aiops- (and the demo app's job) are the module's own scrape jobs")
    (expectAssertion "watch: the demo app's job, renamed, is ours too" (withBase {
      services.aiops.watch = {
        aiops-demo-app.job = "demo";
        web = {
          job = "demo";
          targets = [ "127.0.0.1:8000" ];
        };
      };
    }) "services.aiops.watch.web.job = \"demo\": job names starting with aiops- (and the demo app's job)")
    (expectAssertion "watch: two entries with targets under one job are refused" (withHost {
      services.aiops.watch = {
        a = { job = "web"; targets = [ "127.0.0.1:1" ]; };
        b = { job = "web"; targets = [ "127.0.0.1:2" ]; };
      };
    }) "another watched service with targets has the same job")
    (expectAssertion "watch: allowedActions without a unit are refused" (watchOne {
      job = "web";
      allowedActions = [ "restart" ];
    }) "services.aiops.watch.web.allowedActions is set but services.aiops.watch.web.unit is not")
    (expectAssertion "watch: targets without a job are refused" (watchOne {
      targets = [ "127.0.0.1:8000" ];
    }) "services.aiops.watch.web.targets lists targets but services.aiops.watch.web.job is not set")
    (expectAssertion "watch: a unit that is not a service name is refused" (watchOne {
      unit = "web.service; reboot";
    }) "services.aiops.watch.web.unit must be a systemd service name")
    (expectAssertion "watch: a name that cannot be a service label is refused" (withHost {
      services.aiops.watch."my app".unit = "myapp.service";
    }) "a watched service's name must be 1 to 64 letters")
    (expectAssertion "watch: a threshold out of its range is refused" (watchOne {
      unit = "web.service";
      thresholds.errorRatio = 5;
    }) "services.aiops.watch.web.thresholds: errorRatio and memoryNearMax must be above 0 and at most 1")
    (expectEvalError "watch: an unknown action is a type error" (watchOne {
      unit = "web.service";
      allowedActions = [ "reboot" ];
    }).config.services.aiops.settings.watch)
    (expectEvalError "watch: crashLoopRestarts = 0 is a type error" (watchOne {
      unit = "web.service";
      thresholds.crashLoopRestarts = 0;
    }).config.services.aiops.settings.watch)

    # Mistakes the module must catch.
    (expectAssertion "a secret file in the Nix store is refused" (withBase {
      services.aiops.slackWebhookUrlFile = "${builtins.storeDir}/00000000000000000000000000000000-slack-url";
    }) "slackWebhookUrlFile must be an absolute path outside the Nix store")
    (expectAssertion "a relative secret path is refused" (withBase {
      services.aiops.webhookTokenFile = "secrets/token";
    }) "webhookTokenFile must be an absolute path")
    (expectEvalError "a Nix path literal (which would be copied to the store) is a type error" (withBase {
      services.aiops.slackWebhookUrlFile = ./cases.nix;
    }).config.systemd.services.aiops-webhook.serviceConfig.LoadCredential)
    (expectAssertion "settings.remediation.allowed set apart from allowedActions is refused" (withBase {
      services.aiops.settings.remediation.allowed."other.service" = [ "restart" ];
    }) "set services.aiops.allowedActions rather than settings.remediation.allowed")
    (expectAssertion "an allow-list key that is not a service name is refused" (withBase {
      services.aiops.allowedActions."x.service; reboot" = [ "restart" ];
    }) "every key must be a systemd service name")
    (expectAssertion "an allow-list entry without actions is refused" (withBase {
      services.aiops.allowedActions."idle.service" = [ ];
    }) "a unit lists no actions")
    (expectAssertion "a state_dir the hardened unit cannot write is refused" (withBase {
      services.aiops.settings.state_dir = "/srv/aiops";
    }) "state_dir must stay /var/lib/aiops")
    (expectAssertion "a control socket outside /run/aiops is refused" (withBase {
      services.aiops.settings.webhook.control_socket = "/tmp/aiops.sock";
    }) "control_socket must be inside /run/aiops")
    (expectEvalError "an unknown action is a type error" (withBase {
      services.aiops.allowedActions."x.service" = [ "reboot" ];
    }).config.services.aiops.allowedActions)
    (expectEvalError "a settings value of the wrong type is a type error" (withBase {
      services.aiops.settings.webhook.listen = 9095;
    }).config.services.aiops.settings.webhook.listen)
    (expectEvalError "a misspelled option (slackWebhookURLFile) fails evaluation" (withBase {
      services.aiops.slackWebhookURLFile = slackFile;
    }).config.services.aiops.enable)
  ];
in
{
  inherit results;

  # What the runner checks with real programs.
  artifacts = {
    settings = configFile.value;
    # A key the Rust side does not know: the real parser must refuse it (the validator can fail).
    settingsWithUnknownKey = lib.recursiveUpdate configFile.value { webhook.listen_addr = "127.0.0.1:1"; };
    settingsCustom = custom.config.environment.etc."aiops/config.toml".source.value;
    polkitExtraConfig = cfg.security.polkit.extraConfig;
    polkitCustomExtraConfig = custom.config.security.polkit.extraConfig;
    alertmanager = am.configuration;
    grafanaDatasources = cfg.services.grafana.provision.datasources.settings.datasources;
    grafanaProviders = cfg.services.grafana.provision.dashboards.settings.providers;
    prometheus = promConfigOf cfg;
    # The existing host's, as their modules would render and check them.
    hostPrometheus = promConfigOf host;
    hostAlertmanager = hostAm.configuration;
    # Where Alertmanager sends an alert (`amtool config routes test`): ours reach aiops and the
    # host's routes that match them; the host's own reach what they reached before aiops came.
    routing = {
      own = [
        {
          labels = {
            alertname = "HighErrorRatio";
            service = "aiops-demo-app";
            severity = "critical";
          };
          receivers = [ "aiops" ];
        }
      ];
      watch = [
        {
          labels = {
            alertname = "UnitFailed";
            service = "nginx";
            unit = "nginx.service";
            severity = "critical";
          };
          receivers = [ "aiops" ];
        }
        {
          labels = {
            alertname = "TargetDown";
            service = "postgresql";
            severity = "page";
          };
          receivers = [
            "aiops"
            "ops-pager"
          ];
        }
        {
          labels = {
            alertname = "TargetDown";
            service = "redis";
            severity = "critical";
          };
          receivers = [ "ops" ];
        }
      ];
      host = [
        {
          labels = {
            alertname = "HighErrorRatio";
            service = "aiops-demo-app";
            severity = "critical";
          };
          receivers = [ "aiops" ];
        }
        {
          labels = {
            alertname = "ReceiverDown";
            service = "aiops-webhook";
            severity = "page";
          };
          receivers = [
            "aiops"
            "ops-pager"
          ];
        }
        {
          labels = {
            alertname = "DiskFull";
            severity = "page";
          };
          receivers = [ "ops-pager" ];
        }
        {
          labels.alertname = "NodeDown";
          receivers = [ "ops" ];
        }
      ];
    };
    hostGrafanaDatasources = hostDatasources;
    # The existing host with watched services: its configuration file, the rule file the module
    # would build from it (the runner runs the same command on the same file), its Prometheus and
    # Alertmanager configurations and polkit rule.
    watchSettings = wConfigFile.value;
    watchConfigPath = "${wConfigFile}";
    watchRulesPath = "${wRulesFile}";
    watchRulesCommand = wRulesFile.buildCommand;
    watchPrometheus = promConfigOf wcfg;
    watchAlertmanager = wcfg.services.prometheus.alertmanager.configuration;
    polkitWatchExtraConfig = wcfg.security.polkit.extraConfig;
    packagePath = "${cfg.services.aiops.package}";
  };
}
