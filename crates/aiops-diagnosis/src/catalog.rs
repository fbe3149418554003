//! The diagnosis catalog: symptom patterns mapped to a likely cause, an action and a risk.
//!
//! The built-in catalog is `catalog.toml` at the crate root (embedded); `diagnosis.catalog_file`
//! replaces it as a whole. The file format is documented at the top of `catalog.toml`. Loading
//! validates everything the engine relies on (known keys, sensible thresholds, known
//! placeholders, unique ids) and every error names the entry and the field, so a typo in a
//! custom catalog is caught at start-up, not during an incident.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use aiops_core::config::{ActionKind, DiagnosisConfig};
use aiops_core::model::Risk;
use serde::{Deserialize, Serialize};

use crate::evidence::keys;
use crate::unit_state;

/// The built-in catalog's text.
pub const BUILTIN: &str = include_str!("../catalog.toml");

/// The catalog format version this build reads.
pub const VERSION: u32 = 1;

/// Why a catalog cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CatalogError {
    #[error(
        "cannot read the diagnosis catalog {path}: {message}; fix diagnosis.catalog_file or remove it to use the built-in catalog"
    )]
    Read { path: PathBuf, message: String },
    #[error("the diagnosis catalog {origin} is not valid TOML: {message}")]
    Syntax { origin: String, message: String },
    #[error("the diagnosis catalog {origin}: {message}")]
    Top { origin: String, message: String },
    /// An entry is wrong; `entry` is its id (or `#N` when it has none) and `field` the key.
    #[error("the diagnosis catalog {origin}: entry {entry}, field `{field}`: {message}")]
    Entry {
        origin: String,
        entry: String,
        field: String,
        message: String,
    },
}

/// What a hypothesis proposes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum CatalogAction {
    Restart,
    ClearCache,
    /// No action will help; the advice says what to do instead.
    None,
}

impl CatalogAction {
    pub fn action_kind(self) -> Option<ActionKind> {
        match self {
            CatalogAction::Restart => Some(ActionKind::Restart),
            CatalogAction::ClearCache => Some(ActionKind::ClearCache),
            CatalogAction::None => None,
        }
    }
}

/// One test on one evidence key; all of its set tests must hold.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Condition {
    pub key: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub above: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub below: Option<f64>,
    /// Holds when value > factor × baseline.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub above_baseline: Option<f64>,
    /// Holds when value < factor × baseline.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub below_baseline: Option<f64>,
    /// `true`: holds when the key has no value; `false`: when it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub missing: Option<bool>,
    /// What a `*_baseline` test gives when there is no baseline.
    #[serde(default)]
    pub if_no_baseline: bool,
}

/// One symptom pattern.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Entry {
    pub id: String,
    pub cause: String,
    pub action: CatalogAction,
    pub risk: Risk,
    pub confidence: f64,
    #[serde(default)]
    pub alerts: Vec<String>,
    #[serde(default)]
    pub unless_alerts: Vec<String>,
    #[serde(default)]
    pub advice: Option<String>,
    #[serde(default)]
    pub when: Vec<Condition>,
    #[serde(default)]
    pub when_any: Vec<Condition>,
}

/// A validated catalog, entries in file order (the order breaks ties in ranking).
#[derive(Debug, Clone, PartialEq)]
pub struct Catalog {
    /// Where it came from: `built-in` or the file path.
    pub origin: String,
    pub entries: Vec<Entry>,
}

impl Catalog {
    /// The catalog shipped with this build.
    pub fn builtin() -> Self {
        Self::parse(BUILTIN, "built-in").expect("the built-in catalog is valid (tested)")
    }

    /// The catalog the configuration asks for: `diagnosis.catalog_file`, else the built-in one.
    pub fn from_config(config: &DiagnosisConfig) -> Result<Self, CatalogError> {
        Self::from_config_with_keys(config, &BTreeSet::new())
    }

    /// [`Catalog::from_config`], its conditions also allowed to test `extra` keys (those of
    /// the configured evidence profiles, `diagnosis.profiles_file` included).
    pub fn from_config_with_keys(
        config: &DiagnosisConfig,
        extra: &BTreeSet<String>,
    ) -> Result<Self, CatalogError> {
        match &config.catalog_file {
            Some(path) => Self::load_with_keys(path, extra),
            None => Ok(Self::builtin()),
        }
    }

    /// Reads and validates the catalog file at `path`.
    pub fn load(path: &Path) -> Result<Self, CatalogError> {
        Self::load_with_keys(path, &BTreeSet::new())
    }

    fn load_with_keys(path: &Path, extra: &BTreeSet<String>) -> Result<Self, CatalogError> {
        let text = std::fs::read_to_string(path).map_err(|e| CatalogError::Read {
            path: path.to_owned(),
            message: e.to_string(),
        })?;
        Self::parse_with_keys(&text, &path.display().to_string(), extra)
    }

