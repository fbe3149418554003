//! Every file of `prometheus/` and `grafana/` is embedded, byte for byte.

use std::fs;
use std::path::Path;

use crate::support::repo;

fn walk(dir: &Path, root: &Path, out: &mut Vec<String>) {
    for entry in fs::read_dir(dir).unwrap_or_else(|e| panic!("read {}: {e}", dir.display())) {
        let path = entry.expect("dir entry").path();
        if path.is_dir() {
            walk(&path, root, out);
        } else {
            let rel = path.strip_prefix(root).expect("under the repo");
            out.push(rel.to_str().expect("UTF-8 path").replace('\\', "/"));
        }
    }
}

#[test]
fn every_file_of_prometheus_and_grafana_is_embedded_unchanged() {
    let root = repo();
    let mut on_disk = Vec::new();
    walk(&root.join("prometheus"), &root, &mut on_disk);
    walk(&root.join("grafana"), &root, &mut on_disk);
    on_disk.sort();
    let mut embedded: Vec<String> = aiops_assets::ASSETS
        .iter()
        .map(|a| a.path.to_owned())
        .collect();
    embedded.sort();
    assert_eq!(
        embedded, on_disk,
        "the embedded list (aiops-assets src/lib.rs) and the files on disk differ"
    );
    for asset in aiops_assets::ASSETS {
        let disk = fs::read_to_string(root.join(asset.path)).expect("read asset");
        assert!(
            disk == asset.contents,
            "{} differs from its embedded copy",
            asset.path
        );
        assert_eq!(aiops_assets::asset(asset.path), Some(asset.contents));
    }
    assert_eq!(aiops_assets::asset("prometheus/nope.yml"), None);
}
