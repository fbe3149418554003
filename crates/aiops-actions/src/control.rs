//! The control socket: how `aiops pending/show/approve/reject/history/audit verify` reach the
//! executor inside `aiops-webhook`.
//!
//! Protocol (one connection per request, newline-delimited JSON, UTF-8):
//!
//! ```text
//! → {"op":"list","all":false}
//! → {"op":"show","id":"3f9c01ab"}
//! → {"op":"approve","id":"3f9c01ab","force":false}        (id null: the only pending action)
//! → {"op":"reject","id":"3f9c01ab","reason":"known deploy in progress"}
//! → {"op":"history","limit":20}
//! → {"op":"audit_verify"}
//! → {"op":"breaker_reset","alertname":"HighErrorRatio","action":"restart"}
//! ← {"type":"progress","message":"restarting aiops-demo-app.service through systemd"}   (0..n)
//! ← {"type":"ok","data":{"kind":"finished","value":{...}}}                              (last)
//! ← {"type":"error","code":"refused","reason":"cooldown","message":"...","hint":null}  (last)
//! ```
//!
//! The request is at most [`MAX_REQUEST`] bytes; its first byte must arrive within
//! [`FIRST_BYTE_TIMEOUT`] and all of it within [`REQUEST_TIMEOUT`] (the CLI writes it at once).
//! The caller's identity is the peer uid from `SO_PEERCRED`; nothing in the request names a user.
//! The socket file is mode 0666 on purpose: the kernel-reported uid and the group check decide,
//! so that a refused user gets a message saying why instead of a bare `EACCES`, and so that the
//! socket needs no group ownership juggling (its directory can stay root-owned). Because anyone
//! can connect, connections are classed by uid at accept and budgeted per class and per uid
//! ([`crate::admission`]): users who may not approve cannot hold the slots of those who may,
//! and their refusals are paced and summarised in the audit log. An approval goes on to its end
//! even when the client disconnects: a half-done restart must still be verified and recorded.

use std::future::Future;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream as StdUnixStream;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use aiops_core::config::ActionKind;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt};
use tokio::net::unix::OwnedReadHalf;
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{Semaphore, mpsc};

use crate::admission::{self, Admission, Summary, TurnedAway};
use crate::audit::{Record, VerifyReport};
use crate::gate::{Finished, Gate, GateError, Refusal, ShowData};
use crate::state::{Action, Actor};

/// Largest request line.
pub const MAX_REQUEST: u64 = 64 * 1024;
/// Time a client has to send the first byte of its request.
pub const FIRST_BYTE_TIMEOUT: Duration = Duration::from_secs(1);
/// Time a client has to send its whole request.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(2);
/// How often the summaries of refusals whose window ended are written.
const SUMMARY_INTERVAL: Duration = Duration::from_secs(5);

/// A request to the executor.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case", deny_unknown_fields)]
pub enum Request {
    List {
        #[serde(default)]
        all: bool,
    },
    Show {
        id: String,
    },
    Approve {
        #[serde(default)]
        id: Option<String>,
        #[serde(default)]
        force: bool,
    },
    Reject {
        id: String,
        reason: String,
    },
    History {
        #[serde(default = "default_limit")]
        limit: usize,
    },
    AuditVerify,
    BreakerReset {
        alertname: String,
        action: ActionKind,
    },
}

fn default_limit() -> usize {
    20
}

impl Request {
    fn name(&self) -> &'static str {
        match self {
            Request::List { .. } => "list",
            Request::Show { .. } => "show",
            Request::Approve { .. } => "approve",
            Request::Reject { .. } => "reject",
            Request::History { .. } => "history",
            Request::AuditVerify => "audit_verify",
            Request::BreakerReset { .. } => "breaker_reset",
        }
    }
}

/// What kind of failure an error reply reports (the CLI maps it to an exit code).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    NotFound,
    Refused,
    Unauthorized,
    BadRequest,
    Internal,
}

/// The payload of a successful reply.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", content = "value", rename_all = "snake_case")]
pub enum ReplyData {
    Actions(Vec<Action>),
    Show(Box<ShowData>),
    Finished(Box<Finished>),
    Rejected(Box<Action>),
    AuditVerify(VerifyReport),
    BreakerReset { changed: bool },
}

