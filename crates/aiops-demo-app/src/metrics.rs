//! The app's Prometheus registry and the request instruments on the hot path.
//!
//! Label values are bounded by construction: `route` is a [`Route`] template, `method` one of
//! [`Method`]'s eight values, `status` a number the app itself chose. Handles for every
//! (route, method, status) cell are created on first use and cached in `OnceLock`s, so the hot
//! path is an array index plus atomic adds, not a hash lookup under a lock (`with_label_values`).

use std::sync::OnceLock;
use std::time::Duration;

use http::StatusCode;
use prometheus::core::Collector;
use prometheus::{
    Encoder, Gauge, GaugeVec, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec,
    IntGauge, IntGaugeVec, Opts, Registry, TextEncoder,
};

use crate::faults::FaultKind;

/// The media type of the Prometheus text exposition format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Latency buckets, in seconds: fine at the bottom (the app answers in microseconds) and up to
/// 10 s so an injected delay of any allowed size lands in a bucket of its own.
const BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// Every route the app answers, as the template that becomes the `route` label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Route {
    Root,
    Healthz,
    Metrics,
    Item,
    Search,
    Orders,
    AdminFaults,
    AdminFault,
    AdminCacheClear,
    /// Anything else; answered 404.
    Unmatched,
}

impl Route {
    pub const ALL: [Route; 10] = [
        Route::Root,
        Route::Healthz,
        Route::Metrics,
        Route::Item,
        Route::Search,
        Route::Orders,
        Route::AdminFaults,
        Route::AdminFault,
        Route::AdminCacheClear,
        Route::Unmatched,
    ];

    /// The `route` label: the template, never the raw path.
    pub fn template(self) -> &'static str {
        match self {
            Route::Root => "/",
            Route::Healthz => "/healthz",
            Route::Metrics => "/metrics",
            Route::Item => "/api/items/{id}",
            Route::Search => "/api/search",
            Route::Orders => "/api/orders",
            Route::AdminFaults => "/admin/faults",
            Route::AdminFault => "/admin/faults/{kind}",
            Route::AdminCacheClear => "/admin/cache/clear",
            Route::Unmatched => "unmatched",
        }
    }

    /// Matches a request path. Only exact paths match: no trailing slashes, no prefixes.
    pub fn resolve(path: &str) -> Route {
        match path {
            "/" => Route::Root,
            "/healthz" => Route::Healthz,
            "/metrics" => Route::Metrics,
            "/api/search" => Route::Search,
            "/api/orders" => Route::Orders,
            "/admin/faults" => Route::AdminFaults,
            "/admin/cache/clear" => Route::AdminCacheClear,
            _ => {
                if one_segment_after(path, "/api/items/").is_some() {
                    Route::Item
                } else if one_segment_after(path, "/admin/faults/").is_some() {
                    Route::AdminFault
                } else {
                    Route::Unmatched
                }
            }
        }
    }

    /// The methods the route accepts (the `Allow` header of a 405).
    pub fn allowed(self) -> &'static str {
        match self {
            Route::Orders | Route::AdminCacheClear => "POST",
            Route::AdminFault => "POST, DELETE",
            _ => "GET",
        }
    }

    /// Routes that do the application's work, and so are the ones faults break.
    pub fn is_app(self) -> bool {
        matches!(
            self,
            Route::Root | Route::Item | Route::Search | Route::Orders
        )
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// The path segment after `prefix`, if the path is exactly `prefix` plus one non-empty segment.
pub fn one_segment_after<'a>(path: &'a str, prefix: &str) -> Option<&'a str> {
    let rest = path.strip_prefix(prefix)?;
    (!rest.is_empty() && !rest.contains('/')).then_some(rest)
}

/// The `method` label: the common methods by name, everything else as `OTHER`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    Get,
    Post,
    Delete,
    Head,
    Put,
    Patch,
    Options,
    Other,
}

impl Method {
    const COUNT: usize = 8;

