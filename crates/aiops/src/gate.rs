//! The human gate: `pending`, `show`, `approve`, `reject`, `history`, `audit verify`,
//! `breaker reset` and `policy polkit`.
//!
//! Everything but `audit verify --file` and `policy` goes to the executor inside `aiops-webhook`
//! over its control socket (`webhook.control_socket`); the executor learns who we are from the
//! kernel, so no command takes a user name. The renderers are pure functions of the reply (and
//! a clock) so that their output can be snapshot-tested.

use std::fmt::Write as _;
use std::path::PathBuf;

use aiops_actions::audit::{VerifyReport, head_path_for, verify_file};
use aiops_actions::control::{ClientError, ControlClient, ErrorCode, ReplyData, Request};
use aiops_actions::gate::{Finished, ShowData};
use aiops_actions::{Action, ActionState};
use aiops_core::Config;
use aiops_core::config::ActionKind;
use chrono::{DateTime, Utc};

use crate::exit::{self, Exit};

/// The gate's subcommands (flattened into the top level).
#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// List actions waiting for approval.
    Pending,
    /// Show one action: why it was proposed, and its evidence then and now with the PromQL.
    Show {
        /// The action id (8 hex digits, from `aiops pending`).
        id: String,
    },
    /// Approve an action: re-checks it, runs it, verifies it and prints the outcome.
    ///
    /// Refused if the alert no longer fires or its evidence no longer holds (override with
    /// --force, audited), or if a safety limit applies (cooldown, hourly cap, breaker, systemd's
    /// start limit; these cannot be overridden). You are identified by your login, not by an
    /// argument.
    Approve {
        /// The action id; may be left out when exactly one action is pending.
        id: Option<String>,
        /// Act even though the alert no longer fires or its evidence no longer holds.
        #[arg(long)]
        force: bool,
    },
    /// Reject a pending action, with a reason that is recorded.
    Reject {
        id: String,
        #[arg(long, value_name = "TEXT")]
        reason: String,
    },
    /// Recent actions and their outcomes, newest first.
    History {
        #[arg(long, default_value_t = 20)]
        limit: usize,
    },
    /// The hash-chained audit log.
    #[command(subcommand)]
    Audit(AuditCommand),
    /// The circuit breaker that stops proposing an action after repeated failed verifications.
    #[command(subcommand)]
    Breaker(BreakerCommand),
    /// Confinement policy for the executor's service account.
    #[command(subcommand)]
    Policy(crate::policy::Command),
}

#[derive(Debug, clap::Subcommand)]
pub enum AuditCommand {
    /// Verify the chain (and, with its head file, that nothing was cut off the end).
    Verify {
        /// Verify this file offline instead of asking the daemon (`PATH.head` is used if present).
        #[arg(long, value_name = "PATH")]
        file: Option<PathBuf>,
    },
}

#[derive(Debug, clap::Subcommand)]
pub enum BreakerCommand {
    /// Let aiops propose the action for this alert again.
    Reset {
        /// The alert name, e.g. HighErrorRatio.
        alertname: String,
        #[arg(long, default_value = "restart")]
        action: ActionKind,
    },
}

fn client(config: &Config) -> ControlClient {
    ControlClient::new(
        &config.webhook.control_socket,
        &config.webhook.operators_group,
    )
}

/// Maps a control-socket error to an exit code and a message that says what to do.
pub fn exit_of(err: &ClientError) -> Exit {
    let code = match err {
        ClientError::NoSocket { .. } | ClientError::NotListening { .. } => exit::UNAVAILABLE,
        ClientError::PermissionDenied { .. } => exit::REFUSED,
        ClientError::Io { .. } | ClientError::Protocol(_) => exit::UNAVAILABLE,
        ClientError::Remote { code, .. } => match code {
            ErrorCode::NotFound => exit::NOT_FOUND,
            ErrorCode::Refused | ErrorCode::Unauthorized => exit::REFUSED,
            ErrorCode::BadRequest => exit::USAGE,
            ErrorCode::Internal => exit::FAILURE,
        },
    };
    let message = match err {
        ClientError::Remote {
            message,
            hint: Some(hint),
            ..
        } => format!("{message}\n  hint: {hint}"),
        other => other.to_string(),
    };
    Exit::new(code, message)
}

