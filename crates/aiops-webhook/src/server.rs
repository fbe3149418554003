//! The HTTP surface: `POST /` (notifications), `GET /healthz`, `GET /metrics`.
//!
//! Every rejection is decided in [`Rejection`] (status, message, metric reason) and answered in
//! the one error shape of `aiops_core::http::error`; the server keeps serving after any of them.

use std::sync::Arc;
use std::time::Duration;

use ::http::{HeaderValue, Method, StatusCode, header};
use aiops_core::alertmanager::{Notification, PayloadError};
use aiops_core::http::{self as h, BodyError, Request, Response};
use aiops_core::secret::Secret;
use sha2::{Digest, Sha256};

use crate::Health;
use crate::journal::{self, Journal, JournalError};
use crate::metrics::Metrics;

/// What the handlers need.
#[derive(Debug)]
pub struct App {
    pub journal: Journal,
    pub token: Option<Secret>,
    pub metrics: Arc<Metrics>,
    pub max_body_bytes: usize,
    pub body_timeout: Duration,
    pub health: Arc<Health>,
    /// Memory for notifications being received, parsed and made durable, in KiB
    /// (`webhook.queue_mib`); see [`InFlight`].
    pub in_flight: InFlight,
}

/// The byte bound on notifications in flight: each one holds its body, briefly its parsed form
/// (about three times the body) and the journal's copy until the fsync, so it reserves
/// [`crate::process::HELD_FACTOR`] times its `Content-Length` (or `webhook.max_body_bytes`
/// without one) before its body is read. One that cannot reserve within [`IN_FLIGHT_WAIT`]
/// gets 503 + Retry-After, unacknowledged; Alertmanager sends it again.
#[derive(Debug, Clone)]
pub struct InFlight {
    kib: Arc<tokio::sync::Semaphore>,
    total_kib: u32,
}

/// How long a notification waits for room before it is refused.
pub const IN_FLIGHT_WAIT: Duration = Duration::from_secs(1);

impl InFlight {
    pub fn new(bytes: usize) -> Self {
        let total_kib = u32::try_from(bytes / 1024).unwrap_or(u32::MAX).max(1);
        Self {
            kib: Arc::new(tokio::sync::Semaphore::new(total_kib as usize)),
            total_kib,
        }
    }

    /// Reserves room for a body of `len` bytes (capped at the whole bound, so that one
    /// notification alone always fits).
    pub async fn reserve(&self, len: usize) -> Option<tokio::sync::OwnedSemaphorePermit> {
        let kib = len
            .saturating_mul(crate::process::HELD_FACTOR)
            .div_ceil(1024);
        let kib = u32::try_from(kib)
            .unwrap_or(u32::MAX)
            .clamp(1, self.total_kib);
        tokio::time::timeout(IN_FLIGHT_WAIT, self.kib.clone().acquire_many_owned(kib))
            .await
            .ok()?
            .ok()
    }
}

/// Why a request was refused.
#[derive(Debug)]
pub enum Rejection {
    NotFound,
    MethodNotAllowed,
    Unauthorized(&'static str),
    UnsupportedMediaType(Option<String>),
    Body(BodyError),
    Payload(PayloadError),
    Journal(JournalError),
    /// The notifications in flight already hold `webhook.queue_mib`.
    Busy,
}

impl Rejection {
    /// The metric label.
    pub fn reason(&self) -> &'static str {
        match self {
            Rejection::NotFound => "not_found",
            Rejection::MethodNotAllowed => "method_not_allowed",
            Rejection::Unauthorized(_) => "unauthorized",
            Rejection::UnsupportedMediaType(_) => "unsupported_media_type",
            Rejection::Body(BodyError::TooLarge { .. }) => "too_large",
            Rejection::Body(BodyError::Timeout { .. }) => "timeout",
            Rejection::Body(BodyError::Read(_)) => "body_read",
            Rejection::Payload(PayloadError::Version(_)) => "bad_version",
            Rejection::Payload(_) => "malformed",
            Rejection::Journal(JournalError::BelowReserve(_)) => "disk_reserve",
            Rejection::Journal(_) => "not_persisted",
            Rejection::Busy => "busy",
        }
    }

