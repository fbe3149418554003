# `nix flake check`: the NixOS VM tests (every file in tests/nixos/), clippy, rustfmt, the package
# build (which runs the hermetic tests), the whole test suite with nixpkgs' Prometheus and
# Alertmanager (integration), promtool/amtool on prometheus/, and the module evaluation test of
# tests/nix-eval with this nixpkgs' lib.
{
  self,
  pkgs,
  lib,
}:
let
  system = pkgs.stdenv.hostPlatform.system;
  aiops = self.packages.${system}.default;
  promtool = lib.getOutput "cli" pkgs.prometheus;

  rustSrc = lib.fileset.toSource {
    root = ../.;
    fileset = lib.fileset.unions [
      ../Cargo.toml
      ../Cargo.lock
      ../crates
    ];
  };
  prometheusSrc = lib.fileset.toSource {
    root = ../.;
    fileset = ../prometheus;
  };

  # tests/nixos/NAME.nix -> checks.vm-NAME, each `{ self, pkgs, lib }: pkgs.testers.runNixOSTest ...`.
  vmTests = lib.mapAttrs' (
    file: _:
    lib.nameValuePair "vm-${lib.removeSuffix ".nix" file}" (
      import (../tests/nixos + "/${file}") { inherit self pkgs lib; }
    )
  ) (lib.filterAttrs (file: type: type == "regular" && lib.hasSuffix ".nix" file) (builtins.readDir ../tests/nixos));

  evalResults = (import ../tests/nix-eval/cases.nix { inherit lib; }).results;
  evalFailures = lib.filter (r: !r.ok) evalResults;
in
vmTests
// {
  package = aiops;

  # Every test of the workspace, the live ones included (`cargo test --release --workspace`, the
  # same build as the package): real Prometheus (and promtool), Alertmanager (and amtool), wrk,
  # prlimit and python3 from this nixpkgs. AIOPS_TESTS=all makes a test whose tool is missing fail
  # instead of skipping, so this check cannot pass by running less.
  integration = aiops.overrideAttrs (old: {
    pname = "aiops-integration";
    env = (old.env or { }) // {
      AIOPS_TESTS = "all";
    };
    nativeCheckInputs = (old.nativeCheckInputs or [ ]) ++ [
      pkgs.prometheus
      promtool
      pkgs.prometheus-alertmanager
      pkgs.wrk
      pkgs.util-linux # prlimit
      pkgs.python3
    ];
    doCheck = true;
    preCheck = ''
      export HOME=$TMPDIR
    '';
    # The tests are the product; nothing is installed.
    installPhase = ''
      touch $out
    '';
  });

  clippy = aiops.overrideAttrs (old: {
    pname = "aiops-clippy";
    nativeBuildInputs = old.nativeBuildInputs ++ [ pkgs.clippy ];
    buildPhase = ''
      runHook preBuild
      cargo clippy --workspace --all-targets --offline -- -D warnings
      runHook postBuild
    '';
    doCheck = false;
    installPhase = ''
      touch $out
    '';
  });

  fmt =
    pkgs.runCommand "aiops-fmt"
      {
        nativeBuildInputs = [
          pkgs.cargo
          pkgs.rustfmt
        ];
      }
      ''
        export HOME=$TMPDIR
        cd ${rustSrc}
        cargo fmt --all --check
        touch $out
      '';

  promtool = pkgs.runCommand "aiops-promtool" { nativeBuildInputs = [ promtool ]; } ''
    cd ${prometheusSrc}/prometheus
    promtool check config prometheus.yml
    promtool check rules rules.yml
    promtool test rules tests/*.yml
    touch $out
  '';

  amtool = pkgs.runCommand "aiops-amtool" { nativeBuildInputs = [ pkgs.prometheus-alertmanager ]; } ''
    amtool check-config ${prometheusSrc}/prometheus/alertmanager.yml
    touch $out
  '';

  # The same cases tests/nix-eval/run evaluates here, with the real nixpkgs lib; a failing case
  # fails evaluation with its message.
  module-eval =
    if evalFailures == [ ] then
      pkgs.writeText "aiops-module-eval" (
        lib.concatMapStrings (r: "PASS ${r.name}\n") evalResults
      )
    else
      throw "tests/nix-eval: ${
        lib.concatMapStringsSep "\n" (r: "FAIL ${r.name}: ${r.detail}") evalFailures
      }";
}
