# Evaluates flake.nix's outputs without Nix's flake machinery and without nixpkgs: `outputs` is
# called with a stand-in nixpkgs whose `lib` is the real nixpkgs.lib and whose packages are stubs
# that record their arguments instead of building. This catches what the module tests cannot: a
# wrong attribute path in flake.nix or nixos/checks.nix, a source filter naming a file that does
# not exist, a VM test that is not discovered, a module default that does not reach the package.
# Nothing here can tell whether a derivation would build; only a Nix machine can.
{
  nixpkgsLib ? null,
  realLib ? import (/. + nixpkgsLib + "/lib"),
}:
let
  # lib.fileset needs builtins.readFileType (Nix >= 2.14), which Debian's Nix 2.8 lacks. Where it
  # is missing, this stand-in checks what can be checked here: every path named must exist (except
  # under maybeMissing), and the root must contain them.
  lib =
    if builtins ? readFileType then
      realLib
    else
      realLib.extend (
        _: super: {
          fileset = {
            maybeMissing = path: if builtins.pathExists path then [ path ] else [ ];
            unions = sets: super.concatMap super.toList sets;
            toSource =
              { root, fileset }:
              let
                paths = super.toList fileset;
                missing = builtins.filter (p: !builtins.pathExists p) paths;
                outside = builtins.filter (p: !super.hasPrefix (toString root) (toString p)) paths;
              in
              if missing != [ ] then
                throw "lib.fileset: ${toString missing} does not exist"
              else if outside != [ ] then
                throw "lib.fileset: ${toString outside} is outside ${toString root}"
              else
                "${builtins.storeDir}/00000000000000000000000000000000-source";
          };
        }
      );
  flake = import ../../flake.nix;
  systems = [
    "x86_64-linux"
    "aarch64-linux"
  ];

  fakeDrv =
    name: extra:
    {
      type = "derivation";
      inherit name;
      outPath = "${builtins.storeDir}/00000000000000000000000000000000-${name}";
      drvPath = "${builtins.storeDir}/00000000000000000000000000000000-${name}.drv";
      meta = { };
    }
    // extra;

  stubPkgs =
    system:
    let
      pkgs = {
        inherit lib;
        stdenv.hostPlatform.system = system;
        callPackage =
          fn: args:
          let
            f = if builtins.isFunction fn then fn else import fn;
          in
          f (builtins.intersectAttrs (builtins.functionArgs f) pkgs // args);
        rustPlatform.buildRustPackage =
          attrs:
          let
            self = fakeDrv "${attrs.pname}-${attrs.version}" (
              attrs
              // {
                nativeBuildInputs = attrs.nativeBuildInputs or [ ];
                overrideAttrs = f: self // f self;
              }
            );
          in
          self;
        writeShellApplication =
          attrs:
          fakeDrv attrs.name {
            inherit (attrs) text runtimeInputs;
            meta.mainProgram = attrs.name;
          };
        writeText = name: text: fakeDrv name { inherit text; };
        runCommand = name: env: script: fakeDrv name { inherit env script; };
        mkShell = attrs: fakeDrv "shell" attrs;
        testers.runNixOSTest = test: fakeDrv "vm-test-run-${test.name}" { inherit test; };
        prometheus = fakeDrv "prometheus" { cli = fakeDrv "prometheus-cli" { }; };
        prometheus-alertmanager = fakeDrv "alertmanager" { };
      }
      // lib.genAttrs [
        "grafana"
        "python3"
        "wrk"
        "cargo"
        "rustc"
        "clippy"
        "rustfmt"
        "nixfmt"
        "nixfmt-tree"
        "curl"
        "jq"
        "util-linux"
      ] (name: fakeDrv name { });
    in
    pkgs;

  nixpkgs = {
    inherit lib;
    outPath = "/nixpkgs";
    legacyPackages = lib.genAttrs systems stubPkgs;
  };

  self = flake.outputs {
    inherit self nixpkgs;
  };

  evalWithFlakeModule =
    system:
    lib.evalModules {
      modules = [
        ./stubs.nix
        self.nixosModules.default
        {
          _module.args.pkgs = import ./pkgs.nix { inherit lib; } // {
            stdenv.hostPlatform.system = system;
          };
          services.aiops.enable = true;
        }
      ];
    };

  # The nodes of each VM test, type-checked against the same stubs (plus the test VM's options).
  vmTests = lib.filterAttrs (n: _: lib.hasPrefix "vm-" n) self.checks.${x86};
  evalNodeConfig =
    node:
    (lib.evalModules {
        modules = [
          ./stubs.nix
          {
            options.virtualisation = {
              memorySize = lib.mkOption {
                type = lib.types.ints.positive;
                default = 1024;
              };
              cores = lib.mkOption {
                type = lib.types.ints.positive;
                default = 1;
              };
            };
            config._module.args.pkgs = stubPkgs x86 // import ./pkgs.nix { inherit lib; };
          }
          node
        ];
    }).config;
  evalNode =
    node:
    let
      config = evalNodeConfig node;
    in
    map (a: a.message) (lib.filter (a: !a.assertion) config.assertions)
    ++ lib.optional (!config.services.aiops.enable) "services.aiops is not enabled";

  # What tests/scenario.py's guest contract is about, read off an evaluated test node; the
  # runner compares it with the scenario's own constants and the Debian guest's files.
  nodeContract =
    node:
    let
      c = evalNodeConfig node;
      am = c.services.prometheus.alertmanager;
      unitView = s: {
        inherit (s)
          wantedBy
          requiredBy
          before
          after
          serviceConfig
          unitConfig
          script
          ;
      };
    in
    {
      settings = c.environment.etc."aiops/config.toml".source.value;
      aiops = {
        inherit (c.services.aiops)
          slackWebhookUrlFile
          webhookTokenFile
          operatorsGroup
          allowedActions
          ;
        package = "${c.services.aiops.package}";
      };
      unitPackages = map toString c.systemd.packages;
      users = lib.mapAttrs (_: u: {
        inherit (u)
          isSystemUser
          isNormalUser
          group
          extraGroups
          home
          createHome
          ;
      }) c.users.users;
      groups = lib.attrNames c.users.groups;
      systemPackages = map toString c.environment.systemPackages;
      services = lib.mapAttrs (_: unitView) c.systemd.services;
      prometheus = {
        inherit (c.services.prometheus) enable port listenAddress;
      };
      alertmanager = {
        inherit (am)
          enable
          port
          listenAddress
          extraFlags
          configuration
          ;
      };
      polkit = c.security.polkit.extraConfig;
      pkgs = {
        aiops = toString self.packages.${x86}.default;
        curl = toString (stubPkgs x86).curl;
      };
    };

  check = name: ok: detail: {
    inherit name ok;
    detail = if ok then "" else detail;
  };
  x86 = "x86_64-linux";
  pkg = self.packages.${x86}.default;
  checkNames = lib.attrNames self.checks.${x86};
  vmTestFiles = lib.filter (lib.hasSuffix ".nix") (lib.attrNames (builtins.readDir ../nixos));
