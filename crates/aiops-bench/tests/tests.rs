//! The harness against the real reference server: spawn, first response, RSS, wrk.

use std::process::Command;
use std::time::Duration;

use aiops_bench::{KeepAlive, Spawned, http_get, wrk};

fn hello() -> Spawned {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_hello-hyper"));
    cmd.args(["--listen", "127.0.0.1:0"]);
    Spawned::start(cmd, "/", Duration::from_secs(20)).expect("hello-hyper starts")
}

#[test]
fn spawned_servers_are_timed_measured_and_killed() {
    let server = hello();
    assert!(server.first_response > Duration::ZERO);
    assert!(server.first_response < Duration::from_secs(20));
    let (status, body) = http_get(server.addr, "/", Duration::from_secs(5)).unwrap();
    assert_eq!(
        (status, body.as_slice()),
        (200, b"Hello, World!".as_slice())
    );
    let rss = server.rss_bytes().unwrap();
    assert!(rss > 100 * 1024 && rss < 512 * 1024 * 1024, "{rss}");
    let pid = server.pid();
    drop(server);
    assert!(
        !std::path::Path::new(&format!("/proc/{pid}")).exists()
            || std::fs::read_to_string(format!("/proc/{pid}/status"))
                .is_ok_and(|s| s.contains("State:\tZ")),
        "the server was not killed"
    );
}

#[test]
fn the_keep_alive_client_reuses_its_connection() {
    let server = hello();
    let mut client = KeepAlive::new(server.addr, Duration::from_secs(5));
    for _ in 0..3 {
        let (status, body) = client.get("/").unwrap();
        assert_eq!(
            (status, body.as_slice()),
            (200, b"Hello, World!".as_slice())
        );
    }
    assert_eq!(
        client.connects, 1,
        "three requests should share one connection"
    );
}

#[test]
fn a_server_that_never_listens_is_reported() {
    let mut cmd = Command::new("sh");
    cmd.args(["-c", "echo starting >&2; exit 3"]);
    let err = Spawned::start(cmd, "/", Duration::from_secs(5))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("listening on") && err.contains("starting"),
        "{err}"
    );
}

#[test]
fn wrk_runs_are_parsed() {
    if aiops_testkit::tools::require(&["wrk"]).is_none() {
        return;
    }
    let server = hello();
    let report = wrk::Run {
        wrk: "wrk",
        url: server.url("/"),
        threads: 1,
        connections: 4,
        duration: Duration::from_secs(1),
        script: None,
    }
    .run()
    .unwrap();
    assert!(report.requests_per_sec > 100.0, "{report:?}");
    assert!(report.requests > 100);
    assert!(
        report.p50 <= report.p99 && report.p99 > Duration::ZERO,
        "{report:?}"
    );
    assert_eq!(report.non_2xx, 0);
}

/// `bench-control` runs end to end on a small scale and reports both phases (as root: it plays
/// the abuser as `nobody`).
#[test]
fn bench_control_reports_both_phases() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skipped: bench-control plays another uid, which needs root");
        return;
    }
    let out = Command::new(env!("CARGO_BIN_EXE_bench-control"))
        .args([
            "--idle",
            "20",
            "--probes",
            "1",
            "--spam-secs",
            "1",
            "--threads",
            "2",
        ])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("| 20 | "),
        "all 20 idle connections reported: {stdout}"
    );
    assert!(
        stdout.contains("0 of 1 |"),
        "root's list answered: {stdout}"
    );
    assert!(stdout.contains("| 2 threads, "), "{stdout}");
}
