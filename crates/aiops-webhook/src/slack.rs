//! Rendering a [`Message`] as a Slack Block Kit payload or as readable plain text (pure functions).
//!
//! [`compose`] decides the content once, as blocks of lines of spans; [`slack_payload`] and
//! [`plain_text`] only render it, so Slack and the log say the same thing. Slack's limits are
//! respected here: a header holds at most [`HEADER_MAX`] characters, a section's text at most
//! [`SECTION_MAX`], a message at most [`BLOCKS_MAX`] blocks. Long content is cut visibly
//! ("… (cut, N characters more)"), and alert lists longer than [`ALERTS_LISTED`] end with
//! "… and N more".
//!
//! Every string that reaches Slack goes through [`escape`] (header, sections, fields, context,
//! the fallback `text`, link labels and URLs): alert labels, annotations, alert and unit names
//! and the executor's sentences can neither mention (`<!channel>`, `<!here>`, `<@U…>`, `<#C…>`)
//! nor forge a link (`<url|label>`). The only links in a payload are the ones [`compose`] makes,
//! with its own labels. The fallback `text` is cut before the message id, which always ends it.

use aiops_core::alertmanager::{Alert, Status};
use chrono::{DateTime, Utc};
use serde_json::{Value, json};

use crate::advisor::{Advice, Proposal};
use crate::message::{Message, MessageKind};

pub const HEADER_MAX: usize = 150;
pub const SECTION_MAX: usize = 3000;
pub const FIELD_MAX: usize = 2000;
pub const BLOCKS_MAX: usize = 50;
/// Alerts listed one by one; the rest are counted.
pub const ALERTS_LISTED: usize = 10;
/// Evidence lines listed; the rest are counted.
const EVIDENCE_LISTED: usize = 12;
/// The unit's journal error lines quoted (the newest); `aiops show` prints them all.
pub const JOURNAL_LINES: usize = 3;
/// A quoted journal line is cut to this many characters.
const JOURNAL_LINE_CHARS: usize = 200;

/// A piece of a line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Span {
    Text(String),
    Bold(String),
    Code(String),
    Link { label: String, url: String },
}

type Line = Vec<Span>;

/// A block of content, before rendering.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Block {
    Header(String),
    Section(Vec<Line>),
    /// (name, value) pairs shown side by side.
    Fields(Vec<(String, String)>),
    Context(Vec<Line>),
    Divider,
}

/// A message's content.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Composed {
    /// The notification-level fallback text (Slack shows it in notifications), without the
    /// message id: the renderer cuts this part and always appends the id.
    pub text: String,
    /// The message id, the fallback text's last word (`[m-…]`).
    pub id: String,
    pub blocks: Vec<Block>,
}

fn t(s: impl Into<String>) -> Span {
    Span::Text(s.into())
}
fn b(s: impl Into<String>) -> Span {
    Span::Bold(s.into())
}
fn code(s: impl Into<String>) -> Span {
    Span::Code(s.into())
}

fn time(at: DateTime<Utc>) -> String {
    at.format("%Y-%m-%d %H:%M:%S UTC").to_string()
}

fn severity_emoji(severity: Option<&str>) -> &'static str {
    match severity {
        Some("critical") => "🔴",
        Some("warning") => "🟠",
        Some("info") => "🔵",
        _ => "⚪",
    }
}

/// The message's one-line title (also what follow-ups quote).
pub fn title(m: &Message) -> String {
    let n = &m.notification;
    let name = n.alertname().unwrap_or("alert");
    let severity = label(m, "severity");
    let count = n.alerts.len() as u64 + n.truncated_alerts;
    let count = if count > 1 {
        format!(" ({count} alerts)")
    } else {
        String::new()
    };
    match m.kind {
        MessageKind::Firing => format!("{} {name} firing{count}", severity_emoji(severity)),
        MessageKind::Update => {
            format!("{} {name} firing, updated{count}", severity_emoji(severity))
        }
        MessageKind::Reminder => format!("🔁 {name} still firing (reminder){count}"),
        MessageKind::Advice => match m.advice.as_ref().map(|a| &a.proposal) {
            Some(Proposal::Action(_)) => format!("🔧 {name}: an action can now be approved"),
            _ => format!("🔧 {name}: diagnosed again"),
        },
        MessageKind::Resolved => format!("✅ {name} resolved{count}"),
        MessageKind::Action => match &m.action {
            Some(a) => action_title(name, a),
            None => format!("{name}: action update"),
        },
    }
}