in
{
  testScripts = lib.mapAttrs (_: t: t.test.testScript) vmTests;
  nodeContracts = lib.mapAttrs (_: t: lib.mapAttrs (_: nodeContract) t.test.nodes) vmTests;
  results = [
  (check "flake: packages for both Linux systems" (
    lib.all (s: self.packages.${s}.default.pname == "aiops") systems
  ) "packages.<system>.default.pname is not aiops")
  (check "flake: the package builds from Cargo.lock and installs the units and assets" (
    pkg.cargoLock.lockFile == ../../Cargo.lock
    && lib.hasInfix "substitute \"$unit\"" pkg.postInstall
    && lib.hasInfix "@bindir@" pkg.postInstall
    && lib.hasInfix "$out/lib/systemd/system" pkg.postInstall
    && lib.hasInfix "share/aiops" pkg.postInstall
  ) pkg.postInstall)
  (check "flake: the package's source keeps Cargo files, crates/, prometheus/, systemd/" (
    let
      src = toString pkg.src;
    in
    builtins.pathExists (../../Cargo.lock) && lib.hasPrefix builtins.storeDir src
  ) "src = ${toString pkg.src}")
  (check "flake: the package's checkPhase runs the hermetic tests only (AIOPS_TESTS=hermetic, no live components on its PATH)" (
    pkg.env.AIOPS_TESTS == "hermetic"
    && pkg.cargoTestFlags == [ "--workspace" ]
    && (pkg.nativeCheckInputs or [ ]) == [ ]
    && (pkg.doCheck or true)
  ) (builtins.toJSON {
    inherit (pkg) env cargoTestFlags;
    nativeCheckInputs = map (d: d.name) (pkg.nativeCheckInputs or [ ]);
  }))
  (check "flake: checks.integration runs every test (AIOPS_TESTS=all) with nixpkgs' Prometheus, promtool, Alertmanager, wrk, prlimit and python3" (
    let
      integration = self.checks.${x86}.integration;
    in
    integration.env.AIOPS_TESTS == "all"
    && integration.doCheck
    && integration.cargoTestFlags == [ "--workspace" ]
    && integration.cargoLock == pkg.cargoLock
    && integration.src == pkg.src
    && lib.all (n: lib.any (d: d.name == n) integration.nativeCheckInputs) [
      "prometheus"
      "prometheus-cli"
      "alertmanager"
      "wrk"
      "util-linux"
      "python3"
    ]
  ) (builtins.toJSON (map (d: d.name) self.checks.${x86}.integration.nativeCheckInputs)))
  (check "flake: apps.demo runs `aiops demo` with Prometheus, Alertmanager and Grafana" (
    let
      app = self.apps.${x86}.demo;
    in
    app.type == "app"
    && lib.hasSuffix "/bin/aiops-demo" app.program
  ) (builtins.toJSON self.apps.${x86}.demo))
  (check "flake: the VM tests in tests/nixos/ are discovered as checks" (
    vmTestFiles != [ ] && lib.all (f: lib.elem "vm-${lib.removeSuffix ".nix" f}" checkNames) vmTestFiles
  ) (builtins.toJSON checkNames))
  (check "flake: checks cover clippy, fmt, the package, the integration tests, promtool, amtool and the module evaluation" (
    lib.all (n: lib.elem n checkNames) [
      "clippy"
      "fmt"
      "package"
      "integration"
      "promtool"
      "amtool"
      "module-eval"
    ]
  ) (builtins.toJSON checkNames))
  (check "flake: clippy denies warnings" (
    lib.hasInfix "-D warnings" self.checks.${x86}.clippy.buildPhase
  ) self.checks.${x86}.clippy.buildPhase)
  (check "flake: the module-eval check passes with this lib" (
    lib.hasInfix "PASS" self.checks.${x86}.module-eval.text
  ) "module-eval failed")
  (check "flake: nixosModules.default defaults services.aiops.package to the flake's package" (
    (evalWithFlakeModule x86).config.services.aiops.package == self.packages.${x86}.default
  ) "services.aiops.package is not the flake's package")
  (check "flake: the dev shell has the tools and the formatter is set" (
    self.devShells.${x86}.default ? packages && self.formatter.${x86}.name == "nixfmt-tree"
  ) "devShells/formatter")
  ]
  ++ lib.mapAttrsToList (
    name: t:
    let
      failed = lib.concatLists (lib.mapAttrsToList (_: evalNode) t.test.nodes);
    in
    check "flake: ${name}'s nodes evaluate with the module and pass its assertions" (failed == [ ]) (
      builtins.toJSON failed
    )
  ) vmTests;
}
