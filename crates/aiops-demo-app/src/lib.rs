//! `aiops-demo-app`: the web service the aiops loop watches, breaks on purpose and heals.
//!
//! A small JSON API (a deterministic product catalogue behind a bounded cache), `/healthz`,
//! `/metrics` in the Prometheus text format, and admin routes that inject time-bounded faults
//! (errors, CPU burn, latency, a memory leak) and clear the cache.
//!
//! Layout:
//! - this file: [`App`] (the shared state and the server entry point [`App::serve`], like
//!   mini-redis's `server::run`), [`run`], [`BackgroundServer`] for tests in other crates, and
//!   the small pieces `main` needs ([`resolve_config`], [`probe`], [`status_line`]).
//! - `routes` (private): routing, instrumentation and the handlers.
//! - [`metrics`]: the registry, route templates and cached label handles.
//! - [`process`]: the `process_*` metrics (CPU seconds at clock-tick precision).
//! - [`cache`]: the sharded bounded cache.
//! - [`catalog`]: items, search and order validation (the API's domain).
//! - [`faults`]: fault parameters, their parser, and the time-bounded fault state.
//! - [`query`]: query-string decoding with parameter-naming errors.
//!
//! Routes (the `route` label is the template in the first column):
//!
//! | route | methods | what |
//! | --- | --- | --- |
//! | `/` | GET | service name, version, uptime (the throughput benchmark route) |
//! | `/api/items/{id}` | GET | one item, cached |
//! | `/api/search` | GET | `q`, `limit`: items whose name has every word, cached |
//! | `/api/orders` | POST | a JSON order, validated field by field; 201 |
//! | `/healthz` | GET | `{"status":"ok"}` |
//! | `/metrics` | GET | Prometheus text format |
//! | `/admin/faults` | GET | active faults with remaining time |
//! | `/admin/faults/{kind}` | POST, DELETE | start (query parameters) or end a fault |
//! | `/admin/cache/clear` | POST | drop every cache entry; returns how many |
//!
//! Faults break only the application routes (`/` and `/api/*`); health, metrics and admin
//! routes always answer, so the loop can observe and repair a broken app.

use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::{Duration, Instant};

use aiops_core::config::DemoAppConfig;
use aiops_core::http::{Drained, Limits};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

pub mod cache;
pub mod catalog;
pub mod faults;
pub mod metrics;
pub mod process;
pub mod query;
mod routes;

use cache::Cache;
use faults::{Fault, FaultLimits, Faults};
use metrics::Metrics;

/// The service name (the Prometheus job and systemd unit are named after it).
pub const SERVICE: &str = "aiops-demo-app";
/// This build's version, as in `demo_build_info{version}`.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// The app: configuration, metrics, cache and faults. Cheap to clone; clones share state.
#[derive(Clone, Debug)]
pub struct App {
    inner: Arc<Inner>,
}

#[derive(Debug)]
pub(crate) struct Inner {
    config: DemoAppConfig,
    metrics: Metrics,
    cache: Cache,
    faults: Faults,
    fault_limits: FaultLimits,
    started: Instant,
    next_order: AtomicU64,
}

impl App {
    /// A fresh app with its own metrics registry, an empty cache and no faults.
    pub fn new(config: &DemoAppConfig) -> App {
        let metrics = Metrics::new(VERSION);
        let cache = Cache::new(config.cache_capacity, &metrics);
        let faults = Faults::new(&metrics);
        App {
            inner: Arc::new(Inner {
                config: config.clone(),
                metrics,
                cache,
                faults,
                fault_limits: FaultLimits::new(config.max_fault_secs),
                started: Instant::now(),
                next_order: AtomicU64::new(0),
            }),
        }
    }

    /// Serves on `listener` until `shutdown` resolves, then stops accepting (the listener is
    /// closed, so new connections are refused), lets in-flight requests finish within
    /// `shutdown_grace_secs`, and ends every fault.
    pub async fn serve(self, listener: TcpListener, shutdown: impl Future<Output = ()>) -> Drained {
        let limits = limits(&self.inner.config);
        let app = self.clone();
        let drained = aiops_core::http::serve(
            listener,
            limits,
            move |req| routes::handle(app.clone(), req),
            shutdown,
        )
        .await;
        self.inner.faults.end_all();
        drained
    }

