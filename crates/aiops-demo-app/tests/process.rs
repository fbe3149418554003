//! The real binary: SIGTERM drains, sd_notify messages, process CPU, configuration precedence.

use std::net::TcpStream;
use std::os::unix::net::UnixDatagram;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;

use crate::support::{self, Binary, get, post, wait_until};

const CONFIG: &str = "[demo_app]\nshutdown_grace_secs = 10\n";

#[test]
fn sigterm_drains_in_flight_requests_and_exits_0() {
    let mut bin = Binary::start(CONFIG, &[], &[]);
    let a = bin.addr;
    let r = post(a, "/admin/faults/latency?delay_ms=1500&duration=60");
    assert_eq!(r.status, 200, "{}", r.text());

    let slow = std::thread::spawn(move || {
        let r = get(a, "/api/items/9");
        (r, Instant::now())
    });
    // The scrape counts itself, so 2 means the slow request is being answered.
    assert!(
        wait_until(Duration::from_secs(10), || {
            support::scrape(a).value("http_requests_in_flight", &[]) >= 2.0
        }),
        "the slow request never arrived"
    );
    bin.signal(Signal::SIGTERM);
    let signalled = Instant::now();

    let refused = wait_until(Duration::from_secs(5), || TcpStream::connect(a).is_err());
    let refused_at = Instant::now();
    assert!(
        refused,
        "new connections were still accepted 5 s after SIGTERM"
    );

    let (resp, answered_at) = slow.join().unwrap();
    assert_eq!(
        resp.status,
        200,
        "the in-flight request was answered: {}",
        resp.text()
    );
    assert!(
        refused_at < answered_at,
        "the listener closed only after the in-flight request finished"
    );
    let status = bin.wait_exit(Duration::from_secs(12)).unwrap_or_else(|| {
        panic!(
            "still running 12 s after SIGTERM; stderr:\n{}",
            bin.stderr_text()
        )
    });
    assert_eq!(status.code(), Some(0), "stderr:\n{}", bin.stderr_text());
    assert!(signalled.elapsed() < Duration::from_secs(12));
    assert!(
        bin.stderr_text().contains("clean drain"),
        "{}",
        bin.stderr_text()
    );
}

/// Receives datagrams until `want` holds for one of them (bounded); returns all received.
fn receive_until(
    sock: &UnixDatagram,
    log: &mut Vec<String>,
    timeout: Duration,
    want: impl Fn(&str) -> bool,
) -> bool {
    let deadline = Instant::now() + timeout;
    let mut buf = vec![0u8; 4096];
    while Instant::now() < deadline {
        sock.set_read_timeout(Some(
            deadline
                .saturating_duration_since(Instant::now())
                .max(Duration::from_millis(1)),
        ))
        .unwrap();
        if let Ok(n) = sock.recv(&mut buf) {
            let msg = String::from_utf8_lossy(&buf[..n]).into_owned();
            let hit = want(&msg);
            log.push(msg);
            if hit {
                return true;
            }
        }
    }
    false
}

#[test]
fn readiness_status_and_watchdog_arrive_on_notify_socket() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("notify.sock");
    let sock = UnixDatagram::bind(&path).unwrap();
    let mut bin = Binary::start(
        CONFIG,
        &[],
        &[
            ("NOTIFY_SOCKET", path.to_str().unwrap()),
            ("WATCHDOG_USEC", "200000"),
        ],
    );
    let a = bin.addr;
    let mut log = Vec::new();

    assert!(
        receive_until(&sock, &mut log, Duration::from_secs(10), |m| m
            .contains("READY=1")),
        "no READY=1: {log:?}"
    );
    let ready = log.iter().find(|m| m.contains("READY=1")).unwrap().clone();
    assert!(
        ready.contains(&format!("STATUS=serving on {a}; faults: none")),
        "{ready:?}"
    );
    // Ready means serving: the very next request is answered.
    assert_eq!(get(a, "/healthz").status, 200);

    assert!(
        receive_until(&sock, &mut log, Duration::from_secs(10), |m| m
            .contains("WATCHDOG=1")),
        "no WATCHDOG=1: {log:?}"
    );

    assert_eq!(
        post(a, "/admin/faults/errors?ratio=0.3&duration=60").status,
        200
    );
    assert!(
        receive_until(&sock, &mut log, Duration::from_secs(10), |m| m
            .contains("STATUS=serving on")
            && m.contains("faults: errors 30%")),
        "no STATUS update for the fault: {log:?}"
    );

    bin.signal(Signal::SIGTERM);
    assert!(
        receive_until(&sock, &mut log, Duration::from_secs(10), |m| m
            .contains("STOPPING=1")),
        "no STOPPING=1: {log:?}"
    );
    let status = bin
        .wait_exit(Duration::from_secs(12))
        .expect("exits after SIGTERM");
    assert_eq!(status.code(), Some(0), "stderr:\n{}", bin.stderr_text());
}