fn action_title(alertname: &str, a: &crate::message::ActionNote) -> String {
    let what = format!("{} of {}", a.action, a.unit);
    match a.state.as_str() {
        "approved" => format!("▶️ {alertname}: {what} approved by {}", a.actor),
        "succeeded" => format!("✅ {alertname}: {what} verified"),
        "failed" => format!("❌ {alertname}: {what} did not fix it"),
        "unconfirmed" | "unverified" => {
            format!("❔ {alertname}: {what} done, recovery unconfirmed")
        }
        "rejected" => format!("🚫 {alertname}: {what} rejected by {}", a.actor),
        "expired" => format!("⌛ {alertname}: {what} expired unapproved"),
        "obsolete" => format!("➖ {alertname}: {what} no longer needed"),
        other => format!("{alertname}: {what} {other}"),
    }
}

/// An action's news: what happened, with the executor's own sentence and the numbers in it.
fn compose_action(m: &Message, a: &crate::message::ActionNote) -> Composed {
    let title = title(m);
    let mut what: Vec<Line> = vec![vec![t(a.text.clone())]];
    if let Some(orig) = &m.original {
        what.push(vec![
            t("Follows up on message "),
            code(orig.id.clone()),
            t(format!(" “{}” of {}.", orig.title, time(orig.at))),
        ]);
    }
    if a.state == "unconfirmed" || a.state == "unverified" {
        what.push(vec![
            t("Not a failure, and not counted as one: nothing showed whether it helped (the reason is above); look at the metrics and "),
            code(format!("aiops show {}", a.action_id)),
            t("."),
        ]);
    }
    if a.state == "failed" {
        what.push(vec![
            t("Nothing more will be done automatically; see the runbook and "),
            code(format!("aiops show {}", a.action_id)),
            t("."),
        ]);
    }
    let mut blocks = vec![Block::Header(title.clone()), Block::Section(what)];
    blocks.push(Block::Fields(vec![
        ("action".to_owned(), a.action_id.clone()),
        ("unit".to_owned(), a.unit.clone()),
        ("by".to_owned(), a.actor.clone()),
        ("state".to_owned(), a.state.clone()),
    ]));
    blocks.push(Block::Context(vec![vec![
        t("message "),
        code(m.id.clone()),
        t(format!(" · action · {}", time(m.created_at))),
    ]]));
    Composed {
        text: format!("{title} — {}", a.text),
        id: m.id.clone(),
        blocks,
    }
}

/// A label shared by the group (common labels, or the only alert's).
fn label<'a>(m: &'a Message, key: &str) -> Option<&'a str> {
    let n = &m.notification;
    let only = (n.alerts.len() == 1).then(|| &n.alerts[0]);
    n.common_labels
        .get(key)
        .or_else(|| only.and_then(|a| a.labels.get(key)))
        .map(String::as_str)
}

fn annotation<'a>(m: &'a Message, key: &str) -> Option<&'a str> {
    let n = &m.notification;
    n.common_annotations
        .get(key)
        .or_else(|| n.alerts.first().and_then(|a| a.annotations.get(key)))
        .map(String::as_str)
        .filter(|s| !s.trim().is_empty())
}

