//! Offline schema validation of manifests with kubeconform, against JSON schemas made from the
//! test API server's own OpenAPI document (so installed CRDs are covered too).

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::kube_cluster::{tool, KubeCluster};

pub struct Kubeconform {
    binary: PathBuf,
    schemas: tempfile::TempDir,
    kubernetes_version: String,
}

impl Kubeconform {
    /// Writes the schemas of everything `cluster` serves, CRDs included.
    pub fn from_cluster(cluster: &KubeCluster, kubernetes_version: &str) -> Self {
        let schemas = tempfile::Builder::new()
            .prefix("promscale-test-schemas-")
            .tempdir()
            .unwrap();
        let binary = tool("kubeconform");
        // Built by the same wrapper module, next to kubeconform.
        let output = Command::new(binary.with_file_name("openapi2jsonschema"))
            .arg("-url")
            .arg(format!("{}/openapi/v2", cluster.url()))
            .arg("-token")
            .arg(cluster.admin_token())
            .arg("-cacert")
            .arg(cluster.ca_file())
            .arg("-out")
            .arg(schemas.path())
            .arg("-kubernetes-version")
            .arg(kubernetes_version)
            .output()
            .expect("running openapi2jsonschema");
        assert!(
            output.status.success(),
            "openapi2jsonschema: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        Kubeconform {
            binary,
            schemas,
            kubernetes_version: kubernetes_version.to_string(),
        }
    }

    /// Validates the manifests in `files` strictly (unknown fields are errors); returns
    /// kubeconform's summary, or its complaints.
    pub fn validate(&self, files: &[&Path]) -> Result<String, String> {
        let output = Command::new(&self.binary)
            .arg("-schema-location")
            .arg(self.schemas.path())
            .arg("-kubernetes-version")
            .arg(&self.kubernetes_version)
            .arg("-strict")
            .arg("-summary")
            .args(files)
            .output()
            .expect("running kubeconform");
        let text = String::from_utf8_lossy(&output.stdout).into_owned() + &String::from_utf8_lossy(&output.stderr);
        if output.status.success() {
            Ok(text)
        } else {
            Err(text)
        }
    }
}
