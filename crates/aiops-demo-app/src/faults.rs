//! Injected faults: what the stress tool switches on so the alerts have something to find.
//!
//! Every fault is time-bounded: it has a deadline when it starts, a timer task ends it then
//! (and CPU threads and the leak task also check the deadline themselves), and `DELETE` ends it
//! early. State lives only in this process, so a restart clears every fault, which is what the
//! loop's "restart" remediation relies on. Leaked memory also stays until the restart.
//!
//! The request hot path only reads two atomics ([`Faults::should_fail`],
//! [`Faults::added_latency`]); the mutex is taken when faults start, end or are listed.

use std::fmt;
use std::hint::black_box;
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use prometheus::{Gauge, IntGauge};
use serde::Serialize;
use tokio::sync::watch;

use crate::metrics::Metrics;
use crate::query::{ParamError, Params};

/// Total memory the leak fault may hold, however long and fast it runs.
pub const LEAK_CAP_BYTES: u64 = 256 * 1024 * 1024;
/// Fastest allowed leak.
pub const MAX_LEAK_BYTES_PER_SEC: u64 = 64 * 1024 * 1024;
/// Leak rate when `bytes_per_sec` is not given.
pub const DEFAULT_LEAK_BYTES_PER_SEC: u64 = 1024 * 1024;
/// Largest added latency, in milliseconds.
pub const MAX_DELAY_MS: u64 = 60_000;
/// Duration when `duration` is not given (capped by `max_fault_secs`).
pub const DEFAULT_DURATION_SECS: u64 = 60;

/// The four kinds of fault.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum FaultKind {
    Errors,
    Cpu,
    Latency,
    Leak,
}

impl FaultKind {
    pub const ALL: [FaultKind; 4] = [
        FaultKind::Errors,
        FaultKind::Cpu,
        FaultKind::Latency,
        FaultKind::Leak,
    ];

    /// The `kind` label and the path segment in `/admin/faults/{kind}`.
    pub fn as_str(self) -> &'static str {
        match self {
            FaultKind::Errors => "errors",
            FaultKind::Cpu => "cpu",
            FaultKind::Latency => "latency",
            FaultKind::Leak => "leak",
        }
    }

    /// What `demo_fault_setting{kind}` measures.
    pub fn setting_unit(self) -> &'static str {
        match self {
            FaultKind::Errors => "ratio",
            FaultKind::Cpu => "threads",
            FaultKind::Latency => "seconds",
            FaultKind::Leak => "bytes_per_second",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

impl fmt::Display for FaultKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for FaultKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        FaultKind::ALL
            .into_iter()
            .find(|k| k.as_str() == s)
            .ok_or_else(|| {
                format!("unknown fault kind {s:?}; known kinds: errors, cpu, latency, leak")
            })
    }
}

/// One fault with its parameter.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Fault {
    /// This share (0..=1) of application requests answer 500.
    Errors { ratio: f64 },
    /// This many OS threads spin.
    Cpu { threads: u32 },
    /// Application requests wait this long before they are answered.
    Latency { delay: Duration },
    /// Memory is allocated, touched and kept at this rate.
    Leak { bytes_per_sec: u64 },
}

impl Fault {
    pub fn kind(&self) -> FaultKind {
        match self {
            Fault::Errors { .. } => FaultKind::Errors,
            Fault::Cpu { .. } => FaultKind::Cpu,
            Fault::Latency { .. } => FaultKind::Latency,
            Fault::Leak { .. } => FaultKind::Leak,
        }
    }

    /// The value of `demo_fault_setting{kind}`.
    pub fn setting(&self) -> f64 {
        match *self {
            Fault::Errors { ratio } => ratio,
            Fault::Cpu { threads } => f64::from(threads),
            Fault::Latency { delay } => delay.as_secs_f64(),
            Fault::Leak { bytes_per_sec } => bytes_per_sec as f64,
        }
    }
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Fault::Errors { ratio } => write!(f, "errors {:.0}%", ratio * 100.0),
            Fault::Cpu { threads } => {
                write!(
                    f,
                    "cpu {threads} thread{}",
                    if threads == 1 { "" } else { "s" }
                )
            }
            Fault::Latency { delay } => write!(f, "latency +{} ms", delay.as_millis()),
            Fault::Leak { bytes_per_sec } => {
                write!(f, "leak {:.1} MiB/s", bytes_per_sec as f64 / 1048576.0)
            }
        }
    }
}

/// A fault and how long it runs.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FaultSpec {
    pub fault: Fault,
    pub duration: Duration,
}

