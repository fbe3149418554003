//! A unit's own evidence, from systemd: its state (`systemctl show`) and its systemd journal
//! (`journalctl -u`), read with fixed argv, bounded in time and size, parsed into typed data.
//!
//! Prometheus sees a service from outside, through what it exports; systemd knows what no
//! exporter says: whether the unit is up at all, how its last process ended, how often it was
//! restarted, how close it is to `MemoryMax=` and to its start limit, and what it last wrote to
//! the systemd journal. This module reads that for one [`UnitName`] (never a raw string: the
//! type is the proof that the name was validated, so a label like `foo; rm -rf /` or `--help`
//! cannot reach an argv). [`crate::Engine`] reads it for every alert whose `unit` label is a
//! valid unit name, alongside the Prometheus queries, and keeps [`UnitEvidence::snapshot`] in the
//! evidence; the gate reads it again just before a restart and writes it into the audit log.
//!
//! # What it runs
//!
//! Two programs, with argv fixed here and the unit as the single argument after `--`
//! (systemctl) or as the value of `--unit=` (journalctl), never through a shell:
//!
//! ```text
//! systemctl show --no-pager --property=LoadState,ActiveState,...,BindsTo -- UNIT
//! journalctl --unit=UNIT --since=@EPOCH --output=json --no-pager --all --reverse --lines=N
//! systemctl show --no-pager --property=Id,LoadState,ActiveState,SubState,Result -- DEP...
//! ```
//!
//! The third only when the unit `Requires=` or is `BindsTo=` other units (at most
//! [`MAX_DEPENDENCIES`], names as systemd printed them, all after `--`).
//!
//! Both run with `TZ=UTC LC_ALL=C SYSTEMD_PAGER= SYSTEMD_COLORS=0` added to the environment, so
//! `systemctl show` prints its realtime timestamps as `Wed 2026-12-02 03:00:00 UTC`, whatever the
//! host's zone. Every parsed part keeps its [`Command`] (program, argv, environment), and
//! [`Command::display`] is a line a person can paste into a shell to see the same output.
//!
//! # Why fixed argv, and which properties
//!
//! A unit name comes from alert labels, which anyone who can push a metric controls. A fixed
//! argv with the name after `--` means systemctl can only ever read it as a unit, and
//! `--unit=NAME` is one argv element journalctl cannot split (journalctl reads it as a glob
//! pattern, and [`UnitName`] admits no `*`, `?`, `[` or `\`). The properties
//! ([`SHOW_PROPERTIES`]) are what the issue's catalog needs: state, result, restarts, how the main
//! process ended, memory (current, peak, `MemoryMax=`), CPU time, tasks, when it last started,
//! the start limit, the invocation id and the units it `Requires=` or is `BindsTo=`. Realtime
//! timestamps are read rather than the `…Monotonic` ones because what they are compared with
//! (the alert's start, our own clock, journalctl's `--since`) is wall-clock time.
//!
//! `systemctl show` prints "unknown" and "unlimited" in several ways, all of which parse to
//! `None` or [`Limit::Unlimited`], never to a huge number: an empty value, `[not set]`,
//! `[no data]`, `infinity`, and the raw `18446744073709551615` (`UINT64_MAX`) that older
//! versions print for an unset counter. A property the running systemd does not know (e.g.
//! `MemoryPeak` before v255) is simply not printed; it is listed in [`UnitState::missing`].
//!
//! # Bounds
//!
//! [`Limits`] (defaults in [`Limits::default`]): each command is killed (by its pid) when it
//! runs longer than `timeout`; stdout is read up to `max_show_bytes` / `journal_max_bytes` and
//! the child is killed when it writes more (the journal read then ends at the last complete
//! line and says it was truncated); stderr is kept to a short excerpt. journalctl is asked for at
//! most `journal_max_entries` entries, newest first (`--reverse`), so whichever bound cuts the
//! read, what is lost is the oldest part. The excerpt of error lines holds at most
//! `excerpt_lines` lines of at most `excerpt_line_chars` characters each, control characters
//! replaced, so it can go into a terminal or a chat message as it is.
//!
//! # The start limit
//!
//! systemd refuses to start a unit that was started more than `StartLimitBurst=` times within
//! `StartLimitIntervalSec=`. `systemctl show` gives the two settings but not the count, so
//! [`StartLimitCheck::assess`] counts the starts systemd itself logged (PID 1's "Starting …"
//! entries, `MESSAGE_ID=7d4958e842da4a758f6c1cdc7b36dcc5`, which `journalctl -u` includes) within
//! the interval before the collection time. It is "near" when at most one more start is allowed,
//! and "hit" when `Result=start-limit-hit`. The count is only given when the journal read covers
//! the whole interval; otherwise the check says it is unknown and why. systemd's own window is
//! fixed (it opens at the first start and resets after the interval) while this one slides, so
//! the count can be higher than systemd's, never lower: it errs towards "near".
//!
//! # What the service account needs
//!
//! `systemctl show` reads public unit properties over D-Bus and needs no privilege at all.
//! `journalctl -u` on another account's unit shows nothing but the caller's own entries unless
//! the caller may read the system journal: the hardened service account must be a member of
//! the `systemd-journal` group (e.g. `SupplementaryGroups=systemd-journal` in
//! `aiops-webhook.service`, or `users.users.aiops.extraGroups = [ "systemd-journal" ]` on
//! NixOS; the shipped unit sets the former). Without it journalctl still
//! exits 0; its hint on stderr is detected and the journal part says
//! [`JournalAccess::Limited`] instead of pretending the unit logged nothing. Nothing here needs
//! polkit, a capability or write access to anything.

use std::collections::BTreeSet;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command as ProcessCommand, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use aiops_core::model::{DependencyState, JournalDigest, JournalLine, UnitSnapshot};
use aiops_core::unit::UnitName;
use chrono::{DateTime, NaiveDateTime, TimeDelta, Utc};
use serde::{Deserialize, Serialize};

/// The properties `systemctl show` is asked for.
pub const SHOW_PROPERTIES: &[&str] = &[
    "LoadState",
    "ActiveState",
    "SubState",
    "Result",
    "NRestarts",
    "MainPID",
    "ExecMainCode",
    "ExecMainStatus",
    "ExecMainStartTimestamp",
    "ExecMainExitTimestamp",
    "ActiveEnterTimestamp",
    "MemoryCurrent",
    "MemoryPeak",
    "MemoryMax",
    "CPUUsageNSec",
    "TasksCurrent",
    "TasksMax",
    "StartLimitBurst",
    "StartLimitIntervalUSec",
    "InvocationID",
    "Requires",
    "BindsTo",
];

/// The environment both commands get on top of the inherited one: timestamps in UTC whatever
/// the host's zone, no locale, no pager, no colours.
pub const CHILD_ENV: &[(&str, &str)] = &[
    ("TZ", "UTC"),
    ("LC_ALL", "C"),
    ("SYSTEMD_PAGER", ""),
    ("SYSTEMD_COLORS", "0"),
];

/// PID 1's "Starting UNIT..." entry (`SD_MESSAGE_UNIT_STARTING`), one per start attempt.
pub const MESSAGE_ID_UNIT_STARTING: &str = "7d4958e842da4a758f6c1cdc7b36dcc5";
/// PID 1's "A process of this unit has been killed by the OOM killer."
/// (`SD_MESSAGE_UNIT_OUT_OF_MEMORY`).
pub const MESSAGE_ID_UNIT_OOM: &str = "fe6faa94e7774663a0da52717891d8ef";
/// systemd-coredump's "Process N (comm) of user U dumped core." (`SD_MESSAGE_COREDUMP`).
pub const MESSAGE_ID_COREDUMP: &str = "fc2e22bc6ee647b6b90729ab34a250b1";

/// A command exactly as it is (or was) run: program, argv and the environment it adds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Command {
    pub program: String,
    pub args: Vec<String>,
    /// Added to the inherited environment (see [`CHILD_ENV`]).
    pub env: Vec<(String, String)>,
}

impl Command {
    fn new(program: &Path, args: Vec<String>) -> Self {
        Self {
            program: program.display().to_string(),
            args,
            env: CHILD_ENV
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
        }
    }

    /// One line to paste into a shell to replay it: `TZ=UTC ... systemctl show ... -- nginx.service`.
    /// Arguments that need it are single-quoted.
    pub fn display(&self) -> String {
        let mut parts: Vec<String> = self
            .env
            .iter()
            .map(|(k, v)| format!("{k}={}", shell_quote(v)))
            .collect();
        parts.push(shell_quote(&self.program));
        parts.extend(self.args.iter().map(|a| shell_quote(a)));
        parts.join(" ")
    }
}

fn shell_quote(s: &str) -> String {
    let plain = !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"@%+=:,./-_".contains(&b));
    if plain {
        s.to_owned()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

/// The `systemctl show` command for `unit`.
pub fn show_command(systemctl: &Path, unit: &UnitName) -> Command {
    Command::new(
        systemctl,
        vec![
            "show".into(),
            "--no-pager".into(),
            format!("--property={}", SHOW_PROPERTIES.join(",")),
            "--".into(),
            unit.as_str().into(),
        ],
    )
}

/// The properties read of the units a unit `Requires=` or is `BindsTo=`.
pub const DEPENDENCY_PROPERTIES: &[&str] =
    &["Id", "LoadState", "ActiveState", "SubState", "Result"];

/// At most this many dependencies are read (systemd prints them in one command).
pub const MAX_DEPENDENCIES: usize = 16;

/// The `systemctl show` command for the units `unit` depends on (names as systemd printed them,
/// restricted by [`UnitState::requires`]' parser to unit-name characters, all after `--`).
pub fn dependency_command(systemctl: &Path, units: &[String]) -> Command {
    let mut args = vec![
        "show".into(),
        "--no-pager".into(),
        format!("--property={}", DEPENDENCY_PROPERTIES.join(",")),
        "--".into(),
    ];
    args.extend(units.iter().cloned());
    Command::new(systemctl, args)
}

/// The `journalctl` command for `unit`'s systemd journal since `since` (whole seconds, rounded
/// down so the alert's own second is included), newest first, at most `max_entries` entries.
///
/// `--all` keeps messages over 4 KiB, which journalctl would otherwise print as `null`; the
/// byte bound of the read and the excerpt's line bound keep them harmless.
pub fn journal_command(
    journalctl: &Path,
    unit: &UnitName,
    since: DateTime<Utc>,
    max_entries: u32,
) -> Command {
    Command::new(
        journalctl,
        vec![
            format!("--unit={unit}"),
            format!("--since=@{}", since.timestamp()),
            "--output=json".into(),
            "--no-pager".into(),
            "--all".into(),
            "--reverse".into(),
            format!("--lines={max_entries}"),
        ],
    )
}

/// Why a part of the unit's evidence could not be had. Each names the unit and the command.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum UnitStateError {
    #[error(
        "cannot read {unit} from systemd: {program} is not installed (`{command}`); on a host without systemd there is no unit evidence"
    )]
    NotInstalled {
        unit: UnitName,
        command: String,
        program: String,
    },
    #[error(
        "cannot read {unit} from systemd: systemd is not running as the init system here (`{command}` said {stderr:?})"
    )]
    SystemdNotRunning {
        unit: UnitName,
        command: String,
        stderr: String,
    },
    #[error("cannot read {unit} from systemd: `{command}` could not be started: {message}")]
    Spawn {
        unit: UnitName,
        command: String,
        message: String,
    },
    #[error(
        "cannot read {unit} from systemd: `{command}` did not finish within {timeout_ms} ms and was killed (pid {pid})"
    )]
    TimedOut {
        unit: UnitName,
        command: String,
        timeout_ms: u64,
        pid: u32,
    },
    #[error("cannot read {unit} from systemd: `{command}` failed with {status}: {stderr:?}")]
    Failed {
        unit: UnitName,
        command: String,
        /// `exit status 1`, `signal 9`.
        status: String,
        /// A bounded excerpt of what it wrote to stderr.
        stderr: String,
    },
    #[error(
        "cannot read {unit} from systemd: unexpected output from `{command}`, line {line}: {message}"
    )]
    Unparsable {
        unit: UnitName,
        command: String,
        /// 1-based.
        line: usize,
        message: String,
    },
}

/// How long and how much; see the module documentation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Limits {
    /// Per command.
    pub timeout: Duration,
    pub max_show_bytes: usize,
    pub journal_max_entries: u32,
    pub journal_max_bytes: usize,
    pub excerpt_lines: usize,
    pub excerpt_line_chars: usize,
    /// How far before the collection time the journal read may be pulled back to cover the
    /// start-limit interval; a longer interval is counted only if the caller's `since` already
    /// reaches back over it (else the check says it is unknown).
    pub max_start_limit_lookback: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            timeout: Duration::from_secs(5),
            max_show_bytes: 64 * 1024,
            journal_max_entries: 1000,
            journal_max_bytes: 2 * 1024 * 1024,
            excerpt_lines: 10,
            excerpt_line_chars: 300,
            max_start_limit_lookback: Duration::from_secs(3600),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// systemctl show: typed state
// ---------------------------------------------------------------------------------------------

/// `LoadState=`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum LoadState {
    Loaded,
    /// No such unit: every other property then holds systemd's defaults.
    NotFound,
    BadSetting,
    Error,
    Masked,
    Merged,
    Stub,
    Other(String),
}

/// `ActiveState=`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ActiveState {
    Active,
    Reloading,
    Inactive,
    Failed,
    Activating,
    Deactivating,
    Maintenance,
    Refreshing,
    Other(String),
}

