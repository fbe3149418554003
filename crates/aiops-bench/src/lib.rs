//! Side-by-side benchmarks of the aiops programs; each bin is one benchmark, documented with its
//! command and figures in docs/BENCHMARKS.md.
//!
//! The library holds what every benchmark needs, all on loopback:
//! - [`Spawned`]: start a server binary that prints `listening on http://ADDR` on stderr, time
//!   its first answered request, and kill it (by pid) when dropped.
//! - [`http_get`], [`KeepAlive`]: minimal blocking HTTP/1.1 clients (a fresh connection per
//!   request, or one kept open), so timings measure the server rather than a client library.
//! - [`wrk`]: run `wrk --latency` and parse requests/s and latency percentiles.
//! - [`rss_bytes`]: resident memory of a process from `/proc/PID/status`.
//! - [`Table`], [`percentile`], [`fmt_duration`]: report helpers (markdown tables).
//!
//! - [`memory`]: resident memory and its high-water mark from `/proc` (process trees:
//!   `aiops_testkit::procs`).
//!
//! Bins: `bench-demo-app` (the demo app against `hello-hyper`, a minimal hyper 1.x server);
//! `bench-webhook` (the receiver against a Node relay of the seed's design; helpers in [`webhook`]);
//! `bench-recommend` (one `aiops recommend` against a Python recommender of the seed's design);
//! `bench-loop` (the whole loop on a real `aiops demo`: memory, detection against the floor,
//! approval to verified recovery; helpers in [`demo`]).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// Errors of the harness; each says what failed on what.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    #[error("cannot start {program}: {source}")]
    Spawn {
        program: String,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "{program} did not print `listening on http://ADDR` within {timeout:?}; its stderr:\n{stderr}"
    )]
    NoAddress {
        program: String,
        timeout: Duration,
        stderr: String,
    },
    #[error("{program} did not answer GET {path} within {timeout:?}: {last}")]
    NoResponse {
        program: String,
        path: String,
        timeout: Duration,
        last: String,
    },
    #[error(
        "cannot run {wrk}: {source}\n  install it (Debian/Ubuntu: `apt-get install wrk`; Nix: `nix shell nixpkgs#wrk`) or pass --wrk PATH"
    )]
    WrkMissing {
        wrk: String,
        #[source]
        source: std::io::Error,
    },
    #[error("wrk failed ({status}) on {url}:\n{output}")]
    WrkFailed {
        url: String,
        status: String,
        output: String,
    },
    #[error("cannot parse wrk's output ({what} missing):\n{output}")]
    WrkOutput { what: &'static str, output: String },
    #[error("cannot read the memory of process {pid}: {source}")]
    Rss {
        pid: u32,
        #[source]
        source: std::io::Error,
    },
}

/// A server process started for a benchmark; killed (by its pid) when dropped.
#[derive(Debug)]
pub struct Spawned {
    pub child: Child,
    pub addr: SocketAddr,
    /// From just before `spawn` to the first answered `GET` of the probe path.
    pub first_response: Duration,
    name: String,
}

