# Stub declarations of every NixOS option nixos/module.nix touches, so that `lib.evalModules` can
# type-check the module without the nixpkgs tree (which cannot be brought to this machine).
#
# Names, types, defaults and `apply` functions are copied from current nixpkgs sources (read with
# the search tool, November 2026; the monitoring modules re-checked against nixos-26.05's in
# December 2026):
#   nixos/modules/misc/assertions.nix                     assertions, warnings
#   nixos/lib/systemd-lib.nix, systemd-unit-options.nix   unitNameType, unitOption, service options
#   nixos/modules/system/boot/systemd.nix                 systemd.packages, systemd.services
#   nixos/modules/config/users-groups.nix                 users.users, users.groups
#   nixos/modules/system/etc/etc.nix                      environment.etc
#   nixos/modules/config/system-path.nix                  environment.systemPackages
#   nixos/modules/security/polkit.nix                     security.polkit.*
#   nixos/modules/services/networking/firewall.nix        networking.firewall.allowedTCPPorts
#   nixos/modules/services/monitoring/prometheus/default.nix       services.prometheus.*
#   nixos/modules/services/monitoring/prometheus/alertmanager.nix  services.prometheus.alertmanager.*
#   nixos/modules/services/monitoring/grafana.nix         services.grafana.{enable,settings,provision}
#   nixos/modules/services/monitoring/prometheus/exporters.nix (mkExporterOpts), exporters/nginx.nix,
#     exporters/node.nix                                  services.prometheus.exporters.{nginx,redis,node}
#   nixos/modules/services/web-servers/nginx/default.nix  services.nginx.{enable,statusPage}
#   nixos/modules/services/databases/redis.nix            services.redis.servers.<name>.{enable,bind,port}
# (the last three only for the VM test's nodes, tests/nixos/loop.nix: the host's own services)
# Only the options the module (or its tests) use are declared, plus the few `config` side effects
# that matter to it (a service's `script` becoming ExecStart, `text` becoming an etc `source`,
# users-groups' own assertions) and the assertions of the Prometheus, Alertmanager and Grafana
# modules, which a host that runs them meets. What those modules check at build time (promtool,
# amtool) is done by tests/nix-eval/run on what they would render. Option descriptions are omitted.
{
  lib,
  pkgs,
  config,
  ...
}:
let
  inherit (lib)
    mkIf
    mkMerge
    mkOption
    types
    ;

  # nixos/lib/systemd-lib.nix
  unitNameType = types.strMatching "[a-zA-Z0-9@%:_.\\-]+[.](service|socket|device|mount|automount|swap|target|path|timer|scope|slice)";

  assertValueOneOf =
    name: values: group: attr:
    lib.optional (
      attr ? ${name} && !lib.elem attr.${name} values
    ) "Systemd ${group} field `${name}' cannot have value `${toString attr.${name}}'.";

  checkUnitConfig =
    group: checks: attrs:
    let
      defs = lib.mapAttrs (lib.const (
        v:
        if v._type or "" == "override" then
          v.content
        else if v._type or "" == "if" then
          v.content
        else
          v
      )) attrs;
      errors = lib.concatMap (c: c group defs) checks;
    in
    if errors == [ ] then true else builtins.trace (lib.concatStringsSep "\n" errors) false;

  # nixos/lib/systemd-unit-options.nix
  unitOption = lib.mkOptionType {
    name = "systemd option";
    merge =
      loc: defs:
      let
        defs' = lib.filterOverrides defs;
      in
      if lib.any (def: lib.isList def.value) defs' then
        lib.concatMap (def: lib.toList def.value) defs'
      else
        lib.mergeEqualOption loc defs';
  };

  checkService = checkUnitConfig "Service" [
    (assertValueOneOf "Type" [
      "exec"
      "simple"
      "forking"
      "oneshot"
      "dbus"
      "notify"
      "notify-reload"
      "idle"
    ])
    (assertValueOneOf "Restart" [
      "no"
      "on-success"
      "on-failure"
      "on-abnormal"
      "on-abort"
      "always"
    ])
  ];

  unitList = mkOption {
    default = [ ];
    type = types.listOf unitNameType;
  };

  serviceModule =
    { name, config, ... }:
    {
      options = {
        enable = mkOption {
          default = true;
          type = types.bool;
        };
        overrideStrategy = mkOption {
          default = "asDropinIfExists";
          type = types.enum [
            "asDropinIfExists"
            "asDropin"
          ];
        };
        description = mkOption {
          default = "";
          type = types.singleLineStr;
        };
        documentation = mkOption {
          default = [ ];
          type = types.listOf types.str;
        };
        requiredBy = unitList;
        upheldBy = unitList;
        wantedBy = unitList;
        aliases = unitList;
        requires = unitList;
        wants = unitList;
        upholds = unitList;
        after = unitList;
        before = unitList;
        bindsTo = unitList;
        partOf = unitList;
        conflicts = unitList;
        requisite = unitList;
        onFailure = unitList;
        onSuccess = unitList;
        unitConfig = mkOption {
          default = { };
          type = types.attrsOf unitOption;
        };
        restartTriggers = mkOption {
          default = [ ];
          type = types.listOf types.unspecified;
        };
        reloadTriggers = mkOption {
          default = [ ];
          type = types.listOf unitOption;
        };
        environment = mkOption {
          default = { };
          type =
            with types;
            attrsOf (
              nullOr (oneOf [
                str
                path
                package
              ])
            );
        };
        path = mkOption {
          default = [ ];
          type =
            with types;
            listOf (oneOf [
              package
              str
            ]);
        };
        serviceConfig = mkOption {
          default = { };
          type = types.addCheck (types.attrsOf unitOption) checkService;
        };
        script = mkOption {
          type = types.lines;
          default = "";
        };
        scriptArgs = mkOption {
          type = types.str;
          default = "";
        };
        preStart = mkOption {
          type = types.lines;
          default = "";
        };
        postStart = mkOption {
          type = types.lines;
          default = "";
        };
        preStop = mkOption {
          type = types.lines;
          default = "";
        };
        postStop = mkOption {
          type = types.lines;
          default = "";
        };
        restartIfChanged = mkOption {
          type = types.bool;
          default = true;
        };
        reloadIfChanged = mkOption {
          type = types.bool;
          default = false;
        };
        stopIfChanged = mkOption {
          type = types.bool;
          default = true;
        };
        startAt = mkOption {
          type = with types; either str (listOf str);
          default = [ ];
          apply = v: if lib.isList v then v else [ v ];
        };
      };
      # As in serviceOptions: a script becomes the unit's ExecStart (a store path in NixOS).
      config = mkMerge [
        (mkIf (config.script != "") {
          serviceConfig.ExecStart = "${pkgs.writeText "unit-script-${name}-start" config.script} ${config.scriptArgs}";
        })
        (mkIf (config.preStart != "") {
          serviceConfig.ExecStartPre = [ "${pkgs.writeText "unit-script-${name}-pre-start" config.preStart}" ];
        })
      ];
    };

  # nixos/modules/config/users-groups.nix (the options the module and the VM test set)
  userOpts =
    { name, config, ... }:
    {
      options = {
        enable = mkOption {
          type = types.bool;
          default = true;
        };
        name = mkOption {
          type = types.passwdEntry types.str;
          apply =
            x:
            assert (
              lib.stringLength x < 32 || abort "Username '${x}' is longer than 31 characters which is not allowed!"
            );
            x;
        };
        description = mkOption {
          type = types.passwdEntry types.str;
          default = "";
        };
        uid = mkOption {
          type = with types; nullOr int;
          default = null;
        };
        isSystemUser = mkOption {
          type = types.bool;
          default = false;
        };
        isNormalUser = mkOption {
          type = types.bool;
          default = false;
        };
        group = mkOption {
          type = types.str;
          apply =
            x:
            assert (
              lib.stringLength x < 32 || abort "Group name '${x}' is longer than 31 characters which is not allowed!"
            );
            x;
          default = "";
        };
        extraGroups = mkOption {
          type = types.listOf types.str;
          default = [ ];
        };
        home = mkOption {
          type = types.passwdEntry types.path;
          default = "/var/empty";
        };
        createHome = mkOption {
          type = types.bool;
          default = false;
        };
        packages = mkOption {
          type = types.listOf types.package;
          default = [ ];
        };
      };
      # As users-groups.nix does for a normal user (a home under /home, created; group "users").
      config = mkMerge [
        { name = lib.mkDefault name; }
        (mkIf config.isNormalUser {
          group = lib.mkDefault "users";
          createHome = lib.mkDefault true;
          home = lib.mkDefault "/home/${config.name}";
          isSystemUser = lib.mkDefault false;
        })
      ];
    };

  groupOpts =
    { name, ... }:
    {
      options = {
        name = mkOption {
          type = types.passwdEntry types.str;
        };
        gid = mkOption {
          type = with types; nullOr int;
          default = null;
        };
        members = mkOption {
          type = with types; listOf (passwdEntry str);
          default = [ ];
        };
      };
      config.name = lib.mkDefault name;
    };

  # nixos/modules/system/etc/etc.nix
  etcOpts =
    { name, config, ... }:
    {
      options = {
        enable = mkOption {
          type = types.bool;
          default = true;
        };
        target = mkOption {
          type = types.str;
        };
        text = mkOption {
          default = null;
          type = types.nullOr types.lines;
        };
        source = mkOption {
          type = types.path;
        };
        mode = mkOption {
          type = types.str;
          default = "symlink";
        };
        uid = mkOption {
          default = 0;
          type = types.int;
        };
        gid = mkOption {
          default = 0;
          type = types.int;
        };
        user = mkOption {
          default = "+${toString config.uid}";
          type = types.str;
        };
        group = mkOption {
          default = "+${toString config.gid}";
          type = types.str;
        };
      };
      config = {
        target = lib.mkDefault name;
        source = mkIf (config.text != null) (
          lib.mkDerivedConfig (lib.mkOptionDefault config.text) (pkgs.writeText "etc-${baseNameOf name}")
        );
      };
    };

  # nixos/modules/services/monitoring/prometheus/default.nix: the config types it declares.
  mkDefOpt = type: _defaultStr: mkOpt type;
  mkOpt =
    type:
    mkOption {
      type = types.nullOr type;
      default = null;
    };

  promTypes.globalConfig = types.submodule {
    options = {
      scrape_interval = mkDefOpt types.str "1m";
      scrape_timeout = mkDefOpt types.str "10s";
      evaluation_interval = mkDefOpt types.str "1m";
      external_labels = mkOpt (types.attrsOf types.str);
      query_log_file = mkOpt types.str;
    };
  };

  promTypes.static_config = types.submodule {
    options = {
      targets = mkOption {
        type = types.listOf types.str;
      };
      labels = mkOption {
        type = types.attrsOf types.str;
        default = { };
      };
    };
  };

  promTypes.relabel_config = types.submodule {
    options = {
      source_labels = mkOpt (types.listOf types.str);
      separator = mkDefOpt types.str ";";
      target_label = mkOpt types.str;
      regex = mkDefOpt types.str "(.*)";
      modulus = mkOpt types.int;
      replacement = mkDefOpt types.str "$1";
      action = mkDefOpt (types.enum [
        "replace"
        "lowercase"
        "uppercase"
        "keep"
        "drop"
        "hashmod"
        "labelmap"
        "labeldrop"
        "labelkeep"
      ]) "replace";
    };
  };

  # The scrape_config options this project can use; the service-discovery ones are left out.
  promTypes.scrape_config = types.submodule {
    options = {
      authorization = mkOption {
        type = types.nullOr types.attrs;
        default = null;
      };
      job_name = mkOption {
        type = types.str;
      };
      scrape_interval = mkOpt types.str;
      scrape_timeout = mkOpt types.str;
      scrape_protocols = mkOpt (types.listOf types.str);
      fallback_scrape_protocol = mkOpt types.str;
      metrics_path = mkDefOpt types.str "/metrics";
      honor_labels = mkDefOpt types.bool "false";
      honor_timestamps = mkDefOpt types.bool "true";
      scheme = mkDefOpt (types.enum [
        "http"
        "https"
      ]) "http";
      params = mkOpt (types.attrsOf (types.listOf types.str));
      bearer_token = mkOpt types.str;
      bearer_token_file = mkOpt types.str;
      proxy_url = mkOpt types.str;
      static_configs = mkOpt (types.listOf promTypes.static_config);
      relabel_configs = mkOpt (types.listOf promTypes.relabel_config);
      metric_relabel_configs = mkOpt (types.listOf promTypes.relabel_config);
      body_size_limit = mkDefOpt types.str "0";
      sample_limit = mkDefOpt types.int "0";
      label_limit = mkDefOpt types.int "0";
      label_name_length_limit = mkDefOpt types.int "0";
      label_value_length_limit = mkDefOpt types.int "0";
      target_limit = mkDefOpt types.int "0";
    };
  };

  # nixos/modules/services/monitoring/grafana.nix
  provisioningSettingsFormat = pkgs.formats.yaml { };
  settingsFormatIni = pkgs.formats.ini {
    listToValue = lib.concatMapStringsSep " " (lib.generators.mkValueStringDefault { });
  };
  grafanaTypes.datasourceConfig = types.submodule {
    freeformType = provisioningSettingsFormat.type;
    options = {
      name = mkOption {
        type = types.str;
      };
      type = mkOption {
        type = types.str;
      };
      access = mkOption {
        type = types.enum [
          "proxy"
          "direct"
        ];
        default = "proxy";
      };
      uid = mkOption {
        type = types.nullOr types.str;
        default = null;
      };
      url = mkOption {
        type = types.str;
        default = "";
      };
      editable = mkOption {
        type = types.bool;
        default = false;
      };
      jsonData = mkOption {
        type = types.nullOr types.attrs;
        default = null;
      };
      secureJsonData = mkOption {
        type = types.nullOr types.attrs;
        default = null;
      };
    };
  };
  grafanaTypes.dashboardConfig = types.submodule {
    freeformType = provisioningSettingsFormat.type;
    options = {
      name = mkOption {
        type = types.str;
        default = "default";
      };
      type = mkOption {
        type = types.str;
        default = "file";
      };
      options.path = mkOption {
        type = types.path;
      };
    };
  };