impl ActiveState {
    /// systemd's word for the state, as `systemctl show` prints it.
    pub fn as_str(&self) -> &str {
        match self {
            ActiveState::Active => "active",
            ActiveState::Reloading => "reloading",
            ActiveState::Inactive => "inactive",
            ActiveState::Failed => "failed",
            ActiveState::Activating => "activating",
            ActiveState::Deactivating => "deactivating",
            ActiveState::Maintenance => "maintenance",
            ActiveState::Refreshing => "refreshing",
            ActiveState::Other(o) => o,
        }
    }
}

/// `Result=`: how the unit's last run ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ServiceResult {
    Success,
    Protocol,
    Timeout,
    ExitCode,
    Signal,
    CoreDump,
    Watchdog,
    StartLimitHit,
    Resources,
    OomKill,
    Other(String),
}

/// How the main process last ended (`ExecMainCode=` with `ExecMainStatus=`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "how", rename_all = "snake_case")]
pub enum MainExit {
    /// It has not exited (it runs, or never ran).
    NotExited,
    Exited {
        status: i32,
    },
    Killed {
        signal: i32,
    },
    /// Killed by a signal that dumped core.
    Dumped {
        signal: i32,
    },
    /// `CLD_TRAPPED`, `CLD_STOPPED`, ... (not seen for a main process in practice).
    Other {
        code: i32,
        status: i32,
    },
}

/// A limit systemd may leave unlimited (`infinity`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Limit<T> {
    Unlimited,
    Max(T),
}

/// What `systemctl show` said about a unit. `None`: systemd reported no value ("not set",
/// empty, or not available on this version; see [`UnitState::missing`] for the latter).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UnitState {
    pub load_state: Option<LoadState>,
    pub active_state: Option<ActiveState>,
    /// Type-specific (`running`, `auto-restart`, `dead`, ...); lowercase ASCII and `-` only.
    pub sub_state: Option<String>,
    pub result: Option<ServiceResult>,
    /// `NRestarts=`: automatic restarts since the unit was last started by hand.
    pub restarts: Option<u32>,
    pub main_pid: Option<u32>,
    pub main_exit: Option<MainExit>,
    pub main_started_at: Option<DateTime<Utc>>,
    pub main_exited_at: Option<DateTime<Utc>>,
    pub active_since: Option<DateTime<Utc>>,
    pub memory_current: Option<u64>,
    pub memory_peak: Option<u64>,
    pub memory_max: Option<Limit<u64>>,
    pub cpu_usage: Option<Duration>,
    pub tasks_current: Option<u64>,
    pub tasks_max: Option<Limit<u64>>,
    pub start_limit_burst: Option<u32>,
    /// `Unlimited`: `infinity` or `0`, i.e. no start rate limiting.
    pub start_limit_interval: Option<Limit<Duration>>,
    /// 32 lowercase hex digits; changes on every start.
    pub invocation_id: Option<String>,
    /// Names as systemd prints them (any unit type, not validated as [`UnitName`]: for reading,
    /// never for acting).
    pub requires: Vec<String>,
    pub binds_to: Vec<String>,
    /// Asked-for properties this systemd did not print at all.
    pub missing: Vec<String>,
}

impl UnitState {
    /// When the current (or last) main process started, else when the unit last became active:
    /// "the last start" for a crash loop as much as for a long-running service.
    pub fn last_start(&self) -> Option<DateTime<Utc>> {
        self.main_started_at.or(self.active_since)
    }

    /// `memory_current / MemoryMax`, when both are known and the limit is finite.
    pub fn memory_ratio(&self) -> Option<f64> {
        match (self.memory_current, self.memory_max) {
            (Some(cur), Some(Limit::Max(max))) if max > 0 => Some(cur as f64 / max as f64),
            _ => None,
        }
    }
}

/// A parse failure at one line of the input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LineError {
    /// 1-based.
    pub line: usize,
    pub message: String,
}

/// Parses `systemctl show --property=...` output (`Key=value` lines, in any order).
///
/// Structure is strict: a non-empty line without `=`, a property printed twice, or a value
/// that is not what the property holds is an error (better no state than a wrong one).
/// Properties that were not asked for are ignored; asked-for ones that are absent are listed in
/// [`UnitState::missing`].
pub fn parse_show(text: &str) -> Result<UnitState, LineError> {
    let mut seen: BTreeSet<&str> = BTreeSet::new();
    let mut s = UnitState {
        load_state: None,
        active_state: None,
        sub_state: None,
        result: None,
        restarts: None,
        main_pid: None,
        main_exit: None,
        main_started_at: None,
        main_exited_at: None,
        active_since: None,
        memory_current: None,
        memory_peak: None,
        memory_max: None,
        cpu_usage: None,
        tasks_current: None,
        tasks_max: None,
        start_limit_burst: None,
        start_limit_interval: None,
        invocation_id: None,
        requires: Vec::new(),
        binds_to: Vec::new(),
        missing: Vec::new(),
    };
    let mut exec_code: Option<i32> = None;
    let mut exec_status: Option<i32> = None;
    for (i, raw) in text.lines().enumerate() {
        let line = i + 1;
        if raw.trim().is_empty() {
            continue;
        }
        let err = |message: String| LineError { line, message };
        let (key, value) = raw
            .split_once('=')
            .ok_or_else(|| err(format!("{:?} is not Key=value", excerpt(raw, 80))))?;
        let Some(&key) = SHOW_PROPERTIES.iter().find(|p| **p == key) else {
            continue;
        };
        if !seen.insert(key) {
            return Err(err(format!("property {key} appears twice")));
        }
        let bad = |what: &str| err(format!("{key}={:?} is not {what}", excerpt(value, 80)));
        match key {
            "LoadState" => {
                s.load_state = word(value)
                    .map_err(|()| bad("a load state"))?
                    .map(load_state);
            }
            "ActiveState" => {
                s.active_state = word(value)
                    .map_err(|()| bad("an active state"))?
                    .map(active_state);
            }
            "SubState" => {
                s.sub_state = word(value)
                    .map_err(|()| bad("a sub-state"))?
                    .map(str::to_owned);
            }
            "Result" => {
                s.result = word(value)
                    .map_err(|()| bad("a result"))?
                    .map(service_result);
            }
            "NRestarts" => s.restarts = count(value).map_err(|()| bad("a count"))?,
            "MainPID" => s.main_pid = count(value).map_err(|()| bad("a pid"))?.filter(|p| *p != 0),
            "ExecMainCode" => exec_code = Some(int(value).map_err(|()| bad("an exit code kind"))?),
            "ExecMainStatus" => exec_status = Some(int(value).map_err(|()| bad("an exit status"))?),
            "ExecMainStartTimestamp" => {
                s.main_started_at = timestamp(value).map_err(|()| bad("a UTC timestamp"))?;
            }
            "ExecMainExitTimestamp" => {
                s.main_exited_at = timestamp(value).map_err(|()| bad("a UTC timestamp"))?;
            }
            "ActiveEnterTimestamp" => {
                s.active_since = timestamp(value).map_err(|()| bad("a UTC timestamp"))?;
            }
            "MemoryCurrent" => {
                s.memory_current = reading(value).map_err(|()| bad("a byte count"))?;
            }
            "MemoryPeak" => s.memory_peak = reading(value).map_err(|()| bad("a byte count"))?,
            "MemoryMax" => s.memory_max = limit(value).map_err(|()| bad("a byte limit"))?,
            "CPUUsageNSec" => {
                s.cpu_usage = reading(value)
                    .map_err(|()| bad("nanoseconds"))?
                    .map(Duration::from_nanos);
            }
            "TasksCurrent" => s.tasks_current = reading(value).map_err(|()| bad("a count"))?,
            "TasksMax" => s.tasks_max = limit(value).map_err(|()| bad("a task limit"))?,
            "StartLimitBurst" => s.start_limit_burst = count(value).map_err(|()| bad("a count"))?,
            "StartLimitIntervalUSec" => {
                s.start_limit_interval = match value.trim() {
                    "" | "[not set]" => None,
                    v => Some(match parse_timespan(v).map_err(|()| bad("a time span"))? {
                        Some(d) => Limit::Max(d),
                        None => Limit::Unlimited,
                    }),
                };
            }
            "InvocationID" => {
                let v = value.trim();
                if !(v.is_empty() || v.len() == 32 && v.bytes().all(|b| b.is_ascii_hexdigit())) {
                    return Err(bad("32 hex digits"));
                }
                s.invocation_id = (!v.is_empty()).then(|| v.to_ascii_lowercase());
            }
            "Requires" => s.requires = unit_list(value),
            "BindsTo" => s.binds_to = unit_list(value),
            _ => {}
        }
    }
    s.main_exit = match (exec_code, exec_status) {
        (Some(code), status) => Some(main_exit(code, status.unwrap_or(0))),
        (None, _) => None,
    };
    s.missing = SHOW_PROPERTIES
        .iter()
        .filter(|p| !seen.contains(**p))
        .map(|p| (*p).to_owned())
        .collect();
    Ok(s)
}

/// Parses the output of [`dependency_command`]: one block of `Key=value` lines per unit,
/// separated by empty lines, each with its `Id=`.
pub fn parse_show_many(text: &str) -> Result<Vec<(String, UnitState)>, LineError> {
    let mut out = Vec::new();
    let mut block = String::new();
    let mut first_line = 1;
    let mut flush = |block: &mut String, first_line: usize| -> Result<(), LineError> {
        if block.trim().is_empty() {
            block.clear();
            return Ok(());
        }
        let state = parse_show(block).map_err(|e| LineError {
            line: e.line + first_line - 1,
            message: e.message,
        })?;
        let id = block
            .lines()
            .find_map(|l| l.strip_prefix("Id="))
            .map(str::trim)
            .filter(|id| !id.is_empty())
            .ok_or_else(|| LineError {
                line: first_line,
                message: "a unit's block has no Id=".into(),
            })?;
        out.push((id.to_owned(), state));
        block.clear();
        Ok(())
    };
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            flush(&mut block, first_line)?;
            first_line = i + 2;
        } else {
            block.push_str(line);
            block.push('\n');
        }
    }
    flush(&mut block, first_line)?;
    Ok(out)
}

/// A state word: empty means unknown; otherwise lowercase ASCII letters, digits and `-`.
fn word(v: &str) -> Result<Option<&str>, ()> {
    let v = v.trim();
    if v.is_empty() {
        return Ok(None);
    }
    if v.len() <= 64
        && v.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    {
        Ok(Some(v))
    } else {
        Err(())
    }
}

fn load_state(v: &str) -> LoadState {
    match v {
        "loaded" => LoadState::Loaded,
        "not-found" => LoadState::NotFound,
        "bad-setting" => LoadState::BadSetting,
        "error" => LoadState::Error,
        "masked" => LoadState::Masked,
        "merged" => LoadState::Merged,
        "stub" => LoadState::Stub,
        other => LoadState::Other(other.to_owned()),
    }
}

fn active_state(v: &str) -> ActiveState {
    const KNOWN: [ActiveState; 8] = [
        ActiveState::Active,
        ActiveState::Reloading,
        ActiveState::Inactive,
        ActiveState::Failed,
        ActiveState::Activating,
        ActiveState::Deactivating,
        ActiveState::Maintenance,
        ActiveState::Refreshing,
    ];
    KNOWN
        .into_iter()
        .find(|s| s.as_str() == v)
        .unwrap_or_else(|| ActiveState::Other(v.to_owned()))
}

fn service_result(v: &str) -> ServiceResult {
    match v {
        "success" => ServiceResult::Success,
        "protocol" => ServiceResult::Protocol,
        "timeout" => ServiceResult::Timeout,
        "exit-code" => ServiceResult::ExitCode,
        "signal" => ServiceResult::Signal,
        "core-dump" => ServiceResult::CoreDump,
        "watchdog" => ServiceResult::Watchdog,
        "start-limit-hit" => ServiceResult::StartLimitHit,
        "resources" => ServiceResult::Resources,
        "oom-kill" => ServiceResult::OomKill,
        other => ServiceResult::Other(other.to_owned()),
    }
}

/// `CLD_EXITED` = 1, `CLD_KILLED` = 2, `CLD_DUMPED` = 3 (waitid(2)); 0: not exited.
fn main_exit(code: i32, status: i32) -> MainExit {
    match code {
        0 => MainExit::NotExited,
        1 => MainExit::Exited { status },
        2 => MainExit::Killed { signal: status },
        3 => MainExit::Dumped { signal: status },
        code => MainExit::Other { code, status },
    }
}

/// The words systemd prints for "no value".
fn is_unset(v: &str) -> bool {
    matches!(v, "" | "[not set]" | "[no data]" | "n/a")
}

/// A counter or gauge: a number, or unknown (`[not set]`, empty, or `UINT64_MAX`, which older
/// systemd prints raw for an unset value). Never a huge number.
fn reading(v: &str) -> Result<Option<u64>, ()> {
    let v = v.trim();
    if is_unset(v) {
        return Ok(None);
    }
    let n: u64 = v.parse().map_err(|_| ())?;
    Ok((n != u64::MAX).then_some(n))
}

