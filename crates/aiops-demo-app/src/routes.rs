//! Request handling: instrument, route, apply faults, answer.
//!
//! Every response, including 404, 405 and the injected 500s, passes through [`handle`], so
//! `http_requests_total` and the duration histogram see all of them (hyper itself answers
//! only requests it cannot parse, such as oversized heads, before they reach us).

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use aiops_core::http::{Request, Response, error, json, read_body, text};
use bytes::Bytes;
use http::{HeaderValue, StatusCode, header};
use serde::Serialize;
use serde_json::json;

use crate::cache::Key;
use crate::catalog::{self, MAX_ITEM_ID, MAX_QUERY_CHARS, MAX_SEARCH_LIMIT};
use crate::faults::{self, FaultKind};
use crate::metrics::{self, InFlight, Method, Route};
use crate::query::{ParamError, Params};
use crate::{App, Inner, SERVICE, VERSION};

/// How long a client may take to send a request body.
const BODY_TIMEOUT: Duration = Duration::from_secs(10);
const JSON: &str = "application/json";

/// Answers one request.
pub(crate) async fn handle(app: App, req: Request) -> Response {
    let start = Instant::now();
    let inner = &*app.inner;
    let _in_flight = InFlight::enter(&inner.metrics.in_flight);
    let route = Route::resolve(req.uri().path());
    let method = Method::from_http(req.method());
    let resp = dispatch(inner, route, req).await;
    inner
        .metrics
        .observe(route, method, resp.status(), start.elapsed());
    resp
}

fn method_allowed(route: Route, m: &http::Method) -> bool {
    match route {
        Route::Orders | Route::AdminCacheClear => m == http::Method::POST,
        Route::AdminFault => m == http::Method::POST || m == http::Method::DELETE,
        _ => m == http::Method::GET,
    }
}

async fn dispatch(app: &Inner, route: Route, req: Request) -> Response {
    if route == Route::Unmatched {
        return not_found(&req);
    }
    if !method_allowed(route, req.method()) {
        let mut resp = error(
            StatusCode::METHOD_NOT_ALLOWED,
            &format!(
                "{} does not accept {}",
                route.template(),
                shorten(req.method().as_str())
            ),
            Some(&format!("use {}", route.allowed())),
        );
        resp.headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static(route.allowed()));
        return resp;
    }
    if route.is_app() {
        if let Some(delay) = app.faults.added_latency() {
            tokio::time::sleep(delay).await;
        }
        if app.faults.should_fail() {
            return error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "injected fault: this request failed on purpose",
                Some("the errors fault is active; DELETE /admin/faults/errors ends it"),
            );
        }
    }
    match route {
        Route::Root => root(app),
        Route::Healthz => json(StatusCode::OK, &json!({"status": "ok"})),
        Route::Metrics => text(StatusCode::OK, metrics::CONTENT_TYPE, app.metrics.render()),
        Route::Item => item(app, req.uri().path()),
        Route::Search => search(app, req.uri().query().unwrap_or("")),
        Route::Orders => order(app, req).await,
        Route::AdminFaults => json(
            StatusCode::OK,
            &json!({"faults": app.faults.active(), "leaked_bytes": app.faults.leaked_bytes()}),
        ),
        Route::AdminFault => fault(app, &req),
        Route::AdminCacheClear => {
            let cleared = app.cache.clear();
            tracing::info!(cleared, "cache cleared");
            json(StatusCode::OK, &json!({"cleared": cleared}))
        }
        Route::Unmatched => not_found(&req),
    }
}

/// Clients control paths and methods; never echo more than a short prefix of them.
fn shorten(s: &str) -> String {
    const MAX: usize = 80;
    if s.len() <= MAX {
        return s.to_owned();
    }
    let cut = (0..=MAX)
        .rev()
        .find(|i| s.is_char_boundary(*i))
        .unwrap_or(0);
    format!("{}…", &s[..cut])
}

fn not_found(req: &Request) -> Response {
    error(
        StatusCode::NOT_FOUND,
        &format!(
            "no route for {} {}",
            shorten(req.method().as_str()),
            shorten(req.uri().path())
        ),
        Some(
            "routes: GET /, GET /healthz, GET /metrics, GET /api/items/{id}, GET /api/search?q=, POST /api/orders, GET /admin/faults, POST|DELETE /admin/faults/{kind}, POST /admin/cache/clear",
        ),
    )
}

fn bad_param(e: &ParamError, hint: &str) -> Response {
    error(StatusCode::BAD_REQUEST, &e.to_string(), Some(hint))
}

fn root(app: &Inner) -> Response {
    #[derive(Serialize)]
    struct About {
        service: &'static str,
        version: &'static str,
        uptime_secs: u64,
    }
    json(
        StatusCode::OK,
        &About {
            service: SERVICE,
            version: VERSION,
            uptime_secs: app.started.elapsed().as_secs(),
        },
    )
}

fn cached(body: Bytes, hit: bool) -> Response {
    let mut resp = text(StatusCode::OK, JSON, body);
    resp.headers_mut().insert(
        "x-cache",
        HeaderValue::from_static(if hit { "hit" } else { "miss" }),
    );
    resp
}

