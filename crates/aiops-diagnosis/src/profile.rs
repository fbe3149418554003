//! Evidence profiles: what to ask Prometheus about a service, as data.
//!
//! The built-in profiles are `profiles.toml` at the crate root (embedded);
//! `diagnosis.profiles_file` adds profiles and replaces built-in ones of the same name, and
//! `diagnosis.builtin_profiles = false` leaves only the file's. The format is documented at the
//! top of `profiles.toml` and in docs/PROFILES.md.
//!
//! A profile names the metrics whose presence means it applies (`detect`) and its items: a key
//! (what catalog conditions test), a label, a unit, a PromQL template and an optional baseline
//! template. Templates are parsed when the file is loaded ([`Template::parse`]): the
//! placeholders `$job`, `$instance`, `$unit` and `$service` may stand only where a PromQL string
//! literal goes (a matcher's value, a function's string argument) and are rendered through
//! [`crate::prom::label_value`], the one PromQL escape, so a hostile value stays inside one
//! string literal. A baseline must also use `[$window]` (or `[$window:STEP]`) and `$at` after a
//! range, which the engine fills with the baseline window and the `@` modifier pinning the
//! moment the incident began. Any other `$`, and a `#` comment, outside a string literal is an
//! error.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use aiops_core::config::DiagnosisConfig;
use aiops_core::model::ValueUnit;
use serde::Deserialize;

use crate::evidence::keys;
use crate::prom::label_value;

/// The built-in profiles' text.
pub const BUILTIN: &str = include_str!("../profiles.toml");

/// The profile file format version this build reads.
pub const VERSION: u32 = 1;

/// The profile of the demo app (faults, cache and its recording rules).
pub const DEMO_PROFILE: &str = "aiops-demo";

/// The keys an HTTP profile provides so that the generic rules and the catalog's HTTP entries
/// work on it.
pub const HTTP_KEYS: [&str; 3] = [keys::ERROR_RATIO, keys::REQUEST_RATE, keys::LATENCY_P99];

/// Why profiles cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProfileError {
    #[error(
        "cannot read the evidence profiles {path}: {message}; fix diagnosis.profiles_file or remove it"
    )]
    Read { path: PathBuf, message: String },
    #[error("the evidence profiles {origin} are not valid TOML: {message}")]
    Syntax { origin: String, message: String },
    #[error("the evidence profiles {origin}: {message}")]
    Top { origin: String, message: String },
    /// A profile is wrong; `profile` is its name (or `#N` when it has none), `field` the key
    /// (`item[2].query` for an item's).
    #[error("the evidence profiles {origin}: profile {profile}, field `{field}`: {message}")]
    Profile {
        origin: String,
        profile: String,
        field: String,
        message: String,
    },
    /// A watched service names a profile nobody defines.
    #[error(
        "watch.{service}.profiles names {profile:?}, which is no evidence profile; known profiles: {known}"
    )]
    Unknown {
        service: String,
        profile: String,
        known: String,
    },
}

/// A placeholder that stands for a string literal.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Placeholder {
    /// The Prometheus job of the service.
    Job,
    /// The alert's `instance` label.
    Instance,
    /// The watched service's systemd unit.
    Unit,
    /// The watched service's name.
    Service,
}

impl Placeholder {
    pub const ALL: [Placeholder; 4] = [
        Placeholder::Job,
        Placeholder::Instance,
        Placeholder::Unit,
        Placeholder::Service,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Placeholder::Job => "job",
            Placeholder::Instance => "instance",
            Placeholder::Unit => "unit",
            Placeholder::Service => "service",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Segment {
    /// PromQL as written (string literals of the template included).
    Code(String),
    /// A placeholder, rendered as one escaped string literal.
    Literal(Placeholder),
    /// The baseline window (`1h`).
    Window,
    /// The `@` modifier of the baseline (`@ 1795867380.000`).
    At,
}

/// A parsed PromQL template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    source: String,
    segments: Vec<Segment>,
}

/// The values placeholders stand for; a template using one that is `None` is not rendered.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Vars {
    pub job: Option<String>,
    pub instance: Option<String>,
    pub unit: Option<String>,
    pub service: Option<String>,
}