/// A limit: `infinity` (or `UINT64_MAX`) is unlimited, `[not set]`/empty unknown.
fn limit(v: &str) -> Result<Option<Limit<u64>>, ()> {
    let v = v.trim();
    if is_unset(v) {
        return Ok(None);
    }
    if v == "infinity" {
        return Ok(Some(Limit::Unlimited));
    }
    let n: u64 = v.parse().map_err(|_| ())?;
    Ok(Some(if n == u64::MAX {
        Limit::Unlimited
    } else {
        Limit::Max(n)
    }))
}

/// A 32-bit count; `UINT32_MAX` and unset words are unknown.
fn count(v: &str) -> Result<Option<u32>, ()> {
    let v = v.trim();
    if is_unset(v) {
        return Ok(None);
    }
    let n: u32 = v.parse().map_err(|_| ())?;
    Ok((n != u32::MAX).then_some(n))
}

fn int(v: &str) -> Result<i32, ()> {
    v.trim().parse().map_err(|_| ())
}

/// A realtime timestamp as `systemctl show` prints it under `TZ=UTC`
/// (`Wed 2026-12-02 03:00:00 UTC`, optionally with `.123456` microseconds), or as `@EPOCH`
/// (`--timestamp=unix`). Empty or `n/a`: never happened.
fn timestamp(v: &str) -> Result<Option<DateTime<Utc>>, ()> {
    let v = v.trim();
    if is_unset(v) {
        return Ok(None);
    }
    if let Some(secs) = v.strip_prefix('@') {
        let secs: i64 = secs.parse().map_err(|_| ())?;
        return DateTime::from_timestamp(secs, 0).map(Some).ok_or(());
    }
    let mut words = v.split_ascii_whitespace();
    let (Some(_weekday), Some(date), Some(time), Some("UTC"), None) = (
        words.next(),
        words.next(),
        words.next(),
        words.next(),
        words.next(),
    ) else {
        return Err(());
    };
    let naive = NaiveDateTime::parse_from_str(&format!("{date} {time}"), "%Y-%m-%d %H:%M:%S%.f")
        .map_err(|_| ())?;
    Ok(Some(naive.and_utc()))
}

/// A time span as systemd formats it (`10s`, `1min 30s`, `500ms`, `infinity`); `None`: no limit
/// (`infinity` or `0`).
fn parse_timespan(v: &str) -> Result<Option<Duration>, ()> {
    let v = v.trim();
    if v == "infinity" {
        return Ok(None);
    }
    let mut total: u128 = 0;
    let mut rest = v;
    if rest.is_empty() {
        return Err(());
    }
    while !rest.is_empty() {
        rest = rest.trim_start();
        let end = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        if end == 0 || end > 24 {
            return Err(());
        }
        let n: f64 = rest[..end].parse().map_err(|_| ())?;
        rest = &rest[end..];
        let uend = rest
            .find(|c: char| !c.is_alphabetic())
            .unwrap_or(rest.len());
        let usec = match &rest[..uend] {
            "us" | "usec" | "µs" => 1.0,
            "ms" | "msec" => 1e3,
            "" | "s" | "sec" => 1e6,
            "min" | "m" => 60e6,
            "h" | "hr" => 3600e6,
            "d" => 86_400e6,
            "w" => 604_800e6,
            "M" | "month" => 2_629_800e6,
            "y" | "year" => 31_557_600e6,
            _ => return Err(()),
        };
        rest = &rest[uend..];
        total = total.saturating_add((n * usec).round() as u128);
    }
    let total = u64::try_from(total).map_err(|_| ())?;
    Ok((total > 0).then(|| Duration::from_micros(total)))
}

/// A space-separated list of unit names as `systemctl show` prints string arrays (names that
/// would need shell quoting are dropped: unit names never do). At most 64 names.
fn unit_list(v: &str) -> Vec<String> {
    v.split_ascii_whitespace()
        .filter(|n| {
            n.len() <= 255
                && n.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b":_.@-\\".contains(&b))
        })
        .take(64)
        .map(str::to_owned)
        .collect()
}

// ---------------------------------------------------------------------------------------------
// The systemd journal: entries and the summary
// ---------------------------------------------------------------------------------------------

/// A `MESSAGE` field as journalctl's JSON output gives it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    Text(String),
    /// Not valid UTF-8 or with control characters: journalctl prints an array of bytes.
    Binary(Vec<u8>),
    /// `null`: larger than journalctl prints without `--all`.
    TooLarge,
    Missing,
}

impl Message {
    /// The text, with invalid UTF-8 replaced.
    pub fn text(&self) -> Option<std::borrow::Cow<'_, str>> {
        match self {
            Message::Text(s) => Some(s.as_str().into()),
            Message::Binary(b) => Some(String::from_utf8_lossy(b)),
            Message::TooLarge | Message::Missing => None,
        }
    }
}

/// The fields of one systemd journal entry this module reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JournalEntry {
    /// `__REALTIME_TIMESTAMP` (µs since the epoch).
    pub at: Option<DateTime<Utc>>,
    /// `PRIORITY`, 0 (emerg) ..= 7 (debug).
    pub priority: Option<u8>,
    pub message: Message,
    pub message_id: Option<String>,
    /// `_COMM` (the process name journald took from the kernel, at most 15 bytes, which the
    /// sender cannot choose), else `SYSLOG_IDENTIFIER` (which it can).
    pub source: Option<String>,
    /// `_SYSTEMD_UNIT`: the unit the logging process ran in.
    pub systemd_unit: Option<String>,
    /// `UNIT`: set by PID 1 on entries about a unit.
    pub about_unit: Option<String>,
    /// `UNIT_RESULT`, on PID 1's "Failed with result" entries.
    pub unit_result: Option<String>,
    /// `COREDUMP_UNIT`, on systemd-coredump's entries.
    pub coredump_unit: Option<String>,
    /// `_PID` is 1: systemd itself. journald sets `_`-fields from the sender's credentials, so
    /// a service cannot fake them (it can fake any other field, `MESSAGE_ID` included).
    pub from_pid1: bool,
    /// `_UID` is 0 (systemd-coredump's entries are logged as root).
    pub from_root: bool,
    /// `_TRANSPORT` is `kernel`.
    pub from_kernel: bool,
}

/// Parses one line of `journalctl --output=json`.
///
/// Fields are strings; a field journalctl cannot print as text is an array of bytes; a field
/// that appears several times in an entry is an array of its values (the first one is used);
/// a field too large for journalctl without `--all` is `null`.
pub fn parse_journal_line(line: &str) -> Result<JournalEntry, String> {
    let v: serde_json::Value = serde_json::from_str(line).map_err(|e| format!("not JSON ({e})"))?;
    let obj = v
        .as_object()
        .ok_or_else(|| "not a JSON object".to_owned())?;
    let text = |k: &str| -> Option<String> {
        match field(obj.get(k)?) {
            Message::Text(s) => Some(s),
            Message::Binary(b) => Some(String::from_utf8_lossy(&b).into_owned()),
            Message::TooLarge | Message::Missing => None,
        }
    };
    let at = text("__REALTIME_TIMESTAMP")
        .and_then(|s| s.parse::<i64>().ok())
        .and_then(DateTime::from_timestamp_micros);
    let priority = text("PRIORITY")
        .and_then(|s| s.trim().parse::<u8>().ok())
        .filter(|p| *p <= 7);
    Ok(JournalEntry {
        at,
        priority,
        message: obj.get("MESSAGE").map_or(Message::Missing, field),
        message_id: text("MESSAGE_ID").map(|s| s.to_ascii_lowercase()),
        source: text("_COMM").or_else(|| text("SYSLOG_IDENTIFIER")),
        systemd_unit: text("_SYSTEMD_UNIT"),
        about_unit: text("UNIT"),
        unit_result: text("UNIT_RESULT"),
        coredump_unit: text("COREDUMP_UNIT"),
        from_pid1: text("_PID").as_deref() == Some("1"),
        from_root: text("_UID").as_deref() == Some("0"),
        from_kernel: text("_TRANSPORT").as_deref() == Some("kernel"),
    })
}

fn field(v: &serde_json::Value) -> Message {
    use serde_json::Value;
    match v {
        Value::String(s) => Message::Text(s.clone()),
        Value::Null => Message::TooLarge,
        Value::Array(items) if items.iter().all(Value::is_u64) => Message::Binary(
            items
                .iter()
                .filter_map(Value::as_u64)
                .map(|b| u8::try_from(b).unwrap_or(b'?'))
                .collect(),
        ),
        // A field set more than once: an array of its values.
        Value::Array(items) => items.first().map_or(Message::Missing, field),
        Value::Number(n) => Message::Text(n.to_string()),
        Value::Bool(b) => Message::Text(b.to_string()),
        Value::Object(_) => Message::Missing,
    }
}

/// One line of an excerpt: bounded (the source to 64 characters, the text to
/// `Limits::excerpt_line_chars`), control characters replaced. The model's type, so a snapshot
/// carries it as read.
pub type ExcerptLine = JournalLine;

/// Lines of one kind (OOM kills, core dumps): how many, and the newest one.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Matches {
    pub count: u32,
    pub last: Option<ExcerptLine>,
}

/// Whether journalctl could read the system journal.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", content = "hint", rename_all = "snake_case")]
pub enum JournalAccess {
    Full,
    /// journalctl said it shows only the caller's own entries (the account is not in
    /// `systemd-journal`): the counts below are not the unit's.
    Limited(String),
}

/// Which bound ended the read early, if any (the oldest entries are the ones left out).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Truncation {
    None,
    /// journalctl printed `--lines` entries; there may be older ones.
    Entries,
    /// stdout reached the byte bound and the child was killed.
    Bytes,
}

/// What the unit's systemd journal says since the read began.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JournalSummary {
    /// `--since` as asked.
    pub since: DateTime<Utc>,
    pub entries: u32,
    /// Entries by `PRIORITY`, index 0 (emerg) ..= 7 (debug).
    pub by_priority: [u32; 8],
    pub without_priority: u32,
    /// systemd's "A process of this unit has been killed by the OOM killer" and "Failed with
    /// result 'oom-kill'", and the kernel's OOM-killer lines when the read holds any (`--unit`
    /// does not: they belong to no unit). Only what systemd or the kernel logged counts.
    pub oom_kills: Matches,
    /// systemd-coredump's "dumped core" entries and PID 1's `code=dumped` / `'core-dump'` ones
    /// (again never the service's own lines).
    pub core_dumps: Matches,
    /// The newest error lines (priority <= 3), oldest first, at most `excerpt_lines`.
    pub last_errors: Vec<ExcerptLine>,
    /// When PID 1 logged a start attempt ("Starting …"), newest first.
    pub starts: Vec<DateTime<Utc>>,
    /// The oldest entry read (with `truncated`, where the read stopped).
    pub oldest: Option<DateTime<Utc>>,
    pub truncated: Truncation,
    /// Lines that were not a journal entry, and why the first one was not.
    pub skipped_lines: u32,
    pub first_skip: Option<String>,
    pub access: JournalAccess,
}

impl JournalSummary {
    /// Entries with priority <= 3 (err, crit, alert, emerg).
    pub fn errors(&self) -> u32 {
        self.by_priority[..=3].iter().sum()
    }
}

/// Summarizes journal JSON lines (newest first, as `--reverse` prints them; order is only used
/// for "newest"). Never fails: a line that is not an entry is counted in `skipped_lines`.
pub fn summarize_journal<'a>(
    lines: impl IntoIterator<Item = &'a str>,
    since: DateTime<Utc>,
    limits: &Limits,
) -> JournalSummary {
    let mut s = JournalSummary {
        since,
        entries: 0,
        by_priority: [0; 8],
        without_priority: 0,
        oom_kills: Matches::default(),
        core_dumps: Matches::default(),
        last_errors: Vec::new(),
        starts: Vec::new(),
        oldest: None,
        truncated: Truncation::None,
        skipped_lines: 0,
        first_skip: None,
        access: JournalAccess::Full,
    };
    for (i, line) in lines.into_iter().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let e = match parse_journal_line(line) {
            Ok(e) => e,
            Err(why) => {
                s.skipped_lines += 1;
                if s.first_skip.is_none() {
                    s.first_skip = Some(format!("line {}: {why}", i + 1));
                }
                continue;
            }
        };
        s.entries += 1;
        match e.priority {
            Some(p) => s.by_priority[usize::from(p)] += 1,
            None => s.without_priority += 1,
        }
        if let Some(at) = e.at {
            s.oldest = Some(s.oldest.map_or(at, |o| o.min(at)));
        }
        let text = e.message.text();
        let text = text.as_deref().unwrap_or("");
        let note = |m: &mut Matches| {
            m.count += 1;
            if m.last.as_ref().is_none_or(|l| l.at < e.at) {
                m.last = Some(excerpt_line(&e, limits));
            }
        };
        if is_oom_kill(&e, text) {
            note(&mut s.oom_kills);
        }
        if is_core_dump(&e, text) {
            note(&mut s.core_dumps);
        }
        if e.from_pid1
            && e.message_id.as_deref() == Some(MESSAGE_ID_UNIT_STARTING)
            && let Some(at) = e.at
            && s.starts.len() < limits.journal_max_entries as usize
        {
            s.starts.push(at);
        }
        if e.priority.is_some_and(|p| p <= 3) && limits.excerpt_lines > 0 {
            s.last_errors.push(excerpt_line(&e, limits));
            // Keep the newest `excerpt_lines`: drop the oldest once over the bound.
            if s.last_errors.len() > limits.excerpt_lines {
                let oldest = s
                    .last_errors
                    .iter()
                    .enumerate()
                    .min_by_key(|(i, l)| (l.at, std::cmp::Reverse(*i)))
                    .map(|(i, _)| i)
                    .expect("not empty");
                s.last_errors.remove(oldest);
            }
        }
    }
    s.last_errors.sort_by_key(|l| l.at);
    s.starts.sort_by(|a, b| b.cmp(a));
    s
}