fn call(
    config: &Config,
    req: &Request,
    on_progress: &mut dyn FnMut(&str),
) -> Result<ReplyData, Exit> {
    client(config)
        .call(req, on_progress)
        .map_err(|e| exit_of(&e))
}

fn print_json<T: serde::Serialize>(v: &T) {
    println!(
        "{}",
        serde_json::to_string_pretty(v).expect("replies always serialize")
    );
}

pub fn run(cmd: Command, config: &Config, json: bool) -> anyhow::Result<()> {
    let now = Utc::now();
    let none = &mut |_: &str| {};
    match cmd {
        Command::Pending => {
            let ReplyData::Actions(list) = call(config, &Request::List { all: false }, none)?
            else {
                anyhow::bail!(unexpected());
            };
            if json {
                print_json(&list);
            } else {
                print!("{}", render_pending(&list, now));
            }
        }
        Command::Show { id } => {
            let ReplyData::Show(show) = call(config, &Request::Show { id }, none)? else {
                anyhow::bail!(unexpected());
            };
            if json {
                print_json(&show);
            } else {
                print!("{}", render_show(&show));
            }
        }
        Command::Approve { id, force } => {
            let mut progress = |m: &str| {
                let line = format!("{}  {m}", Utc::now().format("%H:%M:%S"));
                if json {
                    eprintln!("{line}");
                } else {
                    println!("{line}");
                }
            };
            let ReplyData::Finished(f) =
                call(config, &Request::Approve { id, force }, &mut progress)?
            else {
                anyhow::bail!(unexpected());
            };
            if json {
                print_json(&f);
            } else {
                print!("{}", render_finished(&f));
            }
            if f.action.state == ActionState::Unconfirmed {
                return Err(Exit::new(
                    exit::UNCONFIRMED,
                    format!("action {}: {}", f.action.id, f.summary),
                )
                .into());
            }
            if !f.fixed {
                return Err(Exit::new(
                    exit::NOT_FIXED,
                    format!("action {}: {}", f.action.id, f.summary),
                )
                .into());
            }
        }
        Command::Reject { id, reason } => {
            let ReplyData::Rejected(a) = call(config, &Request::Reject { id, reason }, none)?
            else {
                anyhow::bail!(unexpected());
            };
            if json {
                print_json(&a);
            } else {
                println!(
                    "rejected action {}: {} {} for {}",
                    a.id, a.kind, a.unit, a.alert.alertname
                );
            }
        }
        Command::History { limit } => {
            let ReplyData::Actions(list) = call(config, &Request::History { limit }, none)? else {
                anyhow::bail!(unexpected());
            };
            if json {
                print_json(&list);
            } else {
                print!("{}", render_history(&list));
            }
        }
        Command::Audit(AuditCommand::Verify { file }) => {
            let report = match file {
                Some(path) => {
                    let head = head_path_for(&path);
                    verify_file(&path, head.exists().then_some(head.as_path()))
                }
                None => match call(config, &Request::AuditVerify, none)? {
                    ReplyData::AuditVerify(r) => r,
                    _ => anyhow::bail!(unexpected()),
                },
            };
            if json {
                print_json(&report);
            } else {
                print!("{}", render_verify(&report));
            }
            if !report.ok {
                return Err(Exit::new(
                    exit::FAILURE,
                    format!(
                        "the audit log {} does not verify: {}",
                        report.file.display(),
                        report.message
                    ),
                )
                .into());
            }
        }
        Command::Breaker(BreakerCommand::Reset { alertname, action }) => {
            let ReplyData::BreakerReset { changed } = call(
                config,
                &Request::BreakerReset {
                    alertname: alertname.clone(),
                    action,
                },
                none,
            )?
            else {
                anyhow::bail!(unexpected());
            };
            if json {
                print_json(&serde_json::json!({ "changed": changed }));
            } else if changed {
                println!("breaker for {action} on {alertname} reset: aiops will propose it again");
            } else {
                println!("the breaker for {action} on {alertname} was not open; nothing changed");
            }
        }
        Command::Policy(cmd) => crate::policy::run(&cmd, config)?,
    }
    Ok(())
}