impl Vars {
    fn get(&self, p: Placeholder) -> Option<&str> {
        match p {
            Placeholder::Job => self.job.as_deref(),
            Placeholder::Instance => self.instance.as_deref(),
            Placeholder::Unit => self.unit.as_deref(),
            Placeholder::Service => self.service.as_deref(),
        }
    }
}

impl Template {
    /// Parses `source`; `baseline` allows (and requires) `$window` and `$at`.
    pub fn parse(source: &str, baseline: bool) -> Result<Self, String> {
        let mut segments = Vec::new();
        let mut code = String::new();
        let mut chars = source.char_indices().peekable();
        let (mut has_window, mut has_at) = (false, false);
        while let Some((i, c)) = chars.next() {
            match c {
                '"' | '\'' | '`' => {
                    code.push(c);
                    let mut closed = false;
                    while let Some((_, d)) = chars.next() {
                        code.push(d);
                        if d == '\\' && c != '`' {
                            match chars.next() {
                                Some((_, e)) => code.push(e),
                                None => break,
                            }
                        } else if d == c {
                            closed = true;
                            break;
                        } else if d == '\n' && c != '`' {
                            break;
                        }
                    }
                    if !closed {
                        return Err(format!(
                            "the string literal starting at byte {i} is not closed"
                        ));
                    }
                }
                '#' => {
                    return Err(format!(
                        "`#` at byte {i} starts a PromQL comment; templates may not hold comments"
                    ));
                }
                '$' => {
                    let mut name = String::new();
                    while let Some((_, d)) = chars.peek() {
                        if d.is_ascii_alphanumeric() || *d == '_' {
                            name.push(*d);
                            chars.next();
                        } else {
                            break;
                        }
                    }
                    let next = chars.peek().map(|(_, d)| *d);
                    let before = code.trim_end().chars().last();
                    let placeholder = Placeholder::ALL.into_iter().find(|p| p.name() == name);
                    if let Some(p) = placeholder {
                        let ok_before = matches!(before, Some('=' | '~' | ',' | '('));
                        let ok_after = matches!(next, None | Some('}' | ',' | ')'))
                            || next.is_some_and(char::is_whitespace);
                        if !ok_before || !ok_after {
                            return Err(format!(
                                "${name} at byte {i} is not where a string literal goes; write it as a matcher's value (`{{job=${name}}}`) or a function's string argument"
                            ));
                        }
                        segments.push(Segment::Code(std::mem::take(&mut code)));
                        segments.push(Segment::Literal(p));
                    } else if name == "window" && baseline {
                        if before != Some('[') || !matches!(next, Some(']' | ':')) {
                            return Err(format!(
                                "$window at byte {i} must be a range: `[$window]` or `[$window:1m]`"
                            ));
                        }
                        has_window = true;
                        segments.push(Segment::Code(std::mem::take(&mut code)));
                        segments.push(Segment::Window);
                    } else if name == "at" && baseline {
                        if !matches!(before, Some(']' | ')'))
                            || !(next.is_none()
                                || matches!(next, Some(')'))
                                || next.is_some_and(char::is_whitespace))
                        {
                            return Err(format!(
                                "$at at byte {i} must follow a range or a subquery: `...[$window] $at`"
                            ));
                        }
                        has_at = true;
                        segments.push(Segment::Code(std::mem::take(&mut code)));
                        segments.push(Segment::At);
                    } else {
                        let allowed = if baseline {
                            "$job, $instance, $unit, $service (as string literals), $window and $at"
                        } else {
                            "$job, $instance, $unit and $service (as string literals)"
                        };
                        return Err(format!(
                            "`${name}` at byte {i} is no placeholder; a template may use only {allowed}"
                        ));
                    }
                }
                c => code.push(c),
            }
        }
        if !code.is_empty() {
            segments.push(Segment::Code(code));
        }
        segments.retain(|s| !matches!(s, Segment::Code(c) if c.is_empty()));
        if source.trim().is_empty() {
            return Err("the query is empty".into());
        }
        if baseline && !(has_window && has_at) {
            return Err(
                "a baseline must read the window before the incident: use `[$window]` (or a subquery `[$window:1m]`) and `$at` after it, e.g. avg_over_time(x{job=$job}[$window] $at)"
                    .into(),
            );
        }
        Ok(Self {
            source: source.to_owned(),
            segments,
        })
    }

