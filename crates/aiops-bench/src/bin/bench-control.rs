//! `bench-control`: the control socket under a hostile local user.
//!
//! The executor's control socket is mode 0666: any local user can connect. This benchmark serves
//! a real [`Gate`]'s control socket on a temporary state directory and plays the abuser as
//! `nobody` (uid 65534, so it must run as root), in two phases:
//!
//! 1. **Idle connections.** The abuser opens `--idle` connections that never send a byte, and
//!    reopens every one the server closes. Meanwhile root runs `aiops pending` (a `list` request)
//!    `--probes` times; reported: the slowest and the median answer time (capped at
//!    `--probe-timeout`).
//! 2. **Refused requests.** The abuser sends `list` requests as fast as `--threads` threads can
//!    for `--spam-secs`; each one is refused (nobody is no operator). Reported: refusals answered
//!    per second, other answers per second (connections turned away at accept), and what the
//!    abuse cost the audit log (lines and bytes per second of abuse, including what the server
//!    writes when it stops).

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use aiops_actions::Gate;
use aiops_actions::control::{ControlClient, Request};
use aiops_bench::{Table, fmt_duration, percentile};
use anyhow::{Context, bail};
use clap::Parser;

/// The unprivileged account the abuser runs as.
const NOBODY: u32 = 65534;

#[derive(Debug, Parser)]
#[command(
    about = "The control socket's answer time for root and the audit log's growth under a hostile local user"
)]
struct Args {
    /// Idle connections the abuser holds in phase 1.
    #[arg(long, default_value_t = 500)]
    idle: usize,
    /// Root's `list` requests timed in phase 1.
    #[arg(long, default_value_t = 5)]
    probes: usize,
    /// Longest wait for one of root's answers before it counts as "timed out".
    #[arg(long, default_value_t = 90)]
    probe_timeout: u64,
    /// Seconds of refused requests in phase 2.
    #[arg(long, default_value_t = 5)]
    spam_secs: u64,
    /// Abuser threads in phase 2.
    #[arg(long, default_value_t = 8)]
    threads: usize,
    /// Internal: run as the abuser (`idle` or `spam`) against this socket.
    #[arg(long, hide = true)]
    abuser: Option<String>,
    #[arg(long, hide = true)]
    socket: Option<PathBuf>,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if let Some(mode) = &args.abuser {
        let socket = args.socket.clone().context("--abuser needs --socket")?;
        return match mode.as_str() {
            "idle" => abuse_idle(&socket, args.idle),
            "spam" => abuse_spam(&socket, args.threads, Duration::from_secs(args.spam_secs)),
            other => bail!("unknown abuser mode {other:?}"),
        };
    }
    if !nix::unistd::geteuid().is_root() {
        bail!("bench-control plays the abuser as uid {NOBODY}: run it as root");
    }
    run(&args)
}