fn unexpected() -> Exit {
    Exit::new(
        exit::UNAVAILABLE,
        "aiops-webhook answered with an unexpected kind of reply; are aiops and aiops-webhook the same version?",
    )
}

fn hms(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%d %H:%M:%S UTC").to_string()
}

/// `45s`, `12m`, `3h`, `2d`.
fn span(secs: i64) -> String {
    let s = secs.max(0);
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m", s / 60),
        3600..86_400 => format!("{}h", s / 3600),
        _ => format!("{}d", s / 86_400),
    }
}

/// Left-aligned columns, two spaces apart.
fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            widths[i] = widths[i].max(c.chars().count());
        }
    }
    let mut out = String::new();
    let line = |cells: Vec<String>, out: &mut String| {
        let n = cells.len();
        let mut s = String::new();
        for (i, c) in cells.into_iter().enumerate() {
            if i + 1 == n {
                s.push_str(&c);
            } else {
                let pad = widths[i] - c.chars().count();
                s.push_str(&c);
                s.push_str(&" ".repeat(pad + 2));
            }
        }
        out.push_str(s.trim_end());
        out.push('\n');
    };
    line(header.iter().map(|h| (*h).to_owned()).collect(), &mut out);
    for r in rows {
        line(r.clone(), &mut out);
    }
    out
}

/// `aiops pending`.
pub fn render_pending(list: &[Action], now: DateTime<Utc>) -> String {
    if list.is_empty() {
        return "nothing is pending approval\n".into();
    }
    let rows: Vec<Vec<String>> = list
        .iter()
        .map(|a| {
            vec![
                a.id.to_string(),
                a.alert.alertname.clone(),
                a.kind.to_string(),
                a.unit.to_string(),
                span((now - a.created_at).num_seconds()),
                span((a.expires_at - now).num_seconds()),
                a.seen_count.to_string(),
            ]
        })
        .collect();
    let mut out = table(
        &["ID", "ALERT", "ACTION", "UNIT", "AGE", "EXPIRES IN", "SEEN"],
        &rows,
    );
    out.push('\n');
    if let [one] = list {
        let _ = writeln!(
            out,
            "approve with: aiops approve {}    details: aiops show {}",
            one.id, one.id
        );
    } else {
        out.push_str("approve with: aiops approve ID    details: aiops show ID\n");
    }
    out
}

fn wrap(text: &str, width: usize, indent: &str) -> String {
    let mut out = String::new();
    for para in text.split('\n') {
        let mut line = String::new();
        for word in para.split_whitespace() {
            if !line.is_empty() && line.len() + 1 + word.len() > width {
                let _ = writeln!(out, "{indent}{line}");
                line.clear();
            }
            if !line.is_empty() {
                line.push(' ');
            }
            line.push_str(word);
        }
        let _ = writeln!(out, "{indent}{line}");
    }
    out
}

fn actor_of(a: &Action, s: ActionState) -> Option<String> {
    a.entered(s).map(|t| t.by.to_string())
}

