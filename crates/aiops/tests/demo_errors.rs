//! `aiops demo` refuses to start, with a message that names the problem and the fix, when a
//! program is missing, a port is taken, the state directory is unwritable or already in use.
//! Each check happens before any child is started, so these runs start nothing.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

/// `aiops demo ARGS` with PATH = `path` and nothing of the developer's own set-up. Every port
/// flag that `args` does not set gets a port that was free a moment ago, so the demo's own checks
/// never touch its fixed defaults (18080, 19095, ...), which something else on the machine may hold.
fn demo(path: &Path, args: &[&str]) -> Output {
    let flags = [
        "--app-port",
        "--webhook-port",
        "--prometheus-port",
        "--alertmanager-port",
    ];
    let ports = aiops_testkit::free_ports(flags.len());
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_aiops"));
    cmd.arg("demo").args(args);
    for (flag, port) in flags.iter().zip(ports) {
        if !args.contains(flag) {
            cmd.arg(flag).arg(port.to_string());
        }
    }
    cmd.args(["--stop-after", "1s", "--no-grafana"])
        .env("PATH", path)
        .env("AIOPS_CONFIG", "/nonexistent/aiops-test-config.toml")
        .env_remove("XDG_STATE_HOME")
        .env("HOME", "/nonexistent");
    let child = cmd
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run aiops demo");
    wait_bounded(child, Duration::from_secs(30))
}

/// Waits for the child, killing it (by its pid) if it runs past `limit`.
fn wait_bounded(mut child: std::process::Child, limit: Duration) -> Output {
    let deadline = std::time::Instant::now() + limit;
    while child.try_wait().expect("wait for aiops demo").is_none() {
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!("aiops demo did not exit within {limit:?}: it should refuse at once");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child
        .wait_with_output()
        .expect("collect aiops demo's output")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// A directory of stand-in programs, so that `find_binaries` passes without starting anything.
fn fake_programs(dir: &Path) {
    for name in [
        "prometheus",
        "alertmanager",
        "aiops-demo-app",
        "aiops-webhook",
    ] {
        let p = dir.join(name);
        std::fs::write(&p, "#!/bin/sh\nexit 99\n").unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
}

fn free_port() -> (std::net::TcpListener, u16) {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    (l, port)
}

#[test]
fn missing_programs_are_named_with_how_to_install_them() {
    let dir = tempfile::tempdir().unwrap();
    let empty = dir.path().join("empty-path");
    std::fs::create_dir(&empty).unwrap();
    let state = dir.path().join("state");
    let out = demo(&empty, &["--state-dir", state.to_str().unwrap()]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(6), "{err}");
    assert!(err.contains("missing programs"), "{err}");
    assert!(
        err.contains("prometheus: install it (Debian/Ubuntu: sudo apt-get install prometheus"),
        "{err}"
    );
    assert!(
        err.contains(
            "alertmanager: install it (Debian/Ubuntu: sudo apt-get install prometheus-alertmanager"
        ),
        "{err}"
    );
    assert!(
        !state.join("demo.pid").exists(),
        "a refused demo left its pid file"
    );
}

#[test]
fn a_port_in_use_is_named_with_the_flag_that_moves_it() {
    let dir = tempfile::tempdir().unwrap();
    fake_programs(dir.path());
    let (_taken, port) = free_port();
    let state = dir.path().join("state");
    let out = demo(
        dir.path(),
        &[
            "--state-dir",
            state.to_str().unwrap(),
            "--prometheus-port",
            &port.to_string(),
        ],
    );
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains(&format!(
            "port {port} for the Prometheus is not free on 127.0.0.1"
        )),
        "{err}"
    );
    assert!(err.contains("--prometheus-port"), "{err}");
    assert!(
        err.contains(&format!("ss -ltnp 'sport = :{port}'")),
        "{err}"
    );
}

#[test]
fn an_unwritable_state_dir_is_named_with_the_fix() {
    let dir = tempfile::tempdir().unwrap();
    fake_programs(dir.path());
    // A directory below a regular file can never be created, whoever runs the test (root too).
    let file = dir.path().join("a-file");
    std::fs::write(&file, "").unwrap();
    let state = file.join("state");
    let out = demo(dir.path(), &["--state-dir", state.to_str().unwrap()]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains(&format!(
            "the state directory {} is not writable",
            state.display()
        )),
        "{err}"
    );
    assert!(err.contains("pass --state-dir DIR"), "{err}");
}

#[test]
fn a_state_dir_in_use_by_another_demo_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    fake_programs(dir.path());
    let state = dir.path().join("state");
    std::fs::create_dir(&state).unwrap();
    std::fs::write(state.join("demo.pid"), "4242\n").unwrap();
    let _held = aiops_core::fsutil::try_lock_exclusive(&state.join("demo.lock"))
        .unwrap()
        .expect("the lock is free before the demo runs");
    let out = demo(dir.path(), &["--state-dir", state.to_str().unwrap()]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("another aiops demo (pid 4242) is running with the state directory"),
        "{err}"
    );
    assert!(err.contains("pass another --state-dir"), "{err}");
}
