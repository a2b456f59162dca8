//! Schema upgrades in place: a database written by the previous schema version (4: a row per
//! sample, compressed chunks as arrays) is upgraded by a connector of this version, and
//! every sample it held answers exactly as before, through SQL and PromQL, before and after
//! compaction.

use promscale_connector::storage::migrations::{latest_version, migrate_to};
use promscale_connector::storage::samples::PgTimestamp;
use promscale_e2e::connector::Connector;
use promscale_e2e::postgres::TestPostgres;
use promscale_e2e::remote_write::{encode, post, series, STALE_NAN_BITS};
use promscale_e2e::{json, maintain, recent_ms};
use sqlx::{PgPool, Row};

const STEP_MS: i64 = 300_000;
const SAMPLES: i64 = 3 * 24 * 12; // three days at 5 minutes

/// Every sample of the metric through its user view: (cpu label, ms, value bits).
async fn view(db: &PgPool, metric: &str) -> Vec<(String, i64, u64)> {
    let mut rows: Vec<(String, i64, u64)> = sqlx::query(&format!(
        "SELECT coalesce(cpu, '') AS cpu, (extract(epoch FROM time) * 1000)::int8 AS ms, value FROM prom_metric.{metric}"
    ))
    .fetch_all(db)
    .await
    .unwrap()
    .iter()
    .map(|r| (r.get("cpu"), r.get("ms"), r.get::<f64, _>("value").to_bits()))
    .collect();
    rows.sort();
    rows
}

fn value(series: usize, i: i64) -> f64 {
    match (series, i % 97) {
        (_, 0) => f64::from_bits(STALE_NAN_BITS),
        (_, 1) => f64::INFINITY,
        (_, 2) => -0.0,
        (0, _) => (i * 3) as f64,
        (1, _) => (100_000 + i * 137) as f64 / 100.0,
        _ => i as f64 * (0.1 + 0.2),
    }
}