/// Decides what a message says.
pub fn compose(m: &Message) -> Composed {
    if let (MessageKind::Action, Some(a)) = (m.kind, &m.action) {
        return compose_action(m, a);
    }
    let n = &m.notification;
    let title = title(m);
    let mut blocks = vec![Block::Header(title.clone())];

    // What happened.
    let mut what: Vec<Line> = Vec::new();
    if let Some(s) = annotation(m, "summary") {
        what.push(vec![b(s)]);
    }
    if let Some(d) = annotation(m, "description") {
        what.push(vec![t(d)]);
    }
    match m.kind {
        MessageKind::Update if !m.changes.is_empty() => {
            let c = &m.changes;
            for (what_, names, count) in [
                ("Joined", &c.joined, c.joined_count),
                ("Left", &c.left, c.left_count),
            ] {
                if count > 0 {
                    what.push(change_line(what_, names, count));
                }
            }
        }
        MessageKind::Update if m.new_alerts > 0 => what.push(vec![t(format!(
            "{} new alert(s) joined the group.",
            m.new_alerts
        ))]),
        MessageKind::Advice => what.push(vec![t(
            "The action proposed with the firing message could not be stored then; the alert was diagnosed again now that the action store takes writes.",
        )]),
        MessageKind::Update => {
            let firing = n
                .alerts
                .iter()
                .filter(|a| a.status == Status::Firing)
                .count();
            what.push(vec![t(format!(
                "The group changed: {firing} of {} listed alerts still firing.",
                n.alerts.len()
            ))]);
        }
        _ => {}
    }
    if let Some(tr) = &m.truncation {
        what.push(truncation_line(tr, n));
    }
    if let Some(orig) = &m.original {
        let verb = match m.kind {
            MessageKind::Resolved => "Resolves",
            _ => "Follows up on",
        };
        what.push(vec![
            t(format!("{verb} message ")),
            code(orig.id.clone()),
            t(format!(" “{}” of {}.", orig.title, time(orig.at))),
        ]);
    } else if m.kind == MessageKind::Resolved {
        what.push(vec![t(
            "No firing message for this group is on record (it fired before this receiver kept state).",
        )]);
    }
    if what.is_empty() {
        what.push(vec![t(
            "(the alert has no summary or description annotation)",
        )]);
    }
    blocks.push(Block::Section(what));

    // Key labels and times.
    let mut fields = Vec::new();
    for key in ["service", "unit", "instance", "severity"] {
        if let Some(v) = label(m, key) {
            fields.push((key.to_owned(), v.to_owned()));
        }
    }
    if let Some(start) = n.alerts.iter().map(|a| a.starts_at).min() {
        fields.push(("started".to_owned(), time(start)));
    }
    if m.kind == MessageKind::Resolved
        && let Some(end) = n
            .alerts
            .iter()
            .map(|a| a.ends_at)
            .filter(|e| e.timestamp() > 0)
            .max()
    {
        fields.push(("ended".to_owned(), time(end)));
    }
    if !fields.is_empty() {
        blocks.push(Block::Fields(fields));
    }

    // The alerts, one line each.
    blocks.push(Block::Section(alert_lines(m)));

    // Links.
    let mut links: Line = Vec::new();
    let source = n
        .alerts
        .iter()
        .map(|a| a.generator_url.as_str())
        .find(|u| is_http(u));
    if let Some(url) = source {
        links.push(Span::Link {
            label: "Alert source (Prometheus)".into(),
            url: url.to_owned(),
        });
    }
    if let Some(url) = m.dashboard_url.as_deref().filter(|u| is_http(u)) {
        if !links.is_empty() {
            links.push(t(" · "));
        }
        links.push(Span::Link {
            label: "Dashboard".into(),
            url: url.to_owned(),
        });
    }
    if is_http(&n.external_url) {
        if !links.is_empty() {
            links.push(t(" · "));
        }
        links.push(Span::Link {
            label: "Alertmanager".into(),
            url: n.external_url.clone(),
        });
    }
    if !links.is_empty() {
        blocks.push(Block::Section(vec![links]));
    }

    if let Some(advice) = &m.advice {
        blocks.push(Block::Divider);
        advice_blocks(advice, &mut blocks);
    }

    blocks.push(Block::Context(vec![vec![
        t("message "),
        code(m.id.clone()),
        t(format!(
            " · {} · received {}",
            m.kind.as_str(),
            time(m.created_at)
        )),
    ]]));
    blocks.truncate(BLOCKS_MAX);

    let mut text = title;
    if let Some(s) = annotation(m, "summary") {
        text.push_str(": ");
        text.push_str(s);
    }
    Composed {
        text,
        id: m.id.clone(),
        blocks,
    }
}

