//! Why did this alert fire, and what (if anything) should a human approve?
//!
//! - [`prom`]: the Prometheus HTTP API client, the only code in the project that talks to
//!   Prometheus.
//! - [`testkit`] (feature `testkit`): real Prometheus and Alertmanager processes for tests.
pub mod evidence;
pub mod prom;
#[cfg(feature = "testkit")]
pub mod testkit;
