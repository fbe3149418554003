//! The polkit rule that confines the executor: `aiops policy polkit` prints it.
//!
//! It grants one user (the receiver's service account, `aiops` by default) exactly one polkit
//! action, `org.freedesktop.systemd1.manage-units`, for exactly the verb `restart` and exactly
//! the units that `remediation.allowed` lists with `restart`. Nothing else: no other verb, no
//! other unit, no other user (operators get no polkit rights at all; they go through the gate).
//!
//! The output is deterministic so that the NixOS module can render the same text and a test can
//! compare them byte for byte:
//!
//! - units sorted by byte order, one JSON array without spaces (what Nix's `builtins.toJSON`
//!   prints for a list of strings), only units whose actions include `restart`;
//! - the user as a JSON string;
//! - the template below, verbatim, LF line endings, a final newline.
//!
//! ```text
//! // aiops: lets the executor account restart the allow-listed units, and nothing else.
//! // Generated from remediation.allowed by `aiops policy polkit`; do not edit.
//! polkit.addRule(function(action, subject) {
//!     if (action.id === "org.freedesktop.systemd1.manage-units" &&
//!         subject.user === USER_JSON &&
//!         action.lookup("verb") === "restart" &&
//!         UNITS_JSON.indexOf(action.lookup("unit")) >= 0) {
//!         return polkit.Result.YES;
//!     }
//! });
//! ```

use aiops_core::config::{ActionKind, RemediationConfig};

/// The default service account of the receiver (see `systemd/aiops-webhook.service`).
pub const DEFAULT_USER: &str = "aiops";

/// The units the rule lets `user` restart: sorted, those allowed to `restart`.
pub fn restartable_units(remediation: &RemediationConfig) -> Vec<String> {
    // BTreeMap iteration is already sorted by byte order.
    remediation
        .allowed
        .iter()
        .filter(|(_, actions)| actions.contains(&ActionKind::Restart))
        .map(|(unit, _)| unit.clone())
        .collect()
}

/// Renders the rule (see the module docs for the exact format).
pub fn render_polkit_rule(remediation: &RemediationConfig, user: &str) -> String {
    let units = serde_json::to_string(&restartable_units(remediation)).expect("strings serialize");
    let user = serde_json::to_string(user).expect("strings serialize");
    format!(
        "// aiops: lets the executor account restart the allow-listed units, and nothing else.\n\
         // Generated from remediation.allowed by `aiops policy polkit`; do not edit.\n\
         polkit.addRule(function(action, subject) {{\n\
         \x20   if (action.id === \"org.freedesktop.systemd1.manage-units\" &&\n\
         \x20       subject.user === {user} &&\n\
         \x20       action.lookup(\"verb\") === \"restart\" &&\n\
         \x20       {units}.indexOf(action.lookup(\"unit\")) >= 0) {{\n\
         \x20       return polkit.Result.YES;\n\
         \x20   }}\n\
         }});\n"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_restartable_units_sorted() {
        let mut r = RemediationConfig::default();
        r.allowed
            .insert("b.service".into(), vec![ActionKind::Restart]);
        r.allowed
            .insert("a.service".into(), vec![ActionKind::ClearCache]);
        r.allowed
            .insert("A.service".into(), vec![ActionKind::Restart]);
        let text = render_polkit_rule(&r, "aiops");
        assert!(
            text.contains(r#"["A.service","aiops-demo-app.service","b.service"].indexOf"#),
            "{text}"
        );
        assert!(text.contains(r#"subject.user === "aiops""#));
        assert!(!text.contains("\"a.service\""));
        assert!(text.ends_with("});\n"));
    }
}
