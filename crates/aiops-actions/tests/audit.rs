//! The audit chain: clean logs verify; edits, removals, reorders and a cut tail are named by line.

use std::path::{Path, PathBuf};

use aiops_actions::audit::{AuditLog, Record, head_path_for, verify_file};

use crate::support::*;

fn log_with(n: usize) -> (tempfile::TempDir, PathBuf) {
    let dir = tempdir();
    let log = AuditLog::open(dir.path()).unwrap();
    for i in 0..n {
        let who = if i % 2 == 0 { alice() } else { bob() };
        log.append(
            &who,
            Record {
                detail: Some(format!("entry {i}")),
                unit: Some(UNIT.into()),
                ..Record::new("approved")
            },
        )
        .unwrap();
    }
    let path = log.path().to_owned();
    (dir, path)
}

fn lines(p: &Path) -> Vec<String> {
    std::fs::read_to_string(p)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect()
}

fn write_lines(p: &Path, lines: &[String]) {
    std::fs::write(
        p,
        lines.iter().map(|l| format!("{l}\n")).collect::<String>(),
    )
    .unwrap();
}

fn verify(p: &Path) -> aiops_actions::audit::VerifyReport {
    verify_file(p, Some(&head_path_for(p)))
}

#[test]
fn a_clean_log_verifies() {
    let (_d, p) = log_with(6);
    let r = verify(&p);
    assert!(r.ok, "{r:?}");
    assert_eq!(r.entries, 6);
    assert!(r.head_checked);
}

#[test]
fn an_edited_line_is_named() {
    let (_d, p) = log_with(6);
    let mut l = lines(&p);
    l[2] = l[2].replace("\"name\":\"alice\"", "\"name\":\"mallory\"");
    write_lines(&p, &l);
    let r = verify(&p);
    assert!(!r.ok);
    assert_eq!(r.bad_line, Some(3), "{}", r.message);
    assert!(r.message.contains("edited"), "{}", r.message);
}

#[test]
fn a_reformatted_line_with_the_same_meaning_is_still_an_edit() {
    let (_d, p) = log_with(3);
    let mut l = lines(&p);
    l[1] = l[1].replacen("{\"seq\":2,", "{\"seq\": 2,", 1);
    write_lines(&p, &l);
    let r = verify(&p);
    assert_eq!(r.bad_line, Some(2), "{}", r.message);
}

#[test]
fn a_removed_line_is_named() {
    let (_d, p) = log_with(6);
    let mut l = lines(&p);
    l.remove(3);
    write_lines(&p, &l);
    let r = verify(&p);
    assert!(!r.ok);
    assert_eq!(r.bad_line, Some(4), "{}", r.message);
    assert!(r.message.contains("removed"), "{}", r.message);
}

#[test]
fn reordered_lines_are_named() {
    let (_d, p) = log_with(6);
    let mut l = lines(&p);
    l.swap(1, 2);
    write_lines(&p, &l);
    let r = verify(&p);
    assert!(!r.ok);
    assert_eq!(r.bad_line, Some(2), "{}", r.message);
}

#[test]
fn a_truncated_tail_is_detected_through_the_head() {
    let (_d, p) = log_with(6);
    let l = lines(&p);
    write_lines(&p, &l[..4]);
    let r = verify(&p);
    assert!(!r.ok);
    assert_eq!(r.bad_line, Some(5), "{}", r.message);
    assert!(r.message.contains("truncated"), "{}", r.message);
    // Without the head file (an offline copy), only the chain can be checked, and says so.
    let r = verify_file(&p, None);
    assert!(r.ok && !r.head_checked);
    assert!(r.message.contains("cut-off tail would not be noticed"));
}

#[test]
fn a_cut_last_line_is_detected() {
    let (_d, p) = log_with(3);
    let text = std::fs::read(&p).unwrap();
    std::fs::write(&p, &text[..text.len() - 10]).unwrap();
    let r = verify(&p);
    assert!(!r.ok);
    assert_eq!(r.bad_line, Some(3), "{}", r.message);
}

#[test]
fn an_unacknowledged_torn_append_is_repaired_at_open() {
    let (d, p) = log_with(3);
    let mut f = std::fs::OpenOptions::new().append(true).open(&p).unwrap();
    std::io::Write::write_all(&mut f, b"{\"seq\":4,\"at\":\"20").unwrap();
    drop(f);
    assert!(!verify(&p).ok);
    let log = AuditLog::open(d.path()).unwrap();
    let r = log.verify();
    assert!(r.ok, "{r:?}");
    log.append(&alice(), Record::new("rejected")).unwrap();
    assert_eq!(log.verify().entries, 4);
}

