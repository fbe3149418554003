//! `aiops rules`: the Prometheus alert rules for the watched services (`[watch.NAME]`).
//!
//! One rule group per service, every alert labelled with static `service` (the entry's name)
//! and `unit` strings taken from the configuration, never from scraped labels, so a scraped
//! value can never become a unit name. Per service:
//!
//! - `TargetDown`: `up{job=...} == 0` (when it has a job);
//! - `UnitFailed`, `UnitCrashLooping`, `UnitMemoryNearMax` (when it has a unit): from the
//!   `aiops_unit_*` series the receiver exports about each watched unit (`systemctl show`);
//! - `HighErrorRatio`, `HighLatencyP99` (when one of its evidence profiles measures them): the
//!   profile's own `error_ratio`, `request_rate` and `latency_p99` queries.
//!
//! Every value reaches PromQL as an escaped string literal (`prom::label_value`, the one PromQL
//! escape) and YAML as a double-quoted (JSON) string, so the file stays well-formed whatever the
//! configuration holds.

use std::fmt::Write as _;

use aiops_core::Config;
use aiops_core::config::{WatchConfig, WatchThresholds};
use aiops_diagnosis::prom::label_value as promql_string;
use aiops_diagnosis::{ProfileError, ProfileSet};

/// What one service's rules need, resolved from the configuration and the profiles.
#[derive(Debug, Clone, PartialEq)]
pub struct Service {
    pub name: String,
    pub unit: Option<String>,
    pub job: Option<String>,
    pub thresholds: Thresholds,
    /// PromQL for the HTTP measures, placeholders already filled in.
    pub http: Option<Http>,
}

/// The HTTP measures of a service, as its profile queries them.
#[derive(Debug, Clone, PartialEq)]
pub struct Http {
    pub error_ratio: String,
    pub request_rate: String,
    pub latency_p99: Option<String>,
}

/// The limits the alerts use: a watched service's `[watch.NAME.thresholds]`, as the
/// configuration holds them (one type, so a threshold cannot be added on one side only).
pub type Thresholds = WatchThresholds;

/// Below this request rate (per second) an error ratio is not an incident.
pub const MIN_REQUEST_RATE: f64 = 0.1;

/// A YAML double-quoted scalar (JSON's string syntax, which YAML reads the same).
fn y(s: &str) -> String {
    serde_json::to_string(s).expect("strings always serialize")
}

struct Alert {
    name: &'static str,
    expr: String,
    severity: &'static str,
    summary: String,
    description: String,
    anchor: &'static str,
}

