//! `aiops demo`: the whole stack on one machine, as the current user, without systemd.
//!
//! Layout of the state directory (default `$XDG_STATE_HOME/aiops-demo`):
//!
//! ```text
//! config.toml            the aiops configuration every program (and `aiops approve`) reads
//! config/                prometheus.yml, rules.yml, alertmanager.yml, grafana/ (rendered)
//! secrets/webhook-token  the receiver's bearer token (generated, 0600)
//! aiops/                 the receiver's state: journal, outbox, pending actions, audit log
//! prometheus/ alertmanager/  their data
//! logs/<component>.log   each child's output
//! supervisor.sock        where the executor asks this supervisor to restart the app
//! control.sock           where `aiops approve` reaches the executor
//! demo.pid, demo.lock    this process, and the lock that keeps a second demo out
//! ```
//!
//! The supervisor plays systemd's part: it restarts a crashed child with backoff, and the
//! executor's "restart aiops-demo-app.service" arrives on `supervisor.sock` (the protocol is
//! `aiops_actions::supervisor_protocol`), so `aiops approve` works exactly as on a real host.

pub mod supervisor;

use std::ffi::OsString;
use std::io::Write;
use std::net::TcpListener;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use aiops_actions::supervisor_protocol::{self, Request, Response};
use aiops_assets::Ports;
use aiops_core::Config;
use aiops_core::config::{ActionKind, ExecutorKind};
use anyhow::{Context, bail};

use crate::exit::{self, Exit};
use supervisor::{Spec, Supervised};

/// The unit name the demo app answers to, as in the alert rules' `unit` label.
pub const APP_UNIT: &str = "aiops-demo-app.service";

/// Arguments of `aiops demo`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Where the demo keeps its rendered configuration, data and logs
    /// [default: $XDG_STATE_HOME/aiops-demo, else ~/.local/state/aiops-demo]
    #[arg(long, value_name = "DIR")]
    pub state_dir: Option<PathBuf>,

    /// Port of the demo app.
    #[arg(long, default_value_t = 18080)]
    pub app_port: u16,
    /// Port of the receiver (aiops-webhook).
    #[arg(long, default_value_t = 19095)]
    pub webhook_port: u16,
    /// Port of Prometheus.
    #[arg(long, default_value_t = 19090)]
    pub prometheus_port: u16,
    /// Port of Alertmanager.
    #[arg(long, default_value_t = 19093)]
    pub alertmanager_port: u16,
    /// Port of Grafana.
    #[arg(long, default_value_t = 13000)]
    pub grafana_port: u16,

    /// Do not start Grafana even if it is installed.
    #[arg(long)]
    pub no_grafana: bool,

    /// Background requests per second to the demo app, so its metrics have a baseline
    /// (0: none).
    #[arg(long, default_value_t = 5.0)]
    pub traffic_rate: f64,

    /// A file holding a Slack incoming-webhook URL; without it, messages print here.
    #[arg(long, value_name = "PATH")]
    pub slack_webhook_url_file: Option<PathBuf>,

    /// Delete the previous run's data (metrics, notifications, actions, audit log) first.
    #[arg(long)]
    pub fresh: bool,

    /// Stop after this long (for scripted runs); default: run until Ctrl-C or SIGTERM.
    #[arg(long, value_parser = crate::stress::parse_duration, value_name = "DURATION")]
    pub stop_after: Option<Duration>,
}

impl Args {
    fn ports(&self) -> Ports {
        Ports {
            demo_app: self.app_port,
            webhook: self.webhook_port,
            prometheus: self.prometheus_port,
            alertmanager: self.alertmanager_port,
            grafana: self.grafana_port,
        }
    }
}

/// The demo's default state directory.
pub fn default_state_dir() -> Option<PathBuf> {
    let base = std::env::var_os("XDG_STATE_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/state")))?;
    Some(base.join("aiops-demo"))
}

/// The configuration file of a demo that is running now for this user, if any: its state
/// directory holds `demo.pid` naming a live process and the `config.toml` it rendered.
pub fn running_demo_config() -> Option<PathBuf> {
    let dir = default_state_dir()?;
    let pid: i32 = std::fs::read_to_string(dir.join("demo.pid"))
        .ok()?
        .trim()
        .parse()
        .ok()?;
    let alive = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None).is_ok();
    let config = dir.join("config.toml");
    (alive && config.exists()).then_some(config)
}

