//! The protocol between the demo executor and the `aiops demo` supervisor.
//!
//! One unix stream socket (`remediation.demo_supervisor_socket`), one request per connection:
//! the client writes one JSON object and a newline, the server answers one JSON object and a
//! newline and closes.
//!
//! ```text
//! → {"op":"restart","unit":"aiops-demo-app.service"}
//! ← {"ok":true,"active_state":"active","invocation_id":"5f0c…","main_pid":4242,"n_restarts":1}
//! → {"op":"status","unit":"aiops-demo-app.service"}
//! ← {"ok":true,"active_state":"active","invocation_id":"5f0c…","main_pid":4242,"n_restarts":1}
//! ← {"ok":false,"error":"unknown unit \"x.service\""}
//! ```
//!
//! `restart` answers after the new child has been spawned, with its status. `invocation_id` must
//! change on every (re)start: verification waits for a new one. `active_state` uses systemd's
//! words (`active`, `activating`, `failed`, `inactive`). Requests are at most
//! [`MAX_LINE`] bytes. [`serve_one`] is a ready-made server side for one connection.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Largest request or response line.
pub const MAX_LINE: u64 = 16 * 1024;

/// A request to the supervisor.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case", deny_unknown_fields)]
pub enum Request {
    Restart { unit: String },
    Status { unit: String },
}

impl Request {
    pub fn unit(&self) -> &str {
        match self {
            Request::Restart { unit } | Request::Status { unit } => unit,
        }
    }
}

/// The supervisor's answer.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Response {
    pub ok: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub active_state: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub invocation_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub main_pid: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub n_restarts: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl Response {
    pub fn error(message: impl Into<String>) -> Self {
        Self {
            ok: false,
            error: Some(message.into()),
            ..Self::default()
        }
    }
}

/// Serves one connection: reads one request (bounded in size and time), calls `handler`,
/// writes its answer. Garbage gets `{"ok":false,"error":...}`.
pub fn serve_one(
    mut stream: UnixStream,
    handler: &dyn Fn(&Request) -> Response,
) -> std::io::Result<()> {
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    stream.set_write_timeout(Some(Duration::from_secs(5)))?;
    let mut line = String::new();
    BufReader::new((&stream).take(MAX_LINE)).read_line(&mut line)?;
    let response = match serde_json::from_str::<Request>(line.trim_end()) {
        Ok(req) => handler(&req),
        Err(e) => Response::error(format!("bad request: {e}")),
    };
    let mut out = serde_json::to_vec(&response).expect("a response always serializes");
    out.push(b'\n');
    stream.write_all(&out)?;
    stream.flush()
}