#[test]
fn rewriting_the_whole_tail_without_the_head_is_detected() {
    // Someone deletes the last line and re-appends a forged one chained correctly: the head
    // still names the original last hash.
    let (d, p) = log_with(3);
    let mut l = lines(&p);
    l.pop();
    write_lines(&p, &l);
    let head = std::fs::read(head_path_for(&p)).unwrap();
    let forged = {
        let tmp = tempdir();
        std::fs::copy(&p, tmp.path().join("audit.jsonl")).unwrap();
        // Re-derive a head matching the 2-line log so AuditLog continues the chain from it.
        let r = verify_file(&tmp.path().join("audit.jsonl"), None);
        assert!(r.ok);
        let last: serde_json::Value = serde_json::from_str(l.last().unwrap()).unwrap();
        std::fs::write(
            head_path_for(&tmp.path().join("audit.jsonl")),
            format!("{{\"seq\":2,\"hash\":{}}}", last["hash"]),
        )
        .unwrap();
        let log = AuditLog::open(tmp.path()).unwrap();
        log.append(&bob(), Record::new("approved")).unwrap();
        lines(log.path()).pop().unwrap()
    };
    l.push(forged);
    write_lines(&p, &l);
    std::fs::write(head_path_for(&p), head).unwrap();
    let r = verify(&p);
    assert!(!r.ok);
    assert_eq!(r.bad_line, Some(3), "{}", r.message);
    drop(d);
}

/// The forensic `unit_state` field is absent from every entry that has none, so lines written
/// before it existed are byte-for-byte what the code writes now and still verify; an entry with
/// one is chained like any other, and editing the recorded state breaks the chain there.
#[test]
fn unit_state_is_optional_in_the_chain_and_covered_by_it() {
    let (dir, path) = log_with(2);
    assert!(lines(&path).iter().all(|l| !l.contains("unit_state")));
    let log = AuditLog::open(dir.path()).unwrap();
    log.append(
        &aiops_actions::Actor::system(),
        Record {
            unit: Some(UNIT.into()),
            unit_state: Some(r#"{"unit":"aiops-demo-app.service"}"#.into()),
            unit_state_note: Some("partly unreadable: journalctl failed".into()),
            ..Record::new("executing")
        },
    )
    .unwrap();
    let report = verify_file(&path, Some(&head_path_for(&path)));
    assert!(report.ok, "{report:?}");
    let mut ls = lines(&path);
    assert!(ls[2].contains("\"unit_state\":"), "{}", ls[2]);
    ls[2] = ls[2].replace("partly unreadable", "all fine");
    write_lines(&path, &ls);
    let report = verify_file(&path, Some(&head_path_for(&path)));
    assert!(!report.ok);
    assert_eq!(report.bad_line, Some(3), "{report:?}");
}

/// A snapshot over the bound loses its oldest journal lines first, and says so.
#[test]
fn an_oversized_unit_state_is_cut_to_the_bound_keeping_the_newest_lines() {
    use aiops_actions::audit::{MAX_UNIT_STATE_BYTES, bounded_unit_state};
    use aiops_core::model::{JournalDigest, JournalLine, UnitSnapshot};
    let line = |i: usize| JournalLine {
        at: None,
        priority: Some(3),
        source: Some("myapp".into()),
        text: format!("error {i}: {}", "x".repeat(300)),
        truncated: false,
        from_systemd: false,
    };
    let snap = UnitSnapshot {
        unit: aiops_core::unit::UnitName::parse(UNIT).unwrap(),
        collected_at: chrono::Utc::now(),
        facts: Vec::new(),
        journal: Some(JournalDigest {
            since: chrono::Utc::now(),
            command: "journalctl --unit=aiops-demo-app.service".into(),
            entries: 200,
            by_priority: [0, 0, 0, 200, 0, 0, 0, 0],
            oom_kills: 0,
            core_dumps: 0,
            last_oom_kill: None,
            last_core_dump: None,
            last_errors: (0..200).map(line).collect(),
            truncated: None,
            access_limited: None,
        }),
        dependencies: Vec::new(),
        errors: Vec::new(),
    };
    assert!(serde_json::to_string(&snap).unwrap().len() > MAX_UNIT_STATE_BYTES);
    let (state, note) = bounded_unit_state(&snap, MAX_UNIT_STATE_BYTES);
    let state = state.expect("a cut snapshot");
    assert!(state.len() <= MAX_UNIT_STATE_BYTES, "{}", state.len());
    let back: UnitSnapshot = serde_json::from_str(&state).unwrap();
    let kept = &back.journal.as_ref().unwrap().last_errors;
    assert!(!kept.is_empty() && kept.len() < 200);
    assert!(kept.last().unwrap().text.starts_with("error 199:"));
    let note = note.expect("a note");
    assert!(note.contains("oldest error lines left out"), "{note}");
}