#[test]
fn without_notify_socket_nothing_is_fatal() {
    let mut bin = Binary::start(CONFIG, &[], &[]);
    assert_eq!(get(bin.addr, "/").status, 200);
    bin.signal(Signal::SIGINT);
    let status = bin
        .wait_exit(Duration::from_secs(12))
        .expect("exits after SIGINT");
    assert_eq!(status.code(), Some(0), "stderr:\n{}", bin.stderr_text());
}

#[test]
fn cpu_burn_shows_in_process_cpu_seconds_and_stops_on_time() {
    if !aiops_testkit::tools::live() {
        return;
    }
    let bin = Binary::start(CONFIG, &[], &[]);
    let a = bin.addr;
    let cpu = || support::scrape(a).value("process_cpu_seconds_total", &[]);
    let before = cpu();
    let started = Instant::now();
    // As many threads as allowed (2 × CPUs), so the burn wins its share on a busy host.
    let threads = 2 * std::thread::available_parallelism().map_or(1, |n| n.get());
    let r = post(
        a,
        &format!("/admin/faults/cpu?threads={threads}&duration=2"),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        support::scrape(a).value("demo_fault_active", &[("kind", "cpu")]),
        1.0
    );
    assert!(wait_until(Duration::from_secs(8), || {
        support::scrape(a).value("demo_fault_active", &[("kind", "cpu")]) == 0.0
    }));
    let ended = started.elapsed();
    assert!(
        ended >= Duration::from_millis(1900) && ended <= Duration::from_secs(4),
        "{ended:?}"
    );
    let burned = cpu() - before;
    // Up to CPUs × 2 s on an idle host; a host busy with other work gives less, but an idle
    // app burns about 0.01 CPU-seconds in this time.
    assert!(burned >= 0.5, "only {burned} CPU-seconds burned");

    // And the threads really stopped: the process is nearly idle afterwards.
    let idle_from = cpu();
    let t = Instant::now();
    assert!(wait_until(Duration::from_secs(3), || t.elapsed()
        >= Duration::from_secs(1)));
    let idle = cpu() - idle_from;
    assert!(
        idle < 0.5,
        "{idle} CPU-seconds in the second after the fault ended"
    );
}

#[test]
fn the_leak_is_resident_and_stays_after_the_fault() {
    let bin = Binary::start(CONFIG, &[], &[]);
    let a = bin.addr;
    let rss = || support::scrape(a).value("process_resident_memory_bytes", &[]);
    let before = rss();
    let r = post(a, "/admin/faults/leak?bytes_per_sec=16777216&duration=2");
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(wait_until(Duration::from_secs(8), || {
        support::scrape(a).value("demo_fault_active", &[("kind", "leak")]) == 0.0
    }));
    let leaked = support::scrape(a).value("demo_leaked_bytes", &[]);
    assert!(leaked >= 24.0 * 1048576.0, "leaked {leaked}");
    // Touched, so resident: RSS grew by most of what was leaked, and it stays.
    let grown = rss() - before;
    assert!(
        grown >= 0.8 * leaked,
        "RSS grew {grown} for {leaked} leaked"
    );
    assert_eq!(get(a, "/healthz").status, 200);
    assert!(rss() - before >= 0.8 * leaked, "the leak was given back");
}

#[test]
fn flags_override_the_configuration_file() {
    let file = "[demo_app]\ncache_capacity = 7\n";
    let bin = Binary::start(file, &[], &[]);
    assert_eq!(
        support::scrape(bin.addr).value("demo_cache_capacity", &[]),
        7.0
    );
    drop(bin);
    let bin = Binary::start(file, &["--cache-capacity", "3"], &[]);
    assert_eq!(
        support::scrape(bin.addr).value("demo_cache_capacity", &[]),
        3.0
    );
}

#[test]
fn listen_comes_from_flag_then_environment_then_file() {
    let file = "[demo_app]\nlisten = \"127.0.0.3:0\"\n";
    let bin = Binary::start_raw(file, &[], &[]);
    assert_eq!(bin.addr.ip().to_string(), "127.0.0.3");
    drop(bin);
    let env = [("AIOPS_DEMO_LISTEN", "127.0.0.2:0")];
    let bin = Binary::start_raw(file, &[], &env);
    assert_eq!(bin.addr.ip().to_string(), "127.0.0.2");
    assert_eq!(get(bin.addr, "/healthz").status, 200);
    drop(bin);
    let bin = Binary::start_raw(file, &["--listen", "127.0.0.1:0"], &env);
    assert_eq!(bin.addr.ip().to_string(), "127.0.0.1");
}

#[test]
fn a_bad_configuration_fails_with_a_message_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.toml");
    std::fs::write(&config, "[demo_app]\ncache_size = 7\n").unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_aiops-demo-app"))
        .arg("--config")
        .arg(&config)
        .args(["--listen", "127.0.0.1:0"])
        .env_remove("NOTIFY_SOCKET")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("cache_size") && stderr.contains("config.toml"),
        "{stderr}"
    );
}