impl Spawned {
    /// Spawns `cmd` (stderr is taken over), waits for its `listening on http://ADDR` line,
    /// then polls `GET probe_path` until it is answered with a 2xx, all within `timeout`.
    pub fn start(
        mut cmd: Command,
        probe_path: &str,
        timeout: Duration,
    ) -> Result<Spawned, BenchError> {
        let name = cmd.get_program().to_string_lossy().into_owned();
        cmd.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let started = Instant::now();
        let mut child = cmd.spawn().map_err(|source| BenchError::Spawn {
            program: name.clone(),
            source,
        })?;
        let (tx, rx) = mpsc::channel();
        let pipe = child.stderr.take().expect("stderr is piped");
        std::thread::spawn(move || {
            let mut seen = Vec::new();
            let mut sent = false;
            for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                if !sent && let Some(rest) = line.split("listening on http://").nth(1) {
                    let addr = rest
                        .split_whitespace()
                        .next()
                        .unwrap_or_default()
                        .to_owned();
                    let _ = tx.send(Ok(addr));
                    sent = true;
                }
                if !sent {
                    seen.push(line);
                }
            }
            if !sent {
                let _ = tx.send(Err(seen.join("\n")));
            }
        });
        let mut spawned = Spawned {
            child,
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            first_response: Duration::ZERO,
            name: name.clone(),
        };
        let deadline = started + timeout;
        let no_address = |stderr: String| BenchError::NoAddress {
            program: name.clone(),
            timeout,
            stderr,
        };
        let addr = match rx.recv_timeout(timeout) {
            Ok(Ok(a)) => a.parse().map_err(|_| no_address(a.clone()))?,
            Ok(Err(stderr)) => return Err(no_address(stderr)),
            Err(_) => return Err(no_address(String::new())),
        };
        spawned.addr = addr;
        loop {
            let last = match http_get(addr, probe_path, Duration::from_secs(2)) {
                Ok((status, _)) if (200..300).contains(&status) => break,
                Ok((status, _)) => format!("status {status}"),
                Err(e) => e.to_string(),
            };
            if Instant::now() >= deadline {
                return Err(BenchError::NoResponse {
                    program: name,
                    path: probe_path.to_owned(),
                    timeout,
                    last,
                });
            }
            std::thread::sleep(Duration::from_micros(200));
        }
        spawned.first_response = started.elapsed();
        Ok(spawned)
    }

    /// The program that was started.
    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Resident memory now.
    pub fn rss_bytes(&self) -> Result<u64, BenchError> {
        rss_bytes(self.pid())
    }
}

impl Drop for Spawned {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// `GET path` on a fresh connection (`Connection: close`); returns the status and body.
pub fn http_get(
    addr: SocketAddr,
    path: &str,
    timeout: Duration,
) -> std::io::Result<(u16, Vec<u8>)> {
    let mut s = TcpStream::connect_timeout(&addr, timeout)?;
    s.set_read_timeout(Some(timeout))?;
    s.set_write_timeout(Some(timeout))?;
    s.set_nodelay(true)?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )?;
    let mut buf = Vec::with_capacity(8192);
    s.read_to_end(&mut buf)?;
    let head_end = buf
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| std::io::Error::other("no HTTP response head"))?;
    let status = std::str::from_utf8(&buf[..head_end])
        .ok()
        .and_then(|h| h.split(' ').nth(1))
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| std::io::Error::other("bad HTTP status line"))?;
    Ok((status, buf[head_end + 4..].to_vec()))
}

/// A blocking HTTP/1.1 client that keeps its connection open between requests, as Prometheus
/// 2.x keeps its connection to a target open between scrapes (Go's `http.Transport` keep-alive);
/// it reconnects once when the server has closed the idle connection.
#[derive(Debug)]
pub struct KeepAlive {
    addr: SocketAddr,
    timeout: Duration,
    stream: Option<BufReader<TcpStream>>,
    /// Connections opened so far (1 when the server kept the first one open throughout).
    pub connects: u32,
}

impl KeepAlive {
    pub fn new(addr: SocketAddr, timeout: Duration) -> Self {
        KeepAlive {
            addr,
            timeout,
            stream: None,
            connects: 0,
        }
    }

    /// `GET path`; returns the status and body. The response must carry a `Content-Length`.
    pub fn get(&mut self, path: &str) -> std::io::Result<(u16, Vec<u8>)> {
        let reused = self.stream.is_some();
        match self.request(path) {
            Ok(r) => Ok(r),
            // The server may close an idle connection at any time: retry once on a new one.
            Err(_) if reused => {
                self.stream = None;
                self.request(path)
            }
            Err(e) => {
                self.stream = None;
                Err(e)
            }
        }
    }