/// OOM kills as systemd or the kernel report them; never the service's own words, which it
/// controls (see [`JournalEntry::from_pid1`]).
fn is_oom_kill(e: &JournalEntry, text: &str) -> bool {
    (e.from_pid1
        && (e.message_id.as_deref() == Some(MESSAGE_ID_UNIT_OOM)
            || e.unit_result.as_deref() == Some("oom-kill")
            || text.contains("has been killed by the OOM killer")))
        || (e.from_kernel
            && (text.contains("Out of memory: Killed process")
                || text.contains("Memory cgroup out of memory")))
}

/// Core dumps as systemd-coredump (as root) or PID 1 report them.
fn is_core_dump(e: &JournalEntry, text: &str) -> bool {
    (e.from_root && !e.from_pid1 && e.message_id.as_deref() == Some(MESSAGE_ID_COREDUMP))
        || (e.from_pid1
            && (e.unit_result.as_deref() == Some("core-dump") || text.contains("code=dumped")))
}

fn excerpt_line(e: &JournalEntry, limits: &Limits) -> ExcerptLine {
    let (text, truncated) = match &e.message {
        Message::TooLarge => (
            bounded("[message too large to print]", limits.excerpt_line_chars).0,
            true,
        ),
        Message::Missing => (String::new(), false),
        m => {
            let full = m.text().unwrap_or_default();
            let first = full.split('\n').next().unwrap_or("");
            let (t, cut) = bounded(first, limits.excerpt_line_chars);
            (t, cut || first.len() < full.trim_end().len())
        }
    };
    ExcerptLine {
        at: e.at,
        priority: e.priority,
        source: e.source.as_deref().map(|s| bounded(s, 64).0),
        text,
        truncated,
        from_systemd: e.from_pid1,
    }
}

/// At most `max` characters of `s`, control characters replaced by U+FFFD (tabs by a space),
/// and whether anything was cut.
fn bounded(s: &str, max: usize) -> (String, bool) {
    let mut out = String::with_capacity(s.len().min(max * 4));
    for (n, c) in s.chars().enumerate() {
        if n == max {
            return (out, true);
        }
        out.push(match c {
            '\t' => ' ',
            c if c.is_control() || matches!(c, '\u{2028}' | '\u{2029}') => '\u{FFFD}',
            c => c,
        });
    }
    (out, false)
}

fn excerpt(s: &str, max: usize) -> String {
    let (mut t, cut) = bounded(s.trim(), max);
    if cut {
        t.push('…');
    }
    t
}

// ---------------------------------------------------------------------------------------------
// The start limit
// ---------------------------------------------------------------------------------------------

/// How close the unit is to systemd's start limit; see the module documentation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum StartLimitCheck {
    /// `Result=start-limit-hit`: systemd refuses to start it until the interval has passed or
    /// someone runs `systemctl reset-failed`.
    Hit,
    /// No rate limiting (`StartLimitIntervalSec=infinity` or 0, or `StartLimitBurst=0`).
    Disabled,
    /// `starts` start attempts within the `interval` before the collection time.
    Counted {
        starts: u32,
        burst: u32,
        interval: Duration,
    },
    Unknown {
        reason: String,
    },
}

impl StartLimitCheck {
    /// From the unit's state and its journal summary, at `now`.
    pub fn assess(
        state: Option<&UnitState>,
        journal: Option<&JournalSummary>,
        now: DateTime<Utc>,
    ) -> Self {
        let Some(state) = state else {
            return Self::Unknown {
                reason: "the unit's state could not be read".into(),
            };
        };
        if state.result == Some(ServiceResult::StartLimitHit) {
            return Self::Hit;
        }
        let (burst, interval) = match (state.start_limit_burst, state.start_limit_interval) {
            (Some(0), _) | (_, Some(Limit::Unlimited)) => return Self::Disabled,
            (_, Some(Limit::Max(i))) if i.is_zero() => return Self::Disabled,
            (Some(b), Some(Limit::Max(i))) => (b, i),
            _ => {
                return Self::Unknown {
                    reason: "systemd did not report StartLimitBurst and StartLimitIntervalUSec"
                        .into(),
                };
            }
        };
        let Some(journal) = journal else {
            return Self::Unknown {
                reason: "the unit's systemd journal could not be read".into(),
            };
        };
        if let JournalAccess::Limited(_) = journal.access {
            return Self::Unknown {
                reason: "the systemd journal is not readable by this account".into(),
            };
        }
        let window_start = now - TimeDelta::from_std(interval).unwrap_or(TimeDelta::MAX);
        let covered = if journal.truncated == Truncation::None {
            journal.since <= window_start
        } else {
            journal.oldest.is_some_and(|o| o <= window_start)
        };
        if !covered {
            return Self::Unknown {
                reason: format!(
                    "the journal read does not reach back over the whole {} interval",
                    format_span(interval)
                ),
            };
        }
        let starts = journal
            .starts
            .iter()
            .filter(|t| **t > window_start && **t <= now)
            .count();
        Self::Counted {
            starts: u32::try_from(starts).unwrap_or(u32::MAX),
            burst,
            interval,
        }
    }

    /// Starts still allowed before systemd refuses (`Some(0)`: the next start trips it).
    pub fn remaining(&self) -> Option<u32> {
        match self {
            Self::Hit => Some(0),
            Self::Counted { starts, burst, .. } => Some(burst.saturating_sub(*starts)),
            Self::Disabled | Self::Unknown { .. } => None,
        }
    }

    /// At most one more start is allowed (or none).
    pub fn is_near(&self) -> bool {
        self.remaining().is_some_and(|r| r <= 1)
    }
}

fn format_span(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        0 => format!("{} ms", d.as_millis()),
        s if s % 3600 == 0 => format!("{} h", s / 3600),
        s if s % 60 == 0 => format!("{} min", s / 60),
        s => format!("{s} s"),
    }
}

// ---------------------------------------------------------------------------------------------
// Running the commands
// ---------------------------------------------------------------------------------------------

/// What `systemctl show` said, and the command that said it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShowReading {
    pub command: Command,
    pub state: UnitState,
}

/// What the systemd journal said, and the command that said it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JournalReading {
    pub command: Command,
    pub summary: JournalSummary,
}

/// A unit's own evidence at one moment: each part with its command, or why it is missing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UnitEvidence {
    pub unit: UnitName,
    pub collected_at: DateTime<Utc>,
    pub show: Result<ShowReading, UnitStateError>,
    pub journal: Result<JournalReading, UnitStateError>,
    /// Derived from both (see [`StartLimitCheck::assess`]).
    pub start_limit: StartLimitCheck,
    /// The units it `Requires=` or is `BindsTo=`; `None` when it has none or its own state
    /// could not be read.
    #[serde(default)]
    pub dependencies: Option<Result<DependencyReading, UnitStateError>>,
}

/// What `systemctl show` said about the units a unit depends on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DependencyReading {
    pub command: Command,
    pub states: Vec<DependencyState>,
    /// More dependencies than [`MAX_DEPENDENCIES`]: the rest were not read.
    pub left_out: usize,
}

/// The dependencies of `state` to read, with their relation, in the order systemd lists them.
fn dependencies_of(state: &UnitState) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = Vec::new();
    for (list, relation) in [(&state.requires, "Requires"), (&state.binds_to, "BindsTo")] {
        for u in list {
            match out.iter_mut().find(|(n, _)| n == u) {
                Some((_, r)) => {
                    r.push(',');
                    r.push_str(relation);
                }
                None => out.push((u.clone(), relation.to_owned())),
            }
        }
    }
    out
}

/// A dependency is down when it failed, is not loaded, or is stopped while `unit_active` says
/// the unit that needs it should be running (or is trying to start).
fn dependency_state(
    name: &str,
    relation: &str,
    state: Option<&UnitState>,
    unit_active: bool,
) -> DependencyState {
    let Some(s) = state else {
        return DependencyState {
            unit: name.to_owned(),
            relation: relation.to_owned(),
            load_state: None,
            active_state: None,
            sub_state: None,
            result: None,
            down: false,
        };
    };
    let down = match (&s.load_state, &s.active_state) {
        (
            Some(
                LoadState::NotFound | LoadState::Masked | LoadState::Error | LoadState::BadSetting,
            ),
            _,
        ) => true,
        (_, Some(ActiveState::Failed)) => true,
        (_, Some(ActiveState::Inactive | ActiveState::Deactivating)) => !unit_active,
        _ => false,
    };
    DependencyState {
        unit: name.to_owned(),
        relation: relation.to_owned(),
        load_state: s.load_state.as_ref().map(kebab),
        active_state: s.active_state.as_ref().map(kebab),
        sub_state: s.sub_state.clone(),
        result: s.result.as_ref().map(kebab),
        down,
    }
}

impl UnitEvidence {
    pub fn state(&self) -> Option<&UnitState> {
        self.show.as_ref().ok().map(|r| &r.state)
    }

    pub fn journal_summary(&self) -> Option<&JournalSummary> {
        self.journal.as_ref().ok().map(|r| &r.summary)
    }

    /// Time from [`UnitState::last_start`] to the collection (zero if the clocks disagree).
    pub fn since_last_start(&self) -> Option<Duration> {
        let start = self.state()?.last_start()?;
        Some((self.collected_at - start).to_std().unwrap_or_default())
    }