/// One line from the server.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Reply {
    Progress {
        message: String,
    },
    Ok {
        data: ReplyData,
    },
    Error {
        code: ErrorCode,
        #[serde(default)]
        reason: Option<Refusal>,
        message: String,
        #[serde(default)]
        hint: Option<String>,
    },
}

impl Reply {
    fn error(code: ErrorCode, message: impl Into<String>) -> Self {
        Reply::Error {
            code,
            reason: None,
            message: message.into(),
            hint: None,
        }
    }

    fn from_gate_error(e: GateError) -> Self {
        match e {
            GateError::NotFound { message } => Reply::error(ErrorCode::NotFound, message),
            GateError::Refused { reason, message } => Reply::Error {
                code: if reason == Refusal::BadRequest {
                    ErrorCode::BadRequest
                } else {
                    ErrorCode::Refused
                },
                hint: (reason == Refusal::Stale)
                    .then(|| "add --force to act without these re-checks (audited as forced); every other limit still applies".to_owned()),
                reason: Some(reason),
                message,
            },
            other => Reply::error(ErrorCode::Internal, other.to_string()),
        }
    }
}

/// Errors starting the control server.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error(
        "another process already listens on the control socket {0}; is a second aiops-webhook running?"
    )]
    InUse(PathBuf),
    #[error("cannot set up the control socket {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl Gate {
    /// Serves the control socket at `socket_path` until `shutdown` resolves. Also expires
    /// pending actions every 30 s. Removes a stale socket file left by a dead process, refuses
    /// to steal a live one.
    pub async fn serve_control<F>(
        self: Arc<Self>,
        socket_path: &Path,
        shutdown: F,
    ) -> Result<(), ControlError>
    where
        F: Future<Output = ()>,
    {
        let io = |source| ControlError::Io {
            path: socket_path.to_owned(),
            source,
        };
        if let Some(dir) = socket_path
            .parent()
            .filter(|d| !d.as_os_str().is_empty() && !d.exists())
        {
            std::fs::create_dir_all(dir).map_err(io)?;
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).map_err(io)?;
        }
        if socket_path.exists() {
            if StdUnixStream::connect(socket_path).is_ok() {
                return Err(ControlError::InUse(socket_path.to_owned()));
            }
            std::fs::remove_file(socket_path).map_err(io)?;
        }
        let listener = UnixListener::bind(socket_path).map_err(io)?;
        std::fs::set_permissions(socket_path, std::fs::Permissions::from_mode(0o666))
            .map_err(io)?;
        tracing::info!(socket = %socket_path.display(), group = %self.config().webhook.operators_group, "control socket ready");
        let expiry = {
            let gate = self.clone();
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(Duration::from_secs(30));
                loop {
                    tick.tick().await;
                    let g = gate.clone();
                    if let Ok(Err(e)) = tokio::task::spawn_blocking(move || g.expire_due()).await {
                        tracing::error!(error = %e, "cannot expire pending actions");
                    }
                }
            })
        };
        let fair = Arc::new(Fairness {
            privileged: Semaphore::new(admission::PRIVILEGED_CONNECTIONS),
            admission: Mutex::new(Admission::default()),
        });
        let summaries = {
            let (gate, fair) = (self.clone(), fair.clone());
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(SUMMARY_INTERVAL);
                loop {
                    tick.tick().await;
                    let due = fair.lock().due(Instant::now(), false);
                    audit_summaries(&gate, due).await;
                }
            })
        };
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                () = &mut shutdown => break,
                // Accepting never waits for a slot: each connection is classed by its uid and
                // waits (privileged) or is turned away (everyone else) on its own task.
                accepted = listener.accept() => match accepted {
                    Ok((stream, _)) => {
                        tokio::spawn(serve_connection(self.clone(), fair.clone(), stream));
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "control socket accept failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                },
            }
        }
        expiry.abort();
        summaries.abort();
        let due = fair.lock().due(Instant::now(), true);
        audit_summaries(&self, due).await;
        let _ = std::fs::remove_file(socket_path);
        Ok(())
    }
}

/// The budgets of the control socket (see [`crate::admission`]).
#[derive(Debug)]
struct Fairness {
    privileged: Semaphore,
    admission: Mutex<Admission>,
}