    fn request(&mut self, path: &str) -> std::io::Result<(u16, Vec<u8>)> {
        if self.stream.is_none() {
            let s = TcpStream::connect_timeout(&self.addr, self.timeout)?;
            s.set_read_timeout(Some(self.timeout))?;
            s.set_write_timeout(Some(self.timeout))?;
            s.set_nodelay(true)?;
            self.stream = Some(BufReader::new(s));
            self.connects += 1;
        }
        let Some(reader) = self.stream.as_mut() else {
            unreachable!("connected above")
        };
        write!(
            reader.get_mut(),
            "GET {path} HTTP/1.1\r\nHost: {}\r\n\r\n",
            self.addr
        )?;
        let mut line = String::new();
        reader.read_line(&mut line)?;
        let status: u16 = line
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| std::io::Error::other(format!("bad HTTP status line {line:?}")))?;
        let mut length: Option<usize> = None;
        let mut close = false;
        loop {
            line.clear();
            if reader.read_line(&mut line)? == 0 {
                return Err(std::io::Error::other(
                    "connection closed inside the response head",
                ));
            }
            let header = line.trim_end();
            if header.is_empty() {
                break;
            }
            if let Some((name, value)) = header.split_once(':') {
                let value = value.trim();
                if name.eq_ignore_ascii_case("content-length") {
                    length = value.parse().ok();
                } else if name.eq_ignore_ascii_case("connection") {
                    close = value.eq_ignore_ascii_case("close");
                }
            }
        }
        let length =
            length.ok_or_else(|| std::io::Error::other("response without Content-Length"))?;
        let mut body = vec![0; length];
        reader.read_exact(&mut body)?;
        if close {
            self.stream = None;
        }
        Ok((status, body))
    }
}

/// Resident set size of process `pid` (`VmRSS` in `/proc/PID/status`).
pub fn rss_bytes(pid: u32) -> Result<u64, BenchError> {
    let err = |source| BenchError::Rss { pid, source };
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).map_err(err)?;
    parse_vmrss(&status).ok_or_else(|| err(std::io::Error::other("no VmRSS line")))
}

/// The `VmRSS:  1234 kB` line of a `/proc/PID/status` text, in bytes.
pub fn parse_vmrss(status: &str) -> Option<u64> {
    parse_status_kib(status, "VmRSS:")
}

/// A `Key:  1234 kB` line of a `/proc/PID/status` text, in bytes.
fn parse_status_kib(status: &str, key: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with(key))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// Resident memory of one process: now, and its peak since it started.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Memory {
    /// `VmRSS`.
    pub rss: u64,
    /// `VmHWM`: the kernel's high-water mark of `VmRSS`, so no sampling can miss a peak.
    pub hwm: u64,
}

/// `VmRSS` and `VmHWM` of process `pid`.
pub fn memory(pid: u32) -> Result<Memory, BenchError> {
    let err = |source| BenchError::Rss { pid, source };
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).map_err(err)?;
    parse_memory(&status).ok_or_else(|| err(std::io::Error::other("no VmRSS/VmHWM lines")))
}

/// The `VmRSS` and `VmHWM` lines of a `/proc/PID/status` text.
pub fn parse_memory(status: &str) -> Option<Memory> {
    Some(Memory {
        rss: parse_status_kib(status, "VmRSS:")?,
        hwm: parse_status_kib(status, "VmHWM:")?,
    })
}

/// Percent-encodes a query-string value (everything but unreserved characters).
pub fn url_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len() * 3);
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

pub mod demo;
pub mod webhook;

pub mod wrk {
    //! Running `wrk --latency` and reading its report.

    use super::*;