    /// Every fact, each with the command(s) and the property or field it was read from, in a
    /// fixed order; a value systemd did not give is [`FactValue::Unknown`], not left out. A part
    /// that could not be read contributes no facts (its error says why).
    pub fn facts(&self) -> Vec<UnitFact<'_>> {
        use aiops_core::model::ValueUnit as U;
        let mut out = Vec::new();
        let num = |v: Option<f64>, unit| {
            v.map_or(FactValue::Unknown, |value| FactValue::Number {
                value,
                unit,
            })
        };
        let text = |v: Option<String>| v.map_or(FactValue::Unknown, FactValue::Text);
        if let Ok(show) = &self.show {
            let s = &show.state;
            let mut fact = |key, label, from, value| {
                out.push(UnitFact {
                    key,
                    label,
                    value,
                    from,
                    commands: vec![&show.command],
                });
            };
            fact(
                "unit_load_state",
                "load state",
                "LoadState",
                text(s.load_state.as_ref().map(kebab)),
            );
            fact(
                "unit_active_state",
                "active state",
                "ActiveState",
                text(s.active_state.as_ref().map(kebab)),
            );
            fact(
                "unit_sub_state",
                "sub-state",
                "SubState",
                text(s.sub_state.clone()),
            );
            fact(
                "unit_result",
                "result of the last run",
                "Result",
                text(s.result.as_ref().map(kebab)),
            );
            fact(
                "unit_restarts",
                "automatic restarts",
                "NRestarts",
                num(s.restarts.map(f64::from), U::Count),
            );
            fact(
                "unit_main_exit",
                "how the main process ended",
                "ExecMainCode,ExecMainStatus",
                text(s.main_exit.map(|e| match e {
                    MainExit::NotExited => "not exited".to_owned(),
                    MainExit::Exited { status } => format!("exit status {status}"),
                    MainExit::Killed { signal } => format!("signal {signal}"),
                    MainExit::Dumped { signal } => format!("signal {signal}, core dumped"),
                    MainExit::Other { code, status } => format!("code {code}, status {status}"),
                })),
            );
            fact(
                "unit_memory",
                "memory",
                "MemoryCurrent",
                num(s.memory_current.map(|v| v as f64), U::Bytes),
            );
            fact(
                "unit_memory_peak",
                "peak memory",
                "MemoryPeak",
                num(s.memory_peak.map(|v| v as f64), U::Bytes),
            );
            fact(
                "unit_memory_max",
                "memory limit",
                "MemoryMax",
                match s.memory_max {
                    Some(Limit::Max(v)) => FactValue::Number {
                        value: v as f64,
                        unit: U::Bytes,
                    },
                    Some(Limit::Unlimited) => FactValue::Text("unlimited".into()),
                    None => FactValue::Unknown,
                },
            );
            fact(
                "unit_memory_of_max",
                "memory of its limit",
                "MemoryCurrent,MemoryMax",
                num(s.memory_ratio(), U::Ratio),
            );
            fact(
                "unit_cpu",
                "CPU time used",
                "CPUUsageNSec",
                num(s.cpu_usage.map(|d| d.as_secs_f64()), U::Seconds),
            );
            fact(
                "unit_tasks",
                "tasks",
                "TasksCurrent",
                num(s.tasks_current.map(|v| v as f64), U::Count),
            );
            fact(
                "unit_since_start",
                "since the last start",
                "ExecMainStartTimestamp,ActiveEnterTimestamp",
                num(self.since_last_start().map(|d| d.as_secs_f64()), U::Seconds),
            );
            let yes = |b: bool| FactValue::Number {
                value: if b { 1.0 } else { 0.0 },
                unit: U::Bool,
            };
            let known = |o: Option<bool>| o.map_or(FactValue::Unknown, yes);
            fact(
                "unit_loaded",
                "known to systemd",
                "LoadState",
                known(s.load_state.as_ref().map(|l| *l == LoadState::Loaded)),
            );
            fact(
                "unit_failed",
                "failed",
                "ActiveState",
                known(s.active_state.as_ref().map(|a| *a == ActiveState::Failed)),
            );
            fact(
                "unit_active",
                "active",
                "ActiveState",
                known(
                    s.active_state
                        .as_ref()
                        .map(|a| matches!(a, ActiveState::Active | ActiveState::Reloading)),
                ),
            );
            fact(
                "unit_restarting",
                "waiting to be restarted or starting",
                "ActiveState,SubState",
                known(s.active_state.as_ref().map(|a| {
                    *a == ActiveState::Activating || s.sub_state.as_deref() == Some("auto-restart")
                })),
            );
            fact(
                "unit_exited_with_error",
                "main process ended abnormally",
                "ExecMainCode,ExecMainStatus,Result",
                known(s.main_exit.map(|e| match e {
                    MainExit::Exited { status } => status != 0,
                    MainExit::Dumped { .. } => true,
                    MainExit::Killed { .. } => s.result != Some(ServiceResult::Success),
                    MainExit::NotExited | MainExit::Other { .. } => false,
                })),
            );
            fact(
                "unit_start_limit_hit",
                "start limit hit",
                "Result",
                known(
                    s.result
                        .as_ref()
                        .map(|r| *r == ServiceResult::StartLimitHit),
                ),
            );
        }
        if let Ok(journal) = &self.journal {
            let j = &journal.summary;
            let mut fact = |key, label, from, value| {
                out.push(UnitFact {
                    key,
                    label,
                    value,
                    from,
                    commands: vec![&journal.command],
                });
            };
            let count = |n: u32| FactValue::Number {
                value: f64::from(n),
                unit: U::Count,
            };
            fact(
                "journal_entries",
                "journal entries read",
                "entries",
                count(j.entries),
            );
            fact(
                "journal_errors",
                "journal errors",
                "PRIORITY<=3",
                count(j.errors()),
            );
            fact(
                "journal_warnings",
                "journal warnings",
                "PRIORITY=4",
                count(j.by_priority[4]),
            );
            fact(
                "journal_oom_kills",
                "OOM-kill lines",
                "MESSAGE_ID,UNIT_RESULT,MESSAGE",
                count(j.oom_kills.count),
            );
            fact(
                "journal_core_dumps",
                "core-dump lines",
                "MESSAGE_ID,COREDUMP_UNIT,UNIT_RESULT,MESSAGE",
                count(j.core_dumps.count),
            );
            fact(
                "journal_last_error",
                "the journal's last error",
                "MESSAGE (PRIORITY<=3; the service's own lines of its last start first)",
                text(last_error(j)),
            );
        }
        let commands: Vec<&Command> = match &self.start_limit {
            StartLimitCheck::Counted { .. } => self
                .show
                .iter()
                .map(|r| &r.command)
                .chain(self.journal.iter().map(|r| &r.command))
                .collect(),
            _ => self.show.iter().map(|r| &r.command).collect(),
        };
        if !commands.is_empty() {
            out.push(UnitFact {
                key: "unit_start_limit_remaining",
                label: "starts left before the start limit",
                from: "Result,StartLimitBurst,StartLimitIntervalUSec (+ PID 1's start entries)",
                value: num(self.start_limit.remaining().map(f64::from), U::Count),
                commands: commands.clone(),
            });
            out.push(UnitFact {
                key: "unit_start_limit_near",
                label: "at most one start left before the start limit",
                from: "Result,StartLimitBurst,StartLimitIntervalUSec (+ PID 1's start entries)",
                value: match self.start_limit {
                    StartLimitCheck::Unknown { .. } => FactValue::Unknown,
                    ref c => FactValue::Number {
                        value: if c.is_near() { 1.0 } else { 0.0 },
                        unit: U::Bool,
                    },
                },
                commands,
            });
        }
        // OOM kills: systemd's Result, or what systemd or the kernel logged.
        if let Ok(show) = &self.show {
            let by_result = show
                .state
                .result
                .as_ref()
                .map(|r| *r == ServiceResult::OomKill);
            let by_journal = self.journal_summary().map(|j| j.oom_kills.count > 0);
            let mut commands = vec![&show.command];
            commands.extend(self.journal.iter().map(|r| &r.command));
            out.push(UnitFact {
                key: "unit_oom_killed",
                label: "killed by the OOM killer",
                from: "Result=oom-kill, or OOM-kill lines of systemd or the kernel",
                value: match (by_result, by_journal) {
                    (Some(true), _) | (_, Some(true)) => FactValue::Number {
                        value: 1.0,
                        unit: U::Bool,
                    },
                    (Some(false), _) => FactValue::Number {
                        value: 0.0,
                        unit: U::Bool,
                    },
                    (None, _) => FactValue::Unknown,
                },
                commands,
            });
            if let Some(Ok(deps)) = &self.dependencies {
                let down: Vec<&DependencyState> = deps.states.iter().filter(|d| d.down).collect();
                let commands = vec![&show.command, &deps.command];
                out.push(UnitFact {
                    key: "unit_dependencies_down",
                    label: "dependencies down (Requires=, BindsTo=)",
                    from: "Requires,BindsTo + their LoadState,ActiveState",
                    value: FactValue::Number {
                        value: down.len() as f64,
                        unit: U::Count,
                    },
                    commands: commands.clone(),
                });
                out.push(UnitFact {
                    key: "unit_failed_dependency",
                    label: "dependency down",
                    from: "Requires,BindsTo + their LoadState,ActiveState,Result",
                    value: if down.is_empty() {
                        FactValue::Unknown
                    } else {
                        FactValue::Text(
                            down.iter()
                                .map(|d| describe_dependency(d))
                                .collect::<Vec<_>>()
                                .join(", "),
                        )
                    },
                    commands,
                });
            }
        }
        out
    }

    /// The snapshot that is stored with the diagnosis, shown, and audited: every fact keyed
    /// `unit.*` (`unit_restarts` → `unit.restarts`, `journal_errors` → `unit.journal_errors`)
    /// with its commands, the journal's digest, the dependencies, and what could not be read.
    pub fn snapshot(&self) -> UnitSnapshot {
        use aiops_core::model::{UnitFact as F, UnitFactValue as V};
        let facts = self
            .facts()
            .into_iter()
            .map(|f| F {
                key: catalog_key(f.key),
                label: f.label.to_owned(),
                value: match f.value {
                    FactValue::Number { value, unit } => V::Number { value, unit },
                    FactValue::Text(t) => V::Text(t),
                    FactValue::Unknown => V::Unknown,
                },
                from: f.from.to_owned(),
                commands: f.commands.iter().map(|c| c.display()).collect(),
            })
            .collect();
        let mut errors = Vec::new();
        if let Err(e) = &self.show {
            errors.push(e.to_string());
        }
        if let Err(e) = &self.journal {
            errors.push(e.to_string());
        }
        if let Some(Err(e)) = &self.dependencies {
            errors.push(format!("its dependencies: {e}"));
        }
        let journal = self.journal.as_ref().ok().map(|r| {
            let j = &r.summary;
            let access_limited = match &j.access {
                JournalAccess::Full => None,
                JournalAccess::Limited(hint) => {
                    let why = format!(
                        "journalctl could read only this account's own entries ({hint}); the counts are not {}'s. Grant it: add the service account to group systemd-journal (SupplementaryGroups=systemd-journal)",
                        self.unit
                    );
                    errors.push(why.clone());
                    Some(why)
                }
            };
            JournalDigest {
                since: j.since,
                command: r.command.display(),
                entries: j.entries,
                by_priority: j.by_priority,
                oom_kills: j.oom_kills.count,
                core_dumps: j.core_dumps.count,
                last_oom_kill: j.oom_kills.last.clone(),
                last_core_dump: j.core_dumps.last.clone(),
                last_errors: j.last_errors.clone(),
                truncated: match j.truncated {
                    Truncation::None => None,
                    Truncation::Entries => Some(format!(
                        "the read stopped at its entry bound; entries older than {} are left out",
                        j.oldest.map_or("the oldest read".into(), |o| o.to_rfc3339())
                    )),
                    Truncation::Bytes => Some(format!(
                        "the read stopped at its byte bound; entries older than {} are left out",
                        j.oldest.map_or("the oldest read".into(), |o| o.to_rfc3339())
                    )),
                },
                access_limited,
            }
        });
        UnitSnapshot {
            unit: self.unit.clone(),
            collected_at: self.collected_at,
            facts,
            journal,
            dependencies: match &self.dependencies {
                Some(Ok(d)) => d.states.clone(),
                _ => Vec::new(),
            },
            errors,
        }
    }
}

/// One fact of a unit's evidence and where it came from, the way an
/// [`EvidenceItem`](aiops_core::model::EvidenceItem) keeps its PromQL.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct UnitFact<'a> {
    /// Stable, e.g. `unit_restarts`.
    pub key: &'static str,
    /// Words for people, e.g. "automatic restarts".
    pub label: &'static str,
    pub value: FactValue,
    /// The property or journal field(s) it was read from, e.g. `NRestarts`, `PRIORITY<=3`.
    pub from: &'static str,
    /// The command(s) whose output it was read from (replay with [`Command::display`]).
    pub commands: Vec<&'a Command>,
}

/// A fact's value.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FactValue {
    Number {
        value: f64,
        unit: aiops_core::model::ValueUnit,
    },
    Text(String),
    /// systemd did not give it (`[not set]`, not available, or not applicable).
    Unknown,
}

/// The numeric `unit.*` keys catalog conditions may test (booleans are 0 or 1); a key has no
/// value when the alert has no valid unit, systemd was not read, or did not give it.
pub const CATALOG_KEYS: &[&str] = &[
    "unit.loaded",
    "unit.active",
    "unit.failed",
    "unit.restarting",
    "unit.restarts",
    "unit.exited_with_error",
    "unit.since_start",
    "unit.memory",
    "unit.memory_peak",
    "unit.memory_max",
    "unit.memory_of_max",
    "unit.cpu",
    "unit.tasks",
    "unit.start_limit_hit",
    "unit.start_limit_remaining",
    "unit.start_limit_near",
    "unit.oom_killed",
    "unit.dependencies_down",
    "unit.journal_entries",
    "unit.journal_errors",
    "unit.journal_warnings",
    "unit.journal_oom_kills",
    "unit.journal_core_dumps",
];

/// The textual `unit.*` keys, usable as advice placeholders only (rendered quoted).
pub const CATALOG_TEXT_KEYS: &[&str] = &[
    "unit.load_state",
    "unit.active_state",
    "unit.sub_state",
    "unit.result",
    "unit.main_exit",
    "unit.journal_last_error",
    "unit.failed_dependency",
];

/// What says why the unit failed: the service's own error lines since its last start (at most
/// two, oldest first, joined by ` | `), else its newest error line of any run, else systemd's
/// newest one ("Failed to start …" names no cause, so it comes last).
fn last_error(j: &JournalSummary) -> Option<String> {
    let own: Vec<&ExcerptLine> = j.last_errors.iter().filter(|l| !l.from_systemd).collect();
    let last_start = j.starts.first();
    let since_start: Vec<&ExcerptLine> = own
        .iter()
        .copied()
        .filter(|l| matches!((l.at, last_start), (Some(at), Some(s)) if at >= *s))
        .collect();
    let chosen: Vec<&ExcerptLine> = if !since_start.is_empty() {
        since_start
    } else if let Some(l) = own.last() {
        vec![*l]
    } else {
        j.last_errors.last().into_iter().collect()
    };
    let n = chosen.len();
    let text = chosen[n.saturating_sub(2)..]
        .iter()
        .map(|l| l.text.as_str())
        .collect::<Vec<_>>()
        .join(" | ");
    (!text.is_empty()).then_some(text)
}

/// The state of each dependency of `state` (see [`UnitState::requires`]) from the blocks
/// [`parse_show_many`] read; one it did not print is listed with unknown state, not as down.
pub fn evaluate_dependencies(
    state: &UnitState,
    parsed: &[(String, UnitState)],
) -> Vec<DependencyState> {
    let unit_active = matches!(
        state.active_state,
        Some(
            ActiveState::Active
                | ActiveState::Reloading
                | ActiveState::Activating
                | ActiveState::Refreshing
        )
    ) && state.sub_state.as_deref() != Some("auto-restart");
    dependencies_of(state)
        .into_iter()
        .take(MAX_DEPENDENCIES)
        .map(|(name, relation)| {
            let s = parsed.iter().find(|(id, _)| *id == name).map(|(_, s)| s);
            dependency_state(&name, &relation, s, unit_active)
        })
        .collect()
}

/// `unit_restarts` → `unit.restarts`, `journal_errors` → `unit.journal_errors`.
pub fn catalog_key(fact_key: &str) -> String {
    match fact_key.strip_prefix("unit_") {
        Some(rest) => format!("unit.{rest}"),
        None => format!("unit.{fact_key}"),
    }
}

/// `postgresql.service (failed, exit-code)`.
fn describe_dependency(d: &DependencyState) -> String {
    let mut parts: Vec<&str> = Vec::new();
    match d.load_state.as_deref() {
        Some("loaded") | None => {}
        Some(l) => parts.push(l),
    }
    if let Some(a) = d.active_state.as_deref() {
        parts.push(a);
    }
    if let Some(r) = d.result.as_deref().filter(|r| *r != "success") {
        parts.push(r);
    }
    if parts.is_empty() {
        d.unit.clone()
    } else {
        format!("{} ({})", d.unit, parts.join(", "))
    }
}

