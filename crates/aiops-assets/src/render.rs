//! Rendering the embedded files into a configuration tree with the demo's ports and paths.

use std::fs;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};

/// The token file `alertmanager.yml` names by default (the demo passes its own).
pub const DEFAULT_TOKEN_FILE: &str = "/etc/aiops/webhook-token";

/// The loopback ports of the five components. [`Ports::DEFAULT`] is what the files say.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Ports {
    pub demo_app: u16,
    pub webhook: u16,
    pub prometheus: u16,
    pub alertmanager: u16,
    pub grafana: u16,
}

impl Ports {
    /// The defaults written in `prometheus/` and `grafana/`.
    pub const DEFAULT: Ports = Ports {
        demo_app: 8080,
        webhook: 9095,
        prometheus: 9090,
        alertmanager: 9093,
        grafana: 3000,
    };

    /// Each component with its port, in a fixed order.
    pub fn named(&self) -> [(&'static str, u16); 5] {
        [
            ("demo app", self.demo_app),
            ("webhook receiver", self.webhook),
            ("Prometheus", self.prometheus),
            ("Alertmanager", self.alertmanager),
            ("Grafana", self.grafana),
        ]
    }

    /// `127.0.0.1:port`.
    pub fn addr(port: u16) -> SocketAddr {
        SocketAddr::from((Ipv4Addr::LOCALHOST, port))
    }

    /// `http://127.0.0.1:port`, without a trailing slash.
    pub fn url(port: u16) -> String {
        format!("http://{}", Ports::addr(port))
    }

    /// Every port non-zero and each component on its own port.
    pub fn validate(&self) -> Result<(), RenderError> {
        let named = self.named();
        for (i, (a, pa)) in named.iter().enumerate() {
            if *pa == 0 {
                return Err(RenderError::ZeroPort { component: a });
            }
            if let Some((b, _)) = named[i + 1..].iter().find(|(_, pb)| pb == pa) {
                return Err(RenderError::PortClash {
                    port: *pa,
                    first: a,
                    second: b,
                });
            }
        }
        Ok(())
    }
}

impl Default for Ports {
    fn default() -> Self {
        Ports::DEFAULT
    }
}

/// Where [`render`] wrote the tree (all paths absolute).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rendered {
    /// The directory given to [`render`].
    pub root: PathBuf,
    /// `prometheus/prometheus.yml`: pass as `--config.file`.
    pub prometheus_config: PathBuf,
    /// `prometheus/rules.yml`, beside the config that names it.
    pub rules: PathBuf,
    /// `alertmanager/alertmanager.yml`: pass as `--config.file`.
    pub alertmanager_config: PathBuf,
    /// `grafana/grafana.ini`: pass as `--config` (with `--homepath` of the installed Grafana).
    pub grafana_config: PathBuf,
    /// `grafana/provisioning`, which `grafana.ini` names.
    pub grafana_provisioning: PathBuf,
    /// `grafana/dashboards`, which the dashboard provider names.
    pub grafana_dashboards: PathBuf,
    /// `grafana/data` (created empty): Grafana's database, logs and plugins.
    pub grafana_data: PathBuf,
}

/// Why the tree could not be rendered.
#[derive(Debug, thiserror::Error)]
pub enum RenderError {
    #[error("the {component} was given port 0; give it a real port")]
    ZeroPort { component: &'static str },
    #[error(
        "port {port} was given to both the {first} and the {second}; give each component its own port"
    )]
    PortClash {
        port: u16,
        first: &'static str,
        second: &'static str,
    },
    #[error(
        "the {what} path {path:?} cannot be written into a configuration file: it {reason}; choose another path"
    )]
    UnsupportedPath {
        what: &'static str,
        path: PathBuf,
        reason: &'static str,
    },
    #[error("cannot create the directory {path}: {source}")]
    CreateDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{0:?} is not one of the files aiops-assets renders")]
    UnknownAsset(String),
    /// The embedded file no longer holds a default this crate rewrites: a build defect, caught by
    /// this crate's tests.
    #[error("the embedded {file} no longer contains {needle:?}; update aiops-assets' render.rs")]
    MissingDefault {
        file: &'static str,
        needle: &'static str,
    },
}