    /// One wrk run.
    #[derive(Debug, Clone)]
    pub struct Run<'a> {
        /// The wrk executable.
        pub wrk: &'a str,
        pub url: String,
        pub threads: u32,
        pub connections: u32,
        pub duration: Duration,
        /// A Lua script (`-s`), e.g. to vary the request path.
        pub script: Option<&'a Path>,
    }

    /// What wrk measured.
    #[derive(Debug, Clone, PartialEq)]
    pub struct Report {
        pub requests_per_sec: f64,
        pub requests: u64,
        pub p50: Duration,
        pub p99: Duration,
        /// Non-2xx/3xx responses.
        pub non_2xx: u64,
        /// Connect, read, write and timeout errors.
        pub socket_errors: u64,
    }

    impl Run<'_> {
        /// The command line, as it would be typed.
        pub fn command_line(&self) -> String {
            let mut s = format!(
                "{} -t{} -c{} -d{}s --latency",
                self.wrk,
                self.threads,
                self.connections,
                self.duration.as_secs()
            );
            if let Some(script) = self.script {
                s.push_str(&format!(" -s {}", script.display()));
            }
            s.push(' ');
            s.push_str(&self.url);
            s
        }

        pub fn run(&self) -> Result<Report, BenchError> {
            let mut cmd = Command::new(self.wrk);
            cmd.arg(format!("-t{}", self.threads))
                .arg(format!("-c{}", self.connections))
                .arg(format!("-d{}s", self.duration.as_secs().max(1)))
                .arg("--latency");
            if let Some(script) = self.script {
                cmd.arg("-s").arg(script);
            }
            cmd.arg(&self.url);
            let out = cmd.output().map_err(|source| BenchError::WrkMissing {
                wrk: self.wrk.to_owned(),
                source,
            })?;
            let text = format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            if !out.status.success() {
                return Err(BenchError::WrkFailed {
                    url: self.url.clone(),
                    status: out.status.to_string(),
                    output: text,
                });
            }
            parse(&text)
        }
    }

    /// A wrk duration such as `412.00us`, `1.36ms`, `2.01s`, `1.00m`.
    pub fn parse_duration(s: &str) -> Option<Duration> {
        let s = s.trim();
        let split = s.find(|c: char| c.is_ascii_alphabetic())?;
        let (num, unit) = s.split_at(split);
        let v: f64 = num.parse().ok()?;
        let secs = match unit {
            "us" => v / 1e6,
            "ms" => v / 1e3,
            "s" => v,
            "m" => v * 60.0,
            "h" => v * 3600.0,
            _ => return None,
        };
        Some(Duration::from_secs_f64(secs))
    }

    /// Parses wrk's `--latency` report.
    pub fn parse(output: &str) -> Result<Report, BenchError> {
        let missing = |what| BenchError::WrkOutput {
            what,
            output: output.to_owned(),
        };
        let mut rps = None;
        let mut requests = None;
        let mut p50 = None;
        let mut p99 = None;
        let mut non_2xx = 0;
        let mut socket_errors = 0;
        for line in output.lines().map(str::trim) {
            if let Some(v) = line.strip_prefix("Requests/sec:") {
                rps = v.trim().parse::<f64>().ok();
            } else if let Some(v) = line.strip_prefix("50%") {
                p50 = parse_duration(v);
            } else if let Some(v) = line.strip_prefix("99%") {
                p99 = parse_duration(v);
            } else if let Some(v) = line.strip_prefix("Non-2xx or 3xx responses:") {
                non_2xx = v.trim().parse().unwrap_or(0);
            } else if let Some(v) = line.strip_prefix("Socket errors:") {
                socket_errors = v
                    .split(',')
                    .filter_map(|p| p.split_whitespace().last()?.parse::<u64>().ok())
                    .sum();
            } else if line.contains(" requests in ") {
                requests = line.split_whitespace().next().and_then(|n| n.parse().ok());
            }
        }
        Ok(Report {
            requests_per_sec: rps.ok_or_else(|| missing("Requests/sec"))?,
            requests: requests.ok_or_else(|| missing("requests in"))?,
            p50: p50.ok_or_else(|| missing("50% latency"))?,
            p99: p99.ok_or_else(|| missing("99% latency"))?,
            non_2xx,
            socket_errors,
        })
    }
}

/// The `q`-quantile (0..=1) of `samples` (nearest rank); `None` when empty.
pub fn percentile(samples: &[Duration], q: f64) -> Option<Duration> {
    if samples.is_empty() {
        return None;
    }
    let mut sorted = samples.to_vec();
    sorted.sort();
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    Some(sorted[rank - 1])
}

/// `1.23 ms`, `456 µs`, `2.50 s`.
pub fn fmt_duration(d: Duration) -> String {
    let us = d.as_secs_f64() * 1e6;
    if us < 1000.0 {
        format!("{us:.0} µs")
    } else if us < 1e6 {
        format!("{:.2} ms", us / 1e3)
    } else {
        format!("{:.2} s", us / 1e6)
    }
}