impl Fairness {
    fn lock(&self) -> std::sync::MutexGuard<'_, Admission> {
        self.admission.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// An admitted connection of a user who may not approve; gives its slot back when dropped.
struct Slot {
    fair: Arc<Fairness>,
    uid: u32,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.fair.lock().release(self.uid);
    }
}

/// Appends the summaries of refusals that were counted rather than audited one by one.
async fn audit_summaries(gate: &Arc<Gate>, due: Vec<Summary>) {
    if due.is_empty() {
        return;
    }
    let gate = gate.clone();
    let _ = tokio::task::spawn_blocking(move || {
        for s in due {
            let actor = Actor::from_uid(s.uid);
            let detail = s.detail();
            tracing::warn!(actor = %actor, "control socket: {detail}");
            if let Err(e) = gate.audit_log().append(
                &actor,
                Record {
                    event: "refused".into(),
                    detail: Some(detail),
                    ..Record::default()
                },
            ) {
                tracing::error!(error = %e, "cannot audit a summary of refused requests");
            }
        }
    })
    .await;
}

/// One connection, from accept to its last reply.
async fn serve_connection(gate: Arc<Gate>, fair: Arc<Fairness>, stream: UnixStream) {
    let uid = match stream.peer_cred() {
        Ok(c) => c.uid(),
        Err(e) => {
            tracing::warn!(error = %e, "cannot read the peer's credentials; closing");
            return;
        }
    };
    // A uid already holding its share is known not to be privileged: turn it away before any
    // user-database lookup, so a flood of connections costs next to nothing.
    if let Some(why) = fair.lock().full(uid) {
        turn_away(&stream, uid, why);
        return;
    }
    let group = gate.config().webhook.operators_group.clone();
    let Ok(authorized) =
        tokio::task::spawn_blocking(move || crate::auth::authorize(uid, &group)).await
    else {
        return;
    };
    match authorized {
        Ok(actor) => {
            let Ok(_permit) = fair.privileged.acquire().await else {
                return;
            };
            serve_privileged(gate, stream, actor).await;
        }
        Err(message) => {
            if let Err(why) = fair.lock().admit(uid, Instant::now()) {
                turn_away(&stream, uid, why);
                return;
            }
            let slot = Slot {
                fair: fair.clone(),
                uid,
            };
            serve_refused(gate, slot, stream, message).await;
        }
    }
}

/// Answers a connection over its budget without waiting, and closes it.
fn turn_away(stream: &UnixStream, uid: u32, why: TurnedAway) {
    let message = match why {
        TurnedAway::PerUid => format!(
            "uid {uid} already has {} connections open to the control socket, the most for a user who may not approve",
            admission::PER_UID_CONNECTIONS
        ),
        TurnedAway::AllUnprivileged => format!(
            "users who may not approve already hold {} connections to the control socket; try again later",
            admission::UNPRIVILEGED_CONNECTIONS
        ),
    };
    let mut line = serde_json::to_vec(&Reply::Error {
        code: ErrorCode::Unauthorized,
        reason: Some(Refusal::Unauthorized),
        message,
        hint: None,
    })
    .expect("a reply always serializes");
    line.push(b'\n');
    // One small line fits the socket buffer; a peer that does not read loses it.
    let _ = stream.try_write(&line);
}

/// Reads one request line: the first byte within [`FIRST_BYTE_TIMEOUT`], the whole line within
/// [`REQUEST_TIMEOUT`]. `Err` is the reply to send instead.
async fn read_request(read: OwnedReadHalf) -> Result<Request, Reply> {
    let started = tokio::time::Instant::now();
    let mut reader = tokio::io::BufReader::new(read.take(MAX_REQUEST));
    let unreadable =
        |e: std::io::Error| Reply::error(ErrorCode::BadRequest, format!("unreadable request: {e}"));
    match tokio::time::timeout(FIRST_BYTE_TIMEOUT, reader.fill_buf()).await {
        Err(_) => {
            return Err(Reply::error(
                ErrorCode::BadRequest,
                format!(
                    "no request within {} s of connecting",
                    FIRST_BYTE_TIMEOUT.as_secs()
                ),
            ));
        }
        Ok(Err(e)) => return Err(unreadable(e)),
        Ok(Ok(_)) => {}
    }
    let mut line = String::new();
    match tokio::time::timeout_at(started + REQUEST_TIMEOUT, reader.read_line(&mut line)).await {
        Err(_) => Err(Reply::error(
            ErrorCode::BadRequest,
            format!(
                "the request did not arrive whole within {} s",
                REQUEST_TIMEOUT.as_secs()
            ),
        )),
        Ok(Err(e)) => Err(unreadable(e)),
        Ok(Ok(_)) if !line.ends_with('\n') => Err(Reply::error(
            ErrorCode::BadRequest,
            format!("the request must be one line of at most {MAX_REQUEST} bytes"),
        )),
        Ok(Ok(_)) => serde_json::from_str::<Request>(line.trim_end()).map_err(|e| {
            Reply::error(ErrorCode::BadRequest, format!("not a control request: {e}"))
        }),
    }
}