/// The programs the demo runs, found before anything starts.
#[derive(Debug)]
struct Binaries {
    prometheus: PathBuf,
    alertmanager: PathBuf,
    demo_app: PathBuf,
    webhook: PathBuf,
    /// The Grafana server and its home path, if installed.
    grafana: Option<(PathBuf, Vec<OsString>, PathBuf)>,
}

pub fn run(args: &Args) -> anyhow::Result<()> {
    let ports = args.ports();
    ports
        .validate()
        .map_err(|e| Exit::new(exit::USAGE, e.to_string()))?;
    let state = match &args.state_dir {
        Some(d) => d.clone(),
        None => default_state_dir().ok_or_else(|| {
            Exit::new(
                exit::USAGE,
                "neither $XDG_STATE_HOME nor $HOME is set; pass --state-dir DIR",
            )
        })?,
    };
    let state = prepare_state_dir(&state)?;
    let _lock = lock_state_dir(&state)?;
    let binaries = find_binaries(args.no_grafana)?;
    check_ports_free(&ports, binaries.grafana.is_some())?;
    if args.fresh {
        for sub in ["aiops", "prometheus", "alertmanager", "config"] {
            let _ = std::fs::remove_dir_all(state.join(sub));
        }
    }
    for sub in ["logs", "secrets", "aiops", "prometheus", "alertmanager"] {
        std::fs::create_dir_all(state.join(sub))
            .with_context(|| format!("create {}", state.join(sub).display()))?;
    }

    let token_file = ensure_token(&state.join("secrets/webhook-token"))?;
    let rendered = aiops_assets::render(&state.join("config"), &ports, &token_file)
        .context("render the Prometheus, Alertmanager and Grafana configuration")?;
    let config = demo_config(&state, &ports, args, binaries.grafana.is_some());
    let config_path = state.join("config.toml");
    aiops_core::fsutil::write_atomic(&config_path, config.to_toml().as_bytes())
        .context("write the demo's config.toml")?;

    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(sig, Arc::clone(&stop)).context("install signal handler")?;
    }

    let pid_file = state.join("demo.pid");
    std::fs::write(&pid_file, format!("{}\n", std::process::id()))
        .with_context(|| format!("write {}", pid_file.display()))?;
    let result = supervise(
        args,
        &state,
        &ports,
        &binaries,
        &rendered,
        &config_path,
        &stop,
    );
    let _ = std::fs::remove_file(&pid_file);
    result
}

fn prepare_state_dir(dir: &Path) -> anyhow::Result<PathBuf> {
    let unwritable = |e: &dyn std::fmt::Display| {
        Exit::new(
            exit::FAILURE,
            format!(
                "the state directory {} is not writable ({e}); fix its permissions or pass --state-dir DIR",
                dir.display()
            ),
        )
    };
    std::fs::create_dir_all(dir).map_err(|e| unwritable(&e))?;
    let probe = dir.join(".write-probe");
    std::fs::write(&probe, b"ok").map_err(|e| unwritable(&e))?;
    let _ = std::fs::remove_file(&probe);
    std::fs::canonicalize(dir).map_err(|e| unwritable(&e).into())
}

fn lock_state_dir(dir: &Path) -> anyhow::Result<aiops_core::fsutil::LockGuard> {
    match aiops_core::fsutil::try_lock_exclusive(&dir.join("demo.lock"))? {
        Some(guard) => Ok(guard),
        None => {
            let pid = std::fs::read_to_string(dir.join("demo.pid")).unwrap_or_default();
            Err(Exit::new(
                exit::FAILURE,
                format!(
                    "another aiops demo (pid {}) is running with the state directory {}; stop it first or pass another --state-dir",
                    pid.trim(),
                    dir.display()
                ),
            )
            .into())
        }
    }
}

fn which(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| {
            p.is_file()
                && p.metadata()
                    .is_ok_and(|m| m.permissions().mode() & 0o111 != 0)
        })
}

/// Our own programs: next to this executable first (a cargo build or a Nix package), then PATH.
fn own_binary(name: &str) -> Option<PathBuf> {
    std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(|d| d.join(name)))
        .filter(|p| p.is_file())
        .or_else(|| which(name))
}