/// `4.9 MiB`.
pub fn fmt_mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / 1048576.0)
}

/// A markdown table.
#[derive(Debug, Clone, Default)]
pub struct Table {
    headers: Vec<String>,
    rows: Vec<Vec<String>>,
}

impl Table {
    pub fn new(headers: &[&str]) -> Table {
        Table {
            headers: headers.iter().map(|h| (*h).to_owned()).collect(),
            rows: Vec::new(),
        }
    }

    pub fn row(&mut self, cells: Vec<String>) -> &mut Self {
        self.rows.push(cells);
        self
    }

    /// Renders with columns after the first right-aligned (they hold numbers).
    pub fn render(&self) -> String {
        let mut out = format!("| {} |\n|", self.headers.join(" | "));
        for i in 0..self.headers.len() {
            out.push_str(if i == 0 { " --- |" } else { " ---: |" });
        }
        out.push('\n');
        for row in &self.rows {
            out.push_str(&format!("| {} |\n", row.join(" | ")));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const WRK: &str = "Running 10s test @ http://127.0.0.1:8080/
  2 threads and 64 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency   451.19us  256.29us   8.03ms   88.89%
    Req/Sec    70.68k     4.53k   80.93k    69.50%
  Latency Distribution
     50%  412.00us
     75%  535.00us
     90%  701.00us
     99%    1.36ms
  1407067 requests in 10.00s, 171.76MB read
  Socket errors: connect 0, read 2, write 0, timeout 1
  Non-2xx or 3xx responses: 5
Requests/sec: 140688.80
Transfer/sec:     17.17MB
";

    #[test]
    fn parses_wrk_reports() {
        let r = wrk::parse(WRK).unwrap();
        assert_eq!(r.requests_per_sec, 140688.80);
        assert_eq!(r.requests, 1_407_067);
        assert_eq!(r.p50, Duration::from_micros(412));
        assert_eq!(r.p99, Duration::from_micros(1360));
        assert_eq!(r.non_2xx, 5);
        assert_eq!(r.socket_errors, 3);
        assert!(wrk::parse("garbage").is_err());
        assert_eq!(wrk::parse_duration("2.00s"), Some(Duration::from_secs(2)));
        assert_eq!(wrk::parse_duration("1.5x"), None);
    }

    #[test]
    fn reads_vmrss() {
        assert_eq!(
            parse_vmrss("Name:\tx\nVmRSS:\t    5012 kB\nVmSwap: 0 kB\n"),
            Some(5012 * 1024)
        );
        assert!(rss_bytes(std::process::id()).unwrap() > 0);
    }

    #[test]
    fn reads_memory() {
        let status = "Name:\tx\nVmHWM:\t    6000 kB\nVmRSS:\t    5012 kB\n";
        assert_eq!(
            parse_memory(status),
            Some(Memory {
                rss: 5012 * 1024,
                hwm: 6000 * 1024
            })
        );
        assert_eq!(parse_memory("VmRSS:\t1 kB\n"), None);
        let me = memory(std::process::id()).unwrap();
        assert!(me.hwm >= me.rss && me.rss > 0, "{me:?}");
    }

    #[test]
    fn encodes_query_values() {
        assert_eq!(
            url_encode(r#"up{job="a b"} > 0.5"#),
            "up%7Bjob%3D%22a%20b%22%7D%20%3E%200.5"
        );
    }

    #[test]
    fn percentiles_and_tables() {
        let s: Vec<Duration> = (1..=100).map(Duration::from_millis).collect();
        assert_eq!(percentile(&s, 0.5), Some(Duration::from_millis(50)));
        assert_eq!(percentile(&s, 0.99), Some(Duration::from_millis(99)));
        assert_eq!(percentile(&[], 0.5), None);
        let mut t = Table::new(&["what", "req/s"]);
        t.row(vec!["a".into(), "1".into()]);
        assert_eq!(t.render(), "| what | req/s |\n| --- | ---: |\n| a | 1 |\n");
        assert_eq!(fmt_duration(Duration::from_micros(1500)), "1.50 ms");
    }
}
