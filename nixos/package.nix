# The aiops package: the three binaries, the systemd units they ship (one source of truth with the
# Debian VM test), and the Prometheus/Grafana assets the NixOS module and `aiops demo` use.
#
# Called by flake.nix with `pkgs.callPackage`. Every host that rebuilds may build this package
# itself, on a loaded builder, so its checkPhase runs only the hermetic tests: no Prometheus,
# Alertmanager or demo stack, no wall-clock targets, no fixed ports, no external tools. The rest
# of the suite, with nixpkgs' Prometheus and Alertmanager, is the flake's `checks.<system>.integration`
# (nixos/checks.nix).
{
  lib,
  rustPlatform,
}:
let
  workspace = (lib.importTOML ../Cargo.toml).workspace.package;

  # Only what the build and the Rust tests read: a change to docs/, the VM harness or the Nix files
  # does not rebuild the package.
  src = lib.fileset.toSource {
    root = ../.;
    fileset = lib.fileset.unions (
      [
        ../Cargo.toml
        ../Cargo.lock
        ../crates
        ../prometheus
        ../systemd
      ]
      ++ map lib.fileset.maybeMissing [
        ../.cargo
        ../grafana
        # Read by the Rust tests (aiops-assets checks docs/RUNBOOK.md against the rules).
        ../docs
      ]
    );
  };
in
rustPlatform.buildRustPackage {
  pname = "aiops";
  inherit (workspace) version;
  inherit src;

  cargoLock.lockFile = ../Cargo.lock;

  # Only the three shipped programs are built and installed (not the benchmark bins).
  cargoBuildFlags = [
    "--package=aiops"
    "--package=aiops-webhook"
    "--package=aiops-demo-app"
  ];
  # ...but every crate's tests run (`cargo test --release --workspace`)...
  cargoTestFlags = [ "--workspace" ];
  # ...the hermetic ones: with AIOPS_TESTS=hermetic each test that needs a live component, a
  # clock, a fixed port or an external tool skips itself and says why.
  env.AIOPS_TESTS = "hermetic";

  postInstall = ''
    unitdir=$out/lib/systemd/system
    mkdir -p "$unitdir"
    for unit in systemd/*.service; do
      substitute "$unit" "$unitdir/$(basename "$unit")" --replace-fail '@bindir@' "$out/bin"
    done

    share=$out/share/aiops
    mkdir -p "$share"
    cp -r prometheus "$share/prometheus"
    if [ -d grafana ]; then
      cp -r grafana "$share/grafana"
    fi
  '';

  meta = {
    description = "Safe, explainable remediation for one Linux host: recommend, approve, verify, audit";
    homepage = workspace.repository;
    license = lib.licenses.mit;
    mainProgram = "aiops";
    platforms = lib.platforms.linux;
  };
}