/// The embedded files written by [`render`], and where (relative to its directory).
pub(crate) const RENDERED: [(&str, &str); 7] = [
    ("prometheus/prometheus.yml", "prometheus/prometheus.yml"),
    ("prometheus/rules.yml", "prometheus/rules.yml"),
    (
        "prometheus/alertmanager.yml",
        "alertmanager/alertmanager.yml",
    ),
    ("grafana/grafana.ini", "grafana/grafana.ini"),
    (
        "grafana/provisioning/datasources/datasource.yml",
        "grafana/provisioning/datasources/datasource.yml",
    ),
    (
        "grafana/provisioning/dashboards/dashboards.yml",
        "grafana/provisioning/dashboards/dashboards.yml",
    ),
    (
        "grafana/dashboards/aiops.json",
        "grafana/dashboards/aiops.json",
    ),
];

/// What must be rewritten in each rendered file (every needle must occur at least once).
fn required(file: &str) -> &'static [&'static str] {
    match file {
        "prometheus/prometheus.yml" => &[DEMO_APP, WEBHOOK, PROMETHEUS, ALERTMANAGER],
        "prometheus/alertmanager.yml" => &[WEBHOOK, TOKEN_LINE],
        "grafana/grafana.ini" => &[
            GRAFANA_PORT,
            GRAFANA_STATE,
            GRAFANA_PROVISIONING,
            GRAFANA_HOME,
        ],
        "grafana/provisioning/datasources/datasource.yml" => &[PROMETHEUS],
        "grafana/provisioning/dashboards/dashboards.yml" => &[DASHBOARDS_LINE],
        _ => &[],
    }
}

const DEMO_APP: &str = "127.0.0.1:8080";
const WEBHOOK: &str = "127.0.0.1:9095";
const PROMETHEUS: &str = "127.0.0.1:9090";
const ALERTMANAGER: &str = "127.0.0.1:9093";
const GRAFANA_PORT: &str = "http_port = 3000";
const TOKEN_LINE: &str = "credentials_file: /etc/aiops/webhook-token";
const DASHBOARDS_LINE: &str = "path: /etc/aiops/grafana/dashboards";
const GRAFANA_STATE: &str = "/var/lib/aiops/grafana";
const GRAFANA_PROVISIONING: &str = "/etc/aiops/grafana/provisioning";
const GRAFANA_HOME: &str = "/etc/aiops/grafana/dashboards/aiops.json";

/// The needle → replacement pairs for a tree rooted at `root` (absolute).
fn substitutions(
    root: &Path,
    ports: &Ports,
    token_file: &Path,
) -> Result<Vec<(&'static str, String)>, RenderError> {
    let token = config_path("webhook token file", token_file)?;
    let root = config_path("render directory", root)?;
    let grafana = format!("{}/grafana", root.trim_end_matches('/'));
    let addr = |port| Ports::addr(port).to_string();
    Ok(vec![
        (DEMO_APP, addr(ports.demo_app)),
        (WEBHOOK, addr(ports.webhook)),
        (PROMETHEUS, addr(ports.prometheus)),
        (ALERTMANAGER, addr(ports.alertmanager)),
        (GRAFANA_PORT, format!("http_port = {}", ports.grafana)),
        (
            TOKEN_LINE,
            format!("credentials_file: {}", yaml_string(token)),
        ),
        (
            DASHBOARDS_LINE,
            format!("path: {}", yaml_string(&format!("{grafana}/dashboards"))),
        ),
        (GRAFANA_STATE, format!("{grafana}/data")),
        (GRAFANA_PROVISIONING, format!("{grafana}/provisioning")),
        (GRAFANA_HOME, format!("{grafana}/dashboards/aiops.json")),
    ])
}

/// A path as UTF-8 text that YAML and INI lines can hold.
fn config_path<'a>(what: &'static str, path: &'a Path) -> Result<&'a str, RenderError> {
    let unsupported = |reason| RenderError::UnsupportedPath {
        what,
        path: path.to_owned(),
        reason,
    };
    let text = path.to_str().ok_or_else(|| unsupported("is not UTF-8"))?;
    if text.chars().any(char::is_control) {
        return Err(unsupported(
            "contains a control character (a newline, a tab...)",
        ));
    }
    if !path.is_absolute() {
        return Err(unsupported(
            "is relative (Prometheus and Grafana need absolute paths)",
        ));
    }
    Ok(text)
}

/// A YAML double-quoted scalar: a JSON string is one, whatever it contains.
fn yaml_string(s: &str) -> String {
    serde_json::Value::from(s).to_string()
}