    /// The template as written.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// The placeholders it uses.
    pub fn uses(&self) -> BTreeSet<Placeholder> {
        self.segments
            .iter()
            .filter_map(|s| match s {
                Segment::Literal(p) => Some(*p),
                _ => None,
            })
            .collect()
    }

    /// Renders the template; `Err(p)` when it uses a placeholder `vars` has no value for.
    pub fn render(&self, vars: &Vars, window: &str, at: &str) -> Result<String, Placeholder> {
        let mut out = String::with_capacity(self.source.len() + 32);
        for s in &self.segments {
            match s {
                Segment::Code(c) => out.push_str(c),
                Segment::Literal(p) => out.push_str(&label_value(vars.get(*p).ok_or(*p)?)),
                Segment::Window => out.push_str(window),
                Segment::At => out.push_str(at),
            }
        }
        Ok(out)
    }
}

/// Where a profile's metrics live.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Scope {
    /// Under the service's own job (`{job=$job}`).
    #[default]
    Job,
    /// On the host, under whatever job scrapes node_exporter: detected by the names alone.
    Host,
}

/// One item of a profile.
#[derive(Debug, Clone, PartialEq)]
pub struct Item {
    pub key: String,
    pub label: String,
    pub unit: ValueUnit,
    pub query: Template,
    pub baseline: Option<Template>,
}

/// One profile.
#[derive(Debug, Clone, PartialEq)]
pub struct Profile {
    pub name: String,
    pub description: String,
    pub scope: Scope,
    /// Any of these metric names present means the profile applies ...
    pub detect: Vec<String>,
    /// ... unless one of these is present too.
    pub detect_unless: Vec<String>,
    /// Profiles that do not apply to a job where this one is detected (an exporter's own
    /// `process_*` and Go metrics describe the exporter, not the service behind it).
    pub hides: Vec<String>,
    pub items: Vec<Item>,
    /// `built-in` or the file it came from.
    pub origin: String,
}

impl Profile {
    /// Whether it applies to a job holding `names` (pure).
    pub fn detected(&self, names: &BTreeSet<String>) -> bool {
        self.detect.iter().any(|n| names.contains(n))
            && !self.detect_unless.iter().any(|n| names.contains(n))
    }

    pub fn item(&self, key: &str) -> Option<&Item> {
        self.items.iter().find(|i| i.key == key)
    }
}

/// The HTTP measures of a job as one profile queries them, placeholders filled in: what the
/// generic `HighErrorRatio` and `HighLatencyP99` rules of `aiops rules` compare.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpMeasures {
    /// The profile they come from.
    pub profile: String,
    pub error_ratio: String,
    pub request_rate: String,
    pub latency_p99: Option<String>,
}

