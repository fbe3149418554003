//! Driving a real `aiops demo` for `bench-loop`: start it on free loopback ports with its state
//! in a given directory, find its children, run the `aiops` CLI against it, read Prometheus'
//! and Alertmanager's APIs, and stop it (SIGTERM, then SIGKILL), checking that nothing it
//! started is left behind.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant};

use aiops_testkit::procs::{self, alive, descendants, stop_within, terminate};
use serde_json::Value;

/// What can go wrong while driving the demo; each says what failed on what.
#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    #[error("cannot run {program}: {source}")]
    Spawn {
        program: String,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "aiops demo did not print \"aiops demo is running\" within {timeout:?}; its output:\n{output}"
    )]
    NotReady { timeout: Duration, output: String },
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("GET {url} failed: {message}")]
    Api { url: String, message: String },
    #[error("aiops demo did not stop within {timeout:?} of SIGTERM (killed)")]
    NoStop { timeout: Duration },
}

/// How to start the demo.
#[derive(Debug, Clone)]
pub struct DemoOptions {
    /// Holds `aiops`, `aiops-demo-app` and `aiops-webhook` (e.g. `target/release`).
    pub bin_dir: PathBuf,
    /// A directory of the harness: the demo's state goes to `DIR/demo`, its output to
    /// `DIR/demo.out`.
    pub dir: PathBuf,
    /// A file holding the Slack-protocol sink's URL.
    pub slack_url_file: PathBuf,
    /// The demo's own background traffic (`--traffic-rate`).
    pub traffic_rate: f64,
    pub ready_timeout: Duration,
}

/// A running `aiops demo`; stopped (SIGTERM, then SIGKILL) when dropped.
#[derive(Debug)]
pub struct Demo {
    child: Option<Child>,
    /// The `--state-dir`.
    pub state: PathBuf,
    /// The `config.toml` the demo rendered; every `aiops` call here passes it.
    pub config: PathBuf,
    pub bin_dir: PathBuf,
    out: PathBuf,
    pub app: SocketAddr,
    pub webhook: SocketAddr,
    pub prometheus: SocketAddr,
    pub alertmanager: SocketAddr,
    /// The exact command line, as it would be typed.
    pub command_line: String,
    agent: ureq::Agent,
}

