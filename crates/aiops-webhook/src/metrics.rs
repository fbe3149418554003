//! The receiver's Prometheus metrics, registered on a registry other components can share.

use prometheus::{
    Encoder, Histogram, HistogramOpts, IntCounterVec, IntGauge, Opts, Registry, TextEncoder,
};

/// Every metric the receiver exports.
#[derive(Debug, Clone)]
pub struct Metrics {
    pub registry: Registry,
    pub received: IntCounterVec,
    pub rejected: IntCounterVec,
    pub deliveries: IntCounterVec,
    pub messages: IntCounterVec,
    pub suppressed: IntCounterVec,
    pub truncated_fetches: IntCounterVec,
    pub outbox_depth: IntGauge,
    pub outbox_bytes: IntGauge,
    pub outbox_oldest_age: prometheus::Gauge,
    pub state_free: IntGauge,
    pub state_size: IntGauge,
    pub state_reserve: IntGauge,
    pub processing_seconds: Histogram,
    pub journal_sync_seconds: Histogram,
    pub journal_batch_records: Histogram,
}

impl Metrics {
    /// Registers the receiver's metrics (and the process collector) on `registry`.
    ///
    /// # Panics
    /// If `registry` already holds metrics with these names: a programming error.
    pub fn new(registry: Registry) -> Self {
        let m = Self {
            received: IntCounterVec::new(
                Opts::new(
                    "aiops_notifications_received_total",
                    "Notifications acknowledged after they were made durable, by group status.",
                ),
                &["status"],
            )
            .expect("valid metric"),
            rejected: IntCounterVec::new(
                Opts::new(
                    "aiops_notifications_rejected_total",
                    "Requests refused, by reason.",
                ),
                &["reason"],
            )
            .expect("valid metric"),
            deliveries: IntCounterVec::new(
                Opts::new(
                    "aiops_slack_deliveries_total",
                    "Delivery attempts by outcome (delivered, retried, dropped).",
                ),
                &["outcome"],
            )
            .expect("valid metric"),
            messages: IntCounterVec::new(
                Opts::new(
                    "aiops_messages_enqueued_total",
                    "Messages put into the outbox, by kind.",
                ),
                &["kind"],
            )
            .expect("valid metric"),
            suppressed: IntCounterVec::new(
                Opts::new(
                    "aiops_notifications_suppressed_total",
                    "Notifications that produced no message, by reason.",
                ),
                &["reason"],
            )
            .expect("valid metric"),
            truncated_fetches: IntCounterVec::new(
                Opts::new(
                    "aiops_truncated_fetches_total",
                    "Fetches of a truncated notification's alerts from Alertmanager's API, by result (ok, error).",
                ),
                &["result"],
            )
            .expect("valid metric"),
            outbox_depth: IntGauge::new("aiops_outbox_depth", "Messages waiting for delivery.")
                .expect("valid metric"),
            outbox_bytes: IntGauge::new(
                "aiops_outbox_bytes",
                "Memory the undelivered, rendered messages hold (bounded by webhook.queue_mib).",
            )
            .expect("valid metric"),
            outbox_oldest_age: prometheus::Gauge::new(
                "aiops_outbox_oldest_age_seconds",
                "Age of the oldest undelivered message (0 when the outbox is empty).",
            )
            .expect("valid metric"),
            state_free: IntGauge::new(
                "aiops_state_volume_free_bytes",
                "Bytes free on the volume holding the state directory (statvfs f_bavail).",
            )
            .expect("valid metric"),
            state_size: IntGauge::new(
                "aiops_state_volume_size_bytes",
                "Size of the volume holding the state directory.",
            )
            .expect("valid metric"),
            state_reserve: IntGauge::new(
                "aiops_state_volume_reserve_bytes",
                "Free bytes kept for notifications already acknowledged; with no more than this free, new ones get 503.",
            )
            .expect("valid metric"),
            processing_seconds: Histogram::with_opts(
                HistogramOpts::new(
                    "aiops_notification_processing_seconds",
                    "From acknowledgement to the message being in the outbox.",
                )
                .buckets(vec![
                    0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0,
                ]),
            )
            .expect("valid metric"),
            journal_sync_seconds: Histogram::with_opts(
                HistogramOpts::new(
                    "aiops_journal_commit_seconds",
                    "Time of one group commit (write + fdatasync).",
                )
                .buckets(vec![
                    0.0001, 0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0,
                ]),
            )
            .expect("valid metric"),
            journal_batch_records: Histogram::with_opts(
                HistogramOpts::new("aiops_journal_commit_records", "Records per group commit.")
                    .buckets(vec![1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 512.0]),
            )
            .expect("valid metric"),
            registry,
        };
        let r = &m.registry;
        r.register(Box::new(m.received.clone())).expect("unique");
        r.register(Box::new(m.rejected.clone())).expect("unique");
        r.register(Box::new(m.deliveries.clone())).expect("unique");
        r.register(Box::new(m.messages.clone())).expect("unique");
        r.register(Box::new(m.suppressed.clone())).expect("unique");
        r.register(Box::new(m.truncated_fetches.clone()))
            .expect("unique");
        r.register(Box::new(m.outbox_depth.clone()))
            .expect("unique");
        r.register(Box::new(m.outbox_bytes.clone()))
            .expect("unique");
        r.register(Box::new(m.outbox_oldest_age.clone()))
            .expect("unique");
        r.register(Box::new(m.state_free.clone())).expect("unique");
        r.register(Box::new(m.state_size.clone())).expect("unique");
        r.register(Box::new(m.state_reserve.clone()))
            .expect("unique");
        r.register(Box::new(m.processing_seconds.clone()))
            .expect("unique");
        r.register(Box::new(m.journal_sync_seconds.clone()))
            .expect("unique");
        r.register(Box::new(m.journal_batch_records.clone()))
            .expect("unique");
        // A registry may already carry a process collector from its owner.
        let _ = r.register(Box::new(
            prometheus::process_collector::ProcessCollector::for_self(),
        ));
        // Pre-create the label values people alert on, so they export 0 instead of nothing.
        for s in ["firing", "resolved"] {
            m.received.with_label_values(&[s]);
        }
        for o in ["delivered", "retried", "dropped"] {
            m.deliveries.with_label_values(&[o]);
        }
        for r in ["ok", "error"] {
            m.truncated_fetches.with_label_values(&[r]);
        }
        m
    }

    /// The text exposition of everything on the registry.
    pub fn render(&self) -> Vec<u8> {
        let mut buf = Vec::new();
        TextEncoder::new()
            .encode(&self.registry.gather(), &mut buf)
            .expect("text encoding into a Vec cannot fail");
        buf
    }
}