/// A state enum as systemd spells it (`start-limit-hit`), through its serde name.
fn kebab<T: Serialize>(v: &T) -> String {
    match serde_json::to_value(v) {
        Ok(serde_json::Value::String(s)) => s,
        Ok(serde_json::Value::Object(m)) => m
            .into_iter()
            .next()
            .and_then(|(_, v)| v.as_str().map(str::to_owned))
            .unwrap_or_default(),
        _ => String::new(),
    }
}

/// Where `systemctl` and `journalctl` are; by default found on `$PATH`. Tests point these at
/// fake programs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Programs {
    pub systemctl: PathBuf,
    pub journalctl: PathBuf,
}

impl Default for Programs {
    fn default() -> Self {
        Self {
            systemctl: PathBuf::from("systemctl"),
            journalctl: PathBuf::from("journalctl"),
        }
    }
}

/// Reads a unit's evidence from systemd. Blocking: call it from a blocking thread.
#[derive(Debug, Clone, Default)]
pub struct UnitStateReader {
    pub programs: Programs,
    pub limits: Limits,
}

impl UnitStateReader {
    /// Reads `unit`'s state, then its systemd journal from `since` (pulled back far enough to
    /// cover the start-limit interval, up to `limits.max_start_limit_lookback`). `now` is the
    /// collection time recorded and measured against (`Utc::now()`, or a fixed time in tests).
    /// Never fails as a whole: each part carries its own error. Takes at most twice
    /// `limits.timeout`.
    pub fn read(&self, unit: &UnitName, since: DateTime<Utc>, now: DateTime<Utc>) -> UnitEvidence {
        let show = self.read_show(unit);
        let lookback = show
            .as_ref()
            .ok()
            .and_then(|r| match r.state.start_limit_interval {
                Some(Limit::Max(i)) => Some(i.min(self.limits.max_start_limit_lookback)),
                _ => None,
            })
            .and_then(|i| TimeDelta::from_std(i).ok());
        let since = match lookback {
            Some(l) => since.min(now - l - TimeDelta::seconds(1)),
            None => since,
        };
        let journal = self.read_journal(unit, since);
        let start_limit = StartLimitCheck::assess(
            show.as_ref().ok().map(|r| &r.state),
            journal.as_ref().ok().map(|r| &r.summary),
            now,
        );
        let dependencies = show
            .as_ref()
            .ok()
            .and_then(|r| self.read_dependencies(unit, &r.state));
        UnitEvidence {
            unit: unit.clone(),
            collected_at: now,
            show,
            journal,
            start_limit,
            dependencies,
        }
    }

    /// `systemctl show` of the units `state` `Requires=` or is `BindsTo=` (at most
    /// [`MAX_DEPENDENCIES`], in one command); `None` when it has none.
    pub fn read_dependencies(
        &self,
        unit: &UnitName,
        state: &UnitState,
    ) -> Option<Result<DependencyReading, UnitStateError>> {
        let all = dependencies_of(state);
        if all.is_empty() {
            return None;
        }
        let left_out = all.len().saturating_sub(MAX_DEPENDENCIES);
        let wanted = &all[..all.len() - left_out];
        let names: Vec<String> = wanted.iter().map(|(n, _)| n.clone()).collect();
        let command = dependency_command(&self.programs.systemctl, &names);
        let result = self
            .show_parsed(&command, unit, parse_show_many)
            .map(|parsed| DependencyReading {
                states: evaluate_dependencies(state, &parsed),
                command: command.clone(),
                left_out,
            });
        Some(result)
    }

    /// `systemctl show` for `unit`, parsed.
    pub fn read_show(&self, unit: &UnitName) -> Result<ShowReading, UnitStateError> {
        let command = show_command(&self.programs.systemctl, unit);
        let state = self.show_parsed(&command, unit, parse_show)?;
        Ok(ShowReading { command, state })
    }

    /// Runs a `systemctl show` `command` (about `unit`) within the time and byte bounds and
    /// parses its output with `parse`; output over the bound or unparsable is an error naming
    /// the command and the line.
    fn show_parsed<T>(
        &self,
        command: &Command,
        unit: &UnitName,
        parse: impl FnOnce(&str) -> Result<T, LineError>,
    ) -> Result<T, UnitStateError> {
        let out = run(
            command,
            unit,
            self.limits.timeout,
            self.limits.max_show_bytes,
        )?;
        let text = String::from_utf8_lossy(&out.stdout);
        let unparsable = |line: usize, message: String| UnitStateError::Unparsable {
            unit: unit.clone(),
            command: command.display(),
            line,
            message,
        };
        if out.truncated {
            return Err(unparsable(
                text.lines().count(),
                format!("more than {} bytes of output", self.limits.max_show_bytes),
            ));
        }
        parse(&text).map_err(|e| unparsable(e.line, e.message))
    }

    /// `journalctl` for `unit` since `since`, summarized.
    pub fn read_journal(
        &self,
        unit: &UnitName,
        since: DateTime<Utc>,
    ) -> Result<JournalReading, UnitStateError> {
        let command = journal_command(
            &self.programs.journalctl,
            unit,
            since,
            self.limits.journal_max_entries,
        );
        let out = run(
            &command,
            unit,
            self.limits.timeout,
            self.limits.journal_max_bytes,
        )?;
        let mut stdout = out.stdout.as_slice();
        if out.truncated {
            // The last line may be cut anywhere: keep complete lines only.
            let end = stdout
                .iter()
                .rposition(|b| *b == b'\n')
                .map_or(0, |i| i + 1);
            stdout = &stdout[..end];
        }
        let text = String::from_utf8_lossy(stdout);
        let mut summary = summarize_journal(text.lines(), since, &self.limits);
        summary.truncated = if out.truncated {
            Truncation::Bytes
        } else if summary.entries >= self.limits.journal_max_entries {
            Truncation::Entries
        } else {
            Truncation::None
        };
        if let Some(hint) = limited_access_hint(&out.stderr) {
            summary.access = JournalAccess::Limited(hint);
        }
        Ok(JournalReading { command, summary })
    }
}

/// journalctl's words when it shows only the caller's own entries.
fn limited_access_hint(stderr: &str) -> Option<String> {
    let limited = stderr.contains("insufficient permissions")
        || stderr.contains("not seeing messages from other users")
        || stderr.contains("No journal files were opened");
    limited.then(|| excerpt(stderr, 300))
}

/// What a bounded run produced.
#[derive(Debug)]
struct Output {
    stdout: Vec<u8>,
    /// stdout reached the byte bound (the child was killed).
    truncated: bool,
    stderr: String,
}

/// Linux's "text file busy".
const ETXTBSY: i32 = 26;

/// How much of stderr is kept.
const STDERR_KEEP: usize = 4096;

/// Runs `command` without a shell, stdin closed, killing the child (by its pid) when it runs
/// past `timeout` or writes more than `max_stdout` bytes.
fn run(
    command: &Command,
    unit: &UnitName,
    timeout: Duration,
    max_stdout: usize,
) -> Result<Output, UnitStateError> {
    let display = command.display();
    let mut cmd = ProcessCommand::new(&command.program);
    cmd.args(&command.args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in &command.env {
        cmd.env(k, v);
    }
    // ETXTBSY: the program file is still open for writing somewhere (a package upgrade
    // replacing it, or a test that just wrote it while another thread forked); it clears fast.
    let mut spawned = cmd.spawn();
    for _ in 0..5 {
        match &spawned {
            Err(e) if e.raw_os_error() == Some(ETXTBSY) => {
                std::thread::sleep(Duration::from_millis(20));
                spawned = cmd.spawn();
            }
            _ => break,
        }
    }
    let mut child = spawned.map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            UnitStateError::NotInstalled {
                unit: unit.clone(),
                command: display.clone(),
                program: command.program.clone(),
            }
        } else {
            UnitStateError::Spawn {
                unit: unit.clone(),
                command: display.clone(),
                message: e.to_string(),
            }
        }
    })?;
    let pid = child.id();
    // Drain both pipes on threads so a chatty child never blocks on a full pipe; the stdout
    // reader stops at the bound and says so, and the loop below then kills the child. The
    // readers hand their bytes over a channel, so that a pipe some grandchild keeps open
    // cannot hold us past the deadline either.
    let over = Arc::new(AtomicBool::new(false));
    let mut stdout = child.stdout.take().expect("piped");
    let mut stderr = child.stderr.take().expect("piped");
    let over_r = Arc::clone(&over);
    let (out_tx, out_rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = (&mut stdout)
            .take(max_stdout as u64 + 1)
            .read_to_end(&mut buf);
        if buf.len() > max_stdout {
            buf.truncate(max_stdout);
            over_r.store(true, Ordering::SeqCst);
        }
        let _ = out_tx.send(buf);
    });
    let (err_tx, err_rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = (&mut stderr).take(STDERR_KEEP as u64).read_to_end(&mut buf);
        // Keep draining (and discarding) so the child cannot block on stderr.
        let _ = std::io::copy(&mut stderr, &mut std::io::sink());
        let _ = err_tx.send(String::from_utf8_lossy(&buf).into_owned());
    });
    let deadline = Instant::now() + timeout;
    let timed_out = || UnitStateError::TimedOut {
        unit: unit.clone(),
        command: display.clone(),
        timeout_ms: u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX),
        pid,
    };
    let mut poll = Duration::from_millis(1);
    let status = loop {
        if over.load(Ordering::SeqCst) {
            let _ = child.kill();
            let _ = child.wait();
            let stdout = out_rx
                .recv_timeout(deadline.saturating_duration_since(Instant::now()))
                .map_err(|_| timed_out())?;
            return Ok(Output {
                stdout,
                truncated: true,
                stderr: String::new(),
            });
        }
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if Instant::now() >= deadline => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(timed_out());
            }
            Ok(None) => {
                std::thread::sleep(poll.min(deadline.saturating_duration_since(Instant::now())));
                poll = (poll * 2).min(Duration::from_millis(25));
            }
            Err(e) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(UnitStateError::Spawn {
                    unit: unit.clone(),
                    command: display,
                    message: format!("cannot wait for pid {pid}: {e}"),
                });
            }
        }
    };
    // The child has exited; its output is complete once the pipes close, which a grandchild
    // holding them could delay: that, too, ends at the deadline.
    let stdout = out_rx
        .recv_timeout(deadline.saturating_duration_since(Instant::now()))
        .map_err(|_| timed_out())?;
    let stderr = err_rx
        .recv_timeout(deadline.saturating_duration_since(Instant::now()))
        .unwrap_or_default();
    let truncated = over.load(Ordering::SeqCst);
    if status.success() || truncated {
        return Ok(Output {
            stdout,
            truncated,
            stderr,
        });
    }
    // Not "Failed to connect to bus" alone: a sandbox that blocks the bus says that too.
    if stderr.contains("has not been booted with systemd") {
        return Err(UnitStateError::SystemdNotRunning {
            unit: unit.clone(),
            command: display,
            stderr: excerpt(&stderr, 300),
        });
    }
    use std::os::unix::process::ExitStatusExt;
    let status = match (status.code(), status.signal()) {
        (Some(c), _) => format!("exit status {c}"),
        (None, Some(s)) => format!("signal {s}"),
        (None, None) => status.to_string(),
    };
    Err(UnitStateError::Failed {
        unit: unit.clone(),
        command: display,
        status,
        stderr: excerpt(&stderr, 300),
    })
}

#[cfg(test)]
mod tests {
    use proptest::strategy::Strategy;

    use super::*;

    macro_rules! fixture {
        ($name:literal) => {
            include_str!(concat!("../tests/systemd/", $name))
        };
    }

    fn t(s: &str) -> DateTime<Utc> {
        s.parse().unwrap()
    }

    fn unit(s: &str) -> UnitName {
        UnitName::parse(s).unwrap()
    }

    #[test]
    fn running_unit_parses_into_typed_state() {
        let s = parse_show(fixture!("show-myapp-running.txt")).unwrap();
        assert_eq!(s.load_state, Some(LoadState::Loaded));
        assert_eq!(s.active_state, Some(ActiveState::Active));
        assert_eq!(s.sub_state.as_deref(), Some("running"));
        assert_eq!(s.result, Some(ServiceResult::Success));
        assert_eq!(s.restarts, Some(2));
        assert_eq!(s.main_pid, Some(4400));
        assert_eq!(s.main_exit, Some(MainExit::NotExited));
        assert_eq!(s.main_started_at, Some(t("2026-12-02T03:00:02Z")));
        assert_eq!(s.main_exited_at, None);
        assert_eq!(s.active_since, Some(t("2026-12-02T03:00:02.25Z")));
        assert_eq!(s.memory_current, Some(503_316_480));
        assert_eq!(s.memory_peak, Some(536_866_816));
        assert_eq!(s.memory_max, Some(Limit::Max(536_870_912)));
        assert!((s.memory_ratio().unwrap() - 0.9375).abs() < 1e-9);
        assert_eq!(s.cpu_usage, Some(Duration::from_nanos(12_345_678_901)));
        assert_eq!(s.tasks_current, Some(17));
        assert_eq!(s.tasks_max, Some(Limit::Unlimited));
        assert_eq!(s.start_limit_burst, Some(3));
        assert_eq!(
            s.start_limit_interval,
            Some(Limit::Max(Duration::from_secs(90)))
        );
        assert_eq!(
            s.invocation_id.as_deref(),
            Some("0b6e3f1c9d2a4e5f8a7b6c5d4e3f2a1b")
        );
        assert_eq!(
            s.requires,
            ["system.slice", "postgresql.service", "sysinit.target"]
        );
        assert_eq!(s.binds_to, ["postgresql.service"]);
        assert!(s.missing.is_empty(), "{:?}", s.missing);
        assert_eq!(s.last_start(), Some(t("2026-12-02T03:00:02Z")));
    }