/// `aiops show ID`.
pub fn render_show(s: &ShowData) -> String {
    let a = &s.action;
    let mut out = String::new();
    let _ = writeln!(out, "action {}: {} {} ({})", a.id, a.kind, a.unit, a.state);
    let _ = writeln!(
        out,
        "alert:     {} firing since {}; seen {} time(s), last {}",
        a.alert.alertname,
        hms(a.alert.starts_at),
        a.seen_count,
        hms(a.last_seen)
    );
    let _ = writeln!(
        out,
        "proposed:  {}; expires {}",
        hms(a.created_at),
        hms(a.expires_at)
    );
    if let aiops_core::model::Recommendation::Act {
        risk, confidence, ..
    } = &a.diagnosis.recommendation
    {
        let st = s.outcome_stats;
        let _ = writeln!(
            out,
            "risk:      {}, confidence {:.0}% (before, for this alert: {} fixed, {} not fixed)",
            risk.as_str(),
            confidence * 100.0,
            st.succeeded,
            st.failed
        );
    }
    out.push_str("\nwhy:\n");
    out.push_str(&wrap(&a.diagnosis.explanation, 92, "  "));
    if !a.diagnosis.hypotheses.is_empty() {
        out.push_str("\nhypotheses:\n");
        for h in &a.diagnosis.hypotheses {
            let _ = writeln!(
                out,
                "  {:>3.0}%  {} ({})",
                h.confidence * 100.0,
                h.cause,
                h.action
                    .map(|k| k.to_string())
                    .unwrap_or_else(|| "no action".into())
            );
        }
    }
    let _ = writeln!(
        out,
        "\nevidence: then = {}, now = {}",
        hms(a.diagnosis.evidence.gathered_at),
        hms(s.evidence_now_at)
    );
    let rows: Vec<Vec<String>> = s
        .evidence_now
        .iter()
        .map(|e| {
            let then = a
                .diagnosis
                .evidence
                .get(&e.key)
                .map(|i| i.describe())
                .unwrap_or_else(|| "no data".into());
            let now = match (&e.error, e.now) {
                (Some(err), _) => format!("query failed: {}", first_words(err, 48)),
                (None, Some(v)) => e.unit.format(v),
                (None, None) => "no data".into(),
            };
            vec![format!("  {}", e.label), then, now]
        })
        .collect();
    // The PromQL goes under each row, outside the columns, so long queries do not widen them.
    let rendered = table(&["  WHAT", "THEN", "NOW"], &rows);
    let mut lines = rendered.lines();
    if let Some(header) = lines.next() {
        let _ = writeln!(out, "{header}");
    }
    for (line, e) in lines.zip(&s.evidence_now) {
        let _ = writeln!(out, "{line}");
        let _ = writeln!(out, "      PromQL: {}", e.query);
    }
    if let Some(u) = &a.diagnosis.evidence.unit {
        let _ = writeln!(
            out,
            "\nunit {} (systemd, read {}):",
            u.unit,
            hms(u.collected_at)
        );
        render_unit(&mut out, u);
    }
    if let Some(b) = &s.before_restart {
        let _ = writeln!(
            out,
            "\nbefore the restart (audit entry {}, {}):",
            b.audit_seq,
            hms(b.at)
        );
        if let Some(n) = &b.note {
            out.push_str(&wrap(&format!("note: {n}"), 92, "  "));
        }
        match &b.snapshot {
            Some(u) => render_unit(&mut out, u),
            None => out.push_str("  no unit state was recorded\n"),
        }
    }
    out.push_str("\nhistory:\n");
    for t in &a.history {
        let _ = writeln!(
            out,
            "  {}  {:<10} by {}{}",
            hms(t.at),
            t.to.as_str(),
            t.by,
            t.note
                .as_ref()
                .map(|n| format!(": {n}"))
                .unwrap_or_default()
        );
    }
    if let Some(o) = &a.outcome {
        let _ = writeln!(out, "\noutcome: {}", o.summary);
    }
    if a.state == ActionState::Pending {
        let _ = writeln!(
            out,
            "\napprove: aiops approve {}    reject: aiops reject {} --reason TEXT",
            a.id, a.id
        );
    }
    out
}

/// `PRIORITY` as journalctl names it.
fn priority_name(p: Option<u8>) -> &'static str {
    match p {
        Some(0) => "emerg",
        Some(1) => "alert",
        Some(2) => "crit",
        Some(3) => "err",
        Some(4) => "warning",
        Some(5) => "notice",
        Some(6) => "info",
        Some(7) => "debug",
        _ => "-",
    }
}

fn journal_line(out: &mut String, l: &aiops_core::model::JournalLine) {
    let _ = writeln!(
        out,
        "    {} {:<7} {}{}{}",
        l.at.map_or_else(|| "(no time)".to_owned(), hms),
        priority_name(l.priority),
        l.source
            .as_deref()
            .map(|s| format!("{s}: "))
            .unwrap_or_default(),
        l.text,
        if l.truncated { " [cut]" } else { "" }
    );
}