/// Writes samples the way schema version 4 did: through its SQL functions.
async fn write_v4(db: &PgPool, end_ms: i64) {
    let metrics = vec!["upgrade_cpu"; 3];
    let idx: Vec<i32> = vec![0, 0, 1, 1, 2, 2];
    let keys = vec!["__name__", "cpu", "__name__", "cpu", "__name__", "cpu"];
    let values = vec!["upgrade_cpu", "0", "upgrade_cpu", "1", "upgrade_cpu", "2"];
    let ids: Vec<(i32, i64)> = sqlx::query_as(
        "SELECT idx, series_id FROM _prom_catalog.get_or_create_series_ids($1, $2, $3, $4) ORDER BY idx",
    )
    .bind(&metrics)
    .bind(&idx)
    .bind(&keys)
    .bind(&values)
    .fetch_all(db)
    .await
    .unwrap();
    let (mut times, mut vals, mut series_ids) = (vec![], vec![], vec![]);
    for (s, (_, id)) in ids.iter().enumerate() {
        for i in 0..SAMPLES {
            times.push(PgTimestamp::from_unix_ms(end_ms - (SAMPLES - 1 - i) * STEP_MS));
            vals.push(value(s, i));
            series_ids.push(*id);
        }
    }
    let expired: i64 = sqlx::query_scalar("SELECT _prom_catalog.insert_samples($1, $2, $3, false)")
        .bind(&times)
        .bind(&vals)
        .bind(&series_ids)
        .fetch_one(db)
        .await
        .unwrap();
    assert_eq!(expired, 0);
    // Version 4's maintenance compresses the chunks that ended over an hour ago ...
    sqlx::query("CALL prom_api.execute_maintenance()")
        .execute(db)
        .await
        .unwrap();
    let (compressed, plain): (i64, i64) = sqlx::query_as(
        "SELECT count(*) FILTER (WHERE compressed_table_name IS NOT NULL), count(*) FILTER (WHERE table_name IS NOT NULL)
           FROM _prom_catalog.chunk",
    )
    .fetch_one(db)
    .await
    .unwrap();
    assert!(compressed >= 8 && plain >= 1, "{compressed} compressed, {plain} not");
    // ... and a late sample waits uncompressed beside a compressed chunk.
    sqlx::query("SELECT _prom_catalog.insert_samples($1, $2, $3, false)")
        .bind(vec![PgTimestamp::from_unix_ms(end_ms - 2 * 24 * 3_600_000 + 1)])
        .bind(vec![12.5f64])
        .bind(vec![ids[0].1])
        .execute(db)
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_of_the_previous_version_is_upgraded_in_place_without_losing_a_sample() {
    let pg = TestPostgres::start();
    let db = pg.pool().await;
    assert_eq!(migrate_to(&db, 4).await.unwrap(), 4);
    let end_ms = recent_ms() + 3_600_000 - 1_000;
    write_v4(&db, end_ms).await;
    let before = view(&db, "upgrade_cpu").await;
    assert_eq!(before.len() as i64, 3 * SAMPLES + 1);

    // A connector of this version upgrades the schema at start-up.
    let connector = Connector::start(&pg.uri(), &["--maintenance.interval", "0s"]).await;
    let version: i32 = sqlx::query_scalar("SELECT max(version) FROM _prom_catalog.migration")
        .fetch_one(&db)
        .await
        .unwrap();
    assert_eq!(version, latest_version());
    assert_eq!(view(&db, "upgrade_cpu").await, before, "bit for bit after the upgrade");
    let old_tables: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
          WHERE n.nspname IN ('_prom_chunks', '_prom_compressed') AND c.relkind IN ('r', 'p')
            AND NOT EXISTS (SELECT 1 FROM pg_inherits i WHERE i.inhrelid = c.oid
                             AND i.inhparent = '_prom_catalog.series_chunk'::regclass)
            AND NOT EXISTS (SELECT 1 FROM _prom_catalog.chunk k WHERE k.table_name = c.relname)",
    )
    .fetch_one(&db)
    .await
    .unwrap();
    assert_eq!(old_tables, 0, "the old tables are gone");

    // PromQL sees every sample, from the head now and from series chunks after compaction.
    let client = reqwest::Client::new();
    let counts = |connector_url: String| {
        let client = client.clone();
        async move {
            let body: serde_json::Value = client
                .get(connector_url)
                .query(&[
                    ("query", "count_over_time(upgrade_cpu[4d])".to_string()),
                    ("time", format!("{}", end_ms as f64 / 1000.0)),
                ])
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            let mut counts: Vec<(String, String)> = body["data"]["result"]
                .as_array()
                .unwrap()
                .iter()
                .map(|r| {
                    (
                        r["metric"]["cpu"].as_str().unwrap().to_string(),
                        r["value"][1].as_str().unwrap().to_string(),
                    )
                })
                .collect();
            counts.sort();
            counts
        }
    };
    // Stale markers are not samples to PromQL.
    let expected_counts: Vec<(String, String)> = ["0", "1", "2"]
        .iter()
        .map(|cpu| {
            let n = before
                .iter()
                .filter(|(c, _, bits)| c == cpu && *bits != STALE_NAN_BITS)
                .count();
            (cpu.to_string(), n.to_string())
        })
        .collect();
    assert_eq!(expected_counts[0].1, (SAMPLES + 1 - (SAMPLES + 96) / 97).to_string());
    assert_eq!(counts(connector.url("/api/v1/query")).await, expected_counts);
    let stats = maintain(&db).await;
    assert_eq!(stats.samples as usize, before.len());
    assert_eq!(view(&db, "upgrade_cpu").await, before, "bit for bit after compaction");
    assert_eq!(counts(connector.url("/api/v1/query")).await, expected_counts);

    // And the upgraded database takes new samples of the old series.
    let body = encode(vec![series(
        &[("__name__", "upgrade_cpu"), ("cpu", "1")],
        &[(end_ms + 500, 7.0)],
    )]);
    assert_eq!(post(&client, &connector.url("/write"), body).await.unwrap().0, 204);
    let after = view(&db, "upgrade_cpu").await;
    assert_eq!(after.len(), before.len() + 1);
    assert!(after.contains(&("1".to_string(), end_ms + 500, 7.0f64.to_bits())));
}