/// The bounds fault parameters are checked against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FaultLimits {
    /// Longest duration (`max_fault_secs` in the configuration).
    pub max_secs: u64,
    /// Most CPU-burning threads: twice the CPUs, so a fault can saturate but not drown the host.
    pub max_cpu_threads: u32,
}

impl FaultLimits {
    pub fn new(max_secs: u64) -> Self {
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
        Self {
            max_secs: max_secs.max(1),
            max_cpu_threads: u32::try_from(cpus * 2).unwrap_or(u32::MAX),
        }
    }
}

/// Parses the query of `POST /admin/faults/{kind}`.
///
/// - errors: `ratio` (required, 0..=1)
/// - cpu: `threads` (default 1, 1..=2×CPUs)
/// - latency: `delay_ms` (required, 1..=60000)
/// - leak: `bytes_per_sec` (default 1 MiB, 1..=64 MiB)
///
/// and for all of them `duration` in whole seconds (default 60, 1..=`max_fault_secs`).
pub fn parse(
    kind: FaultKind,
    raw_query: &str,
    limits: &FaultLimits,
) -> Result<FaultSpec, ParamError> {
    let p = Params::parse(raw_query)?;
    let fault = match kind {
        FaultKind::Errors => {
            p.only(&["ratio", "duration"])?;
            Fault::Errors {
                ratio: p.number("ratio", 0.0, 1.0, None)?,
            }
        }
        FaultKind::Cpu => {
            p.only(&["threads", "duration"])?;
            let threads = p.int("threads", 1, u64::from(limits.max_cpu_threads), Some(1))?;
            Fault::Cpu {
                threads: u32::try_from(threads).expect("bounded by a u32"),
            }
        }
        FaultKind::Latency => {
            p.only(&["delay_ms", "duration"])?;
            Fault::Latency {
                delay: Duration::from_millis(p.int("delay_ms", 1, MAX_DELAY_MS, None)?),
            }
        }
        FaultKind::Leak => {
            p.only(&["bytes_per_sec", "duration"])?;
            Fault::Leak {
                bytes_per_sec: p.int(
                    "bytes_per_sec",
                    1,
                    MAX_LEAK_BYTES_PER_SEC,
                    Some(DEFAULT_LEAK_BYTES_PER_SEC),
                )?,
            }
        }
    };
    let max = limits.max_secs.max(1);
    let secs = p.int("duration", 1, max, Some(DEFAULT_DURATION_SECS.min(max)))?;
    Ok(FaultSpec {
        fault,
        duration: Duration::from_secs(secs),
    })
}

/// An active fault as `GET /admin/faults` shows it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ActiveFault {
    pub kind: FaultKind,
    /// The same value as `demo_fault_setting{kind}`.
    pub setting: f64,
    /// What `setting` measures.
    pub unit: &'static str,
    /// A human-readable description, e.g. "errors 30%".
    pub description: String,
    pub duration_secs: f64,
    pub elapsed_secs: f64,
    pub remaining_secs: f64,
}

struct Slot {
    spec: FaultSpec,
    started: Instant,
    deadline: Instant,
    stop: Arc<AtomicBool>,
    timer: Option<tokio::task::AbortHandle>,
    generation: u64,
}

impl Slot {
    fn snapshot(&self, now: Instant) -> ActiveFault {
        ActiveFault {
            kind: self.spec.fault.kind(),
            setting: self.spec.fault.setting(),
            unit: self.spec.fault.kind().setting_unit(),
            description: self.spec.fault.to_string(),
            duration_secs: self.spec.duration.as_secs_f64(),
            elapsed_secs: round_ms(now.saturating_duration_since(self.started)),
            remaining_secs: round_ms(self.deadline.saturating_duration_since(now)),
        }
    }
}

fn round_ms(d: Duration) -> f64 {
    (d.as_secs_f64() * 1000.0).round() / 1000.0
}

struct Inner {
    slots: Mutex<[Option<Slot>; 4]>,
    /// Errors fault: the ratio in parts per million, 0 when off.
    error_ppm: AtomicU32,
    /// Errors fault: application requests seen since it started.
    error_seq: AtomicU64,
    /// Latency fault: the added delay in microseconds, 0 when off.
    latency_us: AtomicU64,
    leaked: Mutex<Vec<Box<[u8]>>>,
    leaked_total: AtomicU64,
    generation: AtomicU64,
    active_gauges: [IntGauge; 4],
    setting_gauges: [Gauge; 4],
    leaked_gauge: IntGauge,
    changes: watch::Sender<Vec<Fault>>,
}