    pub fn config(&self) -> &DemoAppConfig {
        &self.inner.config
    }

    pub fn faults(&self) -> &Faults {
        &self.inner.faults
    }

    pub fn cache(&self) -> &Cache {
        &self.inner.cache
    }

    pub fn metrics(&self) -> &Metrics {
        &self.inner.metrics
    }
}

/// Serves a fresh [`App`] built from `config` on `listener` until `shutdown` resolves.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> std::io::Result<()> {
/// let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
/// let addr = listener.local_addr()?;
/// let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
/// let config = aiops_core::config::DemoAppConfig::default();
/// let server = tokio::spawn(async move {
///     aiops_demo_app::run(listener, &config, async {
///         let _ = stopped.await;
///     })
///     .await
/// });
/// aiops_demo_app::probe(addr, std::time::Duration::from_secs(5))
///     .await
///     .expect("serving");
/// let _ = stop.send(());
/// assert_eq!(server.await?.abandoned, 0);
/// # Ok(())
/// # }
/// ```
pub async fn run(
    listener: TcpListener,
    config: &DemoAppConfig,
    shutdown: impl Future<Output = ()>,
) -> Drained {
    App::new(config).serve(listener, shutdown).await
}

/// The connection and request bounds the app serves with.
pub fn limits(config: &DemoAppConfig) -> Limits {
    Limits {
        shutdown_grace: Duration::from_secs(config.shutdown_grace_secs),
        ..Limits::default()
    }
}

/// The configuration `main` runs with: flags (and, through clap, their environment variables)
/// over the configuration file over the defaults.
pub fn resolve_config(
    file: &DemoAppConfig,
    listen: Option<SocketAddr>,
    cache_capacity: Option<usize>,
) -> DemoAppConfig {
    DemoAppConfig {
        listen: listen.unwrap_or(file.listen),
        cache_capacity: cache_capacity.unwrap_or(file.cache_capacity),
        ..file.clone()
    }
}

/// The `STATUS=` line systemd shows, e.g. `serving on 127.0.0.1:8080; faults: errors 30%`.
pub fn status_line(addr: SocketAddr, faults: &[Fault]) -> String {
    let faults = if faults.is_empty() {
        "none".to_owned()
    } else {
        faults
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(", ")
    };
    format!("serving on {addr}; faults: {faults}")
}

/// The address a client on this host uses to reach a server bound to `addr` (a wildcard bind
/// is reached over loopback).
pub fn connect_addr(addr: SocketAddr) -> SocketAddr {
    match addr.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => (Ipv4Addr::LOCALHOST, addr.port()).into(),
        IpAddr::V6(ip) if ip.is_unspecified() => (Ipv6Addr::LOCALHOST, addr.port()).into(),
        _ => addr,
    }
}

/// Why [`probe`] found the server not answering.
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    #[error("GET /healthz on {addr} failed: {source}")]
    Io {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("GET /healthz on {addr} got no answer within {timeout:?}")]
    Timeout { addr: SocketAddr, timeout: Duration },
    #[error("GET /healthz on {addr} answered {status_line:?}, not 200")]
    Status {
        addr: SocketAddr,
        status_line: String,
    },
}

/// One `GET /healthz` against a server bound to `addr`: `main` sends `READY=1` only once this
/// succeeds, so "ready" means a request was actually answered.
pub async fn probe(addr: SocketAddr, timeout: Duration) -> Result<(), ProbeError> {
    let target = connect_addr(addr);
    let attempt = async {
        let mut s = tokio::net::TcpStream::connect(target).await?;
        s.write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
            .await?;
        let mut buf = Vec::with_capacity(256);
        s.read_to_end(&mut buf).await?;
        Ok::<_, std::io::Error>(buf)
    };
    let buf = tokio::time::timeout(timeout, attempt)
        .await
        .map_err(|_| ProbeError::Timeout { addr, timeout })?
        .map_err(|source| ProbeError::Io { addr, source })?;
    let head = String::from_utf8_lossy(&buf);
    let status_line = head.lines().next().unwrap_or("").to_owned();
    if status_line.starts_with("HTTP/1.1 200") {
        Ok(())
    } else {
        Err(ProbeError::Status { addr, status_line })
    }
}

