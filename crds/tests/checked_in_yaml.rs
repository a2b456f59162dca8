//! The CRD YAML under crds/ and in the Helm chart must be exactly what the Rust types
//! generate: run `make crds` after changing a type.

use std::path::Path;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;

fn check(folder: &Path, render: fn(&CustomResourceDefinition) -> String) {
    for crd in promscale_crds::all() {
        let path = folder.join(promscale_crds::file_name(&crd));
        let checked_in = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("{} is missing ({e}); run `make crds`", path.display()));
        assert!(
            checked_in == render(&crd),
            "{} differs from what the Rust types in crds/src generate; run `make crds` and commit the result",
            path.display()
        );
    }
}

#[test]
fn checked_in_crd_yaml_matches_the_rust_types() {
    check(Path::new(env!("CARGO_MANIFEST_DIR")), promscale_crds::to_yaml);
}

#[test]
fn chart_crd_templates_match_the_rust_types() {
    let chart = Path::new(env!("CARGO_MANIFEST_DIR")).join("../charts/promscale-operator/templates/crds");
    check(&chart, promscale_crds::to_chart_template);
}