/// `Joined (2): A on x, B on y` (names as listed, then "and N more").
fn change_line(what: &str, names: &[String], count: usize) -> Line {
    // Slack closes bold only right after a non-space character.
    let mut line = vec![b(format!("{what} ({count}):")), t(" ")];
    line.push(t(names.join(", ")));
    let more = count.saturating_sub(names.len());
    if more > 0 {
        line.push(t(format!(" and {more} more")));
    }
    line.push(t("."));
    line
}

/// What became of the alerts Alertmanager left out of the notification.
fn truncation_line(
    tr: &crate::message::Truncation,
    n: &aiops_core::alertmanager::Notification,
) -> Line {
    let alerts = |k: u64| {
        if k == 1 {
            "1 alert".to_owned()
        } else {
            format!("{k} alerts")
        }
    };
    match &tr.error {
        Some(e) => vec![t(format!(
            "Alertmanager truncated this notification (max_alerts): {} could not be fetched from its API ({e}); this message and the diagnosis see only the {} it carried.",
            alerts(tr.truncated),
            alerts(n.alerts.len() as u64)
        ))],
        None => {
            let mut s = format!(
                "Alertmanager truncated this notification (max_alerts, {} left out); the group's alerts were fetched from its API ({} added).",
                alerts(tr.truncated),
                tr.fetched
            );
            if n.truncated_alerts > 0 {
                s.push_str(&format!(
                    " {} more than the {} fetched are not shown.",
                    alerts(n.truncated_alerts),
                    aiops_actions::alerts::GROUP_MAX_ALERTS
                ));
            }
            vec![t(s)]
        }
    }
}

fn is_http(u: &str) -> bool {
    u.starts_with("http://") || u.starts_with("https://")
}

fn alert_lines(m: &Message) -> Vec<Line> {
    let n = &m.notification;
    let mut lines = vec![vec![b("Alerts")]];
    for a in n.alerts.iter().take(ALERTS_LISTED) {
        lines.push(alert_line(a, n));
    }
    let omitted = n.alerts.len().saturating_sub(ALERTS_LISTED) as u64;
    if omitted > 0 || n.truncated_alerts > 0 {
        let more = omitted + n.truncated_alerts;
        let why = match (&m.truncation, n.truncated_alerts > 0) {
            (_, false) => String::new(),
            (None, true) => format!(
                " ({} truncated by Alertmanager: truncatedAlerts = {})",
                n.truncated_alerts, n.truncated_alerts
            ),
            (Some(tr), true) if tr.error.is_some() => format!(
                " ({} truncated by Alertmanager, not fetched)",
                n.truncated_alerts
            ),
            (Some(_), true) => format!(
                " ({} beyond the {} fetched from Alertmanager)",
                n.truncated_alerts,
                aiops_actions::alerts::GROUP_MAX_ALERTS
            ),
        };
        lines.push(vec![t(format!("… and {more} more{why}"))]);
    }
    lines
}

fn alert_line(a: &Alert, n: &aiops_core::alertmanager::Notification) -> Line {
    let mut line = vec![t(format!(
        "• {} {} ",
        if a.status == Status::Firing {
            "firing"
        } else {
            "resolved"
        },
        "since"
    ))];
    line.push(t(time(a.starts_at)));
    // The labels that tell this alert apart from the rest of the group.
    let own: Vec<String> = a
        .labels
        .iter()
        .filter(|(k, v)| n.common_labels.get(*k) != Some(*v))
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    if !own.is_empty() {
        line.push(t(" · "));
        line.push(code(own.join(", ")));
    }
    if a.status == Status::Resolved && a.ends_at.timestamp() > 0 {
        line.push(t(format!(" · ended {}", time(a.ends_at))));
    }
    line
}

