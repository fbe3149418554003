//! The constants of `aiops_assets::floor` agree with the files, and every alert is complete.

use std::collections::BTreeSet;
use std::time::Duration;

use aiops_assets::floor::*;
use aiops_assets::{ALERTMANAGER_YML, PROMETHEUS_YML, RULES_YML};

use crate::support::repo;

/// `5s`, `1m`, `1h` as Prometheus writes durations (only the units these files use).
fn duration(text: &str) -> Duration {
    let text = text.trim().trim_matches('"');
    let (n, unit) = text.split_at(text.len() - 1);
    let n: u64 = n
        .parse()
        .unwrap_or_else(|_| panic!("not a duration: {text:?}"));
    Duration::from_secs(match unit {
        "s" => n,
        "m" => n * 60,
        "h" => n * 3600,
        _ => panic!("unit of {text:?}"),
    })
}

/// Values of `key:` lines (any indentation), in order.
fn values<'a>(yaml: &'a str, key: &str) -> Vec<&'a str> {
    let prefix = format!("{key}:");
    yaml.lines()
        .map(str::trim)
        .map(|l| l.trim_start_matches("- "))
        .filter_map(|l| l.strip_prefix(prefix.as_str()))
        .map(str::trim)
        .collect()
}

/// The text of each `- KIND: NAME` block of rules.yml (`kind` "alert" or "record"), with its
/// name. A block ends at the next rule or at a section comment (`# ----`).
fn rule_blocks(kind: &str) -> Vec<(String, String)> {
    let start = format!("- {kind}:");
    let mut blocks: Vec<(String, String)> = Vec::new();
    let mut current: Option<(String, String)> = None;
    for line in RULES_YML.lines() {
        let t = line.trim();
        if t.starts_with("- alert:") || t.starts_with("- record:") || t.starts_with("# ----") {
            blocks.extend(current.take());
            if let Some(name) = t.strip_prefix(start.as_str()) {
                current = Some((name.trim().to_owned(), String::new()));
            }
        }
        if let Some((_, text)) = current.as_mut() {
            text.push_str(line);
            text.push('\n');
        }
    }
    blocks.extend(current);
    blocks
}

#[test]
fn intervals_match_the_files() {
    assert_eq!(values(PROMETHEUS_YML, "scrape_interval"), ["5s"]);
    assert_eq!(
        duration(values(PROMETHEUS_YML, "scrape_interval")[0]),
        SCRAPE_INTERVAL
    );
    assert_eq!(
        duration(values(PROMETHEUS_YML, "evaluation_interval")[0]),
        EVALUATION_INTERVAL
    );
    assert_eq!(
        duration(values(ALERTMANAGER_YML, "group_wait")[0]),
        GROUP_WAIT
    );
    assert_eq!(
        duration(values(ALERTMANAGER_YML, "group_interval")[0]),
        GROUP_INTERVAL
    );
    assert_eq!(
        duration(values(ALERTMANAGER_YML, "repeat_interval")[0]),
        REPEAT_INTERVAL
    );
    let fors = values(RULES_YML, "for");
    assert_eq!(
        fors.len(),
        rule_blocks("alert").len(),
        "every alert has a `for:`"
    );
    for f in fors {
        assert_eq!(duration(f), ALERT_FOR, "every alert's `for:` is ALERT_FOR");
    }
    assert_eq!(
        DETECTION_FLOOR,
        SCRAPE_INTERVAL + EVALUATION_INTERVAL + ALERT_FOR + GROUP_WAIT
    );
    assert_eq!(DETECTION_FLOOR, Duration::from_secs(25));
}

#[test]
fn the_floor_is_stated_where_people_read_it() {
    let floor = DETECTION_FLOOR.as_secs();
    assert!(
        RULES_YML.contains(&format!(
            "scrape_interval {}s + evaluation_interval {}s + for {}s + Alertmanager group_wait {}s = {floor} s",
            SCRAPE_INTERVAL.as_secs(),
            EVALUATION_INTERVAL.as_secs(),
            ALERT_FOR.as_secs(),
            GROUP_WAIT.as_secs()
        )),
        "the comment at the top of rules.yml states the floor"
    );
    let runbook = std::fs::read_to_string(repo().join("docs/RUNBOOK.md")).expect("docs/RUNBOOK.md");
    assert!(runbook.contains(&format!("| **detection floor** | **{floor} s** |")));
}