    /// Parses and validates catalog text; `origin` names it in errors.
    pub fn parse(text: &str, origin: &str) -> Result<Self, CatalogError> {
        Self::parse_with_keys(text, origin, &BTreeSet::new())
    }

    /// [`Catalog::parse`], conditions also allowed to test the `extra` keys.
    pub fn parse_with_keys(
        text: &str,
        origin: &str,
        extra: &BTreeSet<String>,
    ) -> Result<Self, CatalogError> {
        let top: toml::Table = toml::from_str(text).map_err(|e| CatalogError::Syntax {
            origin: origin.to_owned(),
            message: e.to_string(),
        })?;
        let raw = versioned_tables(&top, "entry", "a catalog needs at least one entry", VERSION)
            .map_err(|message| CatalogError::Top {
                origin: origin.to_owned(),
                message,
            })?;
        let mut entries = Vec::with_capacity(raw.len());
        let mut ids = BTreeSet::new();
        for (i, value) in raw.iter().enumerate() {
            // Name the entry by its id when it has one, so errors point at something greppable.
            let name = value
                .get("id")
                .and_then(toml::Value::as_str)
                .map(|s| format!("{s:?}"))
                .unwrap_or_else(|| format!("#{}", i + 1));
            let entry: Entry = value.clone().try_into().map_err(|e: toml::de::Error| {
                let message = e.message().to_owned();
                CatalogError::Entry {
                    origin: origin.to_owned(),
                    entry: name.clone(),
                    field: field_of(&message, value),
                    message,
                }
            })?;
            let err = |field: &str, message: String| CatalogError::Entry {
                origin: origin.to_owned(),
                entry: name.clone(),
                field: field.to_owned(),
                message,
            };
            validate_entry(&entry, extra).map_err(|(f, m)| err(&f, m))?;
            if !ids.insert(entry.id.clone()) {
                return Err(err("id", "another entry already has this id".into()));
            }
            entries.push(entry);
        }
        Ok(Self {
            origin: origin.to_owned(),
            entries,
        })
    }

    pub fn get(&self, id: &str) -> Option<&Entry> {
        self.entries.iter().find(|e| e.id == id)
    }
}

/// Best guess at which field a serde message is about: the backquoted name in "missing field
/// `x`" / "unknown field `x`", else the first field whose value has the wrong type.
pub(crate) fn field_of(message: &str, value: &toml::Value) -> String {
    if let Some(rest) = message
        .strip_prefix("missing field `")
        .or_else(|| message.strip_prefix("unknown field `"))
    {
        if let Some(end) = rest.find('`') {
            return rest[..end].to_owned();
        }
    }
    // "unknown variant `reboot`, expected ..." and type errors do not name the field: find the
    // field holding the offending text.
    if let (Some(start), Some(table)) = (message.find('`'), value.as_table()) {
        let rest = &message[start + 1..];
        if let Some(end) = rest.find('`') {
            let bad = &rest[..end];
            for (k, v) in table {
                if v.as_str() == Some(bad) {
                    return k.clone();
                }
            }
        }
    }
    "?".into()
}

fn validate_entry(e: &Entry, extra: &BTreeSet<String>) -> Result<(), (String, String)> {
    let err = |f: &str, m: String| Err((f.to_owned(), m));
    if e.id.is_empty()
        || !e
            .id
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    {
        return err(
            "id",
            format!("{:?} must be non-empty kebab-case (a-z, 0-9, -)", e.id),
        );
    }
    if e.cause.trim().is_empty() {
        return err("cause", "must say the likely cause in words".into());
    }
    if !(e.confidence > 0.0 && e.confidence <= 1.0) {
        return err("confidence", format!("{} is outside (0, 1]", e.confidence));
    }
    if e.when.is_empty() && e.when_any.is_empty() {
        return err(
            "when",
            "an entry needs at least one condition (`when` or `when_any`)".into(),
        );
    }
    for (field, list) in [("when", &e.when), ("when_any", &e.when_any)] {
        for (i, c) in list.iter().enumerate() {
            validate_condition(c, extra).map_err(|(sub, m)| (format!("{field}[{i}].{sub}"), m))?;
        }
    }
    if let Some(advice) = &e.advice {
        check_placeholders(advice, extra).map_err(|m| ("advice".to_owned(), m))?;
    }
    Ok(())
}

/// Whether a condition may test `key`: a standard evidence key, a key some built-in evidence
/// profile provides, or a numeric `unit.*` key of the unit's own evidence from systemd.
fn known_condition_key(key: &str, extra: &BTreeSet<String>) -> bool {
    keys::ALL.contains(&key)
        || unit_state::CATALOG_KEYS.contains(&key)
        || builtin_profile_keys().contains(key)
        || extra.contains(key)
}

