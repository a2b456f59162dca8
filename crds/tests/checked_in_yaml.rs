//! The YAML under crds/ must be exactly what the Rust types generate: run `make crds` after
//! changing a type.

use std::path::Path;

#[test]
fn checked_in_crd_yaml_matches_the_rust_types() {
    let folder = Path::new(env!("CARGO_MANIFEST_DIR"));
    for crd in promscale_crds::all() {
        let path = folder.join(promscale_crds::file_name(&crd));
        let checked_in = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("{} is missing ({e}); run `make crds`", path.display()));
        assert!(
            checked_in == promscale_crds::to_yaml(&crd),
            "{} differs from what the Rust types in crds/src generate; run `make crds` and commit the result",
            path.display()
        );
    }
}
