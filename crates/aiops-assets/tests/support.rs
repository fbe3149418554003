//! Helpers shared by the test modules: the repository, the real tools, child processes that
//! die with the test, bounded waits, and an HTTP client for loopback.

use std::fs;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

/// The repository root (two levels above this crate).
pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Finds a tool or returns from the test: skipped (saying why) locally, failed when tools are
/// required (`CI`, `AIOPS_TESTS=all`; see `aiops_testkit::tools`).
macro_rules! tool_or_skip {
    ($($name:expr),+) => {
        match aiops_testkit::tools::require(&[$($name),+]) {
            Some(p) => p,
            None => return,
        }
    };
}
pub(crate) use tool_or_skip;

/// Runs a command to completion; panics with its output unless it succeeded.
pub fn run_ok(cmd: &mut Command) -> String {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}):\n{text}",
        out.status
    );
    text
}

/// `N` distinct ports the kernel had free a moment ago (all bound at once, then released), for
/// components the test does not start: a connection to them is refused.
pub fn closed_ports<const N: usize>() -> [u16; N] {
    let listeners: Vec<TcpListener> = (0..N)
        .map(|_| TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0"))
        .collect();
    std::array::from_fn(|i| listeners[i].local_addr().expect("local_addr").port())
}

/// Polls `f` every 100 ms until it returns `Some`, for at most `limit`.
pub fn wait_for<T>(what: &str, limit: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            start.elapsed() < limit,
            "timed out after {limit:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A child process killed (by its pid) and reaped when dropped, on every exit path.
#[derive(Debug)]
pub struct Proc {
    pub child: Child,
    pub log: PathBuf,
    pub name: &'static str,
}

impl Proc {
    /// Starts `cmd` with stdout and stderr appended to `log`.
    pub fn spawn(name: &'static str, mut cmd: Command, log: PathBuf) -> Proc {
        let file = fs::File::create(&log).expect("create log file");
        let child = cmd
            .stdin(Stdio::null())
            .stdout(file.try_clone().expect("clone log file"))
            .stderr(file)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name} ({cmd:?}): {e}"));
        Proc { child, log, name }
    }

    pub fn log_text(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The port from the `msg="Listening on" address=127.0.0.1:PORT` line that Prometheus and
    /// Alertmanager log once bound (they are started on port 0).
    pub fn listening_port(&mut self) -> u16 {
        let name = self.name;
        wait_for(
            &format!("{name} to listen"),
            Duration::from_secs(60),
            || {
                if let Ok(Some(status)) = self.child.try_wait() {
                    panic!(
                        "{name} exited ({status}) before listening:\n{}",
                        self.log_text()
                    );
                }
                self.log_text()
                    .lines()
                    .filter(|l| l.contains("msg=\"Listening on\""))
                    .find_map(|l| l.rsplit("address=127.0.0.1:").next()?.trim().parse().ok())
            },
        )
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A client for loopback only: no proxy from the environment, bounded time, and non-2xx answers
/// returned rather than turned into errors (so a query's error message can be shown).
pub fn http() -> ureq::Agent {
    ureq::Agent::config_builder()
        .proxy(None)
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(20)))
        .build()
        .into()
}

/// One request the receiver got.
#[derive(Debug, Clone)]
pub struct Received {
    pub at: Instant,
    pub authorization: Option<String>,
    pub body: Value,
}

/// A stand-in for aiops-webhook that records what Alertmanager posts and answers 200.
#[derive(Debug)]
pub struct Receiver {
    pub port: u16,
    got: Arc<Mutex<Vec<Received>>>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Receiver {
    pub fn start() -> Receiver {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.set_nonblocking(true).expect("nonblocking");
        let port = listener.local_addr().expect("addr").port();
        let got = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (g, s) = (got.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((conn, _)) => {
                        if let Some(r) = serve_one(conn) {
                            g.lock().expect("lock").push(r);
                        }
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(20)),
                }
            }
        });
        Receiver {
            port,
            got,
            stop,
            thread: Some(thread),
        }
    }

    pub fn received(&self) -> Vec<Received> {
        self.got.lock().expect("lock").clone()
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn serve_one(mut conn: TcpStream) -> Option<Received> {
    conn.set_nonblocking(false).ok()?;
    conn.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let n = conn.read(&mut chunk).ok()?;
        if n == 0 || buf.len() > 1 << 20 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
    let header = |name: &str| {
        head.lines()
            .filter_map(|l| l.split_once(':'))
            .find(|(k, _)| k.trim().eq_ignore_ascii_case(name))
            .map(|(_, v)| v.trim().to_owned())
    };
    let len: usize = header("content-length")?.parse().ok()?;
    while buf.len() < head_end + len {
        let n = conn.read(&mut chunk).ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    let at = Instant::now();
    let body = serde_json::from_slice(&buf[head_end..head_end + len]).ok()?;
    conn.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
        .ok()?;
    Some(Received {
        at,
        authorization: header("authorization"),
        body,
    })
}

/// Prometheus on `127.0.0.1:0` with the tree rendered into `etc` for `ports`; once its port is
/// known, the tree is rendered again with it and reloaded, so it scrapes itself where it is.
/// Returns the process, with `ports.prometheus` set.
pub fn start_prometheus(
    bin: &Path,
    dir: &Path,
    etc: &Path,
    ports: &mut aiops_assets::Ports,
    token: &Path,
) -> Proc {
    let r = aiops_assets::render(etc, ports, token).expect("render");
    let mut cmd = Command::new(bin);
    cmd.arg(format!("--config.file={}", r.prometheus_config.display()))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.join("prometheus-data").display()
        ))
        .arg("--web.listen-address=127.0.0.1:0")
        .arg("--web.enable-lifecycle");
    let mut prom = Proc::spawn("prometheus", cmd, dir.join("prometheus.log"));
    ports.prometheus = prom.listening_port();
    let base = aiops_assets::Ports::url(ports.prometheus);
    let agent = http();
    wait_for("Prometheus ready", Duration::from_secs(60), || {
        (agent.get(format!("{base}/-/ready")).call().ok()?.status() == 200).then_some(())
    });
    aiops_assets::render(etc, ports, token).expect("re-render");
    let resp = agent
        .post(format!("{base}/-/reload"))
        .send_empty()
        .expect("reload");
    assert_eq!(resp.status(), 200, "{}", prom.log_text());
    prom
}

/// Alertmanager on `127.0.0.1:0` with `config`, without clustering; returns it and its port.
pub fn start_alertmanager(bin: &Path, dir: &Path, config: &Path) -> (Proc, u16) {
    let mut cmd = Command::new(bin);
    cmd.arg(format!("--config.file={}", config.display()))
        .arg(format!(
            "--storage.path={}",
            dir.join("alertmanager-data").display()
        ))
        .arg("--web.listen-address=127.0.0.1:0")
        // No gossip: a lone Alertmanager would otherwise bind 0.0.0.0:9094.
        .arg("--cluster.listen-address=");
    let mut am = Proc::spawn("alertmanager", cmd, dir.join("alertmanager.log"));
    let port = am.listening_port();
    let base = aiops_assets::Ports::url(port);
    let agent = http();
    wait_for("Alertmanager ready", Duration::from_secs(60), || {
        (agent.get(format!("{base}/-/ready")).call().ok()?.status() == 200).then_some(())
    });
    (am, port)
}

/// Runs an instant query; the result list, or Prometheus's error.
pub fn instant(agent: &ureq::Agent, base: &str, expr: &str) -> Result<Vec<Value>, String> {
    let mut resp = agent
        .get(format!("{base}/api/v1/query"))
        .query("query", expr)
        .call()
        .map_err(|e| format!("request failed: {e}"))?;
    let body: Value = resp
        .body_mut()
        .read_json()
        .map_err(|e| format!("not JSON: {e}"))?;
    if body["status"] != "success" {
        return Err(format!("{}: {}", body["errorType"], body["error"]));
    }
    Ok(body["data"]["result"]
        .as_array()
        .cloned()
        .unwrap_or_default())
}
