//! Serving HTTP/1.1 with hyper 1.x, bounded in every dimension a client controls.
//!
//! [`serve`] owns the accept loop: it bounds concurrent connections, header size and header read
//! time, and on shutdown stops accepting, lets in-flight requests finish within a grace period
//! and then closes what is left. [`read_body`] bounds body size and body read time. Handlers
//! build responses with [`json`], [`text`] and [`error`], so every error body has one shape:
//! `{"error": "...", "hint": "..."}`.

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, StatusCode, header};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use serde::Serialize;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

/// The response type every handler returns.
pub type Response = hyper::Response<Full<Bytes>>;
/// The request type every handler receives.
pub type Request = hyper::Request<Incoming>;

/// Bounds applied to every connection and request.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Request line plus headers; larger gets 431.
    pub max_header_bytes: usize,
    /// Time to receive the request head (also bounds idle keep-alive connections).
    pub header_timeout: Duration,
    /// Connections served at once; further clients wait in the kernel's backlog.
    pub max_connections: usize,
    /// Time in-flight requests get to finish after shutdown begins.
    pub shutdown_grace: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_header_bytes: 16 * 1024,
            header_timeout: Duration::from_secs(5),
            max_connections: 1024,
            shutdown_grace: Duration::from_secs(10),
        }
    }
}

/// How a [`serve`] loop ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Drained {
    /// Connections still open when the grace period ran out (closed forcibly).
    pub abandoned: usize,
}

/// Serves `handler` on `listener` until `shutdown` resolves, then drains.
pub async fn serve<F, Fut>(
    listener: TcpListener,
    limits: Limits,
    handler: F,
    shutdown: impl Future<Output = ()>,
) -> Drained
where
    F: Fn(Request) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Response> + Send + 'static,
{
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        .max_header_size(limits.max_header_bytes)
        .max_buf_size(limits.max_header_bytes.max(8192) + 64 * 1024);
    let builder = Arc::new(builder);
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let permits = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    tokio::pin!(shutdown);

    loop {
        let permit = tokio::select! {
            p = permits.clone().acquire_owned() => p.expect("semaphore is never closed"),
            () = &mut shutdown => break,
        };
        let (stream, _peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(conn) => conn,
                Err(e) => {
                    // EMFILE and friends: back off briefly instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        let handler = handler.clone();
        let service = hyper::service::service_fn(move |req| {
            let fut = handler(req);
            async move { Ok::<_, Infallible>(fut.await) }
        });
        let conn = builder.serve_connection(TokioIo::new(stream), service);
        let conn = graceful.watch(conn);
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "connection ended with an error");
            }
            drop(permit);
        });
    }
    drop(listener);

    let open = graceful.count();
    tokio::select! {
        () = graceful.shutdown() => Drained { abandoned: 0 },
        () = tokio::time::sleep(limits.shutdown_grace) => {
            let abandoned = permits_in_use(&permits, limits.max_connections);
            tracing::warn!(open, abandoned, "grace period over; closing remaining connections");
            Drained { abandoned }
        }
    }
}

fn permits_in_use(permits: &Semaphore, max: usize) -> usize {
    max.max(1) - permits.available_permits()
}

/// Why a request body was not read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BodyError {
    #[error("request body is larger than the limit of {limit} bytes")]
    TooLarge { limit: usize },
    #[error("request body was not received within {secs} s")]
    Timeout { secs: u64 },
    #[error("request body could not be read: {0}")]
    Read(String),
}

impl BodyError {
    pub fn status(&self) -> StatusCode {
        match self {
            BodyError::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            BodyError::Timeout { .. } => StatusCode::REQUEST_TIMEOUT,
            BodyError::Read(_) => StatusCode::BAD_REQUEST,
        }
    }

    /// The error as a response with the right status.
    pub fn into_response(self) -> Response {
        error(self.status(), &self.to_string(), None)
    }
}

/// Reads a whole body of at most `limit` bytes within `timeout`. A `Content-Length` over the
/// limit is refused before anything is read.
pub async fn read_body(
    headers: &HeaderMap,
    body: Incoming,
    limit: usize,
    timeout: Duration,
) -> Result<Bytes, BodyError> {
    if let Some(len) = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
        && len > limit as u64
    {
        return Err(BodyError::TooLarge { limit });
    }
    let collect = Limited::new(body, limit).collect();
    match tokio::time::timeout(timeout, collect).await {
        Err(_) => Err(BodyError::Timeout {
            secs: timeout.as_secs(),
        }),
        Ok(Err(e)) => {
            if e.downcast_ref::<http_body_util::LengthLimitError>()
                .is_some()
            {
                Err(BodyError::TooLarge { limit })
            } else {
                Err(BodyError::Read(e.to_string()))
            }
        }
        Ok(Ok(collected)) => Ok(collected.to_bytes()),
    }
}

/// A JSON response.
pub fn json<T: Serialize + ?Sized>(status: StatusCode, value: &T) -> Response {
    let body = serde_json::to_vec(value).expect("response types always serialize");
    with_type(status, "application/json", body.into())
}

/// A plain-text (or other `content_type`) response.
pub fn text(status: StatusCode, content_type: &'static str, body: impl Into<Bytes>) -> Response {
    with_type(status, content_type, body.into())
}

/// The one error shape: `{"error": message, "hint": hint}`.
pub fn error(status: StatusCode, message: &str, hint: Option<&str>) -> Response {
    #[derive(Serialize)]
    struct ErrorBody<'a> {
        error: &'a str,
        #[serde(skip_serializing_if = "Option::is_none")]
        hint: Option<&'a str>,
    }
    json(
        status,
        &ErrorBody {
            error: message,
            hint,
        },
    )
}

fn with_type(status: StatusCode, content_type: &'static str, body: Bytes) -> Response {
    let mut resp = hyper::Response::new(Full::new(body));
    *resp.status_mut() = status;
    resp.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    resp
}

/// The media type of a request, without parameters, lower-cased.
pub fn media_type(headers: &HeaderMap) -> Option<String> {
    let raw = headers.get(header::CONTENT_TYPE)?.to_str().ok()?;
    Some(raw.split(';').next()?.trim().to_ascii_lowercase())
}

/// Binds `addr`, with an error that names the address and says what to do.
pub async fn bind(addr: std::net::SocketAddr) -> Result<TcpListener, BindError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| BindError { addr, source })
}

/// A listen address could not be bound.
#[derive(Debug, thiserror::Error)]
#[error(
    "cannot listen on {addr}: {source}\n  another process may be using the port (`ss -ltnp 'sport = :{port}'` shows which), or choose another address",
    port = addr.port()
)]
pub struct BindError {
    pub addr: std::net::SocketAddr,
    #[source]
    pub source: std::io::Error,
}