    pub fn from_http(m: &http::Method) -> Method {
        match *m {
            http::Method::GET => Method::Get,
            http::Method::POST => Method::Post,
            http::Method::DELETE => Method::Delete,
            http::Method::HEAD => Method::Head,
            http::Method::PUT => Method::Put,
            http::Method::PATCH => Method::Patch,
            http::Method::OPTIONS => Method::Options,
            _ => Method::Other,
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            Method::Get => "GET",
            Method::Post => "POST",
            Method::Delete => "DELETE",
            Method::Head => "HEAD",
            Method::Put => "PUT",
            Method::Patch => "PATCH",
            Method::Options => "OPTIONS",
            Method::Other => "OTHER",
        }
    }
}

/// Status codes with a cached handle; any other status still counts, through the slow path.
const STATUSES: [u16; 11] = [200, 201, 400, 404, 405, 408, 409, 413, 415, 500, 503];

fn status_index(status: StatusCode) -> Option<usize> {
    STATUSES.iter().position(|s| *s == status.as_u16())
}

const ROUTES: usize = Route::ALL.len();

/// Everything the app exports.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    requests: IntCounterVec,
    durations: HistogramVec,
    request_cells: Box<[OnceLock<IntCounter>]>,
    duration_cells: Box<[OnceLock<Histogram>]>,
    pub in_flight: IntGauge,
    pub cache_entries: IntGauge,
    pub cache_capacity: IntGauge,
    pub cache_hits: IntCounter,
    pub cache_misses: IntCounter,
    pub fault_active: [IntGauge; 4],
    pub fault_setting: [Gauge; 4],
    pub leaked_bytes: IntGauge,
}

impl Metrics {
    /// A fresh registry (not the global one, so several apps can live in one test process).
    pub fn new(version: &str) -> Metrics {
        let registry = Registry::new();
        let requests = IntCounterVec::new(
            Opts::new("http_requests_total", "HTTP requests answered."),
            &["method", "route", "status"],
        )
        .expect("static metric definition");
        let durations = HistogramVec::new(
            HistogramOpts::new(
                "http_request_duration_seconds",
                "Time from request head to response, in seconds.",
            )
            .buckets(BUCKETS.to_vec()),
            &["method", "route"],
        )
        .expect("static metric definition");
        let in_flight = IntGauge::new("http_requests_in_flight", "Requests being answered now.")
            .expect("static metric definition");
        let build_info = IntGaugeVec::new(
            Opts::new(
                "demo_build_info",
                "Always 1; the labels describe the build.",
            ),
            &["version"],
        )
        .expect("static metric definition");
        build_info.with_label_values(&[version]).set(1);
        let cache_entries = IntGauge::new("demo_cache_entries", "Entries in the in-memory cache.")
            .expect("static metric definition");
        let cache_capacity = IntGauge::new(
            "demo_cache_capacity",
            "Entries the cache holds before it evicts.",
        )
        .expect("static metric definition");
        let cache_hits = IntCounter::new("demo_cache_hits_total", "Cache lookups that hit.")
            .expect("static metric definition");
        let cache_misses = IntCounter::new("demo_cache_misses_total", "Cache lookups that missed.")
            .expect("static metric definition");
        let active = IntGaugeVec::new(
            Opts::new(
                "demo_fault_active",
                "1 while the injected fault of this kind is active.",
            ),
            &["kind"],
        )
        .expect("static metric definition");
        let setting = GaugeVec::new(
            Opts::new(
                "demo_fault_setting",
                "The active fault's parameter: error ratio, CPU threads, added latency in seconds, leaked bytes per second; 0 when inactive.",
            ),
            &["kind"],
        )
        .expect("static metric definition");
        let leaked_bytes = IntGauge::new(
            "demo_leaked_bytes",
            "Bytes held by the leak fault; freed only by a restart.",
        )
        .expect("static metric definition");
        let fault_active = FaultKind::ALL.map(|k| active.with_label_values(&[k.as_str()]));
        let fault_setting = FaultKind::ALL.map(|k| setting.with_label_values(&[k.as_str()]));

        let collectors: Vec<Box<dyn Collector>> = vec![
            Box::new(requests.clone()),
            Box::new(durations.clone()),
            Box::new(in_flight.clone()),
            Box::new(build_info),
            Box::new(cache_entries.clone()),
            Box::new(cache_capacity.clone()),
            Box::new(cache_hits.clone()),
            Box::new(cache_misses.clone()),
            Box::new(active),
            Box::new(setting),
            Box::new(leaked_bytes.clone()),
            Box::new(crate::process::ProcessMetrics::for_self()),
        ];
        for c in collectors {
            registry
                .register(c)
                .expect("metric names are unique within a fresh registry");
        }

        let metrics = Metrics {
            registry,
            requests,
            durations,
            request_cells: (0..ROUTES * Method::COUNT * STATUSES.len())
                .map(|_| OnceLock::new())
                .collect(),
            duration_cells: (0..ROUTES * Method::COUNT)
                .map(|_| OnceLock::new())
                .collect(),
            in_flight,
            cache_entries,
            cache_capacity,
            cache_hits,
            cache_misses,
            fault_active,
            fault_setting,
            leaked_bytes,
        };
        // The application routes' success and error series exist from the start, so an error
        // ratio is 0 (not "no data") before the first error and `rate()` sees the first one.
        for (route, method, ok) in [
            (Route::Root, Method::Get, 200),
            (Route::Item, Method::Get, 200),
            (Route::Search, Method::Get, 200),
            (Route::Orders, Method::Post, 201),
        ] {
            for status in [ok, 500] {
                let status = StatusCode::from_u16(status).expect("valid status");
                let _ = metrics.request_counter(route, method, status);
            }
            let _ = metrics.duration_histogram(route, method);
        }
        metrics
    }