fn alerts(s: &Service) -> Vec<Alert> {
    let name = &s.name;
    let t = &s.thresholds;
    let mut out = Vec::new();
    if let Some(job) = &s.job {
        out.push(Alert {
            name: "TargetDown",
            expr: format!("up{{job={}}} == 0", promql_string(job)),
            severity: "critical",
            summary: format!("Prometheus cannot scrape {name}"),
            description: format!(
                "The scrape of {name} (job {job}) at {{{{ $labels.instance }}}} has failed for at least {}s: the service or its exporter is down or not answering.",
                t.for_secs
            ),
            anchor: "targetdown",
        });
    }
    if let Some(unit) = &s.unit {
        let u = promql_string(unit);
        out.push(Alert {
            name: "UnitFailed",
            expr: format!("aiops_unit_state{{unit={u},state=\"failed\"}} == 1"),
            severity: "critical",
            summary: format!("{unit} has failed"),
            description: format!(
                "systemd reports {unit} as failed (see aiops_unit_start_limit_hit and aiops_unit_oom_killed for why); systemd does not start it again by itself."
            ),
            anchor: "unitfailed",
        });
        out.push(Alert {
            name: "UnitCrashLooping",
            expr: format!(
                "increase(aiops_unit_restarts_total{{unit={u}}}[5m]) >= {}",
                t.crash_loop_restarts
            ),
            severity: "critical",
            summary: format!("{unit} keeps restarting"),
            description: format!(
                "systemd restarted {unit} {{{{ $value | printf \"%.0f\" }}}} times in the last 5 minutes (threshold {}): it fails soon after every start.",
                t.crash_loop_restarts
            ),
            anchor: "unitcrashlooping",
        });
        out.push(Alert {
            name: "UnitMemoryNearMax",
            expr: format!(
                "aiops_unit_memory_current_bytes{{unit={u}}} / aiops_unit_memory_max_bytes{{unit={u}}} > {}",
                t.memory_near_max
            ),
            severity: "warning",
            summary: format!("{unit} is close to its MemoryMax"),
            description: format!(
                "{unit} uses {{{{ $value | humanizePercentage }}}} of its MemoryMax= (threshold {}%); the kernel OOM-kills it at 100%.",
                fmt_percent(t.memory_near_max)
            ),
            anchor: "unitmemorynearmax",
        });
    }
    if let Some(h) = &s.http {
        out.push(Alert {
            name: "HighErrorRatio",
            expr: format!(
                "({}) > {}\nand\n({}) >= {MIN_REQUEST_RATE}",
                h.error_ratio, t.error_ratio, h.request_rate
            ),
            severity: "critical",
            summary: format!("{name} answers too many requests with errors"),
            description: format!(
                "{{{{ $value | humanizePercentage }}}} of requests to {name} failed with a 5xx status (threshold {}%).",
                fmt_percent(t.error_ratio)
            ),
            anchor: "higherrorratio",
        });
        if let Some(p99) = &h.latency_p99 {
            out.push(Alert {
                name: "HighLatencyP99",
                expr: format!("({p99}) > {}", t.latency_p99_seconds),
                severity: "warning",
                summary: format!("{name} is slow"),
                description: format!(
                    "The 99th percentile of {name}'s request latency is {{{{ $value | humanizeDuration }}}} (threshold {}s).",
                    t.latency_p99_seconds
                ),
                anchor: "highlatencyp99",
            });
        }
    }
    out
}

fn fmt_percent(ratio: f64) -> String {
    let p = ratio * 100.0;
    if (p - p.round()).abs() < 1e-9 {
        format!("{p:.0}")
    } else {
        format!("{p}")
    }
}

/// The services of `config` that get generated rules: every entry of [`Config::watched`] with
/// `alert_rules = true`, by name, with the HTTP measures of the evidence profiles it lists.
pub fn services(config: &Config, profiles: &ProfileSet) -> Vec<Service> {
    config
        .watched()
        .into_iter()
        .filter(|(_, w)| w.alert_rules)
        .map(|(name, w)| {
            let http = http_measures(profiles, &w);
            Service {
                unit: w.unit,
                job: w.job,
                thresholds: w.thresholds,
                http,
                name,
            }
        })
        .collect()
}

/// The PromQL of a watched service's HTTP measures (error ratio, request rate, p99 latency),
/// `$job` filled in, from the first profile it lists in `watch.NAME.profiles` that measures
/// HTTP (docs/PROFILES.md). `None` without a job or without such a profile: profiles detected
/// from Prometheus do not count here, because the rule file is made without one (the NixOS
/// module makes it at build time), so a service gets `HighErrorRatio` and `HighLatencyP99`
/// only when its entry names its HTTP profile.
pub fn http_measures(profiles: &ProfileSet, watch: &WatchConfig) -> Option<Http> {
    let job = watch.job.as_deref()?;
    let names: Vec<&str> = watch.profiles.iter().map(String::as_str).collect();
    let m = profiles.http_measures(&names, job)?;
    Some(Http {
        error_ratio: m.error_ratio,
        request_rate: m.request_rate,
        latency_p99: m.latency_p99,
    })
}

/// The rule file for the watched services of `config` (what `aiops rules` prints). Fails when
/// the evidence profiles cannot be loaded or a watched service names an unknown one.
pub fn render_config(config: &Config) -> Result<String, ProfileError> {
    let profiles = ProfileSet::from_config(&config.diagnosis)?;
    profiles.check_watched(&config.watched())?;
    Ok(render(&services(config, &profiles)))
}

