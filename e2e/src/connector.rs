//! The real `promscale-connector` binary, run as a child process.

use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::Duration;

use crate::{free_port, terminate, wait_for, workspace_binary};

pub struct Connector {
    child: Option<Child>,
    port: u16,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Connector {
    /// Starts a connector on `db_uri` (passed through the environment, as a Kubernetes
    /// Secret would be) and waits until it is ready.
    pub async fn start(db_uri: &str, extra_args: &[&str]) -> Self {
        let connector = Self::spawn(Some(db_uri), extra_args);
        connector.wait_ready(Duration::from_secs(60)).await;
        connector
    }

    /// Starts a connector without waiting for readiness; `db_uri: None` means the embedded default.
    pub fn spawn(db_uri: Option<&str>, extra_args: &[&str]) -> Self {
        Self::spawn_with_env(db_uri, extra_args, &[])
    }

    /// As [`Connector::spawn`], with extra environment variables (a pod identity, KUBECONFIG).
    pub fn spawn_with_env(db_uri: Option<&str>, extra_args: &[&str], env: &[(&str, &str)]) -> Self {
        let dir = crate::private_dir("promscale-test-connector-");
        let port = free_port().expect("free port");
        let log = dir.path().join("connector.log");
        let mut cmd = Command::new(workspace_binary("promscale-connector"));
        cmd.arg("--web.listen-address")
            .arg(format!("127.0.0.1:{port}"))
            .args(extra_args)
            .env_remove("PROMSCALE_DB_URI")
            // mimalloc's own switch would turn huge pages off whatever the connector does.
            .env_remove("MIMALLOC_ALLOW_THP")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&log).expect("log file"))
            .stderr(std::fs::File::options().append(true).open(&log).expect("log file"));
        if let Some(uri) = db_uri {
            cmd.env("PROMSCALE_DB_URI", uri);
        }
        let child = cmd.spawn().expect("starting promscale-connector");
        Connector {
            child: Some(child),
            port,
            log,
            _dir: dir,
        }
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The process id, while the connector runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// A `kB` field of `/proc/<pid>/status`: `VmRSS` (resident memory now) or `VmHWM` (the
    /// most it has ever been), in bytes.
    pub fn memory_bytes(&self, field: &str) -> u64 {
        let pid = self.pid().expect("the connector runs");
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("reading /proc/<pid>/status");
        status
            .lines()
            .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
            .and_then(|v| v.trim().strip_suffix("kB")?.trim().parse::<u64>().ok())
            .unwrap_or_else(|| panic!("no {field} in /proc/{pid}/status"))
            * 1024
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// The connector's own /metrics, as text.
    pub async fn metrics_text(&self) -> String {
        reqwest::get(self.url("/metrics"))
            .await
            .expect("the connector answers /metrics")
            .text()
            .await
            .expect("a text answer")
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub async fn wait_ready(&self, timeout: Duration) {
        let client = reqwest::Client::new();
        let url = self.url("/readyz");
        let log = self.log.clone();
        wait_for(
            &format!("the connector to be ready (log: {})", log.display()),
            timeout,
            || {
                let request = client.get(&url).send();
                async move {
                    match request.await {
                        Ok(r) if r.status().is_success() => Some(()),
                        _ => None,
                    }
                }
            },
        )
        .await;
    }

    /// Kills the connector with SIGKILL (`kill -9`): no draining, no goodbye.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Stops the connector with SIGTERM, as Kubernetes does, and returns how it exited.
    pub fn stop(&mut self) -> Option<ExitStatus> {
        let mut child = self.child.take()?;
        terminate(&mut child, Duration::from_secs(30))
    }
}

impl Drop for Connector {
    fn drop(&mut self) {
        self.stop();
        if std::thread::panicking() {
            eprintln!("--- connector log ---\n{}", self.log());
        }
    }
}
