# services.aiops: the aiops loop on one NixOS host.
#
# - The systemd units come from the package (`systemd.packages`), the same files the Debian VM test
#   installs; this module only adds what NixOS must: wantedBy, restart triggers, credentials.
# - `settings` (RFC 42) renders /etc/aiops/config.toml, exactly aiops_core::config::Config
#   (deny_unknown_fields: a key the programs do not know fails them at start).
# - Secrets are paths to files outside the store, handed over with LoadCredential.
# - Approvals are confined by polkit: the service user may only restart the allow-listed units.
# - `watch.<name>` declares the services the loop watches, in one place: it renders into
#   settings.watch (the config file's [watch.NAME]), and from it come their scrape jobs, their
#   alert rules (built by `aiops rules` from the rendered file), their allowed actions (into the
#   allow-list and the polkit rule) and the Alertmanager route's matchers.
# - Prometheus, Alertmanager and Grafana are wired each behind its own `enable`, as a good citizen
#   of a host that may already run them: our scrape jobs are named `aiops-*` and carry their own
#   intervals, our Alertmanager receiver and route are merged into the host's configuration, and
#   what every job or user of a service shares (global intervals, listen addresses, Grafana's
#   secret key and default datasource) is set only when this module is what enables the service.
{
  config,
  options,
  lib,
  pkgs,
  extendModules,
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
  grafanaCfg = config.services.grafana;

  # A host (no port) as a local client reaches it: the wildcards on loopback, an IPv6 address in
  # brackets. The Prometheus and Alertmanager modules take the address without its port
  # ("0.0.0.0", "[::1]"; Alertmanager's default "" means every interface).
  localHost =
    addr:
    if addr == "" || addr == "0.0.0.0" then
      "127.0.0.1"
    else if addr == "::" || addr == "[::]" then
      "[::1]"
    else if lib.hasInfix ":" addr && !lib.hasPrefix "[" addr then
      "[${addr}]"
    else
      addr;
  prometheusTarget = "${localHost promCfg.listenAddress}:${toString promCfg.port}";
  alertmanagerTarget = "${localHost amCfg.listenAddress}:${toString amCfg.port}";

  # Whether the host's own configuration enables a service (at normal priority), as opposed to
  # this module's `mkDefault true`. What every user of a shared service depends on (listen
  # addresses, global intervals, clustering, Grafana's secret key) is only set in the second case.
  enabledByHost = opt: opt.highestPrio < (mkDefault true).priority;
  prometheusIsOurs = !enabledByHost options.services.prometheus.enable;
  alertmanagerIsOurs = !enabledByHost options.services.prometheus.alertmanager.enable;
  grafanaIsOurs = !enabledByHost options.services.grafana.enable;

  # Our scrape jobs. Their names start with `aiops-` so that they cannot collide with a host's
  # (Prometheus refuses two jobs of one name); the rules and the diagnosis use the demo app's and
  # the receiver's. Each job has the 5 s interval the rules' `for:` and the documented 25 s
  # detection floor assume, without changing the host's global interval for its own jobs.
  scrapeJob = job_name: target: {
    inherit job_name;
    scrape_interval = "5s";
    scrape_timeout = "4s";
    static_configs = [ { targets = [ target ]; } ];
  };

  # Alertmanager. The receiver, and the route that sends our alerts to it.
  aiopsReceiver = {
    name = "aiops";
    webhook_configs = [
      (
        {
          url = "http://${webhookTarget}/";
          send_resolved = true;
        }
        // lib.optionalAttrs (cfg.webhookTokenFile != null) {
          # The token reaches the DynamicUser alertmanager as a systemd credential, never the store.
          http_config.authorization = {
            type = "Bearer";
            credentials_file = credentialPath "alertmanager.service" "webhook-token";
          };
        }
      )
    ];
  };
  aiopsTiming = {
    group_by = [
      "alertname"
      "service"
    ];
    group_wait = "5s";
    group_interval = "15s";
    repeat_interval = "1h";
  };
  aiopsInhibitRules = [
    {
      source_matchers = [ ''alertname = "TargetDown"'' ];
      target_matchers = [ ''alertname =~ "HighErrorRatio|HighLatencyP99|HighCpuUsage|MemoryGrowth"'' ];
      equal = [ "service" ];
    }
  ];
  # An Alertmanager of our own: the same routing as prometheus/alertmanager.yml (tests/nix-eval
  # checks they agree), every alert to the aiops receiver.
  ownAlertmanagerConfig = {
    route = {
      receiver = "aiops";
    }
    // aiopsTiming;
    receivers = [ aiopsReceiver ];
    inhibit_rules = aiopsInhibitRules;
  };
  # The route to aiops within a host's configuration: first among the top route's children,
  # matching only the services our rules watch, with `continue` so that the host's own routes
  # still see those alerts too.
  aiopsRoute = {
    receiver = "aiops";
    matchers = cfg.alertmanager.matchers;
    continue = true;
  }
  // aiopsTiming;
  # A host's configuration with ours merged in: our receiver, route and inhibit rule added to its.
  mergeIntoHost = host: host // {
    route = (host.route or { receiver = "aiops"; }) // {
      routes = [ aiopsRoute ] ++ (host.route.routes or [ ]);
    };
    receivers = (host.receivers or [ ]) ++ [ aiopsReceiver ];
    inhibit_rules = (host.inhibit_rules or [ ]) ++ aiopsInhibitRules;
  };
  # `services.prometheus.alertmanager.configuration` is of type `attrs`, whose definitions merge
  # shallowly (a second definition of `route` or `receivers` replaces the first), so ours cannot
  # simply be added beside the host's. Instead the host's configuration is read from an evaluation
  # of the same system without our contributions, and the merged result is defined just above
  # normal priority. A host that sets its configuration with mkForce keeps it; an assertion then
  # says that the aiops receiver is missing. Only the options read here are evaluated there (the
  # same lazy evaluation NixOS does for specialisations), at the cost of evaluating them twice.
  withoutOurs = extendModules {
    modules = [ { services.aiops.internal.contribute = lib.mkForce false; } ];
  };
  hostAlertmanagerConfig = withoutOurs.config.services.prometheus.alertmanager.configuration;
  hostHasAlertmanagerConfig = hostAlertmanagerConfig != null;
  receiverNames = c: map (r: r.name or null) (c.receivers or [ ]);
  hostAlertmanagerTargets = lib.concatMap (a: lib.concatMap (s: s.targets or [ ]) (a.static_configs or [ ])) withoutOurs.config.services.prometheus.alertmanagers;

  grafanaSecretKey = "$__file{${credentialPath "grafana.service" "secret-key"}}";
  datasourcesOf =
    grafana: if grafana.provision.datasources.settings == null then [ ] else grafana.provision.datasources.settings.datasources;
  # The host's own provisioned datasources (read without ours, like the Alertmanager configuration).
  otherDefaultDatasource = lib.any (d: d.isDefault or false) (datasourcesOf withoutOurs.config.services.grafana);

  # The watched services (services.aiops.watch) in the configuration file's schema
  # (aiops_core::config::WatchConfig, snake_case), nulls left out.
  renderWatch =
    _: w:
    lib.filterAttrs (_: v: v != null) {
      inherit (w)
        unit
        job
        targets
        profiles
        ;
      allowed_actions = w.allowedActions;
      alert_rules = w.alertRules;
      thresholds = {
        error_ratio = w.thresholds.errorRatio;
        latency_p99_seconds = w.thresholds.latencyP99Seconds;
        crash_loop_restarts = w.thresholds.crashLoopRestarts;
        memory_near_max = w.thresholds.memoryNearMax;
        for_secs = w.thresholds.forSecs;
      };
    };
  watched = lib.attrValues cfg.watch;
  watchedNames = lib.attrNames cfg.watch;

  # The effective allow-list, as the Rust side makes it (Config::merge_watched_actions):
  # allowedActions, joined by each watched unit's allowedActions; a list a watched unit joins is
  # in the actions' order (restart, clear-cache), the others stay as given.
  watchedActions = lib.zipAttrsWith (_: lib.concatLists) (
    map (w: { ${w.unit} = w.allowedActions; }) (lib.filter (w: w.unit != null && w.allowedActions != [ ]) watched)
  );
  allowedMerged =
    cfg.allowedActions
    // lib.mapAttrs (
      unit: extra:
      let
        all = (cfg.allowedActions.${unit} or [ ]) ++ extra;
      in
      lib.filter (a: lib.elem a all) actions
    ) watchedActions;

  restartableUnits = lib.attrNames (lib.filterAttrs (_: lib.elem "restart") allowedMerged);

  # The scrape jobs of the watched services that list targets (the others: the host scrapes the
  # job itself). Each keeps its own interval; its timeout is Prometheus' global one, capped by
  # Prometheus at the interval.
  watchScrapeJobs = map (w: {
    job_name = w.job;
    scrape_interval = w.scrapeInterval;
    static_configs = [ { targets = w.targets; } ];
  }) (lib.filter (w: w.targets != [ ] && w.job != null) watched);
  # The jobs the module itself names (aiops-*); a watched service's job cannot take one of them.
  ownJobNames = [
    "aiops-webhook"
    "aiops-prometheus"
    "aiops-alertmanager"
  ]
  ++ lib.optional (demoJob != null) demoJob;
  demoJob = if cfg.demoApp.enable then cfg.watch."aiops-demo-app".job or null else null;
  # The host's own scrape jobs (read without ours, like the Alertmanager configuration).
  hostJobNames = map (j: j.job_name) withoutOurs.config.services.prometheus.scrapeConfigs;

  # The alert rules of the watched services with alertRules = true, generated at build time by the
  # program itself from the rendered configuration file (`aiops rules`, crates/aiops/src/rules.rs).
  watchRules = lib.any (w: w.alertRules) watched;
  watchRulesFile = pkgs.runCommand "aiops-watch-rules.yml" { } ''
    ${cfg.package}/bin/aiops rules --config ${configFile} > $out
  '';

  # "host:port" as aiops_core::config::WatchConfig accepts it (and Prometheus scrapes it).
  targetOk =
    t:
    let
      m = builtins.match "([^[:space:]/]+):([1-9][0-9]{0,4})" t;
    in
    m != null && lib.toInt (lib.elemAt m 1) <= 65535;
  watchNameOk = name: builtins.match "[A-Za-z0-9][A-Za-z0-9_-]{0,63}" name != null;
  watchAssertions = lib.concatLists (
    lib.mapAttrsToList (name: w: [
      {
        assertion = watchNameOk name;
        message = "services.aiops.watch.${builtins.toJSON name}: a watched service's name must be 1 to 64 letters, digits, - or _, starting with a letter or digit (it becomes the alerts' service label).";
      }
      {
        assertion = w.unit == null || unitNameOk w.unit;
        message = "services.aiops.watch.${name}.unit must be a systemd service name like \"nginx.service\"; got ${builtins.toJSON w.unit}.";
      }
      {
        assertion = w.allowedActions == [ ] || w.unit != null;
        message = "services.aiops.watch.${name}.allowedActions is set but services.aiops.watch.${name}.unit is not: actions are carried out on that unit.";
      }
      {
        # The ranges aiops_core::config::WatchConfig accepts (the programs refuse the others).
        assertion =
          let
            t = w.thresholds;
            share = v: v > 0 && v <= 1;
          in
          share t.errorRatio && share t.memoryNearMax && t.latencyP99Seconds > 0 && t.forSecs <= 86400;
        message = "services.aiops.watch.${name}.thresholds: errorRatio and memoryNearMax must be above 0 and at most 1, latencyP99Seconds above 0, forSecs at most 86400; got ${builtins.toJSON w.thresholds}.";
      }
      {
        assertion = w.targets == [ ] || w.job != null;
        message = "services.aiops.watch.${name}.targets lists targets but services.aiops.watch.${name}.job is not set: the targets are scraped as that job.";
      }
      {
        assertion = lib.all targetOk w.targets;
        message = "services.aiops.watch.${name}.targets has ${lib.concatMapStringsSep ", " builtins.toJSON (lib.filter (t: !targetOk t) w.targets)}, which is not host:port (e.g. \"127.0.0.1:9113\").";
      }
      {
        assertion = w.targets == [ ] || w.job == null || !(lib.elem w.job ownJobNames || lib.hasPrefix "aiops-" w.job);
        message = "services.aiops.watch.${name}.job = ${builtins.toJSON w.job}: job names starting with aiops- (and the demo app's job) are the module's own scrape jobs; choose another job name.";
      }
      {
        assertion = w.targets == [ ] || w.job == null || !cfg.prometheus.enable || !lib.elem w.job hostJobNames;
        message = "services.aiops.watch.${name}.job = ${builtins.toJSON w.job}: the host already has a scrape job of that name (Prometheus refuses two); leave services.aiops.watch.${name}.targets empty to use the host's job, or choose another job name.";
      }
      {
        assertion = w.targets == [ ] || w.job == null || lib.count (v: v.targets != [ ] && v.job == w.job) watched == 1;
        message = "services.aiops.watch.${name}.job = ${builtins.toJSON w.job}: another watched service with targets has the same job; each scrape job needs its own name.";
      }
    ]) cfg.watch
  );

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
              default = allowedMerged;
              defaultText = literalExpression "config.services.aiops.allowedActions, joined by each services.aiops.watch.<name>.allowedActions";
              description = "Set {option}`services.aiops.allowedActions` or {option}`services.aiops.watch.<name>.allowedActions` instead: the polkit rule is generated from them.";
            };
            demo_app_url = mkOption {
              type = types.str;
              default = "http://${demoAppTarget}";
              defaultText = literalExpression ''"http://''${config.services.aiops.settings.demo_app.listen}"'';
              description = "Base URL of the demo app, for the `clear-cache` action.";
            };
          };
        };
      };
    };

    slackWebhookUrlFile = secretFileOption "the Slack incoming-webhook URL" "slack-webhook-url";

    webhookTokenFile = secretFileOption "the bearer token Alertmanager must present to the receiver" "webhook-token";

    demoApp.enable = mkEnableOption "the demo web service (`aiops-demo-app.service`) that the loop watches and can heal";

    allowedActions = mkOption {
      type = types.attrsOf (types.listOf (types.enum actions));
      default = { };
      example = {
        "myapp.service" = [ "restart" ];
      };
      description = ''
        Unit → actions an approval may carry out on it, besides those of the watched services
        ({option}`services.aiops.watch.<name>.allowedActions`, the demo app's included). Nothing
        else can ever run: both are rendered into `remediation.allowed` and into a polkit rule that
        lets the `aiops` user restart exactly the units allowed `restart`, and no other systemd
        action.
      '';
    };

    watch = mkOption {
      default = { };
      description = ''
        The services this host watches, by name (the name becomes the `service` label of their
        alerts). Rendered into `settings.watch` ({file}`/etc/aiops/config.toml`'s
        `[watch.NAME]`, see docs/CONFIGURATION.md). From each entry the module generates a scrape
        job (when it lists `targets`), its alert rules (`aiops rules`, when `alertRules`), its
        allowed actions (into the allow-list and the polkit rule) and the Alertmanager route's
        matchers. With {option}`services.aiops.demoApp.enable` the demo app is the entry
        `aiops-demo-app`; its values can be overridden.
      '';
      example = literalExpression ''
        {
          nginx = {
            unit = "nginx.service";
            job = "nginx";
            targets = [ "127.0.0.1:9113" ]; # services.prometheus.exporters.nginx
            profiles = [ "nginx-exporter" ];
            allowedActions = [ "restart" ];
          };
          postgresql = {
            unit = "postgresql.service";
            job = "postgres"; # a job the host already scrapes: no targets
            thresholds.memoryNearMax = 0.95;
          };
        }
      '';
      type = types.attrsOf (
        types.submodule {
          options = {
            unit = mkOption {
              type = types.nullOr types.str;
              default = null;
              example = "nginx.service";
              description = "The systemd service that runs it; without one, its own state is not read and no action can be taken on it.";
            };
            job = mkOption {
              type = types.nullOr types.str;
              default = null;
              example = "nginx";
              description = "The `job` label under which Prometheus scrapes it (or its exporter); without one, no Prometheus evidence and no TargetDown alert.";
            };
            targets = mkOption {
              type = types.listOf types.str;
              default = [ ];
              example = [ "127.0.0.1:9113" ];
              description = ''
                `host:port` targets scraped as a job named {option}`job`, which the module adds to
                {option}`services.prometheus.scrapeConfigs`. Empty: the host already scrapes the
                job (or the service has none). The job name must not be one of the host's own jobs
                or one of ours (`aiops-*`).
              '';
            };
            scrapeInterval = mkOption {
              type = types.str;
              default = "5s";
              description = "The scrape interval of the job the module adds for {option}`targets`.";
            };
            profiles = mkOption {
              type = types.listOf types.str;
              default = [ ];
              example = [ "nginx-exporter" ];
              description = "Evidence profiles that apply to it; empty: detected from the metric names Prometheus holds for the job.";
            };
            allowedActions = mkOption {
              type = types.listOf (types.enum actions);
              default = [ ];
              example = [ "restart" ];
              description = "Actions an approval may carry out on {option}`unit`; they join the allow-list and the polkit rule.";
            };
            alertRules = mkOption {
              type = types.bool;
              default = true;
              description = "Generate its alert rules (target down, unit failed, crash looping, memory near MemoryMax, and the HTTP error ratio and p99 latency when its profiles name an HTTP profile) with `aiops rules` and load them into Prometheus.";
            };
            thresholds = {
              errorRatio = mkOption {
                type = types.number;
                default = 0.05;
                description = "HighErrorRatio fires above this share of 5xx answers (0 to 1).";
              };
              latencyP99Seconds = mkOption {
                type = types.number;
                default = 1.0;
                description = "HighLatencyP99 fires above this 99th-percentile latency, in seconds.";
              };
              crashLoopRestarts = mkOption {
                type = types.ints.positive;
                default = 3;
                description = "UnitCrashLooping fires at this many restarts by systemd within 5 minutes.";
              };
              memoryNearMax = mkOption {
                type = types.number;
                default = 0.9;
                description = "UnitMemoryNearMax fires above this share of the unit's MemoryMax= (0 to 1).";
              };
              forSecs = mkOption {
                type = types.ints.unsigned;
                default = 30;
                description = "How long a condition must hold before its alert fires, in seconds.";
              };
            };
          };
        }
      );
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
      description = ''
        Enable {option}`services.prometheus` and add to it our scrape jobs (`aiops-demo-app`,
        `aiops-webhook`, `aiops-prometheus`, `aiops-alertmanager`, each with a 5 s interval, and
        one per {option}`services.aiops.watch` entry with targets), our alert rules (and the
        watched services' generated ones) and our Alertmanager. A Prometheus the host enables itself keeps its listen
        address and global intervals; one this module enables listens on 127.0.0.1.
      '';
    };

    alertmanager.enable = mkOption {
      type = types.bool;
      default = true;
      description = ''
        Enable {option}`services.prometheus.alertmanager` and send our alerts to the aiops
        receiver with the bearer token of {option}`services.aiops.webhookTokenFile`. Without a
        configuration of the host's, every alert goes to aiops; with one, our receiver and a route
        (first, with `continue`, matching {option}`services.aiops.alertmanager.matchers`) are
        merged into it. A `configText` cannot be merged into and is refused by an assertion.
      '';
    };

    alertmanager.matchers = mkOption {
      type = types.listOf types.str;
      default = [ ''service=~"${lib.concatStringsSep "|" (lib.unique ([ "aiops-demo-app" ] ++ watchedNames ++ [ "aiops-webhook" ]))}"'' ];
      defaultText = literalExpression ''[ "service=~\"aiops-demo-app|<the names of services.aiops.watch>|aiops-webhook\"" ]'';
      example = [ ''service=~"myapp|aiops-webhook"'' ];
      description = ''
        Alertmanager matchers of the route that sends alerts to aiops, used when the host has an
        Alertmanager configuration of its own (otherwise every alert goes to aiops). Our rules
        label each alert with the `service` it is about: a watched service's alerts carry its name.
      '';
    };

    internal.contribute = mkOption {
      type = types.bool;
      default = true;
      internal = true;
      visible = false;
      description = "Switched off in the evaluation that reads what the host itself configures (its scrape jobs, its Alertmanager configuration and targets, its Grafana datasources).";
    };

    grafana.enable = mkOption {
      type = types.bool;
      default = true;
      description = ''
        Enable {option}`services.grafana` and provision a Prometheus datasource (uid
        `aiops-prometheus`) and the aiops dashboard. A Grafana this module enables gets a random
        `secret_key`, generated on the host, unless you set one; a Grafana the host enables keeps
        its own key (NixOS requires one).
      '';
    };

    grafana.defaultDatasource = mkOption {
      type = types.bool;
      default = grafanaIsOurs && !otherDefaultDatasource;
      defaultText = literalExpression "true if this module enables Grafana and no other provisioned datasource is the default";
      description = ''
        Make our Prometheus datasource Grafana's default one. Grafana refuses to start when two
        provisioned datasources of an organisation are the default, and a host's Grafana has its
        own: our dashboard names its datasource by uid and needs no default.
      '';
    };
  };

  config = mkIf cfg.enable (mkMerge [
    {
      assertions =
        secretAssertions "slackWebhookUrlFile" cfg.slackWebhookUrlFile
        ++ secretAssertions "webhookTokenFile" cfg.webhookTokenFile
        ++ watchAssertions
        ++ [
          {
            assertion = cfg.settings.remediation.allowed == allowedMerged;
            message = "services.aiops: set services.aiops.allowedActions rather than settings.remediation.allowed (or services.aiops.watch.<name>.allowedActions); the polkit rule that confines restarts is generated from them.";
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

      services.aiops.settings.watch = mkIf (cfg.watch != { }) (lib.mapAttrs renderWatch cfg.watch);

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
        // aiops: generated by the NixOS module services.aiops from services.aiops.allowedActions
        // and services.aiops.watch.<name>.allowedActions;
        // the same rule as `aiops policy polkit` prints from remediation.allowed.
        ${polkitRule}
      '';

      networking.firewall.allowedTCPPorts = mkIf cfg.openFirewall (
        [ (portOf cfg.settings.webhook.listen) ]
        ++ lib.optional cfg.demoApp.enable (portOf cfg.settings.demo_app.listen)
      );
    }

    (mkIf cfg.demoApp.enable {
      # The demo app is one watched service among others: aiops_core::config::demo_watch(). Its
      # alert rules are prometheus/rules.yml (loaded below), not generated ones.
      services.aiops.watch."aiops-demo-app" = lib.mapAttrs (_: mkDefault) {
        unit = "aiops-demo-app.service";
        job = "aiops-demo-app";
        profiles = [ "aiops-demo" ];
        allowedActions = [
          "restart"
          "clear-cache"
        ];
        alertRules = false;
      };
      systemd.services.aiops-demo-app = {
        wantedBy = [ "multi-user.target" ];
        restartTriggers = [ configFile ];
        environment.AIOPS_CONFIG = "/etc/aiops/config.toml";
      };
    })

    (mkIf cfg.prometheus.enable {
      services.prometheus = {
        enable = mkDefault true;
        # Only a Prometheus of ours: a host's keeps the address its other users reach it on.
        listenAddress = mkIf prometheusIsOurs (mkDefault "127.0.0.1");
        # The rules' `for:` and the documented 25 s detection floor assume a 5 s evaluation. A
        # Prometheus of ours evaluates every 5 s; a host's keeps the interval all its rules share,
        # at which ours run too unless their rule group sets an `interval` of its own.
        globalConfig.evaluation_interval = mkIf prometheusIsOurs (mkDefault "5s");
        ruleFiles = [ "${cfg.package}/share/aiops/prometheus/rules.yml" ] ++ lib.optional watchRules watchRulesFile;
        # None in the evaluation that reads the host's own jobs (hostJobNames).
        scrapeConfigs = lib.optionals cfg.internal.contribute (
          [
            (scrapeJob "aiops-webhook" webhookTarget)
            (scrapeJob "aiops-prometheus" prometheusTarget)
          ]
          ++ lib.optional (demoJob != null) (scrapeJob demoJob demoAppTarget)
          ++ lib.optional cfg.alertmanager.enable (scrapeJob "aiops-alertmanager" alertmanagerTarget)
          ++ watchScrapeJobs
        );
        # Our Alertmanager, unless the host's Prometheus already sends to it.
        alertmanagers = lib.optional (
          cfg.alertmanager.enable && cfg.internal.contribute && !lib.elem alertmanagerTarget hostAlertmanagerTargets
        ) { static_configs = [ { targets = [ alertmanagerTarget ]; } ]; };
      };
    })

    (mkIf cfg.alertmanager.enable {
      assertions = [
        {
          assertion = amCfg.configText == null;
          message = "services.aiops: services.prometheus.alertmanager.configText is set, so the aiops receiver and its route cannot be merged into it. Write the configuration as services.prometheus.alertmanager.configuration (aiops then adds its receiver and route), or set services.aiops.alertmanager.enable = false and route to http://${webhookTarget}/ yourself.";
        }
        {
          assertion = !hostHasAlertmanagerConfig || !lib.elem "aiops" (receiverNames hostAlertmanagerConfig);
          message = "services.aiops: the host's Alertmanager configuration already has a receiver named \"aiops\"; remove it (the module adds its own) or set services.aiops.alertmanager.enable = false.";
        }
        {
          assertion = amCfg.configText != null || lib.elem "aiops" (receiverNames (if amCfg.configuration == null then { } else amCfg.configuration));
          message = "services.aiops: services.prometheus.alertmanager.configuration has no receiver \"aiops\" (was it set with mkForce?), so no alert would reach aiops. Set it at normal priority, or set services.aiops.alertmanager.enable = false.";
        }
      ];
      services.prometheus.alertmanager = {
        enable = mkDefault true;
        # Only an Alertmanager of ours: a host's keeps its address and its clustering.
        listenAddress = mkIf alertmanagerIsOurs (mkDefault "127.0.0.1");
        # One host, no peers: without this Alertmanager looks for a private address to gossip on
        # and exits on a host that has none (only loopback, or only public addresses).
        extraFlags = mkIf (alertmanagerIsOurs && amCfg.clusterPeers == [ ]) [ "--cluster.listen-address=" ];
        configuration = mkIf cfg.internal.contribute (
          if hostHasAlertmanagerConfig then
            # The host's, with ours merged in (see mergeIntoHost).
            lib.mkOverride 99 (mergeIntoHost hostAlertmanagerConfig)
          else
            # No configuration of the host's: ours, which sends every alert to aiops.
            mkDefault ownAlertmanagerConfig
        );
      };
      systemd.services.alertmanager = mkIf (amCfg.enable && cfg.webhookTokenFile != null) {
        serviceConfig.LoadCredential = [ "webhook-token:${cfg.webhookTokenFile}" ];
      };
    })

    (mkIf cfg.grafana.enable {
      assertions = [
        {
          assertion = grafanaCfg.provision.datasources.path == null && grafanaCfg.provision.dashboards.path == null;
          message = "services.aiops: services.grafana.provision.datasources.path or dashboards.path is set, which Grafana's module cannot combine with the datasource and dashboard provider aiops provisions as settings. Provision them in your own files (grafana/provisioning in the aiops package) and set services.aiops.grafana.enable = false.";
        }
        {
          assertion = lib.count (d: d.isDefault or false) (datasourcesOf grafanaCfg) <= 1;
          message = "services.aiops: more than one provisioned Grafana datasource is the default, which Grafana refuses; leave services.aiops.grafana.defaultDatasource false.";
        }
      ];
      services.grafana = {
        enable = mkDefault true;
        # NixOS 26.05's Grafana requires a secret key. A Grafana of ours gets one generated on the
        # host (aiops-grafana-secret.service), read through a credential, never from the store. A
        # host's Grafana keeps its own: replacing it would make the secrets in its database
        # unreadable.
        settings.security.secret_key = mkIf grafanaIsOurs (mkDefault grafanaSecretKey);
        provision = {
          enable = mkDefault true;
          # As grafana/provisioning/ has them (tests/nix-eval checks they agree): the dashboard
          # refers to the datasource by its uid.
          datasources.settings.datasources = lib.optional cfg.internal.contribute {
              name = "Prometheus (aiops)";
              uid = "aiops-prometheus";
              type = "prometheus";
              access = "proxy";
              url = "http://${prometheusTarget}";
              isDefault = cfg.grafana.defaultDatasource;
              editable = false;
              jsonData = {
                timeInterval = "5s";
                httpMethod = "POST";
              };
            };
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

      systemd.services = mkIf (grafanaCfg.enable && grafanaCfg.settings.security.secret_key == grafanaSecretKey) {
        aiops-grafana-secret = {
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
        grafana = {
          after = [ "aiops-grafana-secret.service" ];
          serviceConfig.LoadCredential = [ "secret-key:/var/lib/aiops-grafana/secret-key" ];
        };
      };
    })
  ]);
}
