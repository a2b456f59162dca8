//! The chart's values are all documented (README table), all checked (values.schema.json), and
//! the chart's version is the workspace's, so the images it names exist for it.

use promscale_e2e::helm::chart_dir;
use serde_json::Value;

/// Dotted paths of the leaves of values.yaml (empty maps and lists are leaves, and so are
/// `resources.requests` and `resources.limits`, documented whole).
fn leaves(prefix: &str, value: &Value, out: &mut Vec<String>) {
    match value {
        Value::Object(map) if !map.is_empty() && !["resources.requests", "resources.limits"].contains(&prefix) => {
            for (key, inner) in map {
                let path = if prefix.is_empty() {
                    key.clone()
                } else {
                    format!("{prefix}.{key}")
                };
                leaves(&path, inner, out);
            }
        }
        _ => out.push(prefix.to_string()),
    }
}

fn schema_has(schema: &Value, path: &str) -> bool {
    let mut node = schema;
    for key in path.split('.') {
        let mut here = node;
        if let Some(reference) = here.get("$ref").and_then(Value::as_str) {
            let name = reference.trim_start_matches("#/definitions/");
            here = &schema["definitions"][name];
        }
        match here.get("properties").and_then(|p| p.get(key)) {
            Some(next) => node = next,
            None => return false,
        }
    }
    true
}

#[test]
fn every_value_is_documented_and_checked() {
    let chart = chart_dir();
    let values: Value = serde_saphyr::from_str(&std::fs::read_to_string(chart.join("values.yaml")).unwrap()).unwrap();
    let readme = std::fs::read_to_string(chart.join("README.md")).unwrap();
    let schema: Value =
        serde_json::from_str(&std::fs::read_to_string(chart.join("values.schema.json")).unwrap()).unwrap();
    let mut paths = Vec::new();
    leaves("", &values, &mut paths);
    assert!(paths.len() > 25, "{paths:?}");
    for path in &paths {
        assert!(
            readme.contains(&format!("| `{path}` |")),
            "values.yaml has {path}, the chart README's table does not"
        );
        assert!(
            schema_has(&schema, path),
            "values.yaml has {path}, values.schema.json does not"
        );
    }
    assert_eq!(
        schema["additionalProperties"], false,
        "unknown top-level values must fail"
    );
}

#[test]
fn the_chart_version_is_the_workspace_version() {
    let chart: Value =
        serde_saphyr::from_str(&std::fs::read_to_string(chart_dir().join("Chart.yaml")).unwrap()).unwrap();
    assert_eq!(chart["appVersion"], env!("CARGO_PKG_VERSION"));
    assert_eq!(chart["version"], env!("CARGO_PKG_VERSION"));
}
