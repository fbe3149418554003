# A stub `pkgs` for evaluating nixos/module.nix without nixpkgs: what the module and stubs.nix use,
# with nothing that needs building. A "derivation" here is an attribute set with a fake store path
# (so `types.package`/`types.path` accept it and string interpolation works) that also carries
# what it would contain, for the tests to inspect: `text` for writeText, `value` for the formats,
# `buildCommand` for runCommand.
#
# The option types of `formats.*` are copied from nixpkgs' pkgs/pkgs-lib/formats.nix, because the
# module's freeform `settings` is type-checked against them.
{ lib }:
let
  fakeDrv =
    name: extra:
    {
      type = "derivation";
      inherit name;
      outputName = "out";
      outPath = "${builtins.storeDir}/00000000000000000000000000000000-${name}";
      drvPath = "${builtins.storeDir}/00000000000000000000000000000000-${name}.drv";
      meta = { };
    }
    // extra;

  fakePackage =
    pname: extra:
    fakeDrv pname (
      {
        inherit pname;
        version = "0";
      }
      // extra
    );

  json =
    { }:
    {
      type =
        let
          valueType =
            with lib.types;
            nullOr (oneOf [
              bool
              int
              float
              str
              path
              (attrsOf valueType)
              (listOf valueType)
            ])
            // {
              description = "JSON value";
            };
        in
        valueType;
      generate = name: value: fakeDrv name { inherit value; };
    };
in
rec {
  writeText = name: text: fakeDrv name { inherit text; };
  # trivial-builders.nix: runCommand name env buildCommand. Never run here; the runner runs the
  # command's program itself (see tests/nix-eval/run).
  runCommand = name: env: buildCommand: fakeDrv name (env // { inherit buildCommand; });

  formats = {
    inherit json;
    yaml = json;
    toml =
      { }:
      json { }
      // {
        type =
          let
            valueType =
              with lib.types;
              oneOf [
                bool
                int
                float
                str
                path
                (attrsOf valueType)
                (listOf valueType)
              ]
              // {
                description = "TOML value";
              };
          in
          valueType;
      };
    ini =
      {
        listToValue ? null,
        ...
      }:
      {
        type =
          let
            singleIniAtom =
              with lib.types;
              nullOr (oneOf [
                bool
                int
                float
                str
              ])
              // {
                description = "INI atom (null, bool, int, float or string)";
              };
            iniAtom =
              if listToValue != null then
                lib.types.coercedTo singleIniAtom lib.singleton (lib.types.nonEmptyListOf singleIniAtom)
              else
                singleIniAtom;
          in
          lib.types.attrsOf (lib.types.attrsOf iniAtom);
        generate = name: value: fakeDrv name { inherit value; };
      };
  };

  coreutils = fakePackage "coreutils" { };
  prometheus = fakePackage "prometheus" { };
  prometheus-alertmanager = fakePackage "alertmanager" { };
  grafana = fakePackage "grafana" { };
  polkit = fakePackage "polkit" { };
  # What the flake's overlay provides; the tests usually set services.aiops.package themselves.
  aiops = fakePackage "aiops" { };
}