/// Version 5's catalog (label values indexed as they are) upgraded to version 6 (values of
/// any length): series created before keep their ids, the same label sets written again
/// resolve to them, and longer values are stored beside them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_version_5_catalog_keeps_its_series_through_the_long_label_values_upgrade() {
    let pg = TestPostgres::start();
    let db = pg.pool().await;
    assert_eq!(migrate_to(&db, 5).await.unwrap(), 5);
    let edge = "e".repeat(2000);
    let values = ["short", "with \\ backslash and ünïcode", edge.as_str()];
    // Series as version 5 created them, through its own function.
    let created: Vec<(i32, i64)> = sqlx::query_as(
        "SELECT idx, series_id FROM _prom_catalog.get_or_create_series_ids($1, $2, $3, $4) ORDER BY idx",
    )
    .bind(vec!["upgrade_labels"; 3])
    .bind(vec![0, 0, 1, 1, 2, 2])
    .bind(vec!["__name__", "v", "__name__", "v", "__name__", "v"])
    .bind(values.iter().flat_map(|v| ["upgrade_labels", v]).collect::<Vec<_>>())
    .fetch_all(&db)
    .await
    .unwrap();
    assert_eq!(created.len(), 3);

    let connector = Connector::start(&pg.uri(), &["--maintenance.interval", "0s"]).await;
    let client = reqwest::Client::new();
    let long = "l".repeat(10_000);
    let t = recent_ms();
    let body = encode(
        values
            .iter()
            .chain([&long.as_str()])
            .enumerate()
            .map(|(i, v)| series(&[("__name__", "upgrade_labels"), ("v", v)], &[(t, i as f64)]))
            .collect(),
    );
    let (status, text) = post(&client, &connector.url("/write"), body).await.unwrap();
    assert_eq!(status, 204, "{text}");
    let after: Vec<(i64, String)> = sqlx::query_as(
        "SELECT s.id, l.value FROM _prom_catalog.series s
           JOIN _prom_catalog.metric m ON m.id = s.metric_id
           JOIN _prom_catalog.label l ON l.id = ANY(s.labels) AND l.key = 'v'
          WHERE m.metric_name = 'upgrade_labels' ORDER BY s.id",
    )
    .fetch_all(&db)
    .await
    .unwrap();
    assert_eq!(after.len(), 4, "one new series, for the long value only");
    for (idx, id) in &created {
        let value = after.iter().find(|(a, _)| a == id).map(|(_, v)| v.as_str());
        assert_eq!(value, Some(values[*idx as usize]), "series {id} keeps its id");
    }
    assert!(after.iter().any(|(_, v)| v.len() == 10_000));
    // Equality matchers find each value, long ones included.
    for (i, v) in values.iter().chain([&long.as_str()]).enumerate() {
        let selector = format!("upgrade_labels{{v=\"{}\"}}", v.replace('\\', "\\\\"));
        let response: serde_json::Value = client
            .post(connector.url("/api/v1/query"))
            .form(&[
                ("query", selector.as_str()),
                ("time", &format!("{}", t as f64 / 1000.0)),
            ])
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(
            response["data"]["result"][0]["value"][1],
            i.to_string(),
            "{v:.20}: {response}"
        );
    }
}