fn find_binaries(no_grafana: bool) -> anyhow::Result<Binaries> {
    let mut missing = Vec::new();
    let prometheus = which("prometheus");
    if prometheus.is_none() {
        missing.push(
            "prometheus: install it (Debian/Ubuntu: sudo apt-get install prometheus; Nix: nix run .#demo)",
        );
    }
    let alertmanager = which("alertmanager").or_else(|| which("prometheus-alertmanager"));
    if alertmanager.is_none() {
        missing.push(
            "alertmanager: install it (Debian/Ubuntu: sudo apt-get install prometheus-alertmanager; Nix: nix run .#demo)",
        );
    }
    let demo_app = own_binary("aiops-demo-app");
    if demo_app.is_none() {
        missing.push(
            "aiops-demo-app: build it (cargo build --release) and put it next to aiops or on PATH",
        );
    }
    let webhook = own_binary("aiops-webhook");
    if webhook.is_none() {
        missing.push(
            "aiops-webhook: build it (cargo build --release) and put it next to aiops or on PATH",
        );
    }
    if !missing.is_empty() {
        return Err(Exit::new(
            exit::UNAVAILABLE,
            format!(
                "cannot start the demo; missing programs:\n  - {}",
                missing.join("\n  - ")
            ),
        )
        .into());
    }
    let grafana = if no_grafana { None } else { find_grafana() };
    Ok(Binaries {
        prometheus: prometheus.expect("checked"),
        alertmanager: alertmanager.expect("checked"),
        demo_app: demo_app.expect("checked"),
        webhook: webhook.expect("checked"),
        grafana,
    })
}

/// Grafana's server binary, the arguments that select its server mode, and its home path
/// (`AIOPS_GRAFANA_HOMEPATH`, else `share/grafana` beside the binary, else `/usr/share/grafana`).
fn find_grafana() -> Option<(PathBuf, Vec<OsString>, PathBuf)> {
    let (bin, args) = match which("grafana") {
        Some(b) => (b, vec![OsString::from("server")]),
        None => (which("grafana-server")?, vec![]),
    };
    let home = std::env::var_os("AIOPS_GRAFANA_HOMEPATH")
        .map(PathBuf::from)
        .or_else(|| {
            let real = std::fs::canonicalize(&bin).ok()?;
            let candidate = real.parent()?.parent()?.join("share/grafana");
            candidate.is_dir().then_some(candidate)
        })
        .unwrap_or_else(|| PathBuf::from("/usr/share/grafana"));
    Some((bin, args, home))
}

fn check_ports_free(ports: &Ports, with_grafana: bool) -> anyhow::Result<()> {
    let flags = [
        ("demo app", ports.demo_app, "--app-port"),
        ("webhook receiver", ports.webhook, "--webhook-port"),
        ("Prometheus", ports.prometheus, "--prometheus-port"),
        ("Alertmanager", ports.alertmanager, "--alertmanager-port"),
        ("Grafana", ports.grafana, "--grafana-port"),
    ];
    for (name, port, flag) in flags {
        if name == "Grafana" && !with_grafana {
            continue;
        }
        if let Err(e) = TcpListener::bind(Ports::addr(port)) {
            return Err(Exit::new(
                exit::FAILURE,
                format!(
                    "port {port} for the {name} is not free on 127.0.0.1 ({e}); stop what uses it (`ss -ltnp 'sport = :{port}'` shows it) or choose another with {flag}"
                ),
            )
            .into());
        }
    }
    Ok(())
}

fn ensure_token(path: &Path) -> anyhow::Result<PathBuf> {
    if !path.exists() {
        let mut bytes = [0u8; 24];
        std::fs::File::open("/dev/urandom")
            .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut bytes))
            .context("read /dev/urandom for the webhook token")?;
        let token: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)
            .with_context(|| format!("create {}", path.display()))?;
        f.write_all(token.as_bytes())?;
    }
    Ok(path.to_owned())
}

fn demo_config(state: &Path, ports: &Ports, args: &Args, grafana: bool) -> Config {
    let mut c = Config {
        state_dir: state.join("aiops"),
        ..Config::default()
    };
    c.demo_app.listen = Ports::addr(ports.demo_app);
    c.webhook.listen = Ports::addr(ports.webhook);
    c.webhook.token_file = Some(state.join("secrets/webhook-token"));
    c.webhook.control_socket = state.join("control.sock");
    c.webhook.dashboard_url = grafana.then(|| {
        format!(
            "{}/d/{}",
            Ports::url(ports.grafana),
            aiops_assets::DASHBOARD_UID
        )
    });
    c.slack.webhook_url_file = args.slack_webhook_url_file.clone();
    c.prometheus.url = Ports::url(ports.prometheus);
    c.alertmanager.url = Ports::url(ports.alertmanager);
    c.remediation.executor = ExecutorKind::Demo;
    c.remediation.demo_supervisor_socket = Some(state.join("supervisor.sock"));
    c.remediation.demo_app_url = Ports::url(ports.demo_app);
    c.remediation.allowed = [(
        APP_UNIT.to_owned(),
        vec![ActionKind::Restart, ActionKind::ClearCache],
    )]
    .into_iter()
    .collect();
    // A demo is replayed often: a short cooldown lets the walkthrough run again a minute later.
    c.remediation.cooldown_secs = 60;
    c.remediation.max_actions_per_hour = 20;
    c.remediation.verify_timeout_secs = 120;
    c
}

