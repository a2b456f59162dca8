//! A real `prometheus` binary, run as a child process with a private TSDB: Debian's (2.42, the
//! default) or Prometheus 3, built from its pinned Go module by `e2e/tools/build.sh prometheus3`
//! (`make tools`).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::Value;

use crate::{free_port, terminate, wait_for};

/// Which Prometheus to run.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Version {
    /// Debian's `prometheus` package (2.42).
    #[default]
    Debian,
    /// Prometheus 3 (3.16.0), built by `e2e/tools/build.sh prometheus3` (built on first use
    /// when missing: minutes). Its only service discoveries are static, file and http.
    V3,
}

impl Version {
    /// The `prometheus` binary.
    pub fn binary(self) -> PathBuf {
        match self {
            Version::Debian => which_prometheus().to_path_buf(),
            Version::V3 => crate::kube_cluster::tool("prometheus3"),
        }
    }

    /// The `promtool` of the same build.
    pub fn promtool(self) -> PathBuf {
        match self {
            Version::Debian => which_prometheus().with_file_name("promtool"),
            Version::V3 => crate::kube_cluster::tool("prometheus3").with_file_name("promtool"),
        }
    }
}

pub struct Prometheus {
    child: Option<Child>,
    port: u16,
    dir: tempfile::TempDir,
    version: Version,
}

impl Prometheus {
    /// Starts Debian's Prometheus with the configuration `config(own_port)` and extra flags.
    pub async fn start(config: impl FnOnce(u16) -> String, extra_flags: &[&str]) -> Self {
        Self::start_version(Version::Debian, config, extra_flags).await
    }

    /// Starts Prometheus 3 (see [`Version::V3`]) like [`Prometheus::start`].
    pub async fn start_v3(config: impl FnOnce(u16) -> String, extra_flags: &[&str]) -> Self {
        Self::start_version(Version::V3, config, extra_flags).await
    }

    /// Starts the given Prometheus with the configuration `config(own_port)` and extra flags.
    pub async fn start_version(version: Version, config: impl FnOnce(u16) -> String, extra_flags: &[&str]) -> Self {
        let binary = version.binary();
        let dir = crate::private_dir("promscale-test-prometheus-");
        let port = free_port().expect("free port");
        let config_path = dir.path().join("prometheus.yml");
        std::fs::write(&config_path, config(port)).expect("writing prometheus.yml");
        let log = dir.path().join("prometheus.log");
        let child = Command::new(&binary)
            .arg(format!("--config.file={}", config_path.display()))
            .arg(format!("--storage.tsdb.path={}", dir.path().join("data").display()))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .args(extra_flags)
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&log).expect("log file"))
            .stderr(std::fs::File::options().append(true).open(&log).expect("log file"))
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "starting {} ({version:?}; `make deps`, `make tools`): {e}",
                    binary.display()
                )
            });
        let prometheus = Prometheus {
            child: Some(child),
            port,
            dir,
            version,
        };
        let client = reqwest::Client::new();
        let url = prometheus.url("/-/ready");
        wait_for("Prometheus to be ready", Duration::from_secs(60), || {
            let request = client.get(&url).send();
            async move { request.await.ok().filter(|r| r.status().is_success()).map(|_| ()) }
        })
        .await;
        prometheus
    }

    pub fn version(&self) -> Version {
        self.version
    }

    /// SIGKILL: the server stops at once, sending nothing more.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// The TSDB folder (--storage.tsdb.path).
    pub fn data_dir(&self) -> std::path::PathBuf {
        self.dir.path().join("data")
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("prometheus.log")).unwrap_or_default()
    }

    /// Runs an instant query and returns `data.result`.
    pub async fn query(&self, query: &str, time_seconds: f64) -> Value {
        let response: Value = reqwest::Client::new()
            .get(self.url("/api/v1/query"))
            .query(&[("query", query), ("time", &format!("{time_seconds:.3}"))])
            .send()
            .await
            .expect("querying Prometheus")
            .json()
            .await
            .expect("Prometheus answered JSON");
        assert_eq!(response["status"], "success", "query {query} failed: {response}");
        response["data"]["result"].clone()
    }

    /// Sum of the values of every series of `metric` in Prometheus' own /metrics.
    /// Waits for five scrapes of `job` (scraped every second) and until remote write has sent
    /// beyond the last of them (a second and a half past it; one shard assumed); returns that
    /// last scrape's time in Unix seconds.
    pub async fn last_scrape_sent(&self, job: &str) -> f64 {
        let now = || {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .expect("clock after 1970")
                .as_secs_f64()
        };
        let counted = format!(r#"count_over_time(up{{job="{job}"}}[1m])"#);
        wait_for("five scrapes of the target", Duration::from_secs(60), || async {
            let up = self.query(&counted, now()).await;
            let scrapes: f64 = up.get(0)?["value"][1].as_str()?.parse().ok()?;
            (scrapes >= 5.0).then_some(())
        })
        .await;
        let last = self.query(&format!(r#"timestamp(up{{job="{job}"}})"#), now()).await;
        let last: f64 = last[0]["value"][1]
            .as_str()
            .expect("a value")
            .parse()
            .expect("a number");
        wait_for("Prometheus to send the scrapes", Duration::from_secs(60), || async {
            let sent = self
                .own_metric("prometheus_remote_storage_queue_highest_sent_timestamp_seconds")
                .await?;
            (sent >= last + 1.5).then_some(())
        })
        .await;
        last
    }

    pub async fn own_metric(&self, metric: &str) -> Option<f64> {
        let text = reqwest::get(self.url("/metrics")).await.ok()?.text().await.ok()?;
        sum_metric(&text, metric)
    }
}

/// Sums the samples of `metric` (any labels) in Prometheus' text exposition format.
pub fn sum_metric(text: &str, metric: &str) -> Option<f64> {
    let mut found = None;
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let (name, rest) = match line.find(['{', ' ']) {
            Some(i) => (&line[..i], &line[i..]),
            None => continue,
        };
        if name != metric {
            continue;
        }
        let value = rest.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok())?;
        *found.get_or_insert(0.0) += value;
    }
    found
}

fn which_prometheus() -> &'static Path {
    for candidate in ["/usr/bin/prometheus", "/usr/local/bin/prometheus"] {
        if Path::new(candidate).exists() {
            return Path::new(candidate);
        }
    }
    panic!("prometheus is not installed; `make deps` installs Debian's prometheus package");
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            terminate(&mut child, Duration::from_secs(30));
        }
        if std::thread::panicking() {
            eprintln!("--- prometheus log ({:?}) ---\n{}", self.version, self.log());
        }
    }
}