#[test]
fn thresholds_match_the_rules() {
    let blocks = rule_blocks("alert");
    let expr_of = |name: &str| -> String {
        blocks
            .iter()
            .filter(|(n, _)| n == name)
            .map(|(_, b)| b.clone())
            .collect::<Vec<_>>()
            .join("\n")
    };
    let cases = [
        ("HighErrorRatio", format!("> {ERROR_RATIO_THRESHOLD}")),
        (
            "HighErrorRatio",
            format!(">= {ERROR_RATIO_MIN_REQUEST_RATE}"),
        ),
        ("HighLatencyP99", format!("> {LATENCY_P99_THRESHOLD_SECS}")),
        ("HighCpuUsage", format!("> {CPU_THRESHOLD_CORES}")),
        (
            "MemoryGrowth",
            format!("> {MEMORY_GROWTH_THRESHOLD_BYTES_PER_SEC}"),
        ),
        (
            "AiopsOutboxStuck",
            format!("> {OUTBOX_STUCK_THRESHOLD_SECS}"),
        ),
        ("TargetDown", "== 0".to_owned()),
        (
            "AiopsStateVolumeLow",
            format!("< {STATE_VOLUME_LOW_RESERVES} * aiops_state_volume_reserve_bytes"),
        ),
    ];
    for (name, needle) in cases {
        let block = expr_of(name);
        assert!(
            block.contains(&needle),
            "{name}'s rule should contain {needle:?}:\n{block}"
        );
    }
}

#[test]
fn names_match_the_rules() {
    let alerts: BTreeSet<String> = rule_blocks("alert").into_iter().map(|(n, _)| n).collect();
    let expected: BTreeSet<String> = ALERT_NAMES.iter().map(|s| (*s).to_owned()).collect();
    assert_eq!(alerts, expected);
    let records: Vec<&str> = values(RULES_YML, "record");
    assert_eq!(records, RECORDING_RULES);
}

/// `30s`, `1m`: the window as the rules' names and range selectors write it.
fn prom_duration(d: Duration) -> String {
    let s = d.as_secs();
    if s % 60 == 0 {
        format!("{}m", s / 60)
    } else {
        format!("{s}s")
    }
}

#[test]
fn windows_match_the_rules_and_their_names() {
    let rate = prom_duration(RATE_WINDOW);
    let slope = prom_duration(SLOPE_WINDOW);
    assert_eq!(RATE_WINDOW.as_secs() % SCRAPE_INTERVAL.as_secs(), 0);
    assert!(
        RATE_WINDOW >= 4 * SCRAPE_INTERVAL,
        "rate() needs a few samples in its window to extrapolate and to survive a missed scrape"
    );
    let blocks = rule_blocks("record");
    assert_eq!(blocks.len(), RECORDING_RULES.len());
    for (name, block) in blocks {
        let (window, suffix_ok) = if block.contains("deriv(") {
            (&slope, name.ends_with(&format!(":deriv{slope}")))
        } else {
            (
                &rate,
                name.ends_with(&format!(":rate{rate}")) || name.ends_with(&format!("_{rate}")),
            )
        };
        assert!(suffix_ok, "{name}: its name says its window, {window}");
        let selectors: Vec<&str> = block
            .split('[')
            .skip(1)
            .filter_map(|s| s.split(']').next())
            .collect();
        // A ratio of recorded rates has no range of its own; every range it has is the window.
        for s in &selectors {
            assert_eq!(s, window, "{name}: range [{s}] is not its window\n{block}");
        }
        if selectors.is_empty() {
            assert!(
                block.contains(&format!(":rate{rate}")),
                "{name} reads recorded rates of the same window\n{block}"
            );
        }
    }
}

#[test]
fn every_alert_has_its_labels_annotations_and_runbook_section() {
    let runbook = std::fs::read_to_string(repo().join("docs/RUNBOOK.md")).expect("docs/RUNBOOK.md");
    let sections: BTreeSet<String> = runbook
        .lines()
        .filter_map(|l| l.strip_prefix("## "))
        .map(|h| h.trim().to_lowercase())
        .collect();
    let units = ["aiops-demo-app.service", "aiops-webhook.service"];
    for (name, block) in rule_blocks("alert") {
        for key in [
            "severity",
            "service",
            "unit",
            "summary",
            "description",
            "runbook_url",
        ] {
            assert_eq!(
                values(&block, key).len(),
                1,
                "{name} needs exactly one {key}:\n{block}"
            );
        }
        let severity = values(&block, "severity")[0];
        assert!(
            ["critical", "warning"].contains(&severity),
            "{name}: severity {severity}"
        );
        let unit = values(&block, "unit")[0];
        assert!(
            units.contains(&unit),
            "{name}: unit {unit} is a fixed, known unit"
        );
        let service = values(&block, "service")[0];
        assert_eq!(
            format!("{service}.service"),
            unit,
            "{name}: service and unit agree"
        );
        let url = values(&block, "runbook_url")[0].trim_matches('"');
        let anchor = url
            .strip_prefix("https://github.com/aiops-loop/aiops/blob/main/docs/RUNBOOK.md#")
            .unwrap_or_else(|| panic!("{name}: runbook_url {url} points into docs/RUNBOOK.md"));
        assert_eq!(
            anchor,
            name.to_lowercase(),
            "{name}: anchor is its own section"
        );
        assert!(
            sections.contains(anchor),
            "docs/RUNBOOK.md has a section ## {name}"
        );
        assert!(
            values(&block, "description")[0].contains("{{ $"),
            "{name}: description shows a value or label"
        );
    }
}