fn advice_blocks(advice: &Advice, blocks: &mut Vec<Block>) {
    use aiops_core::model::Recommendation;
    let d = &advice.diagnosis;
    blocks.push(Block::Section(vec![
        vec![b("Diagnosis")],
        vec![t(d.explanation.clone())],
    ]));
    if !d.evidence.items.is_empty() {
        let mut lines = vec![vec![b("Evidence")]];
        for item in d.evidence.items.iter().take(EVIDENCE_LISTED) {
            lines.push(vec![t(format!("• {}: {}", item.label, item.describe()))]);
            lines.push(vec![t("    "), code(item.query.clone())]);
        }
        let more = d.evidence.items.len().saturating_sub(EVIDENCE_LISTED);
        if more > 0 {
            lines.push(vec![t(format!("… and {more} more evidence items"))]);
        }
        blocks.push(Block::Section(lines));
    }
    if let Some(u) = &d.evidence.unit {
        blocks.push(Block::Section(unit_lines(u, &advice.proposal)));
    }
    let mut rec: Vec<Line> = Vec::new();
    match (&d.recommendation, &advice.proposal) {
        (
            Recommendation::Act {
                action,
                unit,
                risk,
                confidence,
                ..
            },
            Proposal::Action(p),
        ) => {
            rec.push(vec![
                b("Recommendation: "),
                t(format!("{action} ")),
                code(unit.to_string()),
                t(format!(
                    " (risk {}, confidence {:.0}%)",
                    risk.as_str(),
                    confidence * 100.0
                )),
            ]);
            rec.push(vec![
                t("To approve, run "),
                code(p.approve_command.clone()),
                t(format!(" (expires {}).", time(p.expires_at))),
            ]);
        }
        (_, Proposal::Action(p)) => {
            rec.push(vec![b("Recommendation: "), t("an action is pending.")]);
            rec.push(vec![
                t("To approve, run "),
                code(p.approve_command.clone()),
                t(format!(" (expires {}).", time(p.expires_at))),
            ]);
        }
        (_, Proposal::None { reason }) => {
            rec.push(vec![b("No action proposed: "), t(reason.clone())]);
        }
        (_, Proposal::Retry { reason }) => {
            rec.push(vec![
                b("No action can be approved yet: "),
                t(reason.clone()),
            ]);
        }
    }
    blocks.push(Block::Section(rec));
}

/// The watched unit's own evidence from systemd: its state and restarts, memory against its
/// limit, the journal's counts, and at most [`JOURNAL_LINES`] of its newest error lines (none
/// when `slack.journal_excerpt = false` removed them before the message was made).
fn unit_lines(u: &aiops_core::model::UnitSnapshot, proposal: &Proposal) -> Vec<Line> {
    // Facts systemd did not give are left out rather than posted as "unknown".
    let fact = |key: &str| {
        u.fact(key)
            .filter(|f| f.value != aiops_core::model::UnitFactValue::Unknown)
            .map(|f| f.value.describe())
    };
    let mut lines = vec![vec![
        b("Unit"),
        t(" "),
        code(u.unit.to_string()),
        t(format!(" (systemd, read {})", time(u.collected_at))),
    ]];
    let mut state = Vec::new();
    if let Some(a) = fact("unit.active_state") {
        state.push(match fact("unit.sub_state") {
            Some(sub) => format!("{a} ({sub})"),
            None => a,
        });
    }
    if let Some(r) = fact("unit.result") {
        state.push(format!("last run: {r}"));
    }
    if let Some(n) = fact("unit.restarts") {
        state.push(format!("{n} automatic restarts"));
    }
    match (fact("unit.memory"), fact("unit.memory_max")) {
        (Some(m), Some(max)) => state.push(format!("memory {m} of {max}")),
        (Some(m), None) => state.push(format!("memory {m}")),
        _ => {}
    }
    if !state.is_empty() {
        lines.push(vec![t(format!("• {}", state.join(", ")))]);
    }
    if let Some(j) = &u.journal {
        lines.push(vec![t(format!(
            "• journal since {}: {} errors, {} warnings, {} OOM kills, {} core dumps ({} entries)",
            time(j.since),
            j.errors(),
            j.warnings(),
            j.oom_kills,
            j.core_dumps,
            j.entries
        ))]);
        if let Some(l) = &j.access_limited {
            lines.push(vec![t(format!("• journal access limited: {l}"))]);
        }
        let shown = &j.last_errors[j.last_errors.len().saturating_sub(JOURNAL_LINES)..];
        if !shown.is_empty() {
            lines.push(vec![t("Last error lines:")]);
            for l in shown {
                let text: String = l.text.chars().take(JOURNAL_LINE_CHARS).collect();
                let cut = l.truncated || l.text.chars().count() > JOURNAL_LINE_CHARS;
                lines.push(vec![
                    t(format!(
                        "    {} ",
                        l.at.map_or_else(|| "?".to_owned(), |at| at.format("%H:%M:%S").to_string())
                    )),
                    code(format!("{text}{}", if cut { "…" } else { "" })),
                ]);
            }
        }
    }
    for e in u.errors.iter().take(2) {
        let e: String = e.chars().take(300).collect();
        lines.push(vec![t(format!("• not read: {e}"))]);
    }
    if let Proposal::Action(p) = proposal {
        lines.push(vec![
            t("The whole excerpt and every fact: "),
            code(format!("aiops show {}", p.id)),
        ]);
    }
    lines
}