/// A request from the supervisor socket, answered by the main loop (which owns the children).
struct SupervisorCall {
    request: Request,
    reply: mpsc::Sender<Response>,
}

#[allow(clippy::too_many_arguments)]
fn supervise(
    args: &Args,
    state: &Path,
    ports: &Ports,
    bins: &Binaries,
    rendered: &aiops_assets::Rendered,
    config_path: &Path,
    stop: &Arc<AtomicBool>,
) -> anyhow::Result<()> {
    let logs = state.join("logs");
    let config_arg = |p: &Path| OsString::from(p);
    let mut specs = vec![
        Spec {
            name: "prometheus",
            program: bins.prometheus.clone(),
            args: vec![
                "--config.file".into(),
                config_arg(&rendered.prometheus_config),
                "--storage.tsdb.path".into(),
                config_arg(&state.join("prometheus")),
                "--web.listen-address".into(),
                Ports::addr(ports.prometheus).to_string().into(),
                "--storage.tsdb.retention.time=2d".into(),
                // Links in alerts point here, not at this machine's host name.
                format!("--web.external-url={}/", Ports::url(ports.prometheus)).into(),
            ],
            env: vec![],
            log: logs.join("prometheus.log"),
            stdout_to_terminal: false,
        },
        Spec {
            name: "alertmanager",
            program: bins.alertmanager.clone(),
            args: vec![
                "--config.file".into(),
                config_arg(&rendered.alertmanager_config),
                "--storage.path".into(),
                config_arg(&state.join("alertmanager")),
                "--web.listen-address".into(),
                Ports::addr(ports.alertmanager).to_string().into(),
                // No clustering: it would listen on every interface.
                "--cluster.listen-address=".into(),
                format!("--web.external-url={}/", Ports::url(ports.alertmanager)).into(),
            ],
            env: vec![],
            log: logs.join("alertmanager.log"),
            stdout_to_terminal: false,
        },
        Spec {
            name: "demo-app",
            program: bins.demo_app.clone(),
            args: vec!["--config".into(), config_arg(config_path)],
            env: vec![],
            log: logs.join("demo-app.log"),
            stdout_to_terminal: false,
        },
        Spec {
            name: "webhook",
            program: bins.webhook.clone(),
            args: vec!["--config".into(), config_arg(config_path)],
            env: vec![],
            log: logs.join("webhook.log"),
            // Without a Slack URL the receiver prints each message on stdout: show it here.
            stdout_to_terminal: true,
        },
    ];
    if let Some((bin, pre, home)) = &bins.grafana {
        let mut a = pre.clone();
        a.extend([
            "--homepath".into(),
            config_arg(home),
            "--config".into(),
            config_arg(&rendered.grafana_config),
        ]);
        specs.push(Spec {
            name: "grafana",
            program: bin.clone(),
            args: a,
            env: vec![],
            log: logs.join("grafana.log"),
            stdout_to_terminal: false,
        });
    }

    let readiness: Vec<(&str, String)> = vec![
        (
            "prometheus",
            format!("{}/-/ready", Ports::url(ports.prometheus)),
        ),
        (
            "alertmanager",
            format!("{}/-/ready", Ports::url(ports.alertmanager)),
        ),
        (
            "demo-app",
            format!("{}/healthz", Ports::url(ports.demo_app)),
        ),
        ("webhook", format!("{}/healthz", Ports::url(ports.webhook))),
        (
            "grafana",
            format!("{}/api/health", Ports::url(ports.grafana)),
        ),
    ];

    let mut children: Vec<Supervised> = Vec::new();
    let outcome = (|| -> anyhow::Result<()> {
        let calls = serve_supervisor_socket(&state.join("supervisor.sock"), stop)?;
        for spec in specs {
            let name = spec.name;
            let log = spec.log.clone();
            children.push(Supervised::start(spec)?);
            let url = &readiness
                .iter()
                .find(|(n, _)| *n == name)
                .expect("every child has a check")
                .1;
            let timeout = if name == "grafana" { 60 } else { 30 };
            wait_ready(
                name,
                url,
                Duration::from_secs(timeout),
                &log,
                stop,
                children.last_mut(),
            )?;
        }
        print_walkthrough(state, ports, bins.grafana.is_some(), args);

        let traffic_stop = Arc::new(AtomicBool::new(false));
        let counters = Arc::new(crate::stress::Counters::default());
        let histogram = Arc::new(crate::stress::Histogram::new());
        let far = Instant::now() + Duration::from_secs(30 * 24 * 3600);
        let traffic = if args.traffic_rate > 0.0 {
            crate::stress::spawn_workers(
                &Ports::url(ports.demo_app),
                2,
                args.traffic_rate,
                far,
                &traffic_stop,
                &counters,
                &histogram,
            )
        } else {
            Vec::new()
        };

        let deadline = args.stop_after.map(|d| Instant::now() + d);
        let result = main_loop(
            &mut children,
            &calls,
            stop,
            deadline,
            &Ports::url(ports.demo_app),
        );
        traffic_stop.store(true, Ordering::Relaxed);
        for t in traffic {
            let _ = t.join();
        }
        result
    })();

    // Stop in reverse order: the receiver before the app it might restart, the monitoring last.
    if !children.is_empty() {
        eprintln!("\nstopping the demo...");
    }
    for child in children.iter_mut().rev() {
        if child.stop() {
            eprintln!("  {} ignored SIGTERM and was killed", child.spec.name);
        }
    }
    let _ = std::fs::remove_file(state.join("supervisor.sock"));
    if outcome.is_ok() {
        eprintln!("stopped; state kept in {}", state.display());
    }
    outcome
}