    /// Counts one answered request and its duration.
    pub fn observe(&self, route: Route, method: Method, status: StatusCode, elapsed: Duration) {
        self.request_counter(route, method, status).inc();
        self.duration_histogram(route, method)
            .observe(elapsed.as_secs_f64());
    }

    fn request_counter(&self, route: Route, method: Method, status: StatusCode) -> IntCounter {
        match status_index(status) {
            Some(s) => {
                let i = (route.index() * Method::COUNT + method as usize) * STATUSES.len() + s;
                self.request_cells[i]
                    .get_or_init(|| self.request_series(route, method, status))
                    .clone()
            }
            None => self.request_series(route, method, status),
        }
    }

    fn request_series(&self, route: Route, method: Method, status: StatusCode) -> IntCounter {
        self.requests
            .with_label_values(&[method.label(), route.template(), status.as_str()])
    }

    fn duration_histogram(&self, route: Route, method: Method) -> &Histogram {
        let i = route.index() * Method::COUNT + method as usize;
        self.duration_cells[i].get_or_init(|| {
            self.durations
                .with_label_values(&[method.label(), route.template()])
        })
    }

    /// The whole registry in the text exposition format.
    pub fn render(&self) -> Vec<u8> {
        let families = self.registry.gather();
        let mut out = Vec::with_capacity(16 * 1024);
        TextEncoder::new()
            .encode(&families, &mut out)
            .expect("text encoding into memory cannot fail");
        out
    }
}

/// Decrements the in-flight gauge when a request ends, also when the client goes away and
/// hyper drops the handler's future halfway.
#[derive(Debug)]
pub struct InFlight<'a>(&'a IntGauge);

impl<'a> InFlight<'a> {
    pub fn enter(gauge: &'a IntGauge) -> Self {
        gauge.inc();
        InFlight(gauge)
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.dec();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_resolve_to_templates() {
        assert_eq!(Route::resolve("/"), Route::Root);
        assert_eq!(Route::resolve("/api/items/42"), Route::Item);
        assert_eq!(Route::resolve("/api/items/"), Route::Unmatched);
        assert_eq!(Route::resolve("/api/items/4/2"), Route::Unmatched);
        assert_eq!(Route::resolve("/admin/faults/cpu"), Route::AdminFault);
        assert_eq!(Route::resolve("/healthz/"), Route::Unmatched);
        assert_eq!(Route::resolve("/nope"), Route::Unmatched);
        for r in Route::ALL {
            assert_eq!(Route::ALL[r.index()], r);
        }
    }

    #[test]
    fn uncached_statuses_still_count() {
        let m = Metrics::new("test");
        let teapot = StatusCode::IM_A_TEAPOT;
        m.observe(Route::Root, Method::Get, teapot, Duration::from_millis(1));
        m.observe(Route::Root, Method::Get, teapot, Duration::from_millis(1));
        let text = String::from_utf8(m.render()).unwrap();
        assert!(
            text.contains(r#"http_requests_total{method="GET",route="/",status="418"} 2"#),
            "{text}"
        );
    }
}
