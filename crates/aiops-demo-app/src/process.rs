//! The `process_*` metrics: the prometheus crate's process collector, with
//! `process_cpu_seconds_total` at clock-tick precision instead of whole seconds.
//!
//! The crate's collector rounds CPU time down to whole seconds, which turns a `rate()` over a
//! minute into a staircase and hides a short CPU burn entirely. This wrapper drops that family
//! and exports the same name as a float counter computed from the same `/proc/self/stat`
//! fields (utime + stime, in clock ticks, usually 10 ms).

use std::sync::Mutex;

use prometheus::core::{Collector, Desc};
use prometheus::process_collector::ProcessCollector;
use prometheus::proto::MetricFamily;
use prometheus::{Counter, Opts};

const CPU: &str = "process_cpu_seconds_total";

/// Collects the process metrics of this process.
#[derive(Debug)]
pub struct ProcessMetrics {
    inner: ProcessCollector,
    cpu: Counter,
    /// Serialises updates of `cpu`, so two concurrent scrapes cannot add the same delta twice.
    update: Mutex<()>,
    ticks_per_second: f64,
}

impl ProcessMetrics {
    pub fn for_self() -> ProcessMetrics {
        ProcessMetrics {
            inner: ProcessCollector::for_self(),
            cpu: Counter::with_opts(Opts::new(
                CPU,
                "Total user and system CPU time spent in seconds.",
            ))
            .expect("static metric definition"),
            update: Mutex::new(()),
            ticks_per_second: procfs::ticks_per_second() as f64,
        }
    }

    fn cpu_seconds(&self) -> Option<f64> {
        let stat = procfs::process::Process::myself().ok()?.stat().ok()?;
        Some((stat.utime + stat.stime) as f64 / self.ticks_per_second)
    }
}

impl Collector for ProcessMetrics {
    fn desc(&self) -> Vec<&Desc> {
        self.inner
            .desc()
            .into_iter()
            .filter(|d| d.fq_name != CPU)
            .chain(self.cpu.desc())
            .collect()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let mut families = self.inner.collect();
        families.retain(|f| f.name() != CPU);
        if let Some(total) = self.cpu_seconds() {
            let _guard = self
                .update
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            let delta = total - self.cpu.get();
            if delta > 0.0 {
                self.cpu.inc_by(delta);
            }
        }
        families.extend(self.cpu.collect());
        families
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::hint::black_box;
    use std::time::{Duration, Instant};

    fn cpu_value(p: &ProcessMetrics) -> f64 {
        let families = p.collect();
        let cpu = families
            .iter()
            .filter(|f| f.name() == CPU)
            .collect::<Vec<_>>();
        assert_eq!(cpu.len(), 1, "exactly one {CPU} family");
        cpu[0].get_metric()[0].get_counter().get_value()
    }

    #[test]
    fn cpu_seconds_have_sub_second_precision() {
        let p = ProcessMetrics::for_self();
        let before = cpu_value(&p);
        let t = Instant::now();
        let mut x = 1u64;
        while t.elapsed() < Duration::from_millis(300) {
            x = black_box(x.wrapping_mul(31).wrapping_add(7));
        }
        let burned = cpu_value(&p) - before;
        assert!(burned > 0.05 && burned < 1.0, "burned {burned}");
        let names: Vec<_> = p.desc().iter().map(|d| d.fq_name.clone()).collect();
        assert_eq!(names.iter().filter(|n| *n == CPU).count(), 1, "{names:?}");
        assert!(names.iter().any(|n| n == "process_open_fds"), "{names:?}");
    }
}