fn main_loop(
    children: &mut [Supervised],
    calls: &mpsc::Receiver<SupervisorCall>,
    stop: &AtomicBool,
    deadline: Option<Instant>,
    app_url: &str,
) -> anyhow::Result<()> {
    loop {
        if stop.load(Ordering::Relaxed) || deadline.is_some_and(|d| Instant::now() >= d) {
            return Ok(());
        }
        for child in children.iter_mut() {
            if let Some((status, delay)) = child.poll()? {
                eprintln!(
                    "{} exited ({status}); restarting in {:.1} s (log: {})",
                    child.spec.name,
                    delay.as_secs_f64(),
                    child.spec.log.display()
                );
            }
        }
        match calls.recv_timeout(Duration::from_millis(200)) {
            Ok(call) => {
                let response = answer(children, &call.request, app_url);
                let _ = call.reply.send(response);
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => bail!("the supervisor socket thread died"),
        }
    }
}

fn app_status(app: &Supervised) -> Response {
    Response {
        ok: true,
        active_state: Some(
            if app.is_running() {
                "active"
            } else {
                "activating"
            }
            .to_owned(),
        ),
        invocation_id: Some(app.invocation_id.clone()),
        main_pid: app.pid(),
        n_restarts: Some(app.restarts),
        error: None,
    }
}

fn answer(children: &mut [Supervised], request: &Request, app_url: &str) -> Response {
    if request.unit() != APP_UNIT {
        return Response::error(format!(
            "unknown unit {:?}: this demo supervises only {APP_UNIT}",
            request.unit()
        ));
    }
    let Some(app) = children.iter_mut().find(|c| c.spec.name == "demo-app") else {
        return Response::error("the demo app has not been started yet");
    };
    match request {
        Request::Status { .. } => app_status(app),
        Request::Restart { .. } => {
            eprintln!("restarting the demo app (approved action)...");
            if let Err(e) = app.restart() {
                return Response::error(format!("restart failed: {e:#}"));
            }
            // Like `systemctl restart` of a Type=notify unit: answer once it serves again.
            let healthy = wait_http_ok(&format!("{app_url}/healthz"), Duration::from_secs(15));
            let mut status = app_status(app);
            if !healthy {
                status.active_state = Some("activating".to_owned());
            }
            eprintln!(
                "demo app restarted (pid {}, restart #{})",
                app.pid().unwrap_or(0),
                app.restarts
            );
            status
        }
    }
}

fn serve_supervisor_socket(
    path: &Path,
    stop: &Arc<AtomicBool>,
) -> anyhow::Result<mpsc::Receiver<SupervisorCall>> {
    let _ = std::fs::remove_file(path);
    let listener = UnixListener::bind(path)
        .with_context(|| format!("listen on the supervisor socket {}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .with_context(|| format!("restrict {}", path.display()))?;
    let (tx, rx) = mpsc::channel::<SupervisorCall>();
    let stop = Arc::clone(stop);
    std::thread::Builder::new()
        .name("supervisor-socket".into())
        .spawn(move || {
            for stream in listener.incoming() {
                if stop.load(Ordering::Relaxed) {
                    return;
                }
                let Ok(stream) = stream else { continue };
                let tx = tx.clone();
                let handler = move |req: &Request| {
                    let (reply, answer) = mpsc::channel();
                    if tx
                        .send(SupervisorCall {
                            request: req.clone(),
                            reply,
                        })
                        .is_err()
                    {
                        return Response::error("the demo is stopping");
                    }
                    answer
                        .recv_timeout(Duration::from_secs(60))
                        .unwrap_or_else(|_| {
                            Response::error("the supervisor did not answer in 60 s")
                        })
                };
                if let Err(e) = supervisor_protocol::serve_one(stream, &handler) {
                    tracing::debug!(error = %e, "supervisor socket connection failed");
                }
            }
        })
        .context("start the supervisor socket thread")?;
    Ok(rx)
}

fn wait_http_ok(url: &str, timeout: Duration) -> bool {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(Duration::from_secs(2)))
        .http_status_as_error(false)
        .build()
        .into();
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if agent.get(url).call().is_ok_and(|r| r.status().is_success()) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    false
}

fn wait_ready(
    name: &str,
    url: &str,
    timeout: Duration,
    log: &Path,
    stop: &AtomicBool,
    child: Option<&mut Supervised>,
) -> anyhow::Result<()> {
    let started = Instant::now();
    let deadline = started + timeout;
    let mut child = child;
    while Instant::now() < deadline {
        if stop.load(Ordering::Relaxed) {
            bail!("interrupted while starting {name}");
        }
        if wait_http_ok(url, Duration::from_millis(250)) {
            eprintln!(
                "  {name:<13} ready in {:.1} s",
                started.elapsed().as_secs_f64()
            );
            return Ok(());
        }
        if let Some(c) = child.as_deref_mut()
            && let Some((status, _)) = c.poll()?
        {
            bail!(
                "{name} exited during start-up ({status}); its log {} ends with:\n{}",
                log.display(),
                tail(log, 15)
            );
        }
    }
    bail!(
        "{name} was not ready at {url} within {} s; its log {} ends with:\n{}",
        timeout.as_secs(),
        log.display(),
        tail(log, 15)
    )
}

fn tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..]
        .iter()
        .map(|l| format!("    {l}"))
        .collect::<Vec<_>>()
        .join("\n")
}