/// The fault state of one app. Cheap to clone; clones share the state.
#[derive(Clone)]
pub struct Faults {
    inner: Arc<Inner>,
}

impl fmt::Debug for Faults {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Faults")
            .field("active", &self.active())
            .field("leaked_bytes", &self.leaked_bytes())
            .finish()
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding the lock cannot leave the slots inconsistent (each write is one
    // assignment), so carry on rather than poison every later request.
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Faults {
    /// No faults, reporting into `metrics`.
    pub fn new(metrics: &Metrics) -> Faults {
        Faults {
            inner: Arc::new(Inner {
                slots: Mutex::new([None, None, None, None]),
                error_ppm: AtomicU32::new(0),
                error_seq: AtomicU64::new(0),
                latency_us: AtomicU64::new(0),
                leaked: Mutex::new(Vec::new()),
                leaked_total: AtomicU64::new(0),
                generation: AtomicU64::new(0),
                active_gauges: metrics.fault_active.clone(),
                setting_gauges: metrics.fault_setting.clone(),
                leaked_gauge: metrics.leaked_bytes.clone(),
                changes: watch::channel(Vec::new()).0,
            }),
        }
    }

    /// Whether this application request should fail. The errors are spread evenly (request n
    /// fails when ⌊(n+1)·r⌋ > ⌊n·r⌋), so any window of requests sees the asked share, not a
    /// random share near it.
    pub fn should_fail(&self) -> bool {
        let ppm = u64::from(self.inner.error_ppm.load(Ordering::Relaxed));
        if ppm == 0 {
            return false;
        }
        let n = self.inner.error_seq.fetch_add(1, Ordering::Relaxed);
        (n + 1) * ppm / 1_000_000 > n * ppm / 1_000_000
    }

    /// The delay to add to an application request, if the latency fault is on.
    pub fn added_latency(&self) -> Option<Duration> {
        match self.inner.latency_us.load(Ordering::Relaxed) {
            0 => None,
            us => Some(Duration::from_micros(us)),
        }
    }

    /// Starts a fault, replacing an active one of the same kind. Must be called within a tokio
    /// runtime (the timer that ends it, and the leak, are tasks on it).
    pub fn start(&self, spec: FaultSpec) -> ActiveFault {
        let kind = spec.fault.kind();
        let started = Instant::now();
        let deadline = started + spec.duration;
        let generation = self.inner.generation.fetch_add(1, Ordering::Relaxed) + 1;
        let stop = Arc::new(AtomicBool::new(false));
        let mut slots = lock(&self.inner.slots);
        if let Some(old) = slots[kind.index()].take() {
            self.inner.stop_slot(&old);
        }
        match spec.fault {
            Fault::Errors { ratio } => {
                self.inner.error_seq.store(0, Ordering::Relaxed);
                let ppm = (ratio * 1_000_000.0).round() as u32;
                self.inner.error_ppm.store(ppm, Ordering::Relaxed);
            }
            Fault::Latency { delay } => {
                let us = u64::try_from(delay.as_micros()).unwrap_or(u64::MAX).max(1);
                self.inner.latency_us.store(us, Ordering::Relaxed);
            }
            Fault::Cpu { threads } => spawn_burners(threads, deadline, &stop),
            Fault::Leak { bytes_per_sec } => {
                let inner = self.inner.clone();
                let stop = stop.clone();
                tokio::spawn(async move { inner.leak(bytes_per_sec, deadline, &stop).await });
            }
        }
        let inner = self.inner.clone();
        let timer = tokio::spawn(async move {
            tokio::time::sleep_until(deadline.into()).await;
            inner.expire(kind, generation);
        });
        let slot = Slot {
            spec,
            started,
            deadline,
            stop,
            timer: Some(timer.abort_handle()),
            generation,
        };
        let snapshot = slot.snapshot(started);
        slots[kind.index()] = Some(slot);
        self.inner.active_gauges[kind.index()].set(1);
        self.inner.setting_gauges[kind.index()].set(spec.fault.setting());
        self.inner.publish(&slots);
        tracing::info!(fault = %spec.fault, duration_secs = spec.duration.as_secs(), "fault started");
        snapshot
    }

    /// Ends the fault of this kind early. Returns whether one was active.
    pub fn end(&self, kind: FaultKind) -> bool {
        let mut slots = lock(&self.inner.slots);
        match slots[kind.index()].take() {
            Some(slot) => {
                self.inner.finish(kind, &slot, &slots, "ended early");
                true
            }
            None => false,
        }
    }

    /// Ends every fault (the server does this when it stops).
    pub fn end_all(&self) {
        for kind in FaultKind::ALL {
            self.end(kind);
        }
    }

    /// The active faults, with their remaining time.
    pub fn active(&self) -> Vec<ActiveFault> {
        let now = Instant::now();
        lock(&self.inner.slots)
            .iter()
            .flatten()
            .map(|s| s.snapshot(now))
            .collect()
    }

    /// Bytes the leak fault holds (they stay until the process exits).
    pub fn leaked_bytes(&self) -> u64 {
        self.inner.leaked_total.load(Ordering::Relaxed)
    }

    /// Notified with the active faults whenever one starts or ends.
    pub fn subscribe(&self) -> watch::Receiver<Vec<Fault>> {
        self.inner.changes.subscribe()
    }
}

impl Inner {
    fn expire(&self, kind: FaultKind, generation: u64) {
        let mut slots = lock(&self.slots);
        if slots[kind.index()]
            .as_ref()
            .is_some_and(|s| s.generation == generation)
        {
            let slot = slots[kind.index()].take().expect("checked above");
            self.finish(kind, &slot, &slots, "ended on time");
        }
    }

    fn finish(&self, kind: FaultKind, slot: &Slot, slots: &[Option<Slot>; 4], how: &str) {
        self.stop_slot(slot);
        self.active_gauges[kind.index()].set(0);
        self.setting_gauges[kind.index()].set(0.0);
        self.publish(slots);
        tracing::info!(fault = %slot.spec.fault, "fault {how}");
    }

    fn stop_slot(&self, slot: &Slot) {
        slot.stop.store(true, Ordering::Relaxed);
        if let Some(timer) = &slot.timer {
            timer.abort();
        }
        match slot.spec.fault.kind() {
            FaultKind::Errors => self.error_ppm.store(0, Ordering::Relaxed),
            FaultKind::Latency => self.latency_us.store(0, Ordering::Relaxed),
            FaultKind::Cpu | FaultKind::Leak => {}
        }
    }

    fn publish(&self, slots: &[Option<Slot>; 4]) {
        self.changes
            .send_replace(slots.iter().flatten().map(|s| s.spec.fault).collect());
    }

    /// Allocates, touches and keeps `bytes_per_sec`, in tenths of a second, until the deadline,
    /// a stop, or the cap.
    async fn leak(&self, bytes_per_sec: u64, deadline: Instant, stop: &AtomicBool) {
        let chunk = (bytes_per_sec / 10).max(1);
        let mut tick = tokio::time::interval(Duration::from_millis(100));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            if stop.load(Ordering::Relaxed) || Instant::now() >= deadline {
                return;
            }
            let held = self.leaked_total.load(Ordering::Relaxed);
            let n = chunk.min(LEAK_CAP_BYTES.saturating_sub(held));
            if n == 0 {
                tracing::warn!(cap = LEAK_CAP_BYTES, "leak fault reached its cap; holding");
                return;
            }
            // A non-zero fill writes every page, so the memory is resident, not just reserved.
            let block = vec![0xA5u8; usize::try_from(n).unwrap_or(usize::MAX)].into_boxed_slice();
            lock(&self.leaked).push(black_box(block));
            let total = self.leaked_total.fetch_add(n, Ordering::Relaxed) + n;
            self.leaked_gauge
                .set(i64::try_from(total).unwrap_or(i64::MAX));
        }
    }
}

/// Starts `threads` OS threads that spin until the deadline or a stop.
fn spawn_burners(threads: u32, deadline: Instant, stop: &Arc<AtomicBool>) {
    for i in 0..threads {
        let stop = stop.clone();
        let spawned = std::thread::Builder::new()
            .name(format!("cpu-burn-{i}"))
            .spawn(move || {
                let mut x: u64 = u64::from(i) + 1;
                while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
                    for _ in 0..20_000 {
                        x = black_box(x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1));
                    }
                }
            });
        if let Err(e) = spawned {
            tracing::warn!(error = %e, "could not start a CPU burn thread; burning with fewer");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn limits() -> FaultLimits {
        FaultLimits {
            max_secs: 3600,
            max_cpu_threads: 4,
        }
    }

    #[test]
    fn defaults_fill_in() {
        let s = parse(FaultKind::Cpu, "", &limits()).unwrap();
        assert_eq!(s.fault, Fault::Cpu { threads: 1 });
        assert_eq!(s.duration, Duration::from_secs(60));
        let short = FaultLimits {
            max_secs: 10,
            ..limits()
        };
        let s = parse(FaultKind::Leak, "", &short).unwrap();
        assert_eq!(s.duration, Duration::from_secs(10));
    }

    #[test]
    fn bad_parameters_are_explained() {
        let cases = [
            (FaultKind::Errors, ""),
            (FaultKind::Errors, "ratio=1.5"),
            (FaultKind::Errors, "ratio=abc&duration=10"),
            (FaultKind::Errors, "ratio=NaN"),
            (FaultKind::Errors, "ratio=0.3&duration=0"),
            (FaultKind::Errors, "ratio=0.3&duration=99999"),
            (FaultKind::Errors, "ratio=0.3&duration=10s"),
            (FaultKind::Errors, "ratio=0.3&threads=2"),
            (FaultKind::Cpu, "threads=1000"),
            (FaultKind::Latency, "delay_ms=-5"),
            (FaultKind::Latency, "duration=5"),
            (FaultKind::Leak, "bytes_per_sec=1e9"),
            (FaultKind::Leak, "bytes_per_sec=1&bytes_per_sec=2"),
            (FaultKind::Leak, "bytes_per_sec=%zz"),
        ];
        let rendered: Vec<String> = cases
            .iter()
            .map(|(kind, q)| {
                let e = parse(*kind, q, &limits()).unwrap_err();
                format!("{kind}?{q} -> {e}")
            })
            .collect();
        insta::assert_snapshot!(rendered.join("\n"));
    }

    proptest! {
        #[test]
        fn valid_parameters_parse_exactly(
            ratio in 0.0f64..=1.0,
            threads in 1u32..=4,
            delay_ms in 1u64..=MAX_DELAY_MS,
            rate in 1u64..=MAX_LEAK_BYTES_PER_SEC,
            secs in 1u64..=3600,
        ) {
            let l = limits();
            let s = parse(FaultKind::Errors, &format!("ratio={ratio}&duration={secs}"), &l).unwrap();
            prop_assert_eq!(s.fault, Fault::Errors { ratio });
            prop_assert_eq!(s.duration, Duration::from_secs(secs));
            let s = parse(FaultKind::Cpu, &format!("duration={secs}&threads={threads}"), &l).unwrap();
            prop_assert_eq!(s.fault, Fault::Cpu { threads });
            let s = parse(FaultKind::Latency, &format!("delay_ms={delay_ms}"), &l).unwrap();
            prop_assert_eq!(s.fault, Fault::Latency { delay: Duration::from_millis(delay_ms) });
            let s = parse(FaultKind::Leak, &format!("bytes_per_sec={rate}&duration={secs}"), &l).unwrap();
            prop_assert_eq!(s.fault, Fault::Leak { bytes_per_sec: rate });
        }

        #[test]
        fn out_of_range_values_name_their_parameter(
            ratio in prop_oneof![1.0001f64..1e9, -1e9f64..-0.0001],
            threads in 5u64..u64::MAX,
            secs in prop_oneof![Just(0u64), 3601u64..u64::MAX],
        ) {
            let l = limits();
            let e = parse(FaultKind::Errors, &format!("ratio={ratio}"), &l).unwrap_err();
            prop_assert_eq!(e.param, "ratio");
            let e = parse(FaultKind::Cpu, &format!("threads={threads}"), &l).unwrap_err();
            prop_assert_eq!(e.param, "threads");
            prop_assert!(e.problem.contains("from 1 to 4"));
            let e = parse(FaultKind::Cpu, &format!("duration={secs}"), &l).unwrap_err();
            prop_assert_eq!(e.param, "duration");
            prop_assert!(e.problem.contains("from 1 to 3600"));
        }

        #[test]
        fn arbitrary_queries_never_panic(q in "\\PC{0,80}") {
            for kind in FaultKind::ALL {
                let _ = parse(kind, &q, &limits());
            }
        }
    }

    #[test]
    fn errors_are_spread_exactly() {
        let metrics = Metrics::new("test");
        let faults = Faults::new(&metrics);
        faults.inner.error_ppm.store(300_000, Ordering::Relaxed);
        let failed = (0..1000).filter(|_| faults.should_fail()).count();
        assert_eq!(failed, 300);
        faults.inner.error_ppm.store(0, Ordering::Relaxed);
        assert!(!(0..100).any(|_| faults.should_fail()));
    }
}