in
{
  options = {
    # nixos/modules/misc/assertions.nix
    assertions = mkOption {
      type = types.listOf types.unspecified;
      internal = true;
      default = [ ];
    };
    warnings = mkOption {
      internal = true;
      default = [ ];
      type = types.listOf types.str;
    };

    systemd.packages = mkOption {
      default = [ ];
      type = types.listOf types.package;
    };
    systemd.services = mkOption {
      default = { };
      type = types.attrsOf (types.submodule serviceModule);
    };

    users.users = mkOption {
      default = { };
      type = with types; attrsOf (submodule userOpts);
    };
    users.groups = mkOption {
      default = { };
      type = with types; attrsOf (submodule groupOpts);
    };

    environment.etc = mkOption {
      default = { };
      type = with types; attrsOf (submodule etcOpts);
    };
    environment.systemPackages = mkOption {
      type = types.listOf types.package;
      default = [ ];
    };

    security.polkit.enable = lib.mkEnableOption "polkit";
    security.polkit.extraConfig = mkOption {
      type = types.lines;
      default = "";
    };
    security.polkit.adminIdentities = mkOption {
      type = types.listOf types.str;
      default = [ "unix-group:wheel" ];
    };

    networking.firewall.allowedTCPPorts = mkOption {
      type = types.listOf types.port;
      default = [ ];
      apply = ports: lib.unique (builtins.sort builtins.lessThan ports);
    };

    services.prometheus = {
      enable = lib.mkEnableOption "Prometheus monitoring daemon";
      package = lib.mkPackageOption pkgs "prometheus" { };
      port = mkOption {
        type = types.port;
        default = 9090;
      };
      listenAddress = mkOption {
        type = types.str;
        default = "0.0.0.0";
      };
      stateDir = mkOption {
        type = types.str;
        default = "prometheus2";
      };
      extraFlags = mkOption {
        type = types.listOf types.str;
        default = [ ];
      };
      enableReload = mkOption {
        default = false;
        type = types.bool;
      };
      configText = mkOption {
        type = types.nullOr types.lines;
        default = null;
      };
      enableAgentMode = lib.mkEnableOption "agent mode";
      webExternalUrl = mkOption {
        type = types.nullOr types.str;
        default = null;
      };
      globalConfig = mkOption {
        type = promTypes.globalConfig;
        default = { };
      };
      rules = mkOption {
        type = types.listOf types.str;
        default = [ ];
      };
      ruleFiles = mkOption {
        type = types.listOf types.path;
        default = [ ];
      };
      scrapeConfigs = mkOption {
        type = types.listOf promTypes.scrape_config;
        default = [ ];
      };
      alertmanagers = mkOption {
        type = types.listOf types.attrs;
        default = [ ];
      };
      # The remote_* submodules are not modelled: the module never sets them, and the rendered
      # configuration has them as empty lists.
      remoteRead = mkOption {
        type = types.listOf types.attrs;
        default = [ ];
      };
      remoteWrite = mkOption {
        type = types.listOf types.attrs;
        default = [ ];
      };
      checkConfig = mkOption {
        type = with types; either bool (enum [ "syntax-only" ]);
        default = true;
      };
      retentionTime = mkOption {
        type = types.nullOr types.str;
        default = null;
      };

      alertmanager = {
        enable = lib.mkEnableOption "Prometheus Alertmanager";
        package = lib.mkPackageOption pkgs "prometheus-alertmanager" { };
        configuration = mkOption {
          type = types.nullOr types.attrs;
          default = null;
        };
        configText = mkOption {
          type = types.nullOr types.lines;
          default = null;
        };
        checkConfig = mkOption {
          type = types.bool;
          default = true;
        };
        logFormat = mkOption {
          type = types.nullOr types.str;
          default = null;
        };
        logLevel = mkOption {
          type = types.enum [
            "debug"
            "info"
            "warn"
            "error"
            "fatal"
          ];
          default = "warn";
        };
        webExternalUrl = mkOption {
          type = types.nullOr types.str;
          default = null;
        };
        listenAddress = mkOption {
          type = types.str;
          default = "";
        };
        port = mkOption {
          type = types.port;
          default = 9093;
        };
        openFirewall = mkOption {
          type = types.bool;
          default = false;
        };
        clusterPeers = mkOption {
          type = types.listOf types.str;
          default = [ ];
        };
        extraFlags = mkOption {
          type = types.listOf types.str;
          default = [ ];
        };
        environmentFile = mkOption {
          type = types.nullOr types.path;
          default = null;
        };
      };
    };

    # prometheus/exporters.nix: mkExporterOpts (the options every exporter has that the VM
    # test's nodes set), and the exporter-specific ones they use.
    services.prometheus.exporters =
      let
        mkExporterOpts =
          { name, port }:
          {
            enable = lib.mkEnableOption "the prometheus ${name} exporter";
            port = mkOption {
              type = types.port;
              default = port;
            };
            listenAddress = mkOption {
              type = types.str;
              default = "0.0.0.0";
            };
            extraFlags = mkOption {
              type = types.listOf types.str;
              default = [ ];
            };
            openFirewall = mkOption {
              type = types.bool;
              default = false;
            };
          };
      in
      {
        nginx = mkExporterOpts {
          name = "nginx";
          port = 9113;
        }
        // {
          scrapeUri = mkOption {
            type = types.str;
            default = "http://localhost/nginx_status";
          };
        };
        redis = mkExporterOpts {
          name = "redis";
          port = 9121;
        };
        node = mkExporterOpts {
          name = "node";
          port = 9100;
        }
        // {
          enabledCollectors = mkOption {
            type = types.listOf types.str;
            default = [ ];
          };
          disabledCollectors = mkOption {
            type = types.listOf types.str;
            default = [ ];
          };
        };
      };

    # web-servers/nginx/default.nix
    services.nginx = {
      enable = lib.mkEnableOption "Nginx Web Server";
      statusPage = mkOption {
        default = false;
        type = types.bool;
      };
    };

    # databases/redis.nix
    services.redis.servers = mkOption {
      type = types.attrsOf (
        types.submodule (
          { name, ... }:
          {
            options = {
              enable = lib.mkEnableOption "Redis server";
              port = mkOption {
                type = types.port;
                default = if name == "" then 6379 else 0;
              };
              bind = mkOption {
                type = with types; nullOr str;
                default = "127.0.0.1";
              };
            };
          }
        )
      );
      default = { };
    };

    services.grafana = {
      enable = lib.mkEnableOption "grafana";
      package = lib.mkPackageOption pkgs "grafana" { };
      dataDir = mkOption {
        default = "/var/lib/grafana";
        type = types.path;
      };
      openFirewall = mkOption {
        type = types.bool;
        default = false;
      };
      settings = mkOption {
        default = { };
        type = types.submodule {
          freeformType = settingsFormatIni.type;
          options = {
            server = {
              http_addr = mkOption {
                type = types.str;
                default = "127.0.0.1";
              };
              http_port = mkOption {
                default = 3000;
                type = types.port;
              };
              domain = mkOption {
                default = "localhost";
                type = types.str;
              };
            };
            security = {
              admin_user = mkOption {
                default = "admin";
                type = types.str;
              };
              admin_password = mkOption {
                default = "admin";
                type = types.str;
              };
              secret_key = mkOption {
                type = types.nullOr types.str;
                default = null;
              };
            };
          };
        };
      };
      provision = {
        enable = lib.mkEnableOption "provision";
        datasources = mkOption {
          default = { };
          type = types.submodule {
            options.settings = mkOption {
              default = null;
              type = types.nullOr (
                types.submodule {
                  options = {
                    apiVersion = mkOption {
                      default = 1;
                      type = types.int;
                    };
                    prune = mkOption {
                      default = false;
                      type = types.bool;
                    };
                    datasources = mkOption {
                      default = [ ];
                      type = types.listOf grafanaTypes.datasourceConfig;
                    };
                    deleteDatasources = mkOption {
                      default = [ ];
                      type = types.listOf (
                        types.submodule {
                          options.name = mkOption {
                            type = types.str;
                          };
                          options.orgId = mkOption {
                            type = types.int;
                          };
                        }
                      );
                    };
                  };
                }
              );
            };
            options.path = mkOption {
              default = null;
              type = types.nullOr types.path;
            };
          };
        };
        dashboards = mkOption {
          default = { };
          type = types.submodule {
            options.settings = mkOption {
              default = null;
              type = types.nullOr (
                types.submodule {
                  options.apiVersion = mkOption {
                    default = 1;
                    type = types.int;
                  };
                  options.providers = mkOption {
                    default = [ ];
                    type = types.listOf grafanaTypes.dashboardConfig;
                  };
                }
              );
            };
            options.path = mkOption {
              default = null;
              type = types.nullOr types.path;
            };
          };
        };
      };
    };
  };

  # users-groups.nix declares the groups every NixOS system has; "users" is the one normal users
  # get by default.
  config.users.groups.users = { };

  # The assertions of prometheus/default.nix, prometheus/alertmanager.nix and grafana.nix
  # (nixos-26.05), the ones a configuration of these services can meet.
  config.assertions =
    (
    let
      prom = config.services.prometheus;
      am = prom.alertmanager;
      grafana = config.services.grafana;
      legacyListen = builtins.match "(.*\\..*|.*]):([[:digit:]]+)" prom.listenAddress;
    in
    lib.optionals prom.enable [
      {
        assertion = legacyListen == null;
        message = ''
          Do not specify the port for Prometheus to listen on in the
          listenAddress option; use the port option instead:
            services.prometheus.listenAddress = ${builtins.elemAt legacyListen 0};
            services.prometheus.port = ${builtins.elemAt legacyListen 1};
        '';
      }
    ]
    ++ lib.optionals am.enable [
      {
        assertion = am.configuration != null || am.configText != null;
        message = "Can not enable alertmanager without a configuration. Set either the `configuration` or `configText` attribute.";
      }
    ]
    ++ lib.optionals grafana.enable [
      {
        assertion = grafana.provision.datasources.settings == null || grafana.provision.datasources.path == null;
        message = "Cannot set both datasources settings and datasources path";
      }
      {
        assertion =
          grafana.provision.datasources.settings == null
          || lib.all (
            { access, type, ... }: type == "prometheus" -> access != "direct"
          ) grafana.provision.datasources.settings.datasources;
        message = "For datasources of type `prometheus`, the `direct` access mode is not supported anymore (since Grafana 9.2.0)";
      }
      {
        assertion = grafana.provision.dashboards.settings == null || grafana.provision.dashboards.path == null;
        message = "Cannot set both dashboards settings and dashboards path";
      }
      {
        assertion = grafana.settings.security.secret_key != null;
        message = "Grafana's secret key (services.grafana.settings.security.secret_key) doesn't have a default value anymore. Please generate your own and use a file-provider on this option!";
      }
    ]
    )
    # users-groups.nix's checks on every user (the third, that the group is declared, is ours:
    # NixOS fails later, at activation), so a module that forgets a group fails here too.
    ++ lib.concatLists (
    lib.mapAttrsToList (name: user: [
      {
        assertion = (user.isNormalUser || user.isSystemUser) && !(user.isNormalUser && user.isSystemUser);
        message = "Exactly one of users.users.${name}.isSystemUser and users.users.${name}.isNormalUser must be set.";
      }
      {
        assertion = user.isNormalUser || user.group != "";
        message = "users.users.${name}.group is unset. This used to default to nogroup, but this is unsafe.";
      }
      {
        assertion = user.group == "" || config.users.groups ? ${user.group};
        message = "users.users.${name}.group = \"${user.group}\" names a group that is not declared in users.groups.";
      }
    ]) config.users.users
  );
}
