//! Helm (built from its pinned Go module by e2e/tools/build.sh), with private config, cache and
//! data folders and a kubeconfig of the test API server.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::kube_cluster::tool;

pub struct Helm {
    binary: PathBuf,
    kubeconfig: PathBuf,
    home: tempfile::TempDir,
}

impl Helm {
    pub fn new(kubeconfig: &Path) -> Self {
        Helm {
            binary: tool("helm"),
            kubeconfig: kubeconfig.to_path_buf(),
            home: tempfile::Builder::new()
                .prefix("promscale-test-helm-")
                .tempdir()
                .unwrap(),
        }
    }

    /// Runs helm; returns stdout, or panics with stderr.
    pub fn run(&self, args: &[&str]) -> String {
        match self.try_run(args) {
            Ok(out) => out,
            Err(err) => panic!("helm {} failed:\n{err}", args.join(" ")),
        }
    }

    /// Runs helm; stdout on success, stderr on failure.
    pub fn try_run(&self, args: &[&str]) -> Result<String, String> {
        let home = self.home.path();
        let output = Command::new(&self.binary)
            .args(args)
            .env("KUBECONFIG", &self.kubeconfig)
            .env("HELM_CACHE_HOME", home.join("cache"))
            .env("HELM_CONFIG_HOME", home.join("config"))
            .env("HELM_DATA_HOME", home.join("data"))
            .env_remove("HELM_KUBECONTEXT")
            .output()
            .expect("running helm");
        if output.status.success() {
            Ok(String::from_utf8_lossy(&output.stdout).into_owned())
        } else {
            Err(String::from_utf8_lossy(&output.stderr).into_owned())
        }
    }
}

/// The chart in this repository.
pub fn chart_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../charts/promscale-operator")
}