/// A user who may not approve: whatever they ask, the answer is why not, at their uid's pace;
/// the first refusals of a window are audited one by one, the rest summarised.
async fn serve_refused(gate: Arc<Gate>, slot: Slot, stream: UnixStream, message: String) {
    let uid = slot.uid;
    let (read, mut write) = stream.into_split();
    let request = read_request(read).await;
    let plan = slot.fair.lock().refusal(uid, Instant::now());
    if let Some(summary) = plan.closed {
        audit_summaries(&gate, vec![summary]).await;
    }
    tokio::time::sleep(plan.delay).await;
    let (reply, what) = match request {
        Ok(r) => (
            Reply::Error {
                code: ErrorCode::Unauthorized,
                reason: Some(Refusal::Unauthorized),
                message: message.clone(),
                hint: None,
            },
            r.name(),
        ),
        Err(reply) => (reply, "malformed request"),
    };
    if plan.audit {
        let detail = format!("unauthorized {what}: {message}");
        let _ = tokio::task::spawn_blocking(move || {
            gate.audit_log().append(
                &Actor::from_uid(uid),
                Record {
                    event: "refused".into(),
                    detail: Some(detail),
                    ..Record::default()
                },
            )
        })
        .await;
    }
    // Free the slot first: a client that reconnects as soon as it reads the answer finds it.
    drop(slot);
    let _ = write_reply(&mut write, &reply).await;
}

async fn write_reply(
    stream: &mut (impl AsyncWriteExt + Unpin),
    reply: &Reply,
) -> std::io::Result<()> {
    let mut line = serde_json::to_vec(reply).expect("a reply always serializes");
    line.push(b'\n');
    stream.write_all(&line).await?;
    stream.flush().await
}

/// Root, an operator or the executor's own account: the request is served.
async fn serve_privileged(gate: Arc<Gate>, stream: UnixStream, actor: Actor) {
    let (read, mut write) = stream.into_split();
    let request = match read_request(read).await {
        Ok(r) => r,
        Err(reply) => {
            let _ = write_reply(&mut write, &reply).await;
            return;
        }
    };
    let (tx, mut rx) = mpsc::unbounded_channel::<Reply>();
    let job_gate = gate.clone();
    let job = tokio::task::spawn_blocking(move || {
        tracing::info!(op = request.name(), actor = %actor, "control request");
        let progress_tx = tx.clone();
        let progress = move |m: &str| {
            let _ = progress_tx.send(Reply::Progress {
                message: m.to_owned(),
            });
        };
        let reply = match dispatch(&job_gate, request, &actor, &progress) {
            Ok(data) => Reply::Ok { data },
            Err(e) => Reply::from_gate_error(e),
        };
        let _ = tx.send(reply);
    });
    // Forward until the job ends; a vanished client does not stop the job.
    let mut client_gone = false;
    while let Some(reply) = rx.recv().await {
        if !client_gone && write_reply(&mut write, &reply).await.is_err() {
            client_gone = true;
        }
    }
    if let Err(e) = job.await {
        tracing::error!(error = %e, "control request panicked");
        let _ = write_reply(
            &mut write,
            &Reply::error(
                ErrorCode::Internal,
                "the request failed inside the executor; see its log",
            ),
        )
        .await;
    }
}