/// Version 6's catalog (series unique by a btree, created by `get_or_create_series_ids`)
/// upgraded to version 7 (hash index, series built by the connector from cached label ids):
/// series keep their ids, the same label sets written again resolve to them (those with gaps
/// in their label positions and long values too), new series of the same metrics are
/// created beside them, and matchers find old and new alike.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_version_6_catalog_keeps_its_series_through_the_series_creation_upgrade() {
    let pg = TestPostgres::start();
    let db = pg.pool().await;
    assert_eq!(migrate_to(&db, 6).await.unwrap(), 6);
    let long = "x".repeat(3000);
    // (zone, pod) of each series; an empty value means the series lacks that key, so its
    // labels array has a 0 in the middle (zone) or ends early (pod).
    let old: Vec<(&str, &str)> = vec![("a", "p1"), ("", "p2"), ("b", ""), ("c", long.as_str())];
    let labels_of = |zone: &str, pod: &str| -> Vec<(String, String)> {
        let mut l = vec![("__name__".to_string(), "upgrade_series".to_string())];
        if !pod.is_empty() {
            l.push(("pod".into(), pod.into()));
        }
        if !zone.is_empty() {
            l.push(("zone".into(), zone.into()));
        }
        l
    };
    let (mut metrics, mut idx, mut keys, mut values) = (vec![], vec![], vec![], vec![]);
    // Keys in the order version 6 saw them first: zone, then pod (positions 2 and 3).
    for (i, (zone, pod)) in old.iter().enumerate() {
        metrics.push("upgrade_series".to_string());
        let mut l = labels_of(zone, pod);
        l.sort_by_key(|(k, _)| if k == "zone" { 0 } else { 1 });
        for (k, v) in l {
            idx.push(i as i32);
            keys.push(k);
            values.push(v);
        }
    }
    let created: Vec<(i32, i64)> = sqlx::query_as(
        "SELECT idx, series_id FROM _prom_catalog.get_or_create_series_ids($1, $2, $3, $4) ORDER BY idx",
    )
    .bind(&metrics)
    .bind(&idx)
    .bind(&keys)
    .bind(&values)
    .fetch_all(&db)
    .await
    .unwrap();
    assert_eq!(created.len(), old.len());

    let connector = Connector::start(&pg.uri(), &["--maintenance.interval", "0s"]).await;
    let version: i32 = sqlx::query_scalar("SELECT max(version) FROM _prom_catalog.migration")
        .fetch_one(&db)
        .await
        .unwrap();
    assert_eq!(version, latest_version());
    let client = reqwest::Client::new();
    let t = recent_ms();
    let new: Vec<(&str, &str)> = vec![("a", "p9"), ("", "p8"), ("d", "")];
    let body = encode(
        old.iter()
            .chain(&new)
            .enumerate()
            .map(|(i, (zone, pod))| {
                let l = labels_of(zone, pod);
                let l: Vec<(&str, &str)> = l.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
                series(&l, &[(t, i as f64)])
            })
            .collect(),
    );
    let (status, text) = post(&client, &connector.url("/write"), body).await.unwrap();
    assert_eq!(status, 204, "{text}");

    let ids: Vec<i64> = sqlx::query_scalar(
        "SELECT s.id FROM _prom_catalog.series s JOIN _prom_catalog.metric m ON m.id = s.metric_id
          WHERE m.metric_name = 'upgrade_series' ORDER BY s.id",
    )
    .fetch_all(&db)
    .await
    .unwrap();
    assert_eq!(
        ids.len(),
        old.len() + new.len(),
        "one new series per new label set only"
    );
    for (_, id) in &created {
        assert!(ids.contains(id), "series {id} of version 6 kept");
    }
    // Every sample went to the series of its label set: old ones to the old ids.
    let stored: Vec<(i64, f64)> =
        sqlx::query_as("SELECT series_id, value FROM prom_data.upgrade_series ORDER BY value")
            .fetch_all(&db)
            .await
            .unwrap();
    assert_eq!(stored.len(), old.len() + new.len());
    for (idx, id) in &created {
        assert_eq!(stored[*idx as usize], (*id, *idx as f64));
    }
    // Matchers over old and new series alike.
    let query = |q: &str| {
        let (client, url, q) = (client.clone(), connector.url("/api/v1/query"), q.to_string());
        async move {
            let response = json(
                client
                    .post(url)
                    .form(&[("query", q.as_str()), ("time", &format!("{}", t as f64 / 1000.0))]),
            )
            .await;
            let mut values: Vec<String> = response["data"]["result"]
                .as_array()
                .unwrap_or_else(|| panic!("{q}: {response}"))
                .iter()
                .map(|r| r["value"][1].as_str().unwrap().to_string())
                .collect();
            values.sort();
            values
        }
    };
    assert_eq!(query("upgrade_series{zone=\"a\"}").await, vec!["0", "4"]);
    assert_eq!(query("upgrade_series{zone=\"\"}").await, vec!["1", "5"]);
    assert_eq!(query("upgrade_series{pod=\"\"}").await, vec!["2", "6"]);
    assert_eq!(query(&format!("upgrade_series{{pod=\"{long}\"}}")).await, vec!["3"]);
}