    pub fn into_response(self) -> Response {
        match self {
            Rejection::NotFound => h::error(
                StatusCode::NOT_FOUND,
                "no such endpoint",
                Some("Alertmanager posts to POST /; health is GET /healthz, metrics GET /metrics"),
            ),
            Rejection::MethodNotAllowed => {
                let mut r = h::error(
                    StatusCode::METHOD_NOT_ALLOWED,
                    "method not allowed",
                    Some("notifications are POSTed to /"),
                );
                r.headers_mut()
                    .insert(header::ALLOW, HeaderValue::from_static("POST"));
                r
            }
            Rejection::Unauthorized(why) => {
                let mut r = h::error(
                    StatusCode::UNAUTHORIZED,
                    why,
                    Some(
                        "configure Alertmanager's receiver with http_config.authorization (type Bearer, credentials_file) holding the receiver's webhook-token",
                    ),
                );
                r.headers_mut().insert(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static("Bearer realm=\"aiops-webhook\""),
                );
                r
            }
            Rejection::UnsupportedMediaType(got) => h::error(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                &format!(
                    "content type must be application/json, got {}",
                    got.as_deref().unwrap_or("none")
                ),
                Some("send Alertmanager's webhook payload as JSON"),
            ),
            Rejection::Body(e) => {
                let hint = match e {
                    BodyError::TooLarge { .. } => {
                        "the bound is webhook.max_body_bytes; lower Alertmanager's max_alerts for this receiver or raise the bound"
                    }
                    BodyError::Timeout { .. } => {
                        "the whole body must arrive within webhook.body_timeout_secs"
                    }
                    BodyError::Read(_) => "the connection broke while the body was read",
                };
                h::error(e.status(), &e.to_string(), Some(hint))
            }
            Rejection::Payload(e) => h::error(
                StatusCode::BAD_REQUEST,
                &e.to_string(),
                Some("this endpoint takes Alertmanager's webhook payload, version 4"),
            ),
            Rejection::Busy => {
                let mut r = h::error(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "too many notifications are being received at once",
                    Some(
                        "the notification was NOT stored; the ones in flight hold webhook.queue_mib of memory; Alertmanager retries by itself",
                    ),
                );
                r.headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
                r
            }
            Rejection::Journal(e) => {
                let hint = match e {
                    JournalError::BelowReserve(_) => {
                        "the notification was NOT stored; free space on the state volume or grow it (webhook.state_reserve_mib is kept free); Alertmanager retries by itself"
                    }
                    _ => {
                        "the notification was NOT stored; retry later (Alertmanager does this by itself)"
                    }
                };
                let mut r = h::error(StatusCode::SERVICE_UNAVAILABLE, &e.to_string(), Some(hint));
                r.headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
                r
            }
        }
    }
}

/// Compares in time independent of where the inputs differ (hashing first also hides the
/// length).
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    let (ha, hb) = (Sha256::digest(a), Sha256::digest(b));
    ha.iter()
        .zip(hb.iter())
        .fold(0u8, |acc, (x, y)| acc | (x ^ y))
        == 0
}

fn check_token(app: &App, req: &Request) -> Result<(), Rejection> {
    let Some(token) = &app.token else {
        return Ok(());
    };
    let Some(value) = req.headers().get(header::AUTHORIZATION) else {
        return Err(Rejection::Unauthorized("missing bearer token"));
    };
    let value = value.as_bytes();
    let presented = match value.get(..7) {
        Some(scheme) if scheme.eq_ignore_ascii_case(b"bearer ") => &value[7..],
        _ => {
            return Err(Rejection::Unauthorized(
                "the Authorization header is not a bearer token",
            ));
        }
    };
    if constant_time_eq(presented.trim_ascii(), token.expose().as_bytes()) {
        Ok(())
    } else {
        Err(Rejection::Unauthorized("wrong bearer token"))
    }
}

