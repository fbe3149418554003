//! The gate's metrics, registered on the receiver's registry.

use prometheus::{Histogram, HistogramOpts, IntCounterVec, IntGauge, Opts, Registry};

/// Counters, gauges and histograms of the human gate.
#[derive(Debug, Clone)]
pub struct Metrics {
    /// `aiops_recommendations_total{alertname,kind}`; kind = the action, or `no_action`, `blind`,
    /// `refused`.
    pub recommendations: IntCounterVec,
    /// `aiops_pending_actions`.
    pub pending: IntGauge,
    /// `aiops_approvals_total{result}`: approved | rejected | refused.
    pub approvals: IntCounterVec,
    /// `aiops_executions_total{action,result}`: succeeded | failed | unconfirmed.
    pub executions: IntCounterVec,
    /// `aiops_alert_to_recommendation_seconds`: the alert's startsAt → the proposal stored.
    pub alert_to_recommendation: Histogram,
    /// `aiops_approval_to_recovery_seconds`: approval → verified recovery.
    pub approval_to_recovery: Histogram,
    /// `aiops_verification_seconds`: how long verification ran, whatever its result.
    pub verification: Histogram,
}

impl Metrics {
    pub fn register(registry: &Registry) -> Result<Self, prometheus::Error> {
        let slow = vec![
            1.0, 5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0,
        ];
        let m = Self {
            recommendations: IntCounterVec::new(
                Opts::new(
                    "aiops_recommendations_total",
                    "Diagnoses handed to the gate, by alert and recommended action",
                ),
                &["alertname", "kind"],
            )?,
            pending: IntGauge::new("aiops_pending_actions", "Actions waiting for approval")?,
            approvals: IntCounterVec::new(
                Opts::new(
                    "aiops_approvals_total",
                    "Approval requests by result (approved, rejected, refused)",
                ),
                &["result"],
            )?,
            executions: IntCounterVec::new(
                Opts::new(
                    "aiops_executions_total",
                    "Executed actions by verified result (succeeded, failed, unconfirmed)",
                ),
                &["action", "result"],
            )?,
            alert_to_recommendation: Histogram::with_opts(
                HistogramOpts::new(
                    "aiops_alert_to_recommendation_seconds",
                    "From the alert's startsAt to the pending action stored",
                )
                .buckets(slow.clone()),
            )?,
            approval_to_recovery: Histogram::with_opts(
                HistogramOpts::new(
                    "aiops_approval_to_recovery_seconds",
                    "From approval to verified recovery",
                )
                .buckets(slow.clone()),
            )?,
            verification: Histogram::with_opts(
                HistogramOpts::new(
                    "aiops_verification_seconds",
                    "Time spent verifying an executed action",
                )
                .buckets(slow),
            )?,
        };
        registry.register(Box::new(m.recommendations.clone()))?;
        registry.register(Box::new(m.pending.clone()))?;
        registry.register(Box::new(m.approvals.clone()))?;
        registry.register(Box::new(m.executions.clone()))?;
        registry.register(Box::new(m.alert_to_recommendation.clone()))?;
        registry.register(Box::new(m.approval_to_recovery.clone()))?;
        registry.register(Box::new(m.verification.clone()))?;
        for r in ["approved", "rejected", "refused"] {
            m.approvals.with_label_values(&[r]);
        }
        Ok(m)
    }
}