/// The app running on its own thread and runtime, for tests in any crate (sync or async):
/// `BackgroundServer::start_ephemeral()` serves on `127.0.0.1:<free port>` until dropped or
/// [`stop`](Self::stop)ped.
///
/// ```
/// let server = aiops_demo_app::BackgroundServer::start_ephemeral()?;
/// let base = server.url(); // http://127.0.0.1:PORT
/// // Drive it over HTTP (`{base}/admin/faults/errors?ratio=0.3&duration=60`, ...) or directly:
/// assert!(server.app().faults().active().is_empty());
/// # let _ = base;
/// assert_eq!(server.stop().abandoned, 0);
/// # Ok::<(), std::io::Error>(())
/// ```
#[derive(Debug)]
pub struct BackgroundServer {
    addr: SocketAddr,
    app: App,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<Drained>>,
}

impl BackgroundServer {
    /// Serves `config` on `config.listen` (use port 0 in tests).
    pub fn start(config: &DemoAppConfig) -> std::io::Result<BackgroundServer> {
        let config = config.clone();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("demo-app".into())
            .spawn(move || {
                let rt = match tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(2)
                    .enable_all()
                    .build()
                {
                    Ok(rt) => rt,
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                        return Drained { abandoned: 0 };
                    }
                };
                rt.block_on(async move {
                    let bound = TcpListener::bind(config.listen)
                        .await
                        .and_then(|l| l.local_addr().map(|a| (l, a)));
                    let (listener, addr) = match bound {
                        Ok(v) => v,
                        Err(e) => {
                            let _ = ready_tx.send(Err(e));
                            return Drained { abandoned: 0 };
                        }
                    };
                    let app = App::new(&config);
                    let _ = ready_tx.send(Ok((addr, app.clone())));
                    app.serve(listener, async {
                        let _ = stop_rx.await;
                    })
                    .await
                })
            })?;
        let (addr, app) = ready_rx
            .recv()
            .map_err(|_| std::io::Error::other("the demo app thread ended before serving"))??;
        Ok(BackgroundServer {
            addr,
            app,
            stop: Some(stop_tx),
            thread: Some(thread),
        })
    }

    /// The default configuration on `127.0.0.1:0`.
    pub fn start_ephemeral() -> std::io::Result<BackgroundServer> {
        BackgroundServer::start(&DemoAppConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            ..DemoAppConfig::default()
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT`, without a trailing slash.
    pub fn url(&self) -> String {
        format!("http://{}", connect_addr(self.addr))
    }

    pub fn app(&self) -> &App {
        &self.app
    }

    /// Stops accepting, drains in-flight requests and waits for the server thread.
    pub fn stop(mut self) -> Drained {
        self.shutdown()
    }

    fn shutdown(&mut self) -> Drained {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        self.thread
            .take()
            .and_then(|t| t.join().ok())
            .unwrap_or(Drained { abandoned: 0 })
    }
}

impl Drop for BackgroundServer {
    fn drop(&mut self) {
        self.shutdown();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn status_lines() {
        let addr: SocketAddr = "127.0.0.1:8080".parse().unwrap();
        assert_eq!(
            status_line(addr, &[]),
            "serving on 127.0.0.1:8080; faults: none"
        );
        let faults = [
            Fault::Errors { ratio: 0.3 },
            Fault::Latency {
                delay: Duration::from_millis(400),
            },
            Fault::Cpu { threads: 2 },
            Fault::Leak {
                bytes_per_sec: 1 << 20,
            },
        ];
        insta::assert_snapshot!(status_line(addr, &faults));
    }

    #[test]
    fn flags_win_over_the_file() {
        let file = DemoAppConfig {
            cache_capacity: 7,
            ..DemoAppConfig::default()
        };
        let c = resolve_config(&file, None, None);
        assert_eq!(c, file);
        let listen: SocketAddr = "127.0.0.1:9999".parse().unwrap();
        let c = resolve_config(&file, Some(listen), Some(3));
        assert_eq!((c.listen, c.cache_capacity), (listen, 3));
    }

    #[test]
    fn wildcard_binds_are_reached_over_loopback() {
        assert_eq!(
            connect_addr("0.0.0.0:80".parse().unwrap()),
            "127.0.0.1:80".parse::<SocketAddr>().unwrap()
        );
        assert_eq!(
            connect_addr("[::]:80".parse().unwrap()),
            "[::1]:80".parse::<SocketAddr>().unwrap()
        );
    }
}