/// Replaces every needle in one left-to-right pass, so a replacement is never itself rewritten
/// (a demo app moved to 9095 must not then be taken for the receiver). At a position where
/// several needles match, the longest wins.
fn substitute(text: &str, subs: &[(&'static str, String)]) -> String {
    let mut by_len: Vec<&(&str, String)> = subs.iter().collect();
    by_len.sort_by_key(|(needle, _)| std::cmp::Reverse(needle.len()));
    let mut out = String::with_capacity(text.len() + 256);
    let mut rest = text;
    'outer: while let Some(c) = rest.chars().next() {
        for (needle, replacement) in &by_len {
            if let Some(after) = rest.strip_prefix(needle) {
                out.push_str(replacement);
                rest = after;
                continue 'outer;
            }
        }
        out.push(c);
        rest = &rest[c.len_utf8()..];
    }
    out
}

/// The contents `render` writes for the embedded file `file` (e.g. `prometheus/prometheus.yml`)
/// into a tree rooted at `root` (absolute).
pub fn render_file(
    file: &str,
    root: &Path,
    ports: &Ports,
    token_file: &Path,
) -> Result<String, RenderError> {
    ports.validate()?;
    let (file, _) = RENDERED
        .iter()
        .find(|(f, _)| *f == file)
        .ok_or_else(|| RenderError::UnknownAsset(file.to_owned()))?;
    let text = crate::asset(file).ok_or_else(|| RenderError::UnknownAsset((*file).to_owned()))?;
    if let Some(needle) = required(file).iter().find(|n| !text.contains(**n)) {
        return Err(RenderError::MissingDefault { file, needle });
    }
    Ok(substitute(text, &substitutions(root, ports, token_file)?))
}

/// Writes a ready-to-run tree into `dir` (created if missing; files overwritten):
///
/// ```text
/// dir/prometheus/prometheus.yml     scrapes and alerting on `ports`; rule_files: [rules.yml]
/// dir/prometheus/rules.yml
/// dir/alertmanager/alertmanager.yml webhook to the receiver's port, token read from `token_file`
/// dir/grafana/grafana.ini           port, provisioning, home dashboard, data under grafana/data
/// dir/grafana/provisioning/{datasources,dashboards}/*.yml
/// dir/grafana/dashboards/aiops.json
/// ```
pub fn render(dir: &Path, ports: &Ports, token_file: &Path) -> Result<Rendered, RenderError> {
    ports.validate()?;
    config_path("webhook token file", token_file)?;
    fs::create_dir_all(dir).map_err(|source| RenderError::CreateDir {
        path: dir.to_owned(),
        source,
    })?;
    // Absolute, so the paths written into the files do not depend on the children's cwd.
    let root = fs::canonicalize(dir).map_err(|source| RenderError::CreateDir {
        path: dir.to_owned(),
        source,
    })?;
    let mut contents = Vec::with_capacity(RENDERED.len());
    for (file, target) in RENDERED {
        contents.push((
            root.join(target),
            render_file(file, &root, ports, token_file)?,
        ));
    }
    let grafana_data = root.join("grafana/data");
    for (path, text) in &contents {
        let parent = path.parent().unwrap_or(&root);
        fs::create_dir_all(parent).map_err(|source| RenderError::CreateDir {
            path: parent.to_owned(),
            source,
        })?;
        fs::write(path, text).map_err(|source| RenderError::Write {
            path: path.clone(),
            source,
        })?;
    }
    fs::create_dir_all(&grafana_data).map_err(|source| RenderError::CreateDir {
        path: grafana_data.clone(),
        source,
    })?;
    Ok(Rendered {
        prometheus_config: root.join("prometheus/prometheus.yml"),
        rules: root.join("prometheus/rules.yml"),
        alertmanager_config: root.join("alertmanager/alertmanager.yml"),
        grafana_config: root.join("grafana/grafana.ini"),
        grafana_provisioning: root.join("grafana/provisioning"),
        grafana_dashboards: root.join("grafana/dashboards"),
        grafana_data,
        root,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn substitution_is_one_pass() {
        let subs = vec![
            ("127.0.0.1:8080", "127.0.0.1:9095".to_owned()),
            ("127.0.0.1:9095", "127.0.0.1:8080".to_owned()),
        ];
        assert_eq!(
            substitute("a 127.0.0.1:8080 b 127.0.0.1:9095 c", &subs),
            "a 127.0.0.1:9095 b 127.0.0.1:8080 c"
        );
    }

    #[test]
    fn longest_needle_wins() {
        let subs = vec![("/a", "X".to_owned()), ("/a/b", "Y".to_owned())];
        assert_eq!(substitute("/a/b /a/c é", &subs), "Y X/c é");
    }

    #[test]
    fn yaml_strings_are_quoted() {
        assert_eq!(yaml_string(r#"/tmp/a "b"\c: d"#), r#""/tmp/a \"b\"\\c: d""#);
    }
}
