# Evaluates nixos/module.nix against the option stubs, as NixOS would: `config` plus the failed
# assertions (NixOS refuses to build a system while any assertion fails).
{ lib }:
let
  pkgs = import ./pkgs.nix { inherit lib; };
in
configuration:
let
  evaluated = lib.evalModules {
    modules = [
      ./stubs.nix
      ../../nixos/module.nix
      { _module.args.pkgs = pkgs; }
      configuration
    ];
  };
  inherit (evaluated) config;
in
{
  inherit config pkgs;
  inherit (evaluated) options;
  failedAssertions = map (a: a.message) (lib.filter (a: !a.assertion) config.assertions);
}