/// Holds `n` connections open without sending anything; reopens closed ones. Prints `ready N`
/// once N are open (or after 5 s), then runs until stdin closes.
fn abuse_idle(socket: &Path, n: usize) -> anyhow::Result<()> {
    let stop = Arc::new(AtomicBool::new(false));
    let open = Arc::new(AtomicU64::new(0));
    let workers = 16.min(n.max(1));
    let mut threads = Vec::new();
    for w in 0..workers {
        let (socket, stop, open) = (socket.to_owned(), stop.clone(), open.clone());
        let mine = n / workers + usize::from(w < n % workers);
        threads.push(std::thread::spawn(move || {
            let mut held: Vec<Option<UnixStream>> = (0..mine).map(|_| None).collect();
            while !stop.load(Ordering::SeqCst) {
                for slot in held.iter_mut() {
                    let closed = slot.as_ref().is_none_or(|s| {
                        use nix::sys::socket::{MsgFlags, recv};
                        use std::os::fd::AsRawFd;
                        let mut b = [0u8; 1];
                        // 0 bytes: the server closed it; data: it answered (and will close).
                        let peeked = recv(
                            s.as_raw_fd(),
                            &mut b,
                            MsgFlags::MSG_PEEK | MsgFlags::MSG_DONTWAIT,
                        );
                        !matches!(peeked, Err(nix::errno::Errno::EAGAIN))
                    });
                    if closed {
                        if slot.take().is_some() {
                            open.fetch_sub(1, Ordering::SeqCst);
                        }
                        if let Ok(s) = UnixStream::connect(&socket) {
                            *slot = Some(s);
                            open.fetch_add(1, Ordering::SeqCst);
                        }
                    }
                    if stop.load(Ordering::SeqCst) {
                        break;
                    }
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }));
    }
    let start = Instant::now();
    while (open.load(Ordering::SeqCst) as usize) < n && start.elapsed() < Duration::from_secs(5) {
        std::thread::sleep(Duration::from_millis(10));
    }
    println!("ready {}", open.load(Ordering::SeqCst));
    std::io::stdout().flush()?;
    // Until the parent closes our stdin.
    let mut line = String::new();
    let _ = std::io::stdin().read_line(&mut line);
    stop.store(true, Ordering::SeqCst);
    for t in threads {
        let _ = t.join();
    }
    Ok(())
}

/// Sends `list` requests from `threads` threads for `secs`; prints `refused N other M`: the
/// answers that refused the request ("may not approve: ...") and every other answer (a
/// connection turned away at accept, a timeout).
fn abuse_spam(socket: &Path, threads: usize, secs: Duration) -> anyhow::Result<()> {
    let answered = Arc::new(AtomicU64::new(0));
    let other = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + secs;
    let handles: Vec<_> = (0..threads)
        .map(|_| {
            let (socket, answered, other) = (socket.to_owned(), answered.clone(), other.clone());
            std::thread::spawn(move || {
                while Instant::now() < deadline {
                    let Ok(mut s) = UnixStream::connect(&socket) else {
                        continue;
                    };
                    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
                    if s.write_all(b"{\"op\":\"list\"}\n").is_err() {
                        continue;
                    }
                    let mut line = String::new();
                    if BufReader::new(&s).read_line(&mut line).unwrap_or(0) == 0 {
                        continue;
                    }
                    if line.contains("may not approve:") {
                        answered.fetch_add(1, Ordering::Relaxed);
                    } else {
                        other.fetch_add(1, Ordering::Relaxed);
                    }
                }
            })
        })
        .collect();
    for h in handles {
        let _ = h.join();
    }
    println!(
        "refused {} other {}",
        answered.load(Ordering::SeqCst),
        other.load(Ordering::SeqCst)
    );
    Ok(())
}

fn abuser(me: &Path, mode: &str, socket: &Path, args: &Args) -> Command {
    let mut c = Command::new(me);
    c.args(["--abuser", mode, "--socket"])
        .arg(socket)
        .args(["--idle", &args.idle.to_string()])
        .args(["--threads", &args.threads.to_string()])
        .args(["--spam-secs", &args.spam_secs.to_string()])
        .uid(NOBODY)
        .gid(NOBODY)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped());
    c
}

fn run(args: &Args) -> anyhow::Result<()> {
    let dir = tempfile::tempdir().context("cannot create a temporary directory")?;
    std::fs::set_permissions(
        dir.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )?;
    let mut config = aiops_core::Config {
        state_dir: dir.path().join("state"),
        ..aiops_core::Config::default()
    };
    config.webhook.control_socket = dir.path().join("control.sock");
    // Nobody is in no such group: every request of the abuser is refused.
    config.webhook.operators_group = "aiops-bench-no-such-group".into();
    config.prometheus.url = "http://127.0.0.1:1".into();
    config.alertmanager.url = "http://127.0.0.1:1".into();
    let gate = Arc::new(Gate::open(&config, &prometheus::Registry::new())?);
    let socket = config.webhook.control_socket;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let served = {
        let (gate, socket) = (gate.clone(), socket.clone());
        rt.spawn(async move {
            let _ = gate
                .serve_control(&socket, async {
                    let _ = stop_rx.await;
                })
                .await;
        })
    };
    let start = Instant::now();
    while UnixStream::connect(&socket).is_err() {
        if start.elapsed() > Duration::from_secs(10) {
            bail!("the control socket {} did not come up", socket.display());
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let me = std::env::current_exe()?;
    let mut client = ControlClient::new(&socket, "aiops-operators");
    client.read_timeout = Duration::from_secs(args.probe_timeout);

    // Phase 1: idle connections.
    let mut child = abuser(&me, "idle", &socket, args)
        .spawn()
        .context("cannot start the abuser")?;
    let mut out = BufReader::new(child.stdout.take().expect("piped"));
    let mut ready = String::new();
    out.read_line(&mut ready)?;
    let mut times = Vec::new();
    let mut timed_out = 0;
    for _ in 0..args.probes {
        let t = Instant::now();
        match client.call(&Request::List { all: false }, &mut |_| {}) {
            Ok(_) => times.push(t.elapsed()),
            Err(e) => {
                eprintln!(
                    "root's list failed after {}: {e}",
                    fmt_duration(t.elapsed())
                );
                timed_out += 1;
                times.push(t.elapsed());
            }
        }
    }
    drop(child.stdin.take());
    let _ = child.wait();
    times.sort();
    let mut t1 = Table::new(&[
        "abuser's idle connections",
        "root's `list`: median",
        "slowest",
        "failed or timed out",
    ]);
    t1.row(vec![
        ready.trim().trim_start_matches("ready ").to_owned(),
        fmt_duration(percentile(&times, 0.5).unwrap_or_default()),
        fmt_duration(*times.last().unwrap_or(&Duration::ZERO)),
        format!("{timed_out} of {}", args.probes),
    ]);

    // Phase 2: refused requests.
    let audit = gate.audit_log().path().to_owned();
    let (lines0, bytes0) = file_size(&audit);
    let t = Instant::now();
    let child = abuser(&me, "spam", &socket, args)
        .spawn()
        .context("cannot start the abuser")?;
    let output = child.wait_with_output()?;
    let secs = t.elapsed().as_secs_f64();
    let out = String::from_utf8_lossy(&output.stdout).into_owned();
    let number = |key: &str| -> u64 {
        out.split_whitespace()
            .skip_while(|w| *w != key)
            .nth(1)
            .and_then(|n| n.parse().ok())
            .unwrap_or(0)
    };
    let (refused, other) = (number("refused"), number("other"));
    // Stop the server first: what it writes at shutdown (a summary of the minute in progress)
    // counts too.
    let _ = stop_tx.send(());
    let _ = rt.block_on(async { tokio::time::timeout(Duration::from_secs(10), served).await });
    rt.shutdown_timeout(Duration::from_secs(5));
    let (lines1, bytes1) = file_size(&audit);
    let mut t2 = Table::new(&[
        "abuse",
        "refusals answered/s",
        "other answers/s",
        "audit lines/s",
        "audit bytes/s",
    ]);
    t2.row(vec![
        format!("{} threads, {secs:.1} s", args.threads),
        format!("{:.0}", refused as f64 / secs),
        format!("{:.0}", other as f64 / secs),
        format!("{:.1}", (lines1 - lines0) as f64 / secs),
        format!("{:.0}", (bytes1 - bytes0) as f64 / secs),
    ]);
    println!("{}", t1.render());
    println!("{}", t2.render());
    Ok(())
}

/// Lines and bytes of a file (0 if missing).
fn file_size(path: &Path) -> (u64, u64) {
    std::fs::read(path)
        .map(|b| {
            (
                b.iter().filter(|&&c| c == b'\n').count() as u64,
                b.len() as u64,
            )
        })
        .unwrap_or((0, 0))
}
