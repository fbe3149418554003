//! Secrets (the Slack URL, the receiver's bearer token) are read from files only.
//!
//! A systemd credential (`LoadCredential=NAME:PATH`, visible as `$CREDENTIALS_DIRECTORY/NAME`)
//! wins over a path named in the configuration. Secrets never come from the command line, the
//! environment or the configuration file itself, and [`Secret`]'s `Debug` never prints them.

use std::fmt;
use std::path::{Path, PathBuf};

/// Credential name of the receiver's bearer token.
pub const WEBHOOK_TOKEN: &str = "webhook-token";
/// Credential name of the Slack incoming-webhook URL.
pub const SLACK_WEBHOOK_URL: &str = "slack-webhook-url";

/// A secret value; its `Debug` and `Display` are redacted.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The value itself. Call sites that use it should be few and obvious.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

/// Why a secret could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error("cannot read the {name} secret from {path}: {source}")]
    Read {
        name: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "the {name} secret in {path} is empty; write the value into the file (a trailing newline is fine)"
    )]
    Empty { name: &'static str, path: PathBuf },
}

/// Where a secret came from, for the start-up log line (never the value).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecretSource {
    Credential(PathBuf),
    File(PathBuf),
}

/// Loads the secret `name`: `$CREDENTIALS_DIRECTORY/name` if present, else `configured` if set.
/// `Ok(None)` means the secret is simply not configured.
pub fn load(
    name: &'static str,
    configured: Option<&Path>,
) -> Result<Option<(Secret, SecretSource)>, SecretError> {
    load_from(
        std::env::var_os("CREDENTIALS_DIRECTORY").map(PathBuf::from),
        name,
        configured,
    )
}

fn load_from(
    credentials_dir: Option<PathBuf>,
    name: &'static str,
    configured: Option<&Path>,
) -> Result<Option<(Secret, SecretSource)>, SecretError> {
    if let Some(dir) = credentials_dir {
        let path = dir.join(name);
        if path.exists() {
            return read(name, &path).map(|s| Some((s, SecretSource::Credential(path))));
        }
    }
    match configured {
        Some(path) => read(name, path).map(|s| Some((s, SecretSource::File(path.to_owned())))),
        None => Ok(None),
    }
}

fn read(name: &'static str, path: &Path) -> Result<Secret, SecretError> {
    let text = std::fs::read_to_string(path).map_err(|source| SecretError::Read {
        name,
        path: path.to_owned(),
        source,
    })?;
    let value = text.trim();
    if value.is_empty() {
        return Err(SecretError::Empty {
            name,
            path: path.to_owned(),
        });
    }
    Ok(Secret(value.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credential_wins_over_configured_file() {
        let dir = tempfile::tempdir().unwrap();
        let creds = dir.path().join("creds");
        std::fs::create_dir(&creds).unwrap();
        std::fs::write(creds.join(WEBHOOK_TOKEN), "from-cred\n").unwrap();
        let file = dir.path().join("token");
        std::fs::write(&file, "from-file").unwrap();

        let (s, src) = load_from(Some(creds.clone()), WEBHOOK_TOKEN, Some(&file))
            .unwrap()
            .unwrap();
        assert_eq!(s.expose(), "from-cred");
        assert_eq!(src, SecretSource::Credential(creds.join(WEBHOOK_TOKEN)));

        let (s, _) = load_from(None, WEBHOOK_TOKEN, Some(&file))
            .unwrap()
            .unwrap();
        assert_eq!(s.expose(), "from-file");
        assert!(load_from(None, WEBHOOK_TOKEN, None).unwrap().is_none());
    }

    #[test]
    fn empty_and_missing_files_are_clear_errors() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("token");
        std::fs::write(&file, " \n").unwrap();
        let err = load_from(None, WEBHOOK_TOKEN, Some(&file))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("empty") && err.contains("webhook-token"),
            "{err}"
        );
        let err = load_from(None, WEBHOOK_TOKEN, Some(&dir.path().join("nope")))
            .unwrap_err()
            .to_string();
        assert!(err.contains("nope"), "{err}");
    }

    #[test]
    fn debug_never_shows_the_value() {
        assert_eq!(
            format!("{:?}", Secret::new("hunter2")),
            "Secret(<redacted>)"
        );
    }
}
