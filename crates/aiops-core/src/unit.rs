//! Strictly validated systemd unit names.
//!
//! A unit name reaches us from alert labels, which anyone who can push a metric or write a rule
//! controls. It is only ever passed to `systemctl` as one argv element after `--`, but it is also
//! validated here so that nothing odd (shell metacharacters, path separators, option-looking names,
//! escapes) ever gets as far as an allow-list lookup.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Longest unit name systemd accepts.
const MAX_LEN: usize = 255;

/// Why a unit name was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UnitNameError {
    #[error("unit name is empty")]
    Empty,
    #[error("unit name {0:?} is longer than {MAX_LEN} characters")]
    TooLong(String),
    #[error("unit name {name:?} contains {ch:?}; only letters, digits and : _ . @ - are allowed")]
    BadChar { name: String, ch: char },
    #[error("unit name {0:?} must start with a letter or digit")]
    BadStart(String),
    #[error("unit name {0:?} must end in .service")]
    NotAService(String),
    #[error("unit name {0:?} contains \"..\"")]
    DotDot(String),
}

/// A `.service` unit name that passed [`UnitName::parse`].
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(transparent)]
pub struct UnitName(String);

impl UnitName {
    pub fn parse(name: &str) -> Result<Self, UnitNameError> {
        if name.is_empty() {
            return Err(UnitNameError::Empty);
        }
        if name.len() > MAX_LEN {
            return Err(UnitNameError::TooLong(name.chars().take(64).collect()));
        }
        if let Some(ch) = name
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, ':' | '_' | '.' | '@' | '-')))
        {
            return Err(UnitNameError::BadChar {
                name: name.to_owned(),
                ch,
            });
        }
        if !name.as_bytes()[0].is_ascii_alphanumeric() {
            return Err(UnitNameError::BadStart(name.to_owned()));
        }
        if name.contains("..") {
            return Err(UnitNameError::DotDot(name.to_owned()));
        }
        let stem = name.strip_suffix(".service");
        // A template without an instance (`foo@.service`) cannot be restarted.
        if stem.is_none_or(|s| s.is_empty() || s.ends_with('@')) {
            return Err(UnitNameError::NotAService(name.to_owned()));
        }
        Ok(Self(name.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for UnitName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for UnitName {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        UnitName::parse(&s).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_ordinary_services() {
        for ok in [
            "aiops-demo-app.service",
            "nginx.service",
            "getty@tty1.service",
            "a:b_c.service",
        ] {
            assert!(UnitName::parse(ok).is_ok(), "{ok}");
        }
    }

    #[test]
    fn refuses_injection_and_oddities() {
        for bad in [
            "",
            "x.service; reboot",
            "../../etc/passwd",
            "-H.service",
            "--force.service",
            "a b.service",
            "a\\x2d.service",
            "a/b.service",
            "a.socket",
            "a.service\n",
            "$(reboot).service",
            ".service",
            "a..b.service",
            "ünï.service",
        ] {
            assert!(UnitName::parse(bad).is_err(), "{bad:?} was accepted");
        }
        assert!(UnitName::parse(&format!("{}.service", "a".repeat(300))).is_err());
    }

    proptest::proptest! {
        #[test]
        fn accepted_names_are_safe_argv(s in "\\PC{0,80}") {
            if let Ok(u) = UnitName::parse(&s) {
                let u = u.as_str();
                proptest::prop_assert!(!u.starts_with('-'));
                proptest::prop_assert!(u.ends_with(".service"));
                proptest::prop_assert!(u.chars().all(|c| c.is_ascii_graphic()));
                proptest::prop_assert!(!u.contains('/'));
            }
        }
    }
}
