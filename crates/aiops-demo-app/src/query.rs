//! Query strings: `a=1&b=x%20y` into decoded pairs, and typed, range-checked parameters whose
//! errors name the parameter and what it allows.

use std::fmt;

/// A request parameter that was missing, malformed, out of range or unknown.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("parameter `{param}` {problem}")]
pub struct ParamError {
    /// The parameter's name as the client must spell it.
    pub param: String,
    /// What is wrong and what is allowed, e.g. "must be a number from 0 to 1, got \"1.5\"".
    pub problem: String,
}

impl ParamError {
    pub fn new(param: impl Into<String>, problem: impl Into<String>) -> Self {
        Self {
            param: param.into(),
            problem: problem.into(),
        }
    }
}

/// Decoded `name=value` pairs in their order. Duplicate names are errors, so a client that
/// sends `ratio=0.1&ratio=0.9` learns which one we would have used instead of guessing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Params {
    pairs: Vec<(String, String)>,
}

impl Params {
    /// Parses a raw query string (without the `?`). `+` is a space; `%XX` is decoded; a name
    /// without `=` has an empty value.
    pub fn parse(raw: &str) -> Result<Params, ParamError> {
        let mut pairs: Vec<(String, String)> = Vec::new();
        for piece in raw.split('&').filter(|p| !p.is_empty()) {
            let (name, value) = piece.split_once('=').unwrap_or((piece, ""));
            let name = decode(name).map_err(|e| ParamError::new(name, e.to_string()))?;
            let value = decode(value).map_err(|e| ParamError::new(&name, e.to_string()))?;
            if pairs.iter().any(|(n, _)| *n == name) {
                return Err(ParamError::new(
                    name,
                    "is given more than once; give it once",
                ));
            }
            pairs.push((name, value));
        }
        Ok(Params { pairs })
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.pairs
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// Fails on the first parameter not in `allowed`, listing the allowed ones.
    pub fn only(&self, allowed: &[&str]) -> Result<(), ParamError> {
        match self
            .pairs
            .iter()
            .find(|(n, _)| !allowed.contains(&n.as_str()))
        {
            None => Ok(()),
            Some((name, _)) => Err(ParamError::new(
                name,
                format!("is not known here; allowed: {}", allowed.join(", ")),
            )),
        }
    }

    /// An integer parameter within `min..=max`, or `default` when absent.
    pub fn int(
        &self,
        name: &str,
        min: u64,
        max: u64,
        default: Option<u64>,
    ) -> Result<u64, ParamError> {
        let Some(raw) = self.get(name) else {
            return default.ok_or_else(|| {
                ParamError::new(name, format!("is required: an integer from {min} to {max}"))
            });
        };
        match raw.trim().parse::<u64>() {
            Ok(v) if (min..=max).contains(&v) => Ok(v),
            _ => Err(ParamError::new(
                name,
                format!("must be an integer from {min} to {max}, got {raw:?}"),
            )),
        }
    }

    /// A finite number within `min..=max`, or `default` when absent.
    pub fn number(
        &self,
        name: &str,
        min: f64,
        max: f64,
        default: Option<f64>,
    ) -> Result<f64, ParamError> {
        let Some(raw) = self.get(name) else {
            return default.ok_or_else(|| {
                ParamError::new(name, format!("is required: a number from {min} to {max}"))
            });
        };
        match raw.trim().parse::<f64>() {
            Ok(v) if v.is_finite() && v >= min && v <= max => Ok(v),
            _ => Err(ParamError::new(
                name,
                format!("must be a number from {min} to {max}, got {raw:?}"),
            )),
        }
    }
}

/// A `%` escape that is not two hex digits, or bytes that are not UTF-8 once decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DecodeError {
    BadEscape,
    NotUtf8,
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            DecodeError::BadEscape => "has a `%` not followed by two hex digits; encode `%` as %25",
            DecodeError::NotUtf8 => "is not UTF-8 once percent-decoded",
        })
    }
}

/// Decodes `application/x-www-form-urlencoded` text (`+` is a space).
pub fn decode(s: &str) -> Result<String, DecodeError> {
    if !s.bytes().any(|b| b == b'%' || b == b'+') {
        return Ok(s.to_owned());
    }
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = bytes.get(i + 1..i + 3).ok_or(DecodeError::BadEscape)?;
                let hex = std::str::from_utf8(hex).map_err(|_| DecodeError::BadEscape)?;
                let b = u8::from_str_radix(hex, 16).map_err(|_| DecodeError::BadEscape)?;
                out.push(b);
                i += 2;
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8(out).map_err(|_| DecodeError::NotUtf8)
}

/// Encodes text so that [`decode`] returns it unchanged (used by clients and tests).
pub fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn decodes_plus_and_escapes() {
        assert_eq!(decode("a+b%20c%2B").unwrap(), "a b c+");
        assert_eq!(decode("%zz"), Err(DecodeError::BadEscape));
        assert_eq!(decode("%4"), Err(DecodeError::BadEscape));
        assert_eq!(decode("%ff"), Err(DecodeError::NotUtf8));
    }

    #[test]
    fn duplicates_and_unknowns_are_named() {
        let e = Params::parse("ratio=0.1&ratio=0.2").unwrap_err();
        assert_eq!(e.param, "ratio");
        let p = Params::parse("ratio=0.1&colour=red").unwrap();
        let e = p.only(&["ratio", "duration"]).unwrap_err();
        assert_eq!(e.param, "colour");
        assert!(e.problem.contains("ratio, duration"), "{e}");
    }

    proptest! {
        #[test]
        fn encode_then_decode_is_identity(s in "\\PC*") {
            prop_assert_eq!(decode(&encode(&s)).unwrap(), s);
        }

        #[test]
        fn parse_never_panics(s in "[a-z=&%+0-9.\\-]{0,64}") {
            let _ = Params::parse(&s);
        }

        #[test]
        fn pairs_round_trip(pairs in proptest::collection::btree_map("[a-z_]{1,8}", "\\PC{0,12}", 0..6)) {
            let raw = pairs.iter().map(|(k, v)| format!("{}={}", encode(k), encode(v))).collect::<Vec<_>>().join("&");
            let parsed = Params::parse(&raw).unwrap();
            for (k, v) in &pairs {
                prop_assert_eq!(parsed.get(k), Some(v.as_str()));
            }
        }
    }
}