fn print_walkthrough(state: &Path, ports: &Ports, grafana: bool, args: &Args) {
    let grafana_line = if grafana {
        format!(
            "  Grafana       {}/d/{}  (anonymous viewer; admin/admin)",
            Ports::url(ports.grafana),
            aiops_assets::DASHBOARD_UID
        )
    } else if args.no_grafana {
        "  Grafana       not started (--no-grafana)".to_owned()
    } else {
        "  Grafana       not found on PATH: install grafana (or use `nix run .#demo`) to get the dashboard".to_owned()
    };
    let slack = if args.slack_webhook_url_file.is_some() {
        "it is posted to your Slack channel"
    } else {
        "it prints here (no Slack URL given)"
    };
    println!(
        "
aiops demo is running. State and logs: {state}

  demo app      {app}
  receiver      {webhook}/metrics
  Prometheus    {prom}/alerts
  Alertmanager  {am}
{grafana_line}

Try the loop from a second terminal (aiops finds this demo by itself):
  1. aiops stress errors      # 30% of requests fail for 5 minutes
  2. wait about 30 s: the recommendation appears; {slack}
  3. aiops approve            # restarts the app through this supervisor and verifies recovery

Ctrl-C stops everything.
",
        state = state.display(),
        app = Ports::url(ports.demo_app),
        webhook = Ports::url(ports.webhook),
        prom = Ports::url(ports.prometheus),
        am = Ports::url(ports.alertmanager),
    );
}
