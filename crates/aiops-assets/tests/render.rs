//! Rendering: every default address and path is replaced, and nothing else changes.

use std::fs;
use std::path::{Path, PathBuf};

use aiops_assets::{DEFAULT_TOKEN_FILE, Ports, RenderError, render, render_file};
use proptest::prelude::*;

/// Ports that share no digits run with the defaults, so "no 8080 left" means something.
pub const OTHER_PORTS: Ports = Ports {
    demo_app: 41001,
    webhook: 41002,
    prometheus: 41003,
    alertmanager: 41004,
    grafana: 41005,
};

const DEFAULT_PORT_TEXT: [&str; 5] = ["8080", "9095", "9090", "9093", "3000"];

fn read(p: &Path) -> String {
    fs::read_to_string(p).unwrap_or_else(|e| panic!("read {}: {e}", p.display()))
}

#[test]
fn rendering_substitutes_every_default() {
    let dir = tempfile::tempdir().expect("tempdir");
    let token = dir.path().join("secrets/webhook token");
    let r = render(&dir.path().join("tree"), &OTHER_PORTS, &token).expect("render");
    let root = fs::canonicalize(dir.path().join("tree")).expect("canonical root");
    assert_eq!(r.root, root);

    let written = [
        &r.prometheus_config,
        &r.rules,
        &r.alertmanager_config,
        &r.grafana_config,
        &r.grafana_provisioning.join("datasources/datasource.yml"),
        &r.grafana_provisioning.join("dashboards/dashboards.yml"),
        &r.grafana_dashboards.join("aiops.json"),
    ];
    for path in written {
        assert!(
            path.starts_with(&root),
            "{} is inside the tree",
            path.display()
        );
        let text = read(path);
        for port in DEFAULT_PORT_TEXT {
            assert!(
                !text.contains(port),
                "{} still mentions {port}",
                path.display()
            );
        }
        for default_dir in ["/etc/aiops", "/var/lib/aiops"] {
            assert!(
                !text.contains(default_dir),
                "{} still names {default_dir}",
                path.display()
            );
        }
    }
    assert!(r.grafana_data.is_dir());

    let prom = read(&r.prometheus_config);
    for (job, port) in [
        ("aiops-demo-app", 41001),
        ("aiops-webhook", 41002),
        ("prometheus", 41003),
        ("alertmanager", 41004),
    ] {
        assert_eq!(
            scrape_target(&prom, job),
            format!("127.0.0.1:{port}"),
            "job {job}"
        );
    }
    assert!(
        prom.contains("- targets: [\"127.0.0.1:41004\"]"),
        "alerting goes to Alertmanager"
    );
    assert_eq!(
        read(&r.rules),
        aiops_assets::RULES_YML,
        "rules are copied unchanged"
    );

    let am = read(&r.alertmanager_config);
    assert!(am.contains("url: \"http://127.0.0.1:41002/\""));
    assert!(am.contains(&format!("credentials_file: \"{}\"", token.display())));

    let ds = read(&r.grafana_provisioning.join("datasources/datasource.yml"));
    assert!(ds.contains("url: http://127.0.0.1:41003\n"));
    let dashboards = read(&r.grafana_provisioning.join("dashboards/dashboards.yml"));
    assert!(dashboards.contains(&format!("path: \"{}\"", r.grafana_dashboards.display())));
    let ini = read(&r.grafana_config);
    assert!(ini.contains("http_port = 41005\n"));
    assert!(ini.contains(&format!(
        "provisioning = {}\n",
        r.grafana_provisioning.display()
    )));
    assert!(ini.contains(&format!("data = {}\n", r.grafana_data.display())));
    assert!(ini.contains(&format!(
        "default_home_dashboard_path = {}\n",
        r.grafana_dashboards.join("aiops.json").display()
    )));
    assert_eq!(
        read(&r.grafana_dashboards.join("aiops.json")),
        aiops_assets::GRAFANA_DASHBOARD_AIOPS_JSON
    );

    // Rendering again over the same tree is fine (the demo re-renders on every start).
    assert_eq!(render(&root, &OTHER_PORTS, &token).expect("re-render"), r);
}