/// The profiles this engine knows, in order (the order detection reports them in and the
/// order that decides which profile's item wins when two provide the same key).
#[derive(Debug, Clone, PartialEq)]
pub struct ProfileSet {
    /// `built-in`, a file, or `built-in + FILE`.
    pub origin: String,
    profiles: Vec<Profile>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawProfile {
    name: String,
    description: String,
    #[serde(default)]
    scope: Scope,
    #[serde(default)]
    detect: Vec<String>,
    #[serde(default)]
    detect_unless: Vec<String>,
    #[serde(default)]
    hides: Vec<String>,
    #[serde(default)]
    item: Vec<toml::Value>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawItem {
    key: String,
    label: String,
    unit: ValueUnit,
    query: String,
    #[serde(default)]
    baseline: Option<String>,
}

/// The unit a standard key must have (the catalog's thresholds are written in it).
pub fn standard_unit(key: &str) -> Option<ValueUnit> {
    Some(match key {
        keys::ERROR_RATIO
        | keys::ERROR_RATIO_SINCE_START
        | keys::CACHE_FILL
        | keys::CACHE_HIT_RATIO => ValueUnit::Ratio,
        keys::REQUEST_RATE => ValueUnit::PerSecond,
        keys::LATENCY_P50 | keys::LATENCY_P99 | keys::UPTIME => ValueUnit::Seconds,
        keys::CPU => ValueUnit::Cores,
        keys::MEMORY => ValueUnit::Bytes,
        keys::MEMORY_GROWTH => ValueUnit::BytesPerSecond,
        keys::RESTARTS | keys::REQUESTS_SINCE_START => ValueUnit::Count,
        keys::FAULT_ERRORS | keys::FAULT_CPU | keys::FAULT_LATENCY | keys::FAULT_LEAK => {
            ValueUnit::Bool
        }
        _ => return None,
    })
}

/// Whether `s` is a Prometheus metric name (`[a-zA-Z_:][a-zA-Z0-9_:]*`).
pub fn is_metric_name(s: &str) -> bool {
    let mut b = s.bytes();
    b.next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == b'_' || c == b':')
        && b.all(|c| c.is_ascii_alphanumeric() || c == b'_' || c == b':')
}

impl ProfileSet {
    /// The profiles shipped with this build.
    pub fn builtin() -> Self {
        Self::parse(BUILTIN, "built-in").expect("the built-in profiles are valid (tested)")
    }

    /// An empty set (no profile applies to anything).
    pub fn empty(origin: &str) -> Self {
        Self {
            origin: origin.to_owned(),
            profiles: Vec::new(),
        }
    }

    /// The profiles the configuration asks for: the built-in ones (unless
    /// `diagnosis.builtin_profiles = false`) with `diagnosis.profiles_file`'s merged in.
    pub fn from_config(config: &DiagnosisConfig) -> Result<Self, ProfileError> {
        let base = if config.builtin_profiles {
            Self::builtin()
        } else {
            Self::empty("none built in")
        };
        match &config.profiles_file {
            Some(path) => Ok(base.merged(Self::load(path)?)),
            None => Ok(base),
        }
    }

    /// Reads and validates the profile file at `path`.
    pub fn load(path: &Path) -> Result<Self, ProfileError> {
        let text = std::fs::read_to_string(path).map_err(|e| ProfileError::Read {
            path: path.to_owned(),
            message: e.to_string(),
        })?;
        Self::parse(&text, &path.display().to_string())
    }

    /// `self` with `other`'s profiles: one of the same name replaces it in place, new ones
    /// follow in `other`'s order.
    pub fn merged(mut self, other: Self) -> Self {
        for p in other.profiles {
            match self.profiles.iter_mut().find(|q| q.name == p.name) {
                Some(slot) => *slot = p,
                None => self.profiles.push(p),
            }
        }
        self.origin = format!("{} + {}", self.origin, other.origin);
        self
    }

    /// Parses and validates profile text; `origin` names it in errors.
    pub fn parse(text: &str, origin: &str) -> Result<Self, ProfileError> {
        let top: toml::Table = toml::from_str(text).map_err(|e| ProfileError::Syntax {
            origin: origin.to_owned(),
            message: e.to_string(),
        })?;
        let raw = crate::catalog::versioned_tables(
            &top,
            "profile",
            "a profile file needs at least one",
            VERSION,
        )
        .map_err(|message| ProfileError::Top {
            origin: origin.to_owned(),
            message,
        })?;
        let mut profiles: Vec<Profile> = Vec::with_capacity(raw.len());
        for (i, value) in raw.iter().enumerate() {
            let name = value
                .get("name")
                .and_then(toml::Value::as_str)
                .map(|s| format!("{s:?}"))
                .unwrap_or_else(|| format!("#{}", i + 1));
            let err = |field: String, message: String| ProfileError::Profile {
                origin: origin.to_owned(),
                profile: name.clone(),
                field,
                message,
            };
            let p: RawProfile = value.clone().try_into().map_err(|e: toml::de::Error| {
                let message = e.message().to_owned();
                err(crate::catalog::field_of(&message, value), message)
            })?;
            let profile = validate(p, origin).map_err(|(f, m)| err(f, m))?;
            if profiles.iter().any(|q| q.name == profile.name) {
                return Err(err(
                    "name".into(),
                    "another profile in this file already has this name".into(),
                ));
            }
            profiles.push(profile);
        }
        Ok(Self {
            origin: origin.to_owned(),
            profiles,
        })
    }