    #[test]
    fn failed_unit_after_its_start_limit() {
        let s = parse_show(fixture!("show-nginx-start-limit-hit.txt")).unwrap();
        assert_eq!(s.active_state, Some(ActiveState::Failed));
        assert_eq!(s.result, Some(ServiceResult::StartLimitHit));
        assert_eq!(s.restarts, Some(5));
        assert_eq!(s.main_exit, Some(MainExit::Exited { status: 1 }));
        assert_eq!(s.main_pid, None, "MainPID=0 means none");
        assert_eq!(s.memory_current, None);
        assert_eq!(s.memory_peak, None);
        assert_eq!(s.cpu_usage, None);
        assert_eq!(s.tasks_current, None);
        assert_eq!(s.memory_max, Some(Limit::Unlimited));
        assert_eq!(s.memory_ratio(), None);
        assert_eq!(s.tasks_max, Some(Limit::Max(4915)));
        assert_eq!(s.invocation_id, None);
        assert!(s.binds_to.is_empty());
        assert_eq!(
            StartLimitCheck::assess(Some(&s), None, t("2026-12-02T03:00:05Z")),
            StartLimitCheck::Hit
        );
    }

    #[test]
    fn unknown_and_unlimited_values_are_never_huge_numbers() {
        // Older systemd prints UINT64_MAX raw for unset counters and limits, and has no
        // MemoryPeak at all.
        let s = parse_show(fixture!("show-legacy-uint64-max.txt")).unwrap();
        assert_eq!(s.memory_current, None);
        assert_eq!(s.cpu_usage, None);
        assert_eq!(s.tasks_current, None);
        assert_eq!(s.memory_max, Some(Limit::Unlimited));
        assert_eq!(s.tasks_max, Some(Limit::Unlimited));
        assert_eq!(s.start_limit_interval, Some(Limit::Unlimited));
        assert_eq!(s.missing, ["MemoryPeak"]);
        assert_eq!(s.main_exit, Some(MainExit::Killed { signal: 9 }));
        assert_eq!(s.result, Some(ServiceResult::Signal));
        assert_eq!(
            StartLimitCheck::assess(Some(&s), None, t("2026-12-02T00:00:00Z")),
            StartLimitCheck::Disabled
        );
        for (value, want) in [
            ("", None),
            ("[not set]", None),
            ("[no data]", None),
            ("18446744073709551615", None),
            ("0", Some(0)),
            ("  42 ", Some(42)),
        ] {
            assert_eq!(reading(value), Ok(want), "{value:?}");
        }
        assert_eq!(limit("infinity"), Ok(Some(Limit::Unlimited)));
        assert_eq!(limit("[not set]"), Ok(None));
        assert_eq!(count("4294967295"), Ok(None));
        assert!(reading("-1").is_err());
        assert!(reading("1e9").is_err());
    }

    #[test]
    fn a_unit_that_does_not_exist_is_a_load_state_not_an_error() {
        let s = parse_show(fixture!("show-not-found.txt")).unwrap();
        assert_eq!(s.load_state, Some(LoadState::NotFound));
        assert_eq!(s.active_state, Some(ActiveState::Inactive));
        assert_eq!(s.main_exit, Some(MainExit::NotExited));
        assert_eq!(s.last_start(), None);
        assert_eq!(s.active_since, None);
    }

    #[test]
    fn show_structure_errors_name_the_line_and_the_property() {
        let e = parse_show("ActiveState=active\nno equals sign here\n").unwrap_err();
        assert_eq!(e.line, 2);
        assert!(e.message.contains("not Key=value"), "{}", e.message);
        let e = parse_show("NRestarts=1\nNRestarts=2\n").unwrap_err();
        assert!(e.message.contains("appears twice"), "{}", e.message);
        let e = parse_show("MemoryCurrent=lots\n").unwrap_err();
        assert!(
            e.message.contains("MemoryCurrent") && e.message.contains("byte count"),
            "{}",
            e.message
        );
        let e = parse_show("ActiveEnterTimestamp=Wed 2026-12-02 04:00:00 CET\n").unwrap_err();
        assert!(e.message.contains("UTC timestamp"), "{}", e.message);
        assert!(parse_show("ActiveState=Active; reboot\n").is_err());
        assert!(parse_show("InvocationID=zz\n").is_err());
        // Properties not asked for are ignored; asked-for ones not printed are listed.
        let s = parse_show("Id=x.service\nActiveState=active\n\n").unwrap();
        assert_eq!(s.active_state, Some(ActiveState::Active));
        assert_eq!(s.missing.len(), SHOW_PROPERTIES.len() - 1);
        // Unknown but well-formed states are kept, not refused.
        let s = parse_show("ActiveState=frobnicating\nResult=new-result\n").unwrap();
        assert_eq!(
            s.active_state,
            Some(ActiveState::Other("frobnicating".into()))
        );
        assert_eq!(s.result, Some(ServiceResult::Other("new-result".into())));
    }

    #[test]
    fn timestamps_and_timespans_as_systemctl_prints_them() {
        assert_eq!(
            timestamp("Wed 2026-12-02 03:00:00 UTC"),
            Ok(Some(t("2026-12-02T03:00:00Z")))
        );
        assert_eq!(
            timestamp("Wed 2026-12-02 03:00:00.123456 UTC"),
            Ok(Some(t("2026-12-02T03:00:00.123456Z")))
        );
        assert_eq!(
            timestamp("@1796180400"),
            Ok(Some(t("2026-12-02T03:00:00Z")))
        );
        assert_eq!(timestamp(""), Ok(None));
        assert_eq!(timestamp("n/a"), Ok(None));
        assert!(timestamp("2026-12-02 03:00:00").is_err());
        let span = |s| parse_timespan(s);
        assert_eq!(span("10s"), Ok(Some(Duration::from_secs(10))));
        assert_eq!(span("1min 30s"), Ok(Some(Duration::from_secs(90))));
        assert_eq!(span("2h 5ms"), Ok(Some(Duration::from_millis(7_200_005))));
        assert_eq!(span("100ms"), Ok(Some(Duration::from_millis(100))));
        assert_eq!(span("infinity"), Ok(None));
        assert_eq!(span("0"), Ok(None));
        assert!(span("").is_err());
        assert!(span("10 parsecs").is_err());
    }

    fn nginx_journal(limits: &Limits) -> JournalSummary {
        summarize_journal(
            fixture!("journal-nginx-crash-loop.json").lines(),
            t("2026-12-02T03:00:00Z"),
            limits,
        )
    }

    #[test]
    fn crash_loop_journal_counts_priorities_starts_and_last_errors() {
        let j = nginx_journal(&Limits::default());
        assert_eq!(j.entries, 39);
        assert_eq!(j.by_priority, [0, 0, 0, 16, 7, 5, 11, 0]);
        assert_eq!(j.errors(), 16);
        assert_eq!(j.without_priority, 0);
        assert_eq!(j.skipped_lines, 0);
        assert_eq!(j.oom_kills.count, 0);
        assert_eq!(j.core_dumps.count, 0);
        assert_eq!(j.starts.len(), 5, "{:?}", j.starts);
        assert!(j.starts.windows(2).all(|w| w[0] > w[1]), "newest first");
        assert_eq!(j.oldest, Some(t("2026-12-02T03:00:00Z")));
        // The newest 10 of the 16 error lines, oldest first.
        assert_eq!(j.last_errors.len(), 10);
        assert!(j.last_errors.windows(2).all(|w| w[0].at <= w[1].at));
        let last = j.last_errors.last().unwrap();
        assert_eq!(last.priority, Some(3));
        assert_eq!(last.source.as_deref(), Some("systemd"));
        assert!(
            last.text.starts_with("Failed to start nginx.service"),
            "{}",
            last.text
        );
        assert!(
            j.last_errors
                .iter()
                .any(|l| l.source.as_deref() == Some("nginx")
                    && l.text.contains("unknown directive \"worker_connectionz\"")),
            "{:?}",
            j.last_errors
        );
    }

    #[test]
    fn oom_kills_and_core_dumps_are_found_and_binary_messages_read() {
        let j = summarize_journal(
            fixture!("journal-myapp-oom-coredump.json").lines(),
            t("2026-12-02T03:00:00Z"),
            &Limits::default(),
        );
        // The kernel's own OOM line is not in `journalctl -u` output (it belongs to no unit):
        // systemd's line about the unit is what says it.
        assert_eq!(j.entries, 14);
        assert_eq!(j.by_priority, [0, 0, 2, 2, 4, 2, 4, 0]);
        assert_eq!(
            j.oom_kills.count, 2,
            "systemd's OOM line and Result=oom-kill"
        );
        assert!(
            j.oom_kills
                .last
                .as_ref()
                .unwrap()
                .text
                .contains("'oom-kill'")
        );
        assert_eq!(j.core_dumps.count, 3);
        let errors: Vec<&str> = j.last_errors.iter().map(|l| l.text.as_str()).collect();
        assert_eq!(errors.len(), 4, "{errors:?}");
        // Binary MESSAGE (an array of bytes): invalid UTF-8 and escape sequences replaced.
        assert_eq!(
            errors[0],
            "bad frame: \u{FFFD}\u{FFFD}\u{FFFD}[31mred\u{FFFD}[0m end"
        );
        // A 5000-character message is cut to the bound.
        assert_eq!(errors[1].chars().count(), 300);
        assert!(j.last_errors[1].truncated);
        assert_eq!(errors[2], "assertion failed: index < len");
        // systemd-coredump's message is multi-line: its first line, marked as cut.
        assert_eq!(errors[3], "Process 4400 (myapp) of user 998 dumped core.");
        assert!(j.last_errors[3].truncated);
        // `_COMM`, which the kernel cuts to 15 bytes.
        assert_eq!(j.last_errors[3].source.as_deref(), Some("systemd-coredum"));
    }

    #[test]
    fn messages_too_large_without_all_are_said_so() {
        let j = summarize_journal(
            fixture!("journal-myapp-without-all.json").lines(),
            t("2026-12-02T03:00:00Z"),
            &Limits::default(),
        );
        assert_eq!(j.entries, 14);
        assert!(
            j.last_errors
                .iter()
                .any(|l| l.text == "[message too large to print]" && l.truncated),
            "{:?}",
            j.last_errors
        );
    }

