//! Test harness: real servers on free loopback ports, each with a private data folder that
//! disappears with it. Every server is stopped when its handle is dropped, so tests can run
//! twice in a row and in parallel.

pub mod certs;
pub mod cli;
pub mod comparison;
pub mod connector;
pub mod container;
pub mod helm;
pub mod k8s;
pub mod kube_cluster;
pub mod kubeconform;
pub mod operator;
pub mod pod;
pub mod postgres;
pub mod prometheus;
pub mod remote_write;
pub mod target;
pub mod upgrade;
pub mod workload;

use std::path::PathBuf;
use std::time::{Duration, Instant};

pub use promscale_connector::embedded_db::free_port;
use promscale_connector::storage::compaction::{CompactionOptions, CompactionStats};
use promscale_connector::storage::maintenance::{run_once, Outcome};

/// What a connector's scheduled maintenance does, right now and for everything: retention,
/// then compaction of every head row into series chunks and sealing of every ended chunk.
pub async fn maintain(db: &sqlx::PgPool) -> CompactionStats {
    maintain_with(db, &CompactionOptions::everything()).await
}

/// One maintenance run with these options, right now.
pub async fn maintain_with(db: &sqlx::PgPool, options: &CompactionOptions) -> CompactionStats {
    match run_once(db, options).await.expect("maintenance") {
        Outcome::Done(stats) => stats,
        Outcome::Skipped => panic!("another connector holds the maintenance lock"),
    }
}

/// An instant query at `time_ms` through the HTTP API at `base` (a server's root URL);
/// the whole answer, which must be a success.
pub async fn instant_query(client: &reqwest::Client, base: &str, query: &str, time_ms: i64) -> serde_json::Value {
    let (status, answer) = comparison::get(
        client,
        &format!("{base}/api/v1/query"),
        &[
            ("query", query.to_string()),
            (
                "time",
                format!("{}.{:03}", time_ms.div_euclid(1000), time_ms.rem_euclid(1000)),
            ),
        ],
    )
    .await;
    assert_eq!(status, 200, "{query}: {answer}");
    answer
}

/// Sends an HTTP request and returns its body as JSON.
pub async fn json(request: reqwest::RequestBuilder) -> serde_json::Value {
    request
        .send()
        .await
        .expect("sending the request")
        .json()
        .await
        .expect("a JSON answer")
}

/// The `data` of a `/api/v1/query_range` answer from the server at `base_url` (`start` and
/// `end` in Unix ms, `step` in seconds), as JSON text; the query must succeed.
pub async fn query_range(
    client: &reqwest::Client,
    base_url: &str,
    query: &str,
    start: i64,
    end: i64,
    step: u32,
) -> String {
    let response = json(client.post(format!("{base_url}/api/v1/query_range")).form(&[
        ("query", query),
        ("start", &format!("{}", start as f64 / 1000.0)),
        ("end", &format!("{}", end as f64 / 1000.0)),
        ("step", &step.to_string()),
    ]))
    .await;
    assert_eq!(response["status"], "success", "{query}: {response}");
    response["data"].to_string()
}

/// Every sample of `metric` through its user view, `(value of label, ms) -> value bits`;
/// the view must show each sample once.
pub async fn view_samples(
    db: &sqlx::PgPool,
    metric: &str,
    label: &str,
) -> std::collections::BTreeMap<(String, i64), u64> {
    let rows: Vec<(String, i64, f64)> = sqlx::query_as(&format!(
        "SELECT {label}, (extract(epoch FROM time) * 1000)::int8, value FROM prom_metric.{metric}"
    ))
    .fetch_all(db)
    .await
    .expect("reading the view");
    let n = rows.len();
    let map: std::collections::BTreeMap<_, _> = rows.into_iter().map(|(s, t, v)| ((s, t), v.to_bits())).collect();
    assert_eq!(map.len(), n, "the view shows each sample once");
    map
}

/// A recent timestamp (an hour ago, in whole seconds) in Prometheus' milliseconds: within
/// any default retention period, and in the past, as scraped samples are.
pub fn recent_ms() -> i64 {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock after 1970");
    (now.as_secs() as i64 - 3600) * 1000
}

/// A private folder that the `postgres` system user can also enter (PostgreSQL refuses to
/// run as root, so the harness's clusters run as that user when tests run as root).
pub fn private_dir(prefix: &str) -> tempfile::TempDir {
    let dir = tempfile::Builder::new()
        .prefix(prefix)
        .tempdir()
        .expect("creating a temporary folder");
    std::fs::set_permissions(dir.path(), std::os::unix::fs::PermissionsExt::from_mode(0o755)).expect("chmod");
    dir
}

/// How a deletion asked for in SQL (`prom_api.delete_series`) ended, from
/// `prom_info.deletion_request`.
#[derive(Debug)]
pub struct SqlDeletion {
    /// `done` or `failed`.
    pub status: String,
    pub series: Option<i64>,
    pub samples: Option<i64>,
    pub error: Option<String>,
}

/// Waits for a connector to carry out (or fail) the deletion request `request`.
pub async fn sql_deletion(db: &sqlx::PgPool, request: i64) -> SqlDeletion {
    wait_for(
        "a deletion asked for in SQL to end",
        Duration::from_secs(30),
        || async {
            let (status, series, samples, error): (String, Option<i64>, Option<i64>, Option<String>) =
                sqlx::query_as("SELECT status, series, samples, error FROM prom_info.deletion_request WHERE id = $1")
                    .bind(request)
                    .fetch_one(db)
                    .await
                    .expect("reading prom_info.deletion_request");
            (status != "pending").then_some(SqlDeletion {
                status,
                series,
                samples,
                error,
            })
        },
    )
    .await
}

/// Polls `check` until it returns `Some`, or panics with `what` after `timeout`.
pub async fn wait_for<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        if Instant::now() > deadline {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A binary of this workspace: next to the running executable (target/<profile>/ for
/// binaries, target/<profile>/deps/ for tests), or named by `PROMSCALE_<NAME>_BIN`.
pub fn workspace_binary(name: &str) -> PathBuf {
    let env = format!(
        "PROMSCALE_{}_BIN",
        name.trim_start_matches("promscale-").to_uppercase().replace('-', "_")
    );
    if let Some(path) = std::env::var_os(&env) {
        return PathBuf::from(path);
    }
    let exe = std::env::current_exe().expect("current executable");
    for dir in exe.ancestors().skip(1).take(2) {
        let candidate = dir.join(name);
        if candidate.is_file() {
            return candidate;
        }
    }
    panic!(
        "{name} is not built next to {}; run `cargo build --workspace --bins` first (or set {env})",
        exe.display()
    );
}

/// Sends SIGTERM, waits up to `grace` for the process to exit, then kills it.
pub fn terminate(child: &mut std::process::Child, grace: Duration) -> Option<std::process::ExitStatus> {
    // SAFETY: kill(2) on a pid we spawned and have not reaped yet.
    unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
    let deadline = Instant::now() + grace;
    while Instant::now() < deadline {
        if let Ok(Some(status)) = child.try_wait() {
            return Some(status);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
    None
}