fn item(app: &Inner, path: &str) -> Response {
    let raw = metrics::one_segment_after(path, "/api/items/").unwrap_or("");
    let Ok(id) = raw.parse::<u64>() else {
        return error(
            StatusCode::BAD_REQUEST,
            &format!(
                "path parameter `id` must be an integer from 1 to {MAX_ITEM_ID}, got {:?}",
                shorten(raw)
            ),
            Some("example: GET /api/items/42"),
        );
    };
    if !(1..=MAX_ITEM_ID).contains(&id) {
        return error(
            StatusCode::NOT_FOUND,
            &format!("no item with id {id}"),
            Some(&format!("item ids run from 1 to {MAX_ITEM_ID}")),
        );
    }
    let (body, hit) = app.cache.get_or_insert_with(Key::Item(id), || {
        Bytes::from(serde_json::to_vec(&catalog::item(id)).expect("items serialize"))
    });
    cached(body, hit)
}

fn search(app: &Inner, raw_query: &str) -> Response {
    const HINT: &str = "example: GET /api/search?q=blue+lamp&limit=10";
    let parsed = Params::parse(raw_query).and_then(|p| {
        p.only(&["q", "limit"])?;
        let q = p.get("q").map(str::trim).unwrap_or("");
        if q.is_empty() || q.chars().count() > MAX_QUERY_CHARS {
            return Err(ParamError::new(
                "q",
                format!("is required: 1 to {MAX_QUERY_CHARS} characters of search words"),
            ));
        }
        let limit = p.int("limit", 1, MAX_SEARCH_LIMIT, Some(10))?;
        Ok((q.to_lowercase(), limit))
    });
    let (q, limit) = match parsed {
        Ok(v) => v,
        Err(e) => return bad_param(&e, HINT),
    };
    let limit = u8::try_from(limit).expect("bounded by MAX_SEARCH_LIMIT");
    let key = Key::Search(q.clone().into_boxed_str(), limit);
    let (body, hit) = app.cache.get_or_insert_with(key, || {
        let (results, total) = catalog::search(&q, usize::from(limit));
        let body = json!({"query": q, "total": total, "results": results});
        Bytes::from(serde_json::to_vec(&body).expect("search results serialize"))
    });
    cached(body, hit)
}

async fn order(app: &Inner, req: Request) -> Response {
    const HINT: &str =
        r#"send {"item_id": 42, "quantity": 1, "customer": "Ada"} as application/json"#;
    if aiops_core::http::media_type(req.headers()).as_deref() != Some(JSON) {
        return error(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "an order must be sent as Content-Type: application/json",
            Some(HINT),
        );
    }
    let (parts, body) = req.into_parts();
    let body = match read_body(
        &parts.headers,
        body,
        app.config.max_body_bytes,
        BODY_TIMEOUT,
    )
    .await
    {
        Ok(b) => b,
        Err(e) => return e.into_response(),
    };
    let order = match catalog::parse_order(&body) {
        Ok(o) => o,
        Err(e) => return error(StatusCode::BAD_REQUEST, &e.to_string(), Some(HINT)),
    };
    let item = catalog::item(order.item_id);
    if u64::from(item.stock) < order.quantity {
        return error(
            StatusCode::CONFLICT,
            &format!(
                "only {} of item {} in stock, {} ordered",
                item.stock, item.id, order.quantity
            ),
            Some("order fewer"),
        );
    }
    let order_id = app.next_order.fetch_add(1, Ordering::Relaxed) + 1;
    json(
        StatusCode::CREATED,
        &json!({
            "order_id": order_id,
            "item_id": item.id,
            "name": item.name,
            "quantity": order.quantity,
            "unit_price_cents": item.price_cents,
            "total_cents": item.price_cents * order.quantity,
            "customer": order.customer,
        }),
    )
}

fn fault(app: &Inner, req: &Request) -> Response {
    let segment = metrics::one_segment_after(req.uri().path(), "/admin/faults/").unwrap_or("");
    let kind = match segment.parse::<FaultKind>() {
        Ok(k) => k,
        Err(_) => {
            return error(
                StatusCode::NOT_FOUND,
                &format!("unknown fault kind {:?}", shorten(segment)),
                Some("known kinds: errors, cpu, latency, leak"),
            );
        }
    };
    if req.method() == http::Method::DELETE {
        let ended = app.faults.end(kind);
        return json(StatusCode::OK, &json!({"kind": kind, "ended": ended}));
    }
    match faults::parse(kind, req.uri().query().unwrap_or(""), &app.fault_limits) {
        Ok(spec) => {
            let started = app.faults.start(spec);
            json(StatusCode::OK, &json!({"started": started}))
        }
        Err(e) => bad_param(&e, example(kind)),
    }
}

fn example(kind: FaultKind) -> &'static str {
    match kind {
        FaultKind::Errors => "example: POST /admin/faults/errors?ratio=0.3&duration=60",
        FaultKind::Cpu => "example: POST /admin/faults/cpu?threads=1&duration=30",
        FaultKind::Latency => "example: POST /admin/faults/latency?delay_ms=400&duration=60",
        FaultKind::Leak => "example: POST /admin/faults/leak?bytes_per_sec=1048576&duration=120",
    }
}