#[test]
fn the_default_ports_render_the_files_unchanged() {
    let root = Path::new("/srv/aiops");
    let token = Path::new(DEFAULT_TOKEN_FILE);
    for file in [
        "prometheus/prometheus.yml",
        "grafana/provisioning/datasources/datasource.yml",
    ] {
        let text = render_file(file, root, &Ports::DEFAULT, token).expect("render");
        assert_eq!(Some(text.as_str()), aiops_assets::asset(file), "{file}");
    }
}

/// The address under `job_name: JOB`'s `targets:`.
fn scrape_target(prom: &str, job: &str) -> String {
    let mut lines = prom
        .lines()
        .skip_while(|l| l.trim() != format!("- job_name: {job}"));
    lines.next().unwrap_or_else(|| panic!("no job {job}"));
    let targets = lines
        .find(|l| l.contains("targets:"))
        .unwrap_or_else(|| panic!("no targets for {job}"));
    let start = targets.find('"').expect("quoted target") + 1;
    let end = targets[start..].find('"').expect("closing quote") + start;
    targets[start..end].to_owned()
}

#[test]
fn bad_inputs_are_refused_with_the_reason() {
    let dir = tempfile::tempdir().expect("tempdir");
    let token = dir.path().join("token");
    let clash = Ports {
        grafana: OTHER_PORTS.demo_app,
        ..OTHER_PORTS
    };
    let err = render(dir.path(), &clash, &token).unwrap_err();
    assert!(
        matches!(err, RenderError::PortClash { port: 41001, .. }),
        "{err:?}"
    );
    assert_eq!(
        err.to_string(),
        "port 41001 was given to both the demo app and the Grafana; give each component its own port"
    );
    let zero = Ports {
        webhook: 0,
        ..OTHER_PORTS
    };
    assert!(matches!(
        render(dir.path(), &zero, &token),
        Err(RenderError::ZeroPort { .. })
    ));
    for bad in [
        PathBuf::from("relative/token"),
        dir.path().join("new\nline"),
    ] {
        let err = render(dir.path(), &OTHER_PORTS, &bad).unwrap_err();
        assert!(
            matches!(err, RenderError::UnsupportedPath { .. }),
            "{err:?}"
        );
        assert!(err.to_string().contains("choose another path"), "{err}");
    }
    assert!(matches!(
        render_file(
            "prometheus/tests/recording.yml",
            dir.path(),
            &OTHER_PORTS,
            &token
        ),
        Err(RenderError::UnknownAsset(_))
    ));
    // Nothing was written by the refused renders.
    assert_eq!(fs::read_dir(dir.path()).expect("read_dir").count(), 0);
}

fn port() -> impl Strategy<Value = u16> {
    // Half the time one of the defaults, so a port moved onto another component's default is
    // exercised (a chained substitution would rewrite it twice).
    prop_oneof![
        prop::sample::select(vec![8080u16, 9095, 9090, 9093, 3000]),
        1u16..=65535,
    ]
}

proptest! {
    #[test]
    fn each_component_gets_its_own_port(
        demo_app in port(), webhook in port(), prometheus in port(),
        alertmanager in port(), grafana in port(),
    ) {
        let ports = Ports { demo_app, webhook, prometheus, alertmanager, grafana };
        prop_assume!(ports.validate().is_ok());
        let root = Path::new("/srv/aiops");
        let token = Path::new("/run/credentials/token");
        let prom = render_file("prometheus/prometheus.yml", root, &ports, token).unwrap();
        prop_assert_eq!(scrape_target(&prom, "aiops-demo-app"), format!("127.0.0.1:{demo_app}"));
        prop_assert_eq!(scrape_target(&prom, "aiops-webhook"), format!("127.0.0.1:{webhook}"));
        prop_assert_eq!(scrape_target(&prom, "prometheus"), format!("127.0.0.1:{prometheus}"));
        prop_assert_eq!(scrape_target(&prom, "alertmanager"), format!("127.0.0.1:{alertmanager}"));
        let am = render_file("prometheus/alertmanager.yml", root, &ports, token).unwrap();
        let expected_url = format!("url: \"http://127.0.0.1:{webhook}/\"");
        prop_assert!(am.contains(&expected_url));
        let ini = render_file("grafana/grafana.ini", root, &ports, token).unwrap();
        let expected_port = format!("http_port = {grafana}\n");
        prop_assert!(ini.contains(&expected_port));
    }
}