/// The rule file for `services`, in their order.
pub fn render(services: &[Service]) -> String {
    let mut out = String::from(
        "# Generated by `aiops rules` from the [watch.NAME] entries of the aiops configuration;\n\
         # regenerate it instead of editing. One group per watched service; every alert carries\n\
         # static service and unit labels from the configuration.\n\
         groups:\n",
    );
    if services.is_empty() {
        out.truncate(out.len() - "groups:\n".len());
        out.push_str("groups: []\n");
        return out;
    }
    for s in services {
        let _ = writeln!(out, "  - name: {}", y(&format!("aiops-watch-{}", s.name)));
        out.push_str("    interval: 10s\n    rules:\n");
        for a in alerts(s) {
            let _ = writeln!(out, "      - alert: {}", a.name);
            let _ = writeln!(out, "        expr: {}", y(&a.expr));
            let _ = writeln!(out, "        for: {}s", s.thresholds.for_secs);
            out.push_str("        labels:\n");
            let _ = writeln!(out, "          severity: {}", a.severity);
            let _ = writeln!(out, "          service: {}", y(&s.name));
            if let Some(u) = &s.unit {
                let _ = writeln!(out, "          unit: {}", y(u));
            }
            out.push_str("        annotations:\n");
            let _ = writeln!(out, "          summary: {}", y(&a.summary));
            let _ = writeln!(out, "          description: {}", y(&a.description));
            let _ = writeln!(
                out,
                "          runbook_url: {}",
                y(&format!(
                    "https://github.com/aiops-loop/aiops/blob/main/docs/RUNBOOK.md#{}",
                    a.anchor
                ))
            );
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn thresholds() -> Thresholds {
        Thresholds {
            error_ratio: 0.05,
            latency_p99_seconds: 1.0,
            crash_loop_restarts: 3,
            memory_near_max: 0.9,
            for_secs: 30,
        }
    }

    #[test]
    fn a_hostile_value_stays_one_promql_literal_and_one_yaml_string() {
        let s = promql_string("a\"} or vector(1) or up{x=\"\\\n");
        assert_eq!(s, r#""a\"} or vector(1) or up{x=\"\\\n""#);
        let text = render(&[Service {
            name: "svc".into(),
            unit: None,
            job: Some("j\"ob\nx".into()),
            thresholds: thresholds(),
            http: None,
        }]);
        let expr_line = text.lines().find(|l| l.contains("expr:")).unwrap();
        let yaml: String =
            serde_json::from_str(expr_line.trim().trim_start_matches("expr: ")).unwrap();
        assert_eq!(yaml, "up{job=\"j\\\"ob\\nx\"} == 0");
    }

    #[test]
    fn what_a_service_gets_depends_on_what_it_has() {
        let unit_only = alerts(&Service {
            name: "db".into(),
            unit: Some("postgresql.service".into()),
            job: None,
            thresholds: thresholds(),
            http: None,
        });
        let names: Vec<_> = unit_only.iter().map(|a| a.name).collect();
        assert_eq!(
            names,
            ["UnitFailed", "UnitCrashLooping", "UnitMemoryNearMax"]
        );
        let web = alerts(&Service {
            name: "web".into(),
            unit: None,
            job: Some("web".into()),
            thresholds: thresholds(),
            http: Some(Http {
                error_ratio: "E".into(),
                request_rate: "R".into(),
                latency_p99: None,
            }),
        });
        let names: Vec<_> = web.iter().map(|a| a.name).collect();
        assert_eq!(names, ["TargetDown", "HighErrorRatio"]);
        assert_eq!(web[1].expr, "(E) > 0.05\nand\n(R) >= 0.1");
    }

    #[test]
    fn no_watched_service_is_an_empty_rule_file() {
        assert!(render(&[]).ends_with("groups: []\n"));
    }
}
