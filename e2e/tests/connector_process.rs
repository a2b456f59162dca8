//! The connector as an operator meets it: its flags, its embedded default database,
//! concurrent start-up against one database, series creation by several connectors and
//! after a restart, secrets kept out of its output, and its memory kept off transparent huge
//! pages.

use std::time::Duration;

use std::process::Command;

use clap::CommandFactory;
use promscale_connector::config::Config;
use promscale_e2e::cli::assert_help_documents_every_flag;
use promscale_e2e::connector::Connector;
use promscale_e2e::postgres::TestPostgres;
use promscale_e2e::remote_write::{encode, post, series};
use promscale_e2e::{free_port, private_dir, workspace_binary};

#[test]
fn help_documents_every_flag_and_its_environment_variable() {
    // The pod identity comes from the downward API under Kubernetes' usual names.
    let flags = assert_help_documents_every_flag(
        &workspace_binary("promscale-connector"),
        Config::command(),
        "PROMSCALE_",
        &["POD_NAME", "POD_NAMESPACE"],
    );
    assert!(flags >= 10, "only {flags} flags found");
}

#[test]
fn the_operators_help_documents_every_flag_and_its_environment_variable() {
    let flags = assert_help_documents_every_flag(
        &workspace_binary("promscale-operator"),
        promscale_operator::config::Config::command(),
        "PROMSCALE_OPERATOR_",
        &["POD_NAME"],
    );
    assert!(flags >= 15, "only {flags} flags found");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_database_uri_it_runs_its_own_postgres_and_keeps_the_data() {
    let dir = private_dir("promscale-test-embedded-");
    let embedded = dir.path().join("embedded");
    let embedded_arg = embedded.to_str().unwrap();

    let mut connector = Connector::spawn(None, &["--embedded.dir", embedded_arg]);
    connector.wait_ready(Duration::from_secs(120)).await;
    let client = reqwest::Client::new();
    let body = encode(vec![series(
        &[("__name__", "embedded_probe"), ("job", "a")],
        &[(promscale_e2e::recent_ms(), 42.0)],
    )]);
    assert_eq!(post(&client, &connector.url("/write"), body).await.unwrap().0, 204);

    // The connector's own memory is kept off transparent huge pages; its PostgreSQL runs as
    // the connector found them (huge_pages.rs).
    let postmaster = std::fs::read_to_string(embedded.join("pgdata/postmaster.pid")).unwrap();
    let postmaster: u32 = postmaster.lines().next().unwrap().trim().parse().unwrap();
    assert_eq!(
        huge_pages_enabled(postmaster),
        huge_pages_enabled(std::process::id()),
        "the embedded PostgreSQL runs with transparent huge pages as the connector found them"
    );
    assert!(!huge_pages_enabled(connector.pid().unwrap()));

    let password = std::fs::read_to_string(embedded.join("password")).unwrap();
    let log = connector.log();
    assert!(
        log.contains("remote_write:") && log.contains(&format!("127.0.0.1:{}/write", connector.port())),
        "{log}"
    );
    assert!(
        !log.contains(password.trim()),
        "the embedded database's password leaked into the log"
    );

    let status = connector.stop().expect("the connector exits on SIGTERM");
    assert!(status.success(), "{status}");
    assert!(
        !embedded.join("pgdata/postmaster.pid").exists(),
        "the embedded PostgreSQL was stopped"
    );

    // A second start reuses the cluster and finds the data.
    let connector = Connector::spawn(None, &["--embedded.dir", embedded_arg]);
    connector.wait_ready(Duration::from_secs(120)).await;
    let port = std::fs::read_to_string(embedded.join("port")).unwrap();
    let uri = format!(
        "postgres://postgres:{}@127.0.0.1:{}/promscale",
        password.trim(),
        port.trim()
    );
    let db = sqlx::PgPool::connect(&uri).await.unwrap();
    let value: f64 = sqlx::query_scalar("SELECT value FROM prom_metric.embedded_probe WHERE job = 'a'")
        .fetch_one(&db)
        .await
        .unwrap();
    assert_eq!(value, 42.0);
}

/// Whether transparent huge pages are on for process `pid` (`/proc/<pid>/status`, Linux 5.0
/// or newer).
fn huge_pages_enabled(pid: u32) -> bool {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status
        .lines()
        .find(|l| l.starts_with("THP_enabled:"))
        .unwrap_or_else(|| panic!("/proc/{pid}/status has no THP_enabled line: these tests need Linux 5.0 or newer"));
    match line.split_whitespace().nth(1) {
        Some("1") => true,
        Some("0") => false,
        _ => panic!("unexpected {line:?} in /proc/{pid}/status"),
    }
}

/// The connector turns transparent huge pages off for itself (`PR_SET_THP_DISABLE`): with
/// them, its allocator's freed memory came back as 2 MiB pages the kernel zeroed first, a
/// quarter of its CPU in a run of the remote-write bench (huge_pages.rs).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_connector_runs_without_transparent_huge_pages() {
    assert!(
        huge_pages_enabled(std::process::id()),
        "the tests run with transparent huge pages off: a connector would inherit that"
    );
    let pg = TestPostgres::start();
    let connector = Connector::start(&pg.uri(), &[]).await;
    let pid = connector.pid().expect("a running connector");
    assert!(
        !huge_pages_enabled(pid),
        "the connector (pid {pid}) runs with transparent huge pages"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connectors_starting_together_migrate_the_schema_once() {
    let pg = TestPostgres::start();
    let connectors: Vec<_> = (0..3).map(|_| Connector::spawn(Some(&pg.uri()), &[])).collect();
    for c in &connectors {
        c.wait_ready(Duration::from_secs(60)).await;
    }
    let db = pg.pool().await;
    let versions: Vec<i32> = sqlx::query_scalar("SELECT version FROM _prom_catalog.migration ORDER BY version")
        .fetch_all(&db)
        .await
        .unwrap();
    let expected: Vec<i32> = promscale_connector::storage::migrations::MIGRATIONS
        .iter()
        .map(|m| m.version)
        .collect();
    assert_eq!(versions, expected);

    // All three write the same new series at once: one series row, one sample.
    let client = reqwest::Client::new();
    let body = encode(vec![series(
        &[("__name__", "race_probe"), ("k", "v")],
        &[(promscale_e2e::recent_ms(), 1.0)],
    )]);
    let urls: Vec<String> = connectors.iter().map(|c| c.url("/write")).collect();
    let writes = urls.iter().map(|url| post(&client, url, body.clone()));
    for result in futures::future::join_all(writes).await {
        assert_eq!(result.unwrap().0, 204);
    }
    let (series_rows, samples): (i64, i64) = sqlx::query_as(
        "SELECT (SELECT count(*) FROM _prom_catalog.series s JOIN _prom_catalog.metric m ON m.id = s.metric_id
                  WHERE m.metric_name = 'race_probe'),
                (SELECT count(*) FROM prom_data.race_probe)",
    )
    .fetch_one(&db)
    .await
    .unwrap();
    assert_eq!((series_rows, samples), (1, 1));

    // A restart finds nothing to migrate and becomes ready again.
    drop(connectors);
    let again = Connector::start(&pg.uri(), &[]).await;
    assert!(again.log().contains("applied=0"), "{}", again.log());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_database_means_503_not_ready_and_no_leaked_password() {
    let secret = "s3cr3t-Pa55word";
    let uri = format!(
        "postgres://promscale:{secret}@127.0.0.1:{}/promscale",
        free_port().unwrap()
    );
    let connector = Connector::spawn(Some(&uri), &["--db.connection-timeout", "1s"]);
    let client = reqwest::Client::new();
    promscale_e2e::wait_for("the connector to listen", Duration::from_secs(30), || async {
        client
            .get(connector.url("/healthz"))
            .send()
            .await
            .ok()
            .filter(|r| r.status().is_success())
            .map(|_| ())
    })
    .await;
    let ready = client.get(connector.url("/readyz")).send().await.unwrap();
    assert_eq!(ready.status().as_u16(), 503);
    let body = encode(vec![series(&[("__name__", "m")], &[(promscale_e2e::recent_ms(), 1.0)])]);
    let (status, text) = post(&client, &connector.url("/write"), body).await.unwrap();
    assert_eq!(status, 503, "{text}");
    tokio::time::sleep(Duration::from_secs(2)).await; // let a migration retry be logged
    let log = connector.log();
    assert!(log.contains("cannot migrate the database schema yet"), "{log}");
    assert!(
        !log.contains(secret) && !text.contains(secret),
        "the password leaked: {log}"
    );
}

#[test]
fn a_malformed_database_uri_is_refused_without_echoing_it() {
    let secret = "s3cr3t-Pa55word";
    let out = Command::new(workspace_binary("promscale-connector"))
        .args(["--web.listen-address", &format!("127.0.0.1:{}", free_port().unwrap())])
        .env(
            "PROMSCALE_DB_URI",
            format!("postgres://promscale:{secret}@127.0.0.1:notaport/db"),
        )
        .output()
        .unwrap();
    assert!(!out.status.success());
    let output = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(output.contains("not a valid PostgreSQL URI"), "{output}");
    assert!(!output.contains(secret), "the password leaked: {output}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connectors_creating_overlapping_metrics_keys_and_series_at_once_agree() {
    let pg = TestPostgres::start();
    let connectors: Vec<_> = (0..3).map(|_| Connector::spawn(Some(&pg.uri()), &[])).collect();
    for c in &connectors {
        c.wait_ready(Duration::from_secs(60)).await;
    }
    // Every request mixes the same 8 metrics, each series with a label key that other
    // requests introduce too, so metric creation, label keys, positions, labels and series
    // all race between the connectors.
    let request = |round: usize, part: usize| {
        let list = (0..40)
            .map(|n| {
                let metric = format!("overlap_{}", n % 8);
                let key = format!("key_{}", (n + part) % 5);
                let value = format!("v{}", n % 10);
                let mut labels = [
                    ("__name__", metric.clone()),
                    (key.as_str(), value.clone()),
                    ("job", "j".to_string()),
                ];
                labels.sort();
                let labels: Vec<(&str, &str)> = labels.iter().map(|(k, v)| (*k, v.as_str())).collect();
                series(&labels, &[(promscale_e2e::recent_ms() + round as i64 * 1000, n as f64)])
            })
            .collect();
        encode(list)
    };
    let client = reqwest::Client::new();
    let mut sends = vec![];
    for (c, connector) in connectors.iter().enumerate() {
        for part in 0..4 {
            let (client, url, body) = (client.clone(), connector.url("/write"), request(c, part));
            sends.push(tokio::spawn(async move { post(&client, &url, body).await.unwrap() }));
        }
    }
    for send in sends {
        let (status, text) = send.await.unwrap();
        assert_eq!(status, 204, "{text}");
    }
    let db = pg.pool().await;
    let (metrics, series_rows, distinct_sets): (i64, i64, i64) = sqlx::query_as(
        "SELECT (SELECT count(*) FROM _prom_catalog.metric),
                (SELECT count(*) FROM _prom_catalog.series),
                (SELECT count(DISTINCT (SELECT array_agg(l.key || '=' || l.value ORDER BY l.key)
                                          FROM unnest(s.labels) lid JOIN _prom_catalog.label l ON l.id = lid))
                   FROM _prom_catalog.series s)",
    )
    .fetch_one(&db)
    .await
    .unwrap();
    assert_eq!(metrics, 8);
    assert_eq!(series_rows, distinct_sets, "one series row per label set");
    // 8 metrics x 5 keys x their values: every combination that was sent exists.
    let expected: std::collections::HashSet<(usize, usize, usize)> = (0..4)
        .flat_map(|part| (0..40).map(move |n| (n % 8, (n + part) % 5, n % 10)))
        .collect();
    assert_eq!(series_rows as usize, expected.len());
    // Each view shows every key its metric has, whichever connector added it.
    for m in 0..8 {
        let keys: Vec<String> = sqlx::query_scalar(&format!(
            "SELECT column_name::text FROM information_schema.columns WHERE table_schema = 'prom_metric' AND table_name = 'overlap_{m}' AND column_name LIKE 'key_%'"
        ))
        .fetch_all(&db)
        .await
        .unwrap();
        let expected_keys: std::collections::HashSet<_> = expected.iter().filter(|e| e.0 == m).map(|e| e.1).collect();
        assert_eq!(keys.len(), expected_keys.len(), "overlap_{m}: {keys:?}");
    }
    let samples: i64 = sqlx::query_scalar("SELECT count(*) FROM _prom_catalog.samples")
        .fetch_one(&db)
        .await
        .unwrap();
    assert_eq!(samples, 3 * 4 * 40);
}

/// A connector that has not seen a series (restarted, or another replica) finds it instead
/// of creating it, and finding it uses up no id: the series and label id sequences are
/// finite (2^40 series, 2^31 labels), and cache misses happen all the time. A series
/// repeated within a request (Prometheus sends one entry per sample) is created once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn known_series_are_found_without_using_up_ids_and_repeats_are_created_once() {
    let pg = TestPostgres::start();
    let db = pg.pool().await;
    let t = promscale_e2e::recent_ms();
    let body = |round: i64| {
        let mut list: Vec<_> = (0..50)
            .map(|n| {
                series(
                    &[("__name__", "ids_used"), ("pod", &format!("p{n}"))],
                    &[(t + round * 1000, n as f64)],
                )
            })
            .collect();
        // The same series again, a sample a later.
        list.push(series(
            &[("__name__", "ids_used"), ("pod", "p7")],
            &[(t + round * 1000 + 500, 7.5)],
        ));
        encode(list)
    };
    let sequences = || async {
        let row: (i64, i64, i64) = sqlx::query_as(
            "SELECT (SELECT last_value FROM _prom_catalog.series_number),
                    (SELECT last_value FROM _prom_catalog.label_id_seq),
                    (SELECT count(*) FROM _prom_catalog.series)",
        )
        .fetch_one(&db)
        .await
        .unwrap();
        row
    };
    let client = reqwest::Client::new();
    let first = Connector::start(&pg.uri(), &[]).await;
    let (status, text) = post(&client, &first.url("/write"), body(0)).await.unwrap();
    assert_eq!(status, 204, "{text}");
    let after_creation = sequences().await;
    assert_eq!(after_creation.2, 50, "one series per label set");
    // Another connector (an empty cache) writes the same series, twice.
    let second = Connector::start(&pg.uri(), &[]).await;
    for round in 1..3 {
        let (status, text) = post(&client, &second.url("/write"), body(round)).await.unwrap();
        assert_eq!(status, 204, "{text}");
    }
    assert_eq!(sequences().await, after_creation, "no id drawn, no series added");
    let samples: i64 = sqlx::query_scalar("SELECT count(*) FROM prom_data.ids_used")
        .fetch_one(&db)
        .await
        .unwrap();
    assert_eq!(samples, 3 * 51);
}