// ---- Rendering -------------------------------------------------------------------------------

/// The one escape for every string that reaches Slack: `&`, `<` and `>` become entities (what
/// Slack asks for in every text field), so no text can open a mention (`<!channel>`,
/// `<@U…>`, `<#C…>`) or a link (`<url|label>`); Slack shows the characters as typed.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            c => out.push(c),
        }
    }
    out
}

/// A link's URL inside `<url|label>`: escaped, and the characters that would end the URL part
/// early (`|`, whitespace) percent-encoded.
fn link_url(url: &str) -> String {
    let mut out = String::with_capacity(url.len());
    for c in escape(url).chars() {
        match c {
            '|' => out.push_str("%7C"),
            c if c.is_whitespace() => {
                let mut buf = [0u8; 4];
                for byte in c.encode_utf8(&mut buf).bytes() {
                    out.push_str(&format!("%{byte:02X}"));
                }
            }
            c => out.push(c),
        }
    }
    out
}

fn mrkdwn_line(line: &[Span]) -> String {
    let mut out = String::new();
    for span in line {
        match span {
            Span::Text(s) => out.push_str(&escape(s)),
            Span::Bold(s) => {
                out.push('*');
                out.push_str(&escape(&s.replace('*', "∗")));
                out.push('*');
            }
            Span::Code(s) => {
                out.push('`');
                out.push_str(&escape(&s.replace('`', "'").replace('\n', " ")));
                out.push('`');
            }
            Span::Link { label, url } => {
                out.push('<');
                out.push_str(&link_url(url));
                out.push('|');
                out.push_str(&escape(label));
                out.push('>');
            }
        }
    }
    out
}

fn plain_line(line: &[Span]) -> String {
    let mut out = String::new();
    for span in line {
        match span {
            Span::Text(s) | Span::Bold(s) => out.push_str(s),
            Span::Code(s) => {
                out.push('`');
                out.push_str(s);
                out.push('`');
            }
            Span::Link { label, url } => {
                out.push_str(label);
                out.push_str(": ");
                out.push_str(url);
            }
        }
    }
    out
}

/// Joins `lines` with newlines within `limit` characters; what does not fit is replaced by a
/// visible "… (cut, N characters more)".
pub fn fit(lines: &[String], limit: usize) -> String {
    let total: usize =
        lines.iter().map(|l| l.chars().count()).sum::<usize>() + lines.len().saturating_sub(1);
    if total <= limit {
        return lines.join("\n");
    }
    // Reserve room for the marker (its number has at most 20 digits).
    let reserve = "… (cut, 00000000000000000000 characters more)"
        .chars()
        .count()
        + 1;
    let budget = limit.saturating_sub(reserve);
    let mut out = String::new();
    let mut used = 0;
    for line in lines {
        let len = line.chars().count();
        let sep = usize::from(!out.is_empty());
        if used + sep + len <= budget {
            if sep == 1 {
                out.push('\n');
            }
            out.push_str(line);
            used += sep + len;
        } else {
            // Fill what is left with the start of this line, without breaking markup.
            let room = budget.saturating_sub(used + sep);
            if room >= 20 {
                let part = safe_prefix(line, room);
                if !part.is_empty() {
                    if sep == 1 {
                        out.push('\n');
                    }
                    used += sep + part.chars().count();
                    out.push_str(&part);
                }
            }
            break;
        }
    }
    let more = total.saturating_sub(used);
    out.push_str(if out.is_empty() { "" } else { "\n" });
    out.push_str(&format!("… (cut, {more} characters more)"));
    out
}

