//! Placeholder; replaced by the real Prometheus + Alertmanager test below.