/// Routes one request.
pub async fn handle(app: Arc<App>, req: Request) -> Response {
    let path = req.uri().path();
    let result = match (req.method(), path) {
        (&Method::POST, "/") => receive(&app, req).await,
        (_, "/") => Err(drained(&app, req, Rejection::MethodNotAllowed).await),
        (&Method::GET | &Method::HEAD, "/healthz") => return healthz(&app),
        (&Method::GET | &Method::HEAD, "/metrics") => return metrics(&app),
        (_, "/healthz" | "/metrics") => Err(drained(&app, req, Rejection::MethodNotAllowed).await),
        _ => Err(drained(&app, req, Rejection::NotFound).await),
    };
    match result {
        Ok(r) => r,
        Err(rej) => {
            app.metrics
                .rejected
                .with_label_values(&[rej.reason()])
                .inc();
            tracing::debug!(reason = rej.reason(), "request rejected");
            rej.into_response()
        }
    }
}

/// Reads and discards the body (within the usual bounds) before refusing, so that a client
/// still sending it reads the answer instead of a broken connection.
async fn drained(app: &App, req: Request, rejection: Rejection) -> Rejection {
    let (parts, body) = req.into_parts();
    let _ = h::read_body(&parts.headers, body, app.max_body_bytes, app.body_timeout).await;
    rejection
}

/// Reads up to `limit` bytes of `body` within `timeout`, keeping none of it.
async fn discard(mut body: hyper::body::Incoming, limit: usize, timeout: Duration) {
    use http_body_util::BodyExt;
    let _ = tokio::time::timeout(timeout, async {
        let mut seen = 0usize;
        while seen <= limit {
            match body.frame().await {
                Some(Ok(frame)) => seen += frame.data_ref().map_or(0, |d| d.len()),
                _ => return,
            }
        }
    })
    .await;
}

async fn receive(app: &App, req: Request) -> Result<Response, Rejection> {
    if let Err(rejection) = check_token(app, &req) {
        return Err(drained(app, req, rejection).await);
    }
    match h::media_type(req.headers()) {
        Some(t) if t == "application/json" => {}
        other => {
            return Err(drained(app, req, Rejection::UnsupportedMediaType(other)).await);
        }
    }
    let announced = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<usize>().ok())
        .map_or(app.max_body_bytes, |n| n.min(app.max_body_bytes));
    let Some(_room) = app.in_flight.reserve(announced).await else {
        // Read and thrown away frame by frame, not collected: collecting is what would take
        // the memory.
        discard(req.into_body(), app.max_body_bytes, app.body_timeout).await;
        return Err(Rejection::Busy);
    };
    let (parts, body) = req.into_parts();
    let bytes = h::read_body(&parts.headers, body, app.max_body_bytes, app.body_timeout)
        .await
        .map_err(Rejection::Body)?;
    // Only the status is kept: the parsed form goes before the journal's copy is made.
    let status = Notification::parse(&bytes)
        .map_err(Rejection::Payload)?
        .status;
    let received_at = chrono::Utc::now();
    let payload = journal::payload(received_at, &bytes);
    drop(bytes);
    let seq = app
        .journal
        .append(payload)
        .await
        .map_err(Rejection::Journal)?;
    app.metrics
        .received
        .with_label_values(&[status.as_str()])
        .inc();
    Ok(h::json(
        StatusCode::OK,
        &serde_json::json!({"status": "accepted", "seq": seq}),
    ))
}

fn healthz(app: &App) -> Response {
    let report = app.health.report();
    let status = if report.healthy {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    h::json(status, &report)
}

fn metrics(app: &App) -> Response {
    app.health.update_gauges(&app.metrics);
    h::text(
        StatusCode::OK,
        "text/plain; version=0.0.4; charset=utf-8",
        app.metrics.render(),
    )
}
