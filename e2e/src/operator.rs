//! The real `promscale-operator` binary, run as a child process against a test API server.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::{free_port, terminate, wait_for, workspace_binary};

pub struct Operator {
    child: Option<Child>,
    port: u16,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Operator {
    /// Starts the operator with `kubeconfig`, short resync intervals (tests wait less), and
    /// `extra_args`; waits until it serves /healthz.
    pub async fn start(kubeconfig: &Path, extra_args: &[&str]) -> Self {
        let dir = crate::private_dir("promscale-test-operator-");
        let port = free_port().expect("free port");
        let log = dir.path().join("operator.log");
        let child = Command::new(workspace_binary("promscale-operator"))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .arg("--stack.resync-interval=2s")
            .arg("--policy.resync-interval=2s")
            .arg("--leader-election.namespace=default")
            .arg("--leader-election.lease-duration=6s")
            .args(extra_args)
            .env("KUBECONFIG", kubeconfig)
            .env("PROMSCALE_OPERATOR_LOG_LEVEL", "info,promscale_operator=debug")
            .env_remove("POD_NAME")
            .env_remove("POD_NAMESPACE")
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&log).expect("log file"))
            .stderr(std::fs::File::options().append(true).open(&log).expect("log file"))
            .spawn()
            .expect("starting promscale-operator");
        let operator = Operator {
            child: Some(child),
            port,
            log,
            _dir: dir,
        };
        let http = reqwest::Client::new();
        let url = operator.url("/healthz");
        wait_for("the operator to serve /healthz", Duration::from_secs(30), || {
            let request = http.get(&url).send();
            async move { request.await.ok().filter(|r| r.status().is_success()).map(|_| ()) }
        })
        .await;
        operator
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    pub async fn metrics(&self) -> String {
        reqwest::get(self.url("/metrics")).await.unwrap().text().await.unwrap()
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Whether the process still runs.
    pub fn running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| c.try_wait().ok().flatten().is_none())
    }

    /// Kills the operator outright, as a node failure would: no chance to release its Lease.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Stops the operator with SIGTERM, as Kubernetes does.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            terminate(&mut child, Duration::from_secs(15));
        }
    }
}

impl Drop for Operator {
    fn drop(&mut self) {
        self.stop();
        if std::thread::panicking() {
            eprintln!("--- operator log ---\n{}", self.log());
        }
    }
}
