//! A local server speaking Slack's incoming-webhook protocol: `POST` JSON, answered `200 ok`.
//! It records every body it accepted, and can be told to fail: 500s, 429 with Retry-After (in
//! seconds or as an HTTP date), permanent 400s, or hanging past the client's timeout.

use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use serde_json::Value;

/// How the sink answers one request.
#[derive(Debug, Clone)]
pub enum Behavior {
    Ok,
    /// `500 Internal Server Error`.
    ServerError,
    /// `429` with `Retry-After: secs`.
    RateLimited(u64),
    /// `429` with `Retry-After` as the HTTP date this long after the answer.
    RateLimitedUntil(Duration),
    /// `400 invalid_blocks` (Slack's answer to a payload it cannot render).
    InvalidBlocks,
    /// Reads the request and answers nothing for this long.
    Hang(Duration),
}

/// One request the sink saw.
#[derive(Debug, Clone)]
pub struct Seen {
    pub at: Instant,
    pub body: Value,
    pub answered: &'static str,
}

#[derive(Debug, Default)]
struct Inner {
    script: VecDeque<Behavior>,
    /// While set, every request gets this (an outage).
    outage: Option<Behavior>,
    seen: Vec<Seen>,
}

/// The sink; stops accepting when dropped.
#[derive(Debug)]
pub struct Sink {
    pub addr: SocketAddr,
    inner: Arc<Mutex<Inner>>,
    stop: Arc<AtomicBool>,
}

impl Sink {
    pub fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        listener.set_nonblocking(true).unwrap();
        let inner = Arc::new(Mutex::new(Inner::default()));
        let stop = Arc::new(AtomicBool::new(false));
        {
            let inner = inner.clone();
            let stop = stop.clone();
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    match listener.accept() {
                        Ok((s, _)) => {
                            let inner = inner.clone();
                            let stop = stop.clone();
                            std::thread::spawn(move || serve(s, &inner, &stop));
                        }
                        Err(_) => std::thread::sleep(Duration::from_millis(5)),
                    }
                }
            });
        }
        Self { addr, inner, stop }
    }

    pub fn url(&self) -> String {
        format!("http://{}/services/T000/B000/XXXX", self.addr)
    }

    /// The next requests get these answers, in order (then `Ok` again).
    pub fn script(&self, behaviors: impl IntoIterator<Item = Behavior>) {
        self.inner.lock().unwrap().script.extend(behaviors);
    }

    /// Every request gets `b` until [`Sink::recover`].
    pub fn outage(&self, b: Behavior) {
        self.inner.lock().unwrap().outage = Some(b);
    }

    pub fn recover(&self) {
        self.inner.lock().unwrap().outage = None;
    }

    /// Bodies answered `ok` (what Slack would have posted), in order.
    pub fn delivered(&self) -> Vec<Value> {
        self.inner
            .lock()
            .unwrap()
            .seen
            .iter()
            .filter(|s| s.answered == "ok")
            .map(|s| s.body.clone())
            .collect()
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.inner.lock().unwrap().seen.clone()
    }

    /// The `text` fallback of every delivered message.
    pub fn texts(&self) -> Vec<String> {
        self.delivered()
            .iter()
            .map(|b| b["text"].as_str().unwrap_or_default().to_owned())
            .collect()
    }
}

impl Drop for Sink {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn serve(stream: TcpStream, inner: &Mutex<Inner>, stop: &AtomicBool) {
    let _ = stream.set_read_timeout(Some(Duration::from_secs(30)));
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut out = stream;
    while !stop.load(Ordering::Relaxed) {
        let mut line = String::new();
        match reader.read_line(&mut line) {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        let mut len = 0usize;
        loop {
            let mut h = String::new();
            if reader.read_line(&mut h).unwrap_or(0) == 0 {
                return;
            }
            let h = h.trim_end();
            if h.is_empty() {
                break;
            }
            if let Some((k, v)) = h.split_once(':')
                && k.eq_ignore_ascii_case("content-length")
            {
                len = v.trim().parse().unwrap_or(0);
            }
        }
        let mut body = vec![0; len];
        if reader.read_exact(&mut body).is_err() {
            return;
        }
        let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
        let behavior = {
            let mut i = inner.lock().unwrap();
            i.outage
                .clone()
                .or_else(|| i.script.pop_front())
                .unwrap_or(Behavior::Ok)
        };
        let (status, extra, text, answered) = match behavior {
            Behavior::Ok => ("200 OK", String::new(), "ok", "ok"),
            Behavior::ServerError => (
                "500 Internal Server Error",
                String::new(),
                "internal_error",
                "500",
            ),
            Behavior::RateLimited(secs) => (
                "429 Too Many Requests",
                format!("Retry-After: {secs}\r\n"),
                "rate_limited",
                "429",
            ),
            Behavior::RateLimitedUntil(d) => (
                "429 Too Many Requests",
                format!(
                    "Retry-After: {}\r\n",
                    httpdate::fmt_http_date(SystemTime::now() + d)
                ),
                "rate_limited",
                "429",
            ),
            Behavior::InvalidBlocks => ("400 Bad Request", String::new(), "invalid_blocks", "400"),
            Behavior::Hang(d) => {
                inner.lock().unwrap().seen.push(Seen {
                    at: Instant::now(),
                    body,
                    answered: "hang",
                });
                std::thread::sleep(d);
                return;
            }
        };
        inner.lock().unwrap().seen.push(Seen {
            at: Instant::now(),
            body,
            answered,
        });
        let resp = format!(
            "HTTP/1.1 {status}\r\ncontent-type: text/plain\r\ncontent-length: {}\r\n{extra}\r\n{text}",
            text.len()
        );
        if out.write_all(resp.as_bytes()).is_err() {
            return;
        }
    }
}