    pub fn get(&self, name: &str) -> Option<&Profile> {
        self.profiles.iter().find(|p| p.name == name)
    }

    /// Every profile, in order.
    pub fn all(&self) -> &[Profile] {
        &self.profiles
    }

    /// The profile names, comma-separated (for messages).
    pub fn names(&self) -> String {
        self.profiles
            .iter()
            .map(|p| p.name.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// Every item key some profile provides.
    pub fn keys(&self) -> BTreeSet<&str> {
        self.profiles
            .iter()
            .flat_map(|p| p.items.iter().map(|i| i.key.as_str()))
            .collect()
    }

    /// The profiles that apply to a job holding the metric `names` (pure): detection. A
    /// detected profile's `hides` are left out.
    pub fn detect(&self, names: &BTreeSet<String>) -> Vec<&Profile> {
        let found: Vec<&Profile> = self.profiles.iter().filter(|p| p.detected(names)).collect();
        // Only a job's own profile hides another: a host profile is about the host, not the
        // job, so it says nothing about whose process_* these are.
        let hidden: BTreeSet<&str> = found
            .iter()
            .filter(|p| p.scope == Scope::Job)
            .flat_map(|p| p.hides.iter().map(String::as_str))
            .collect();
        found
            .into_iter()
            .filter(|p| !hidden.contains(p.name.as_str()))
            .collect()
    }

    /// The series selectors whose metric names detection needs, for ONE call of
    /// `/api/v1/label/__name__/values` (a union of `match[]`): every series of `job`, and the
    /// host-wide metrics the host profiles look for.
    pub fn detection_matchers(&self, job: &str) -> Vec<String> {
        let mut out = vec![format!("{{job={}}}", label_value(job))];
        let host: BTreeSet<&str> = self
            .profiles
            .iter()
            .filter(|p| p.scope == Scope::Host)
            .flat_map(|p| p.detect.iter().chain(&p.detect_unless).map(String::as_str))
            .collect();
        if !host.is_empty() {
            // Metric names are validated ([a-zA-Z0-9_:]), so none carries a regex character.
            let alternatives = host.into_iter().collect::<Vec<_>>().join("|");
            out.push(format!("{{__name__=~{}}}", label_value(&alternatives)));
        }
        out
    }

    /// Checks that every profile a watched service lists exists.
    pub fn check_watched(
        &self,
        watched: &BTreeMap<String, aiops_core::config::WatchConfig>,
    ) -> Result<(), ProfileError> {
        for (service, w) in watched {
            for p in &w.profiles {
                if self.get(p).is_none() {
                    return Err(ProfileError::Unknown {
                        service: service.clone(),
                        profile: p.clone(),
                        known: self.names(),
                    });
                }
            }
        }
        Ok(())
    }

    /// The HTTP measures of `job` from the first of `names` that provides both `error_ratio`
    /// and `request_rate` (and its `latency_p99`, else the first other listed profile's), with
    /// `$job` filled in. `None` when none of them measures HTTP, or their queries need a
    /// placeholder other than `$job`. This is what `aiops rules` calls.
    pub fn http_measures(&self, names: &[&str], job: &str) -> Option<HttpMeasures> {
        let vars = Vars {
            job: Some(job.to_owned()),
            ..Vars::default()
        };
        let render =
            |p: &Profile, key: &str| p.item(key).and_then(|i| i.query.render(&vars, "", "").ok());
        let listed: Vec<&Profile> = names.iter().filter_map(|n| self.get(n)).collect();
        for p in &listed {
            let (Some(error_ratio), Some(request_rate)) =
                (render(p, keys::ERROR_RATIO), render(p, keys::REQUEST_RATE))
            else {
                continue;
            };
            let latency_p99 = render(p, keys::LATENCY_P99)
                .or_else(|| listed.iter().find_map(|q| render(q, keys::LATENCY_P99)));
            return Some(HttpMeasures {
                profile: p.name.clone(),
                error_ratio,
                request_rate,
                latency_p99,
            });
        }
        None
    }
}

fn validate(p: RawProfile, origin: &str) -> Result<Profile, (String, String)> {
    let err = |f: &str, m: String| Err((f.to_owned(), m));
    if p.name.is_empty()
        || p.name.len() > 64
        || !p
            .name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    {
        return err(
            "name",
            format!(
                "{:?} must be 1 to 64 characters of kebab-case (a-z, 0-9, -)",
                p.name
            ),
        );
    }
    if p.description.trim().is_empty() {
        return err("description", "must say what the profile reads".into());
    }
    for (field, list) in [("detect", &p.detect), ("detect_unless", &p.detect_unless)] {
        for (i, n) in list.iter().enumerate() {
            if !is_metric_name(n) {
                return err(
                    &format!("{field}[{i}]"),
                    format!("{n:?} is not a metric name ([a-zA-Z_:][a-zA-Z0-9_:]*)"),
                );
            }
        }
    }
    if p.item.is_empty() {
        return err(
            "item",
            "a profile needs at least one `[[profile.item]]`".into(),
        );
    }
    let mut items: Vec<Item> = Vec::with_capacity(p.item.len());
    for (i, value) in p.item.iter().enumerate() {
        let at = |f: &str| {
            let key = value
                .get("key")
                .and_then(toml::Value::as_str)
                .map(|k| format!(" ({k})"))
                .unwrap_or_default();
            format!("item[{i}]{key}.{f}")
        };
        let raw: RawItem = value.clone().try_into().map_err(|e: toml::de::Error| {
            let message = e.message().to_owned();
            (at(&crate::catalog::field_of(&message, value)), message)
        })?;
        let key_ok = raw
            .key
            .bytes()
            .next()
            .is_some_and(|b| b.is_ascii_lowercase())
            && raw
                .key
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
            && raw.key.len() <= 64;
        if !key_ok {
            return Err((
                at("key"),
                format!(
                    "{:?} must be 1 to 64 characters of snake_case (a-z, 0-9, _), starting with a letter",
                    raw.key
                ),
            ));
        }
        if raw.key == keys::UP || raw.key == keys::PROMETHEUS_REACHABLE {
            return Err((
                at("key"),
                format!(
                    "{:?} is measured by the engine itself for every job",
                    raw.key
                ),
            ));
        }
        if let Some(want) = standard_unit(&raw.key) {
            if raw.unit != want {
                return Err((
                    at("unit"),
                    format!(
                        "{} is a standard key measured in {want:?} (the catalog's thresholds are written in it), not {:?}",
                        raw.key, raw.unit
                    ),
                ));
            }
        }
        if items.iter().any(|x| x.key == raw.key) {
            return Err((
                at("key"),
                "another item of this profile already has this key".into(),
            ));
        }
        if raw.label.trim().is_empty() {
            return Err((at("label"), "must name the measure for people".into()));
        }
        let query = Template::parse(&raw.query, false).map_err(|m| (at("query"), m))?;
        let baseline = match &raw.baseline {
            Some(b) => Some(Template::parse(b, true).map_err(|m| (at("baseline"), m))?),
            None => None,
        };
        if p.scope == Scope::Host {
            if let Some(t) = std::iter::once(&query)
                .chain(baseline.as_ref())
                .find(|t| t.uses().contains(&Placeholder::Job))
            {
                return Err((
                    at("query"),
                    format!(
                        "a host profile's metrics do not live under the service's job; remove $job from {:?}",
                        t.source()
                    ),
                ));
            }
        }
        items.push(Item {
            key: raw.key,
            label: raw.label,
            unit: raw.unit,
            query,
            baseline,
        });
    }
    Ok(Profile {
        name: p.name,
        description: p.description,
        scope: p.scope,
        detect: p.detect,
        detect_unless: p.detect_unless,
        hides: p.hides,
        items,
        origin: origin.to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars() -> Vars {
        Vars {
            job: Some("web".into()),
            instance: Some("127.0.0.1:1".into()),
            unit: Some("web.service".into()),
            service: Some("web".into()),
        }
    }

    #[test]
    fn templates_render_placeholders_as_escaped_literals() {
        let t = Template::parse(r#"sum(rate(x{job=$job, code=~"5.."}[1m]))"#, false).unwrap();
        assert_eq!(
            t.render(&vars(), "", "").unwrap(),
            r#"sum(rate(x{job="web", code=~"5.."}[1m]))"#
        );
        let hostile = Vars {
            job: Some("a\"}) or vector(1) or x{b=\"".into()),
            ..vars()
        };
        assert_eq!(
            t.render(&hostile, "", "").unwrap(),
            r#"sum(rate(x{job="a\"}) or vector(1) or x{b=\"", code=~"5.."}[1m]))"#
        );
        assert_eq!(t.render(&Vars::default(), "", ""), Err(Placeholder::Job));
        let b = Template::parse("avg_over_time((sum(x{job=$job}))[$window:1m] $at)", true).unwrap();
        assert_eq!(
            b.render(&vars(), "1h", "@ 1.000").unwrap(),
            r#"avg_over_time((sum(x{job="web"}))[1h:1m] @ 1.000)"#
        );
        // A `$` inside a literal of the template is text, not a placeholder.
        let r = Template::parse(r#"x{job=$job, path=~"^/a$"}"#, false).unwrap();
        assert_eq!(r.uses(), [Placeholder::Job].into());
    }

    #[test]
    fn placeholders_outside_literal_positions_are_rejected() {
        for (t, baseline, wants) in [
            ("x{job=\"$job\"}", false, None),
            ("x{job=$jobs}", false, Some("no placeholder")),
            ("x{job=$job}[$window]", false, Some("no placeholder")),
            (
                "x{job=$job} > $job",
                false,
                Some("not where a string literal goes"),
            ),
            ("x$job", false, Some("not where")),
            ("x{job=$job} # c", false, Some("comment")),
            ("x{job=\"a}", false, Some("not closed")),
            ("$ x", false, Some("no placeholder")),
            ("avg_over_time(x[$window])", true, Some("$at")),
            ("avg_over_time(x[1h] $at)", true, Some("[$window]")),
            ("avg_over_time(x[$window] $at)", true, None),
            ("avg_over_time(x[$window)", true, Some("must be a range")),
            ("", false, Some("empty")),
        ] {
            let r = Template::parse(t, baseline);
            match wants {
                None => assert!(r.is_ok(), "{t}: {r:?}"),
                Some(w) => {
                    let e = r.unwrap_err();
                    assert!(e.contains(w), "{t}: {e}");
                }
            }
        }
    }

    #[test]
    fn detection_is_by_names_with_exclusions() {
        let set = ProfileSet::builtin();
        let names = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<BTreeSet<_>>();
        let go = set.detect(&names(&[
            "http_requests_total",
            "promhttp_metric_handler_requests_total",
        ]));
        let go: Vec<&str> = go.iter().map(|p| p.name.as_str()).collect();
        assert!(go.contains(&"http-go-promhttp"), "{go:?}");
        assert!(!go.contains(&"http-prom-client"), "{go:?}");
        let m = set.detection_matchers("a\"b");
        assert_eq!(m[0], r#"{job="a\"b"}"#);
        assert!(m[1].starts_with("{__name__=~\""), "{}", m[1]);
    }
}