impl Demo {
    /// Starts `aiops demo --no-grafana` on free loopback ports and waits until it says it runs.
    pub fn start(opts: &DemoOptions) -> Result<Demo, DemoError> {
        let ports = aiops_testkit::free_ports(4);
        let state = opts.dir.join("demo");
        let out = opts.dir.join("demo.out");
        let log = std::fs::File::create(&out).map_err(|source| DemoError::Write {
            path: out.clone(),
            source,
        })?;
        let log2 = log.try_clone().map_err(|source| DemoError::Write {
            path: out.clone(),
            source,
        })?;
        let aiops = opts.bin_dir.join("aiops");
        let args: Vec<String> = vec![
            "demo".into(),
            "--state-dir".into(),
            state.display().to_string(),
            "--app-port".into(),
            ports[0].to_string(),
            "--webhook-port".into(),
            ports[1].to_string(),
            "--prometheus-port".into(),
            ports[2].to_string(),
            "--alertmanager-port".into(),
            ports[3].to_string(),
            "--no-grafana".into(),
            "--traffic-rate".into(),
            opts.traffic_rate.to_string(),
            "--slack-webhook-url-file".into(),
            opts.slack_url_file.display().to_string(),
        ];
        let command_line = format!("{} {}", aiops.display(), args.join(" "));
        let child = Command::new(&aiops)
            .args(&args)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log2)
            .spawn()
            .map_err(|source| DemoError::Spawn {
                program: aiops.display().to_string(),
                source,
            })?;
        let addr = |p: u16| SocketAddr::from(([127, 0, 0, 1], p));
        let mut demo = Demo {
            child: Some(child),
            config: state.join("config.toml"),
            state,
            bin_dir: opts.bin_dir.clone(),
            out,
            app: addr(ports[0]),
            webhook: addr(ports[1]),
            prometheus: addr(ports[2]),
            alertmanager: addr(ports[3]),
            command_line,
            agent: ureq::Agent::config_builder()
                .timeout_global(Some(Duration::from_secs(5)))
                .http_status_as_error(false)
                .build()
                .into(),
        };
        let deadline = Instant::now() + opts.ready_timeout;
        loop {
            let text = demo.output();
            if text.contains("aiops demo is running") {
                return Ok(demo);
            }
            let exited = demo
                .child
                .as_mut()
                .is_some_and(|c| c.try_wait().ok().flatten().is_some());
            if exited || Instant::now() >= deadline {
                return Err(DemoError::NotReady {
                    timeout: opts.ready_timeout,
                    output: text,
                });
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The supervisor's pid.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    /// What the demo printed so far (stdout and stderr).
    pub fn output(&self) -> String {
        std::fs::read_to_string(&self.out).unwrap_or_default()
    }

    /// The pid of the demo's child whose command name is `comm` (e.g. `aiops-demo-app`).
    pub fn child_named(&self, comm: &str) -> Option<u32> {
        descendants(self.pid())
            .into_iter()
            .find(|&p| procs::comm(p).as_deref() == Some(comm))
    }

    /// The `aiops` command with `--config` of this demo, ready for more arguments.
    pub fn aiops_command(&self) -> Command {
        let mut cmd = Command::new(self.bin_dir.join("aiops"));
        cmd.arg("--config").arg(&self.config);
        cmd
    }

    /// Runs `aiops --config CONFIG ARGS...` to completion.
    pub fn aiops(&self, args: &[&str]) -> Result<Output, DemoError> {
        self.aiops_command()
            .args(args)
            .stdin(Stdio::null())
            .output()
            .map_err(|source| DemoError::Spawn {
                program: format!("aiops {}", args.join(" ")),
                source,
            })
    }

    /// `GET http://ADDR PATH` as JSON.
    pub fn get_json(&self, addr: SocketAddr, path: &str) -> Result<Value, DemoError> {
        let url = format!("http://{addr}{path}");
        let err = |message: String| DemoError::Api {
            url: url.clone(),
            message,
        };
        let mut resp = self
            .agent
            .get(&url)
            .call()
            .map_err(|e| err(e.to_string()))?;
        if !resp.status().is_success() {
            return Err(err(format!("status {}", resp.status())));
        }
        resp.body_mut()
            .read_json::<Value>()
            .map_err(|e| err(e.to_string()))
    }

    /// The value of the first sample of an instant query, if any.
    pub fn query(&self, promql: &str) -> Result<Option<f64>, DemoError> {
        let v = self.get_json(
            self.prometheus,
            &format!("/api/v1/query?query={}", crate::url_encode(promql)),
        )?;
        Ok(v["data"]["result"][0]["value"][1]
            .as_str()
            .and_then(|s| s.parse().ok()))
    }

    /// Prometheus' active (pending or firing) alerts named `alertname`.
    pub fn prometheus_alerts(&self, alertname: &str) -> Result<Vec<Value>, DemoError> {
        let v = self.get_json(self.prometheus, "/api/v1/alerts")?;
        Ok(named(&v["data"]["alerts"], alertname))
    }

    /// Alertmanager's active alerts named `alertname`.
    pub fn alertmanager_alerts(&self, alertname: &str) -> Result<Vec<Value>, DemoError> {
        let v = self.get_json(self.alertmanager, "/api/v2/alerts")?;
        Ok(named(&v, alertname))
    }

    /// Stops the demo with SIGTERM (SIGKILL after `timeout`) and returns how it exited and the
    /// processes it had started that are still alive afterwards (there should be none).
    pub fn stop(&mut self, timeout: Duration) -> Result<(ExitStatus, Vec<u32>), DemoError> {
        let Some(mut child) = self.child.take() else {
            return Err(DemoError::NoStop { timeout });
        };
        let children: BTreeSet<u32> = descendants(child.id());
        terminate(child.id());
        let deadline = Instant::now() + timeout;
        let status = loop {
            if let Ok(Some(status)) = child.try_wait() {
                break status;
            }
            if Instant::now() >= deadline {
                let _ = child.kill();
                let _ = child.wait();
                return Err(DemoError::NoStop { timeout });
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        let left = children.into_iter().filter(|&p| alive(p)).collect();
        Ok((status, left))
    }
}

impl Drop for Demo {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            stop_within(&mut child, Duration::from_secs(15));
        }
    }
}

fn named(alerts: &Value, alertname: &str) -> Vec<Value> {
    alerts
        .as_array()
        .into_iter()
        .flatten()
        .filter(|a| a["labels"]["alertname"] == alertname)
        .cloned()
        .collect()
}

/// Every text of every block of a Slack payload, joined: what a reader of the channel sees.
pub fn slack_text(body: &Value) -> String {
    let mut out = body["text"].as_str().unwrap_or_default().to_owned();
    for b in body["blocks"].as_array().into_iter().flatten() {
        if let Some(t) = b["text"]["text"].as_str() {
            out.push('\n');
            out.push_str(t);
        }
        for part in ["fields", "elements"] {
            for f in b[part].as_array().into_iter().flatten() {
                out.push('\n');
                out.push_str(f["text"].as_str().unwrap_or_default());
            }
        }
    }
    out
}

/// A helper process (e.g. `aiops stress traffic`), killed by pid when stopped or dropped.
#[derive(Debug)]
pub struct KillOnDrop(pub Child);

impl KillOnDrop {
    pub fn stop(&mut self) {
        if self.0.try_wait().ok().flatten().is_none() {
            let _ = self.0.kill();
        }
        let _ = self.0.wait();
    }
}

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The `bin_dir` must hold these, built together.
pub const BINARIES: [&str; 3] = ["aiops", "aiops-demo-app", "aiops-webhook"];

/// The binaries `bin_dir` lacks.
pub fn missing_binaries(bin_dir: &Path) -> Vec<&'static str> {
    BINARIES
        .into_iter()
        .filter(|b| !bin_dir.join(b).is_file())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slack_text_joins_every_block() {
        let body = serde_json::json!({
            "text": "fallback",
            "blocks": [
                {"type": "header", "text": {"type": "plain_text", "text": "HighErrorRatio firing"}},
                {"type": "section", "fields": [{"type": "mrkdwn", "text": "a"}]},
                {"type": "context", "elements": [{"type": "mrkdwn", "text": "aiops approve 1234"}]}
            ]
        });
        assert_eq!(
            slack_text(&body),
            "fallback\nHighErrorRatio firing\na\naiops approve 1234"
        );
    }

    #[test]
    fn alerts_are_filtered_by_name() {
        let v = serde_json::json!([
            {"labels": {"alertname": "HighErrorRatio"}},
            {"labels": {"alertname": "TargetDown"}}
        ]);
        assert_eq!(named(&v, "HighErrorRatio").len(), 1);
        assert!(named(&Value::Null, "HighErrorRatio").is_empty());
    }
}
