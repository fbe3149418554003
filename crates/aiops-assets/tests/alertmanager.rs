//! The rendered alertmanager.yml in a real Alertmanager: notifications reach the receiver with
//! the bearer token from the file, grouped by alert and service, and TargetDown mutes the same
//! service's symptoms.

use std::time::Duration;

use aiops_assets::{Ports, render};
use serde_json::{Value, json};

use crate::support::{Receiver, closed_ports, http, start_alertmanager, tool_or_skip, wait_for};

fn alert(name: &str, service: &str) -> Value {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs();
    let rfc3339 = |secs: u64| {
        // Alertmanager accepts RFC 3339; build it without a date crate.
        let days = secs / 86_400;
        let (y, m, d) = civil_from_days(days as i64);
        let s = secs % 86_400;
        format!(
            "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
            s / 3600,
            s / 60 % 60,
            s % 60
        )
    };
    json!({
        "labels": {"alertname": name, "service": service, "severity": "critical",
                   "unit": format!("{service}.service")},
        "annotations": {"summary": format!("{name} on {service}")},
        "startsAt": rfc3339(now - 1),
        "endsAt": rfc3339(now + 600),
    })
}

/// Days since 1970-01-01 to (year, month, day), after Howard Hinnant's algorithm.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

#[test]
fn civil_dates() {
    assert_eq!(civil_from_days(0), (1970, 1, 1));
    assert_eq!(civil_from_days(19_782), (2024, 2, 29));
}

#[test]
fn alertmanager_delivers_with_the_token_and_inhibits_symptoms_of_a_down_target() {
    let am_bin = tool_or_skip!("prometheus-alertmanager", "alertmanager");
    let dir = tempfile::tempdir().expect("tempdir");
    let receiver = Receiver::start();
    let token = dir.path().join("webhook-token");
    std::fs::write(&token, "s3cret-t0ken\n").expect("write token");
    let [demo_app, prometheus, alertmanager, grafana] = closed_ports();
    let ports = Ports {
        demo_app,
        webhook: receiver.port,
        prometheus,
        alertmanager,
        grafana,
    };
    let r = render(&dir.path().join("etc"), &ports, &token).expect("render");

    let (am, am_port) = start_alertmanager(&am_bin, dir.path(), &r.alertmanager_config);
    let base = Ports::url(am_port);
    let agent = http();

    let alerts = json!([
        alert("TargetDown", "aiops-demo-app"),
        alert("HighErrorRatio", "aiops-demo-app"),
        alert("HighErrorRatio", "other-service"),
    ]);
    let resp = agent
        .post(format!("{base}/api/v2/alerts"))
        .send_json(&alerts)
        .expect("post alerts");
    assert_eq!(resp.status(), 200);

    // Alertmanager's own view: the demo app's error alert is suppressed by its TargetDown.
    let state_of = |alerts: &Value, name: &str, service: &str| -> Option<(String, usize)> {
        alerts.as_array()?.iter().find_map(|a| {
            let l = &a["labels"];
            (l["alertname"] == name && l["service"] == service).then(|| {
                let s = &a["status"];
                (
                    s["state"].as_str().unwrap_or_default().to_owned(),
                    s["inhibitedBy"].as_array().map_or(0, Vec::len),
                )
            })
        })
    };
    wait_for("the inhibition to apply", Duration::from_secs(30), || {
        let mut resp = agent.get(format!("{base}/api/v2/alerts")).call().ok()?;
        let all: Value = resp.body_mut().read_json().ok()?;
        let symptom = state_of(&all, "HighErrorRatio", "aiops-demo-app")?;
        let other = state_of(&all, "HighErrorRatio", "other-service")?;
        let cause = state_of(&all, "TargetDown", "aiops-demo-app")?;
        (symptom == ("suppressed".into(), 1)
            && other == ("active".into(), 0)
            && cause == ("active".into(), 0))
            .then_some(())
    });

    // After group_wait, one notification per (alertname, service) group that is not muted.
    let got = wait_for("two notifications", Duration::from_secs(60), || {
        let got = receiver.received();
        (got.len() >= 2).then_some(got)
    });
    let mut groups = Vec::new();
    for n in &got {
        assert_eq!(
            n.authorization.as_deref(),
            Some("Bearer s3cret-t0ken"),
            "token from the file"
        );
        assert_eq!(n.body["version"], "4");
        assert_eq!(n.body["status"], "firing");
        assert_eq!(n.body["receiver"], "aiops");
        let gl = &n.body["groupLabels"];
        assert_eq!(
            gl.as_object().map(|o| o.len()),
            Some(2),
            "grouped by alertname and service: {gl}"
        );
        assert_eq!(n.body["alerts"].as_array().map(Vec::len), Some(1));
        groups.push(format!(
            "{}/{}",
            gl["alertname"].as_str().unwrap_or(""),
            gl["service"].as_str().unwrap_or("")
        ));
    }
    groups.sort();
    assert_eq!(
        groups,
        ["HighErrorRatio/other-service", "TargetDown/aiops-demo-app"]
    );

    // All three groups were due at the same moment: Alertmanager's count of webhook
    // notifications shows the muted one was never sent.
    let mut resp = agent
        .get(format!("{base}/metrics"))
        .call()
        .expect("metrics");
    let metrics = resp.body_mut().read_to_string().expect("metrics body");
    let sent = metrics
        .lines()
        .find(|l| l.starts_with("alertmanager_notifications_total{integration=\"webhook\"}"))
        .and_then(|l| l.rsplit(' ').next()?.parse::<f64>().ok());
    assert_eq!(sent, Some(2.0), "{}", am.log_text());
    assert_eq!(receiver.received().len(), 2);
    drop(am);
}