fn dispatch(
    gate: &Gate,
    request: Request,
    actor: &Actor,
    progress: &dyn Fn(&str),
) -> Result<ReplyData, GateError> {
    Ok(match request {
        Request::List { all } => ReplyData::Actions(gate.list(all)?),
        Request::Show { id } => ReplyData::Show(Box::new(gate.show(&id)?)),
        Request::Approve { id, force } => ReplyData::Finished(Box::new(gate.approve(
            id.as_deref(),
            actor,
            force,
            progress,
        )?)),
        Request::Reject { id, reason } => {
            ReplyData::Rejected(Box::new(gate.reject(&id, actor, &reason)?))
        }
        Request::History { limit } => ReplyData::Actions(gate.history(limit.min(10_000))?),
        Request::AuditVerify => ReplyData::AuditVerify(gate.audit_verify()),
        Request::BreakerReset { alertname, action } => ReplyData::BreakerReset {
            changed: gate.reset_breaker(&alertname, action, actor)?,
        },
    })
}

/// Errors of the control client, each saying what to do.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error(
        "the control socket {path} does not exist: is aiops-webhook running? (systemctl status aiops-webhook)"
    )]
    NoSocket { path: PathBuf },
    #[error(
        "nobody answers on the control socket {path}: is aiops-webhook running? (systemctl status aiops-webhook)"
    )]
    NotListening { path: PathBuf },
    #[error("permission denied on the control socket {path}: ask to be added to group {group}")]
    PermissionDenied { path: PathBuf, group: String },
    #[error("talking to aiops-webhook over {path} failed: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "aiops-webhook sent something this aiops does not understand ({0}); are both the same version?"
    )]
    Protocol(String),
    /// The server answered with an error.
    #[error("{message}")]
    Remote {
        code: ErrorCode,
        reason: Option<Refusal>,
        message: String,
        hint: Option<String>,
    },
}

/// The CLI's side: blocking, one request per connection.
#[derive(Debug, Clone)]
pub struct ControlClient {
    pub path: PathBuf,
    /// Named in the "permission denied" advice.
    pub operators_group: String,
    /// Longest silence between two lines from the server (approval progress comes every few
    /// seconds).
    pub read_timeout: Duration,
}

impl ControlClient {
    pub fn new(path: &Path, operators_group: &str) -> Self {
        Self {
            path: path.to_owned(),
            operators_group: operators_group.to_owned(),
            read_timeout: Duration::from_secs(300),
        }
    }

    /// Sends `request`; `on_progress` sees each progress line; returns the final data.
    pub fn call(
        &self,
        request: &Request,
        on_progress: &mut dyn FnMut(&str),
    ) -> Result<ReplyData, ClientError> {
        let io = |source: std::io::Error| ClientError::Io {
            path: self.path.clone(),
            source,
        };
        let mut stream = StdUnixStream::connect(&self.path).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => ClientError::NoSocket {
                path: self.path.clone(),
            },
            std::io::ErrorKind::ConnectionRefused => ClientError::NotListening {
                path: self.path.clone(),
            },
            std::io::ErrorKind::PermissionDenied => ClientError::PermissionDenied {
                path: self.path.clone(),
                group: self.operators_group.clone(),
            },
            _ => io(e),
        })?;
        stream
            .set_read_timeout(Some(self.read_timeout))
            .map_err(io)?;
        stream
            .set_write_timeout(Some(REQUEST_TIMEOUT))
            .map_err(io)?;
        let mut line = serde_json::to_vec(request).expect("a request always serializes");
        line.push(b'\n');
        stream.write_all(&line).map_err(io)?;
        let mut reader = BufReader::new((&stream).take(64 * 1024 * 1024));
        loop {
            let mut text = String::new();
            let n = reader.read_line(&mut text).map_err(io)?;
            if n == 0 {
                return Err(ClientError::Protocol(
                    "the connection closed before a result".into(),
                ));
            }
            match serde_json::from_str::<Reply>(text.trim_end()) {
                Ok(Reply::Progress { message }) => on_progress(&message),
                Ok(Reply::Ok { data }) => return Ok(data),
                Ok(Reply::Error {
                    code,
                    reason,
                    message,
                    hint,
                }) => {
                    return Err(ClientError::Remote {
                        code,
                        reason,
                        message,
                        hint,
                    });
                }
                Err(e) => return Err(ClientError::Protocol(e.to_string())),
            }
        }
    }
}
