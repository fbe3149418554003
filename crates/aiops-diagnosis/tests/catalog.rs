//! Catalog loading: clear errors that name the entry and the field; a custom file replaces the
//! built-in catalog.

use aiops_core::config::DiagnosisConfig;
use aiops_diagnosis::catalog::{Catalog, CatalogError};

const ONE: &str = r#"version = 1
[[entry]]
id = "only-one"
cause = "a custom cause"
action = "none"
risk = "low"
confidence = 0.5
when = [{ key = "error_ratio", above = 0.1 }]
"#;

fn err(text: &str) -> CatalogError {
    Catalog::parse(text, "custom.toml").unwrap_err()
}

#[test]
fn errors_name_the_entry_and_the_field() {
    let cases: &[(&str, &str, &str, &str)] = &[
        // (replace this, with this, entry, field)
        (
            "action = \"none\"",
            "action = \"reboot\"",
            "\"only-one\"",
            "action",
        ),
        (
            "risk = \"low\"",
            "risk = \"extreme\"",
            "\"only-one\"",
            "risk",
        ),
        (
            "confidence = 0.5",
            "confidence = 1.5",
            "\"only-one\"",
            "confidence",
        ),
        ("confidence = 0.5", "", "\"only-one\"", "confidence"),
        (
            "cause = \"a custom cause\"",
            "cause = \"a custom cause\"\ncolour = \"red\"",
            "\"only-one\"",
            "colour",
        ),
        (
            "key = \"error_ratio\"",
            "key = \"eror_ratio\"",
            "\"only-one\"",
            "when[0].key",
        ),
        (
            "above = 0.1",
            "above_baseline = -2.0",
            "\"only-one\"",
            "when[0].above_baseline",
        ),
        ("above = 0.1", "", "\"only-one\"", "when[0].key"),
        (
            "above = 0.1",
            "above = 0.1, missing = true",
            "\"only-one\"",
            "when[0].missing",
        ),
        (
            "when = [{ key = \"error_ratio\", above = 0.1 }]",
            "",
            "\"only-one\"",
            "when",
        ),
        (
            "id = \"only-one\"",
            "id = \"Only One\"",
            "\"Only One\"",
            "id",
        ),
        ("id = \"only-one\"\n", "", "#1", "id"),
        (
            "confidence = 0.5",
            "confidence = 0.5\nadvice = \"traffic is {request_rate.ratoi}\"",
            "\"only-one\"",
            "advice",
        ),
    ];
    for (from, to, entry, field) in cases {
        assert!(ONE.contains(from), "{from}");
        let text = ONE.replacen(from, to, 1);
        match err(&text) {
            CatalogError::Entry {
                entry: e,
                field: f,
                origin,
                message,
            } => {
                assert_eq!(
                    (e.as_str(), f.as_str()),
                    (*entry, *field),
                    "{to:?}: {message}"
                );
                assert_eq!(origin, "custom.toml");
                let shown = CatalogError::Entry {
                    entry: e.clone(),
                    field: f.clone(),
                    origin,
                    message,
                }
                .to_string();
                assert!(
                    shown.contains(&format!("entry {e}, field `{f}`")),
                    "{shown}"
                );
            }
            other => panic!("{to:?}: {other:?}"),
        }
    }
}

#[test]
fn top_level_and_syntax_errors_are_clear() {
    assert!(matches!(
        err("version = 1\n[[entry]\n"),
        CatalogError::Syntax { .. }
    ));
    let e = err("[[entry]]\nid = \"a\"\n").to_string();
    assert!(e.contains("`version = 1` is missing"), "{e}");
    let e = err(&ONE.replace("version = 1", "version = 2")).to_string();
    assert!(e.contains("version = 2") && e.contains("version 1"), "{e}");
    let e = err("version = 1\n").to_string();
    assert!(e.contains("at least one entry"), "{e}");
    let e = err(&format!("extra = true\n{ONE}")).to_string();
    assert!(e.contains("unknown top-level key `extra`"), "{e}");
    let dup = format!("{ONE}\n{}", ONE.replace("version = 1\n", ""));
    match err(&dup) {
        CatalogError::Entry { entry, field, .. } => {
            assert_eq!((entry.as_str(), field.as_str()), ("\"only-one\"", "id"));
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_custom_catalog_file_replaces_the_builtin() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("catalog.toml");
    std::fs::write(&path, ONE).unwrap();
    let config = DiagnosisConfig {
        catalog_file: Some(path.clone()),
        ..Default::default()
    };
    let c = Catalog::from_config(&config).unwrap();
    assert_eq!(c.entries.len(), 1);
    assert_eq!(c.entries[0].id, "only-one");
    assert_eq!(c.origin, path.display().to_string());
    assert!(
        c.get("process-bad-state").is_none(),
        "the built-in entries are gone"
    );

    // Default config: the built-in catalog.
    let builtin = Catalog::from_config(&DiagnosisConfig::default()).unwrap();
    assert!(builtin.get("process-bad-state").is_some());

    // A missing file is an error naming the path and the config key.
    let missing = DiagnosisConfig {
        catalog_file: Some(dir.path().join("nope.toml")),
        ..Default::default()
    };
    let e = Catalog::from_config(&missing).unwrap_err().to_string();
    assert!(
        e.contains("nope.toml") && e.contains("diagnosis.catalog_file"),
        "{e}"
    );
}

#[test]
fn the_builtin_catalog_text_round_trips_through_its_own_parser() {
    let c = Catalog::builtin();
    assert_eq!(c.origin, "built-in");
    assert!(c.entries.len() >= 8);
}