/// At most `max` characters of the mrkdwn `line`, cut where no entity (`&amp;`) or link
/// (`<url|label>`) is left open; a code span or bold text the cut leaves open is closed, so a
/// long summary keeps its start instead of vanishing.
fn safe_prefix(line: &str, max: usize) -> String {
    // Room for closing a code span and a bold run.
    let mut part: String = line.chars().take(max.saturating_sub(2)).collect();
    if let Some(amp) = part.rfind('&')
        && !part[amp..].contains(';')
    {
        part.truncate(amp);
    }
    if let Some(lt) = part.rfind('<')
        && !part[lt..].contains('>')
    {
        part.truncate(lt);
    }
    for marker in ['`', '*'] {
        if part.matches(marker).count() % 2 == 1 {
            // Slack closes a span only right after a non-space character.
            part.truncate(part.trim_end().len());
            if part.ends_with(marker) {
                part.pop();
            } else {
                part.push(marker);
            }
        }
    }
    part
}

/// At most `limit` characters of escaped text, ending in "…" when cut; never cuts an entity
/// (`&amp;`) in two.
fn cut_escaped(s: &str, limit: usize) -> String {
    if s.chars().count() <= limit {
        return s.to_owned();
    }
    let mut out: String = s.chars().take(limit.saturating_sub(1)).collect();
    if let Some(amp) = out.rfind('&')
        && !out[amp..].contains(';')
    {
        out.truncate(amp);
    }
    out.push('…');
    out
}

/// The fallback `text`: escaped, cut to [`SECTION_MAX`] characters before the message id, which
/// always ends it.
fn fallback_text(c: &Composed) -> String {
    let id = format!(" [{}]", escape(&c.id));
    let room = SECTION_MAX.saturating_sub(id.chars().count());
    let mut text = cut_escaped(&escape(&c.text), room);
    text.push_str(&id);
    text
}

/// The Slack incoming-webhook payload: `text` fallback plus Block Kit `blocks`.
pub fn slack_payload(m: &Message) -> Value {
    let c = compose(m);
    let blocks: Vec<Value> = c
        .blocks
        .iter()
        .map(|block| match block {
            Block::Header(s) => json!({
                "type": "header",
                "text": {"type": "plain_text", "text": cut_escaped(&escape(s), HEADER_MAX), "emoji": true}
            }),
            Block::Section(lines) => {
                let lines: Vec<String> = lines.iter().map(|l| mrkdwn_line(l)).collect();
                json!({
                    "type": "section",
                    "text": {"type": "mrkdwn", "text": fit(&lines, SECTION_MAX)}
                })
            }
            Block::Fields(fields) => json!({
                "type": "section",
                "fields": fields.iter().take(10).map(|(k, v)| json!({
                    "type": "mrkdwn",
                    "text": fit(&[format!("*{}*", escape(k)), escape(v)], FIELD_MAX),
                })).collect::<Vec<_>>()
            }),
            Block::Context(lines) => {
                let lines: Vec<String> = lines.iter().map(|l| mrkdwn_line(l)).collect();
                json!({
                    "type": "context",
                    "elements": [{"type": "mrkdwn", "text": fit(&lines, FIELD_MAX)}]
                })
            }
            Block::Divider => json!({"type": "divider"}),
        })
        .collect();
    json!({ "text": fallback_text(&c), "blocks": blocks })
}

/// The same content as readable plain text (for the log when no Slack URL is configured).
pub fn plain_text(m: &Message) -> String {
    let c = compose(m);
    let mut parts: Vec<String> = Vec::new();
    for block in &c.blocks {
        match block {
            Block::Header(s) => {
                parts.push(format!("{}\n{}", s, "=".repeat(s.chars().count().min(72))));
            }
            Block::Section(lines) | Block::Context(lines) => {
                let lines: Vec<String> = lines.iter().map(|l| plain_line(l)).collect();
                parts.push(fit(&lines, SECTION_MAX));
            }
            Block::Fields(fields) => parts.push(
                fields
                    .iter()
                    .map(|(k, v)| format!("{k}: {v}"))
                    .collect::<Vec<_>>()
                    .join("\n"),
            ),
            Block::Divider => parts.push("-".repeat(40)),
        }
    }
    parts.join("\n")
}
