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
