{
  description = "aiops: safe, explainable remediation for one Linux host (recommend, approve, verify, audit)";

  # The supported branch: NixOS 26.05 (the lock pins a revision of it).
  inputs.nixpkgs.url = "github:NixOS/nixpkgs/nixos-26.05";

  outputs =
    { self, nixpkgs }:
    let
      inherit (nixpkgs) lib;
      systems = [
        "x86_64-linux"
        "aarch64-linux"
      ];
      forAllSystems = f: lib.genAttrs systems (system: f nixpkgs.legacyPackages.${system});
    in
    {
      overlays.default = final: _prev: {
        aiops = final.callPackage ./nixos/package.nix { };
      };

      packages = forAllSystems (pkgs: {
        aiops = pkgs.callPackage ./nixos/package.nix { };
        default = self.packages.${pkgs.stdenv.hostPlatform.system}.aiops;
      });

      # `nix run .#demo`: the whole stack as the current user, with nixpkgs' Prometheus,
      # Alertmanager and Grafana on the PATH.
      apps = forAllSystems (
        pkgs:
        let
          demo = pkgs.writeShellApplication {
            name = "aiops-demo";
            runtimeInputs = [
              self.packages.${pkgs.stdenv.hostPlatform.system}.default
              pkgs.prometheus
              (lib.getOutput "cli" pkgs.prometheus)
              pkgs.prometheus-alertmanager
              pkgs.grafana
            ];
            text = ''
              # Grafana needs its home (public assets, default configuration) besides the binary.
              export AIOPS_GRAFANA_HOMEPATH=${pkgs.grafana}/share/grafana
              exec aiops demo "$@"
            '';
          };
        in
        {
          demo = {
            type = "app";
            program = lib.getExe demo;
            meta.description = "Run the aiops demo stack (Prometheus, Alertmanager, Grafana, demo app, receiver) as the current user";
          };
          default = self.apps.${pkgs.stdenv.hostPlatform.system}.demo;
        }
      );

      # The module, with this flake's package as the default of services.aiops.package.
      nixosModules.default =
        { lib, pkgs, ... }:
        {
          imports = [ ./nixos/module.nix ];
          services.aiops.package = lib.mkDefault self.packages.${pkgs.stdenv.hostPlatform.system}.default;
        };
      nixosModules.aiops = self.nixosModules.default;

      checks = forAllSystems (pkgs: import ./nixos/checks.nix { inherit self pkgs lib; });

      devShells = forAllSystems (pkgs: {
        default = pkgs.mkShell {
          inputsFrom = [ self.packages.${pkgs.stdenv.hostPlatform.system}.default ];
          packages = [
            pkgs.cargo
            pkgs.rustc
            pkgs.clippy
            pkgs.rustfmt
            pkgs.prometheus
            (lib.getOutput "cli" pkgs.prometheus)
            pkgs.prometheus-alertmanager
            pkgs.wrk
            pkgs.nixfmt
            pkgs.python3
          ];
          # tests/nix-eval/run evaluates the module with this nixpkgs' lib.
          NIXPKGS_LIB = "${nixpkgs}";
        };
      });

      formatter = forAllSystems (pkgs: pkgs.nixfmt-tree);
    };
}