/// The item keys of the built-in profiles.
fn builtin_profile_keys() -> &'static BTreeSet<String> {
    static KEYS: std::sync::OnceLock<BTreeSet<String>> = std::sync::OnceLock::new();
    KEYS.get_or_init(|| {
        crate::profile::ProfileSet::builtin()
            .keys()
            .into_iter()
            .map(str::to_owned)
            .collect()
    })
}

fn validate_condition(c: &Condition, extra: &BTreeSet<String>) -> Result<(), (String, String)> {
    if !known_condition_key(&c.key, extra) {
        return Err((
            "key".into(),
            format!(
                "unknown evidence key {:?}; known keys: {}, {}",
                c.key,
                keys::ALL.join(", "),
                unit_state::CATALOG_KEYS.join(", ")
            ),
        ));
    }
    let tests = [
        ("above", c.above),
        ("below", c.below),
        ("above_baseline", c.above_baseline),
        ("below_baseline", c.below_baseline),
    ];
    for (name, v) in tests {
        if let Some(v) = v {
            if !v.is_finite() {
                return Err((name.into(), format!("{v} is not a finite number")));
            }
        }
    }
    for (name, v) in [
        ("above_baseline", c.above_baseline),
        ("below_baseline", c.below_baseline),
    ] {
        if v.is_some_and(|f| f <= 0.0) {
            return Err((
                name.into(),
                "a factor of the baseline must be greater than 0".into(),
            ));
        }
    }
    let has_test = tests.iter().any(|(_, v)| v.is_some());
    match c.missing {
        Some(true) if has_test => Err((
            "missing".into(),
            "`missing = true` cannot be combined with thresholds (a missing value has none)"
                .into(),
        )),
        None if !has_test => Err((
            "key".into(),
            "the condition tests nothing: add above, below, above_baseline, below_baseline or missing"
                .into(),
        )),
        _ => Ok(()),
    }
}

/// Checks that every `{...}` in `text` is `KEY`, `KEY.baseline` or `KEY.ratio` for a known key.
pub(crate) fn check_placeholders(text: &str, extra: &BTreeSet<String>) -> Result<(), String> {
    let mut rest = text;
    while let Some(start) = rest.find('{') {
        let after = &rest[start + 1..];
        let end = after
            .find('}')
            .ok_or_else(|| format!("unclosed `{{` in {text:?}"))?;
        let name = &after[..end];
        let key = name
            .strip_suffix(".baseline")
            .or_else(|| name.strip_suffix(".ratio"))
            .unwrap_or(name);
        let unit_text = unit_state::CATALOG_TEXT_KEYS.contains(&name);
        if !(known_condition_key(key, extra) || unit_text) {
            return Err(format!(
                "unknown placeholder {{{name}}}; use {{KEY}}, {{KEY.baseline}} or {{KEY.ratio}} with KEY one of: {}, {}, or one of {}",
                keys::ALL.join(", "),
                unit_state::CATALOG_KEYS.join(", "),
                unit_state::CATALOG_TEXT_KEYS.join(", ")
            ));
        }
        rest = &after[end + 1..];
    }
    Ok(())
}

/// The `[[NAME]]` tables of a versioned TOML file (the catalog's `entry`, the profiles'
/// `profile`), after checking that the file holds only those and `version = VERSION`. The error
/// is the sentence the caller's error type wraps with the file's name. `need` says what the file
/// needs when it has no such table.
pub(crate) fn versioned_tables<'a>(
    top: &'a toml::Table,
    name: &str,
    need: &str,
    version: u32,
) -> Result<&'a Vec<toml::Value>, String> {
    for key in top.keys() {
        if key != "version" && key != name {
            return Err(format!(
                "unknown top-level key `{key}`; expected `version` and `[[{name}]]` tables"
            ));
        }
    }
    match top.get("version") {
        Some(toml::Value::Integer(v)) if *v == i64::from(version) => {}
        Some(v) => {
            return Err(format!(
                "`version = {v}` is not supported; this build reads version {version}"
            ));
        }
        None => return Err(format!("`version = {version}` is missing")),
    }
    match top.get(name) {
        Some(toml::Value::Array(a)) if !a.is_empty() => Ok(a),
        _ => Err(format!("has no `[[{name}]]` tables; {need}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_builtin_catalog_is_valid_and_covers_the_required_patterns() {
        let c = Catalog::builtin();
        for id in [
            "monitoring-blind",
            "target-down",
            "traffic-surge",
            "errors-after-restart",
            "runaway-cpu",
            "memory-leak",
            "cache-thrash",
            "process-bad-state",
        ] {
            assert!(c.get(id).is_some(), "{id} missing");
        }
        assert_eq!(
            c.get("cache-thrash").unwrap().action,
            CatalogAction::ClearCache
        );
        assert_eq!(c.get("traffic-surge").unwrap().action, CatalogAction::None);
    }
}