    #[test]
    fn journal_field_forms() {
        let e = parse_journal_line(r#"{"MESSAGE":"plain","PRIORITY":"3","__REALTIME_TIMESTAMP":"1796180400000001","_PID":"1","UNIT":"a.service"}"#).unwrap();
        assert_eq!(e.message, Message::Text("plain".into()));
        assert_eq!(e.priority, Some(3));
        assert_eq!(e.at, Some(t("2026-12-02T03:00:00.000001Z")));
        assert!(e.from_pid1);
        assert_eq!(e.about_unit.as_deref(), Some("a.service"));
        let e = parse_journal_line(r#"{"MESSAGE":[104,105,10,0],"PRIORITY":"9"}"#).unwrap();
        assert_eq!(e.message, Message::Binary(b"hi\n\0".to_vec()));
        assert_eq!(e.priority, None, "9 is no syslog priority");
        let e = parse_journal_line(r#"{"MESSAGE":null}"#).unwrap();
        assert_eq!(e.message, Message::TooLarge);
        // A field set twice in one entry is an array of its values.
        let e = parse_journal_line(r#"{"MESSAGE":["first","second"],"_COMM":"app"}"#).unwrap();
        assert_eq!(e.message, Message::Text("first".into()));
        assert_eq!(e.source.as_deref(), Some("app"));
        let e = parse_journal_line(r#"{"MESSAGE":[[255,1],"x"]}"#).unwrap();
        assert_eq!(e.message, Message::Binary(vec![255, 1]));
        assert_eq!(parse_journal_line("{}").unwrap().message, Message::Missing);
        assert!(parse_journal_line("-- No entries --").is_err());
        assert!(parse_journal_line("[1,2]").is_err());

        let j = summarize_journal(
            [
                r#"{"MESSAGE":"no priority"}"#,
                "-- No entries --",
                "",
                r#"{"MESSAGE":"x","PRIORITY":"7"}"#,
            ],
            t("2026-12-02T03:00:00Z"),
            &Limits::default(),
        );
        assert_eq!(j.entries, 2);
        assert_eq!(j.without_priority, 1);
        assert_eq!(j.by_priority[7], 1);
        assert_eq!(j.skipped_lines, 1);
        assert!(
            j.first_skip
                .as_deref()
                .unwrap()
                .starts_with("line 2: not JSON")
        );
    }

    #[test]
    fn a_service_cannot_forge_oom_kills_core_dumps_or_starts() {
        // What a service in the unit can send (sd_journal_send lets it set MESSAGE_ID and
        // UNIT_RESULT); journald adds its real _PID and _UID.
        let forged = [
            r#"{"_PID":"4311","_UID":"998","_SYSTEMD_UNIT":"myapp.service","PRIORITY":"4","MESSAGE_ID":"fe6faa94e7774663a0da52717891d8ef","MESSAGE":"myapp.service: A process of this unit has been killed by the OOM killer."}"#,
            r#"{"_PID":"4311","_UID":"998","_SYSTEMD_UNIT":"myapp.service","PRIORITY":"3","MESSAGE":"Out of memory: Killed process 1 (init)"}"#,
            r#"{"_PID":"4311","_UID":"998","_SYSTEMD_UNIT":"myapp.service","PRIORITY":"2","MESSAGE_ID":"fc2e22bc6ee647b6b90729ab34a250b1","COREDUMP_UNIT":"myapp.service","MESSAGE":"Process 4311 (myapp) of user 998 dumped core."}"#,
            r#"{"_PID":"4311","_UID":"998","_SYSTEMD_UNIT":"myapp.service","PRIORITY":"4","UNIT_RESULT":"oom-kill","MESSAGE":"myapp.service: Failed with result 'oom-kill'. code=dumped"}"#,
            r#"{"_PID":"4311","_UID":"998","_SYSTEMD_UNIT":"myapp.service","PRIORITY":"6","MESSAGE_ID":"7d4958e842da4a758f6c1cdc7b36dcc5","__REALTIME_TIMESTAMP":"1796180401000000","MESSAGE":"Starting myapp.service..."}"#,
        ];
        let j = summarize_journal(forged, t("2026-12-02T03:00:00Z"), &Limits::default());
        assert_eq!(j.entries, 5);
        assert_eq!(j.oom_kills.count, 0);
        assert_eq!(j.core_dumps.count, 0);
        assert!(j.starts.is_empty());
        // The same words from the kernel do count.
        let kernel = r#"{"_TRANSPORT":"kernel","PRIORITY":"3","MESSAGE":"Memory cgroup out of memory: Killed process 4311 (myapp) total-vm:2097152kB"}"#;
        let j = summarize_journal([kernel], t("2026-12-02T03:00:00Z"), &Limits::default());
        assert_eq!(j.oom_kills.count, 1);
    }

    #[test]
    fn excerpt_bounds_hold() {
        let limits = Limits {
            excerpt_lines: 3,
            excerpt_line_chars: 20,
            ..Limits::default()
        };
        let j = nginx_journal(&limits);
        assert_eq!(j.last_errors.len(), 3);
        for l in &j.last_errors {
            assert!(l.text.chars().count() <= 20, "{l:?}");
            assert!(l.truncated);
            assert!(!l.text.chars().any(char::is_control));
        }
        let none = nginx_journal(&Limits {
            excerpt_lines: 0,
            ..Limits::default()
        });
        assert!(none.last_errors.is_empty());
        assert_eq!(none.errors(), 16, "counts do not depend on the excerpt");
        assert_eq!(
            bounded("a\tb\u{1b}c\u{2028}", 10),
            ("a b\u{FFFD}c\u{FFFD}".into(), false)
        );
        assert_eq!(bounded("ééé", 2), ("éé".into(), true));
    }

    fn state_with_limit(burst: u32, interval: Duration) -> UnitState {
        let mut s = parse_show(fixture!("show-myapp-running.txt")).unwrap();
        s.start_limit_burst = Some(burst);
        s.start_limit_interval = Some(Limit::Max(interval));
        s
    }

    #[test]
    fn start_limit_counts_the_starts_within_the_interval() {
        let j = nginx_journal(&Limits::default());
        // The five starts are at 03:00:01.000, .252, .504, .756 and 03:00:02.008.
        let now = t("2026-12-02T03:00:05Z");
        let check = |burst, secs| {
            StartLimitCheck::assess(
                Some(&state_with_limit(burst, Duration::from_secs(secs))),
                Some(&j),
                now,
            )
        };
        let c = check(10, 5);
        assert_eq!(
            c,
            StartLimitCheck::Counted {
                starts: 5,
                burst: 10,
                interval: Duration::from_secs(5)
            }
        );
        assert_eq!(c.remaining(), Some(5));
        assert!(!c.is_near());
        assert!(check(6, 5).is_near(), "one start left");
        assert_eq!(check(5, 5).remaining(), Some(0), "the next start trips it");
        // Only starts inside the window count.
        let c = check(5, 0);
        assert!(matches!(c, StartLimitCheck::Disabled), "{c:?}");
        let mut s = state_with_limit(5, Duration::from_secs(3));
        let c = StartLimitCheck::assess(Some(&s), Some(&j), now);
        assert_eq!(
            c.remaining(),
            Some(4),
            "only the start at 03:00:02.008: {c:?}"
        );
        // A journal read that starts inside the window cannot count it.
        s.start_limit_interval = Some(Limit::Max(Duration::from_secs(3600)));
        let c = StartLimitCheck::assess(Some(&s), Some(&j), now);
        assert!(matches!(c, StartLimitCheck::Unknown { .. }), "{c:?}");
        let mut limited = j.clone();
        limited.access = JournalAccess::Limited("hint".into());
        let c = StartLimitCheck::assess(
            Some(&state_with_limit(5, Duration::from_secs(5))),
            Some(&limited),
            now,
        );
        assert!(matches!(c, StartLimitCheck::Unknown { .. }), "{c:?}");
        assert!(matches!(
            StartLimitCheck::assess(None, Some(&j), now),
            StartLimitCheck::Unknown { .. }
        ));
    }

    #[test]
    fn hostile_unit_names_never_reach_the_argv() {
        for hostile in [
            "foo; rm -rf /",
            "--help",
            "-H.service",
            "a.service --all",
            "*.service",
        ] {
            assert!(
                UnitName::parse(hostile).is_err(),
                "{hostile:?} was accepted"
            );
        }
        let u = unit("nginx.service");
        let show = show_command(Path::new("systemctl"), &u);
        assert_eq!(show.args[show.args.len() - 2..], ["--", "nginx.service"]);
        assert_eq!(
            show.display(),
            "TZ=UTC LC_ALL=C SYSTEMD_PAGER='' SYSTEMD_COLORS=0 systemctl show --no-pager \
             --property=LoadState,ActiveState,SubState,Result,NRestarts,MainPID,ExecMainCode,\
             ExecMainStatus,ExecMainStartTimestamp,ExecMainExitTimestamp,ActiveEnterTimestamp,\
             MemoryCurrent,MemoryPeak,MemoryMax,CPUUsageNSec,TasksCurrent,TasksMax,\
             StartLimitBurst,StartLimitIntervalUSec,InvocationID,Requires,BindsTo -- nginx.service"
        );
        let j = journal_command(
            Path::new("/usr/bin/journalctl"),
            &u,
            t("2026-12-02T03:00:00.9Z"),
            50,
        );
        assert_eq!(
            j.args,
            [
                "--unit=nginx.service",
                "--since=@1796180400",
                "--output=json",
                "--no-pager",
                "--all",
                "--reverse",
                "--lines=50"
            ]
        );
    }

    #[test]
    fn evidence_round_trips_through_json() {
        let u = unit("nginx.service");
        let state = parse_show(fixture!("show-nginx-start-limit-hit.txt")).unwrap();
        let ev = UnitEvidence {
            unit: u.clone(),
            collected_at: t("2026-12-02T03:00:05Z"),
            start_limit: StartLimitCheck::assess(Some(&state), None, t("2026-12-02T03:00:05Z")),
            dependencies: None,
            show: Ok(ShowReading {
                command: show_command(Path::new("systemctl"), &u),
                state,
            }),
            journal: Err(UnitStateError::TimedOut {
                unit: u,
                command: "journalctl ...".into(),
                timeout_ms: 5000,
                pid: 42,
            }),
        };
        let json = serde_json::to_string(&ev).unwrap();
        let back: UnitEvidence = serde_json::from_str(&json).unwrap();
        assert_eq!(back, ev);
        assert_eq!(ev.since_last_start(), Some(Duration::from_secs(4)));
    }

    #[test]
    fn every_fact_names_its_command_and_field() {
        let u = unit("myapp.service");
        let now = t("2026-12-02T03:00:30Z");
        let state = parse_show(fixture!("show-myapp-running.txt")).unwrap();
        // Read (as `UnitStateReader::read` would) from 91 s back, over the 90 s interval.
        let since = t("2026-12-02T02:58:59Z");
        let journal = summarize_journal(
            fixture!("journal-nginx-crash-loop.json").lines(),
            since,
            &Limits::default(),
        );
        let show = ShowReading {
            command: show_command(Path::new("systemctl"), &u),
            state,
        };
        let journal = JournalReading {
            command: journal_command(Path::new("journalctl"), &u, since, 1000),
            summary: journal,
        };
        let ev = UnitEvidence {
            unit: u,
            collected_at: now,
            start_limit: StartLimitCheck::assess(Some(&show.state), Some(&journal.summary), now),
            dependencies: None,
            show: Ok(show),
            journal: Ok(journal),
        };
        let facts = ev.facts();
        let keys: BTreeSet<&str> = facts.iter().map(|f| f.key).collect();
        assert_eq!(keys.len(), facts.len(), "keys are unique");
        for f in &facts {
            assert!(!f.commands.is_empty(), "{}", f.key);
            assert!(!f.from.is_empty(), "{}", f.key);
            for c in &f.commands {
                assert!(c.display().contains("myapp.service"), "{}", c.display());
            }
        }
        let get = |k: &str| facts.iter().find(|f| f.key == k).unwrap();
        let n = |k: &str| match get(k).value {
            FactValue::Number { value, .. } => value,
            ref other => panic!("{k}: {other:?}"),
        };
        assert_eq!(n("unit_restarts"), 2.0);
        assert_eq!(get("unit_restarts").from, "NRestarts");
        assert!((n("unit_memory_of_max") - 0.9375).abs() < 1e-9);
        assert_eq!(n("unit_since_start"), 28.0);
        assert_eq!(n("journal_errors"), 16.0);
        assert_eq!(
            get("unit_active_state").value,
            FactValue::Text("active".into())
        );
        assert_eq!(
            get("unit_main_exit").value,
            FactValue::Text("not exited".into())
        );
        // Three starts allowed in 90 s, five logged: none left, read from both commands.
        assert_eq!(n("unit_start_limit_remaining"), 0.0);
        assert_eq!(get("unit_start_limit_remaining").commands.len(), 2);

        let legacy = UnitEvidence {
            show: Ok(ShowReading {
                command: show_command(Path::new("systemctl"), &ev.unit),
                state: parse_show(fixture!("show-legacy-uint64-max.txt")).unwrap(),
            }),
            journal: Err(UnitStateError::NotInstalled {
                unit: ev.unit.clone(),
                command: "journalctl".into(),
                program: "journalctl".into(),
            }),
            ..ev.clone()
        };
        let facts = legacy.facts();
        let get = |k: &str| facts.iter().find(|f| f.key == k).map(|f| &f.value);
        assert_eq!(get("unit_memory"), Some(&FactValue::Unknown));
        assert_eq!(get("unit_memory_peak"), Some(&FactValue::Unknown));
        assert_eq!(
            get("unit_memory_max"),
            Some(&FactValue::Text("unlimited".into()))
        );
        assert_eq!(get("unit_result"), Some(&FactValue::Text("signal".into())));
        assert_eq!(
            get("unit_main_exit"),
            Some(&FactValue::Text("signal 9".into()))
        );
        assert_eq!(get("journal_errors"), None, "an unread part gives no facts");
    }

    proptest::proptest! {
        #[test]
        fn show_parser_never_panics(
            lines in proptest::collection::vec(
                (proptest::sample::select(SHOW_PROPERTIES.to_vec()), "\\PC{0,40}"),
                0..30,
            ),
            junk in "\\PC{0,200}",
        ) {
            let text: String = lines.iter().map(|(k, v)| format!("{k}={v}\n")).collect();
            let _ = parse_show(&text);
            let _ = parse_show(&junk);
            let _ = parse_show(&format!("{text}{junk}"));
        }

        #[test]
        fn journal_summary_never_panics_and_its_bounds_hold(
            lines in proptest::collection::vec(
                proptest::prop_oneof![
                    "\\PC{0,120}",
                    ("[0-9]{0,2}", "\\PC{0,600}", proptest::option::of(0u64..4_000_000_000_000_000))
                        .prop_map(|(p, m, t)| serde_json::json!({
                            "PRIORITY": p,
                            "MESSAGE": m,
                            "__REALTIME_TIMESTAMP": t.map(|t| t.to_string()),
                        }).to_string()),
                    proptest::collection::vec(0u16..300, 0..80)
                        .prop_map(|b| serde_json::json!({"PRIORITY": "2", "MESSAGE": b}).to_string()),
                ],
                0..60,
            ),
            excerpt_lines in 0usize..6,
            excerpt_line_chars in 0usize..50,
        ) {
            let limits = Limits { excerpt_lines, excerpt_line_chars, ..Limits::default() };
            let j = summarize_journal(lines.iter().map(String::as_str), t("2026-12-02T03:00:00Z"), &limits);
            proptest::prop_assert!(j.last_errors.len() <= excerpt_lines);
            for l in &j.last_errors {
                proptest::prop_assert!(l.text.chars().count() <= excerpt_line_chars);
                proptest::prop_assert!(!l.text.chars().any(char::is_control));
                proptest::prop_assert!(l.priority.is_some_and(|p| p <= 3));
            }
            let counted: u32 = j.by_priority.iter().sum::<u32>() + j.without_priority;
            proptest::prop_assert_eq!(counted, j.entries);
            proptest::prop_assert_eq!(
                j.entries + j.skipped_lines,
                lines.iter().filter(|l| !l.trim().is_empty()).count() as u32
            );
        }
    }
}