/// A unit's systemd snapshot in full: every fact with where it came from, the journal's
/// counts and its whole excerpt, the dependencies, what could not be read, and the commands
/// to see the same.
pub fn render_unit(out: &mut String, u: &aiops_core::model::UnitSnapshot) {
    let rows: Vec<Vec<String>> = u
        .facts
        .iter()
        .map(|f| vec![format!("  {}", f.label), f.value.describe(), f.from.clone()])
        .collect();
    if !rows.is_empty() {
        out.push_str(&table(&["  FACT", "VALUE", "FROM"], &rows));
    }
    if let Some(j) = &u.journal {
        let _ = writeln!(
            out,
            "  journal since {}: {} entries, {} errors, {} warnings, {} OOM kills, {} core dumps",
            hms(j.since),
            j.entries,
            j.errors(),
            j.warnings(),
            j.oom_kills,
            j.core_dumps
        );
        if let Some(t) = &j.truncated {
            let _ = writeln!(out, "  ({t})");
        }
        if let Some(l) = &j.access_limited {
            out.push_str(&wrap(&format!("limited access: {l}"), 92, "  "));
        }
        if let Some(l) = &j.last_oom_kill {
            out.push_str("  last OOM kill:\n");
            journal_line(out, l);
        }
        if let Some(l) = &j.last_core_dump {
            out.push_str("  last core dump:\n");
            journal_line(out, l);
        }
        if !j.last_errors.is_empty() {
            let _ = writeln!(out, "  last error lines ({}):", j.last_errors.len());
            for l in &j.last_errors {
                journal_line(out, l);
            }
        }
    }
    if !u.dependencies.is_empty() {
        out.push_str("  dependencies:\n");
        for d in &u.dependencies {
            let _ = writeln!(
                out,
                "    {} ({}): {}/{}{}{}",
                d.unit,
                d.relation,
                d.active_state.as_deref().unwrap_or("?"),
                d.sub_state.as_deref().unwrap_or("?"),
                d.result
                    .as_deref()
                    .map(|r| format!(", result {r}"))
                    .unwrap_or_default(),
                if d.down { "  DOWN" } else { "" }
            );
        }
    }
    for e in &u.errors {
        out.push_str(&wrap(&format!("not read: {e}"), 92, "  "));
    }
    let mut commands: Vec<&str> = u
        .facts
        .iter()
        .flat_map(|f| f.commands.iter().map(String::as_str))
        .chain(u.journal.as_ref().map(|j| j.command.as_str()))
        .collect();
    commands.sort_unstable();
    commands.dedup();
    for c in commands {
        let _ = writeln!(out, "    $ {c}");
    }
}

fn first_words(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        s.to_owned()
    } else {
        format!("{}…", s.chars().take(n).collect::<String>())
    }
}

/// The end of `aiops approve`.
pub fn render_finished(f: &Finished) -> String {
    let a = &f.action;
    format!(
        "{}: action {} ({} {}, approved by {}{})\n{}\n",
        a.state,
        a.id,
        a.kind,
        a.unit,
        actor_of(a, ActionState::Approved).unwrap_or_else(|| "?".into()),
        if a.forced { ", forced" } else { "" },
        f.summary
    )
}

/// `aiops history`.
pub fn render_history(list: &[Action]) -> String {
    if list.is_empty() {
        return "no actions yet\n".into();
    }
    let rows: Vec<Vec<String>> = list
        .iter()
        .map(|a| {
            let by = a
                .entered(ActionState::Approved)
                .or_else(|| a.entered(ActionState::Rejected))
                .map(|t| t.by.name.clone())
                .unwrap_or_else(|| "-".into());
            let note = a
                .outcome
                .as_ref()
                .map(|o| o.summary.clone())
                .or_else(|| a.history.last().and_then(|t| t.note.clone()))
                .unwrap_or_default();
            vec![
                a.id.to_string(),
                a.state.to_string(),
                a.kind.to_string(),
                a.unit.to_string(),
                a.alert.alertname.clone(),
                hms(a.updated_at),
                by,
                first_words(&note, 70),
            ]
        })
        .collect();
    table(
        &[
            "ID", "STATE", "ACTION", "UNIT", "ALERT", "UPDATED", "BY", "OUTCOME",
        ],
        &rows,
    )
}

/// `aiops audit verify`.
pub fn render_verify(r: &VerifyReport) -> String {
    if r.ok {
        format!("ok: {}: {}\n", r.file.display(), r.message)
    } else {
        format!(
            "FAILED: {}: {} (first bad line: {})\n",
            r.file.display(),
            r.message,
            r.bad_line
                .map(|l| l.to_string())
                .unwrap_or_else(|| "-".into())
        )
    }
}
