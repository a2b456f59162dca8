//! Schema upgrades in place: a database written by the previous schema version (4: a row per
//! sample, compressed chunks as arrays) is upgraded by a connector of this version, and
//! every sample it held answers exactly as before, through SQL and PromQL, before and after
//! compaction.

use promscale_connector::storage::migrations::migrate_to;
use promscale_connector::storage::samples::PgTimestamp;
use promscale_e2e::postgres::TestPostgres;
use promscale_e2e::remote_write::{encode, post, series, STALE_NAN_BITS};
use promscale_e2e::upgrade::upgraded_by_a_connector;
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

/// Writes an encoded block of a metric's samples into the head, as a connector's writer
/// does; `span` is its first and last time (Unix ms).
async fn insert_head_row(
    db: &PgPool,
    metric_id: i32,
    span: (i64, i64),
    samples: i32,
    block: &promscale_connector::storage::codec::Block,
) {
    sqlx::query(
        "INSERT INTO _prom_catalog.head (metric_id, min_time, max_time, samples, data, exceptions)
         VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(metric_id)
    .bind(PgTimestamp::from_unix_ms(span.0))
    .bind(PgTimestamp::from_unix_ms(span.1))
    .bind(samples)
    .bind(&block.data)
    .bind((!block.exceptions.is_empty()).then_some(&block.exceptions))
    .execute(db)
    .await
    .unwrap();
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
    let connector = upgraded_by_a_connector(&pg, &db).await;
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

    let connector = promscale_e2e::connector::Connector::start(&pg.uri(), &["--maintenance.interval", "0s"]).await;
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

    let connector = upgraded_by_a_connector(&pg, &db).await;
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

/// Version 7's chunk storage (every time chunk a table of series chunks) upgraded to version
/// 8 (small time chunks as chunk blocks in a shared table): every sample answers as before
/// through SQL and PromQL; maintenance seals the closed chunk that version 7 left unsealed
/// into blocks and drops its table; a chunk version 7 sealed keeps its table until a late
/// sample reopens it, and is then sealed into blocks too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_version_7_store_of_chunk_tables_is_upgraded_and_sealed_into_blocks() {
    use promscale_connector::storage::codec::BlockEncoder;
    const CHUNK_MS: i64 = 8 * 3_600_000;
    const STEP: i64 = 15_000;
    let pg = TestPostgres::start();
    let db = pg.pool().await;
    assert_eq!(migrate_to(&db, 7).await.unwrap(), 7);

    // Three series through version 7's own functions.
    let positions: Vec<(i32, i32, i32)> = sqlx::query_as(
        "SELECT idx, metric_id, pos FROM _prom_catalog.get_or_create_label_positions($1, $2) ORDER BY idx",
    )
    .bind(vec!["upgrade_blocks", "upgrade_blocks"])
    .bind(vec!["__name__", "cpu"])
    .fetch_all(&db)
    .await
    .unwrap();
    let metric_id = positions[0].1;
    assert_eq!((positions[0].2, positions[1].2), (1, 2));
    let labels: Vec<(i32, i32)> =
        sqlx::query_as("SELECT idx, label_id FROM _prom_catalog.get_or_create_label_ids($1, $2) ORDER BY idx")
            .bind(vec!["__name__", "cpu", "cpu", "cpu"])
            .bind(vec!["upgrade_blocks", "c0", "c1", "c2"])
            .fetch_all(&db)
            .await
            .unwrap();
    let name = labels[0].1;
    let flat: Vec<i32> = (1..4).flat_map(|i| [name, labels[i].1]).collect();
    let ids: Vec<i64> =
        sqlx::query_scalar("SELECT series_id FROM _prom_catalog.create_series($1, $2, $3) ORDER BY idx")
            .bind(vec![metric_id; 3])
            .bind(vec![2; 3])
            .bind(&flat)
            .fetch_all(&db)
            .await
            .unwrap();
    assert_eq!(ids.len(), 3);

    // Chunk A (sealed by version 7) and chunk B (closed, not yet sealed: each series in two
    // series chunks), then a head row of recent samples.
    let now = recent_ms();
    let b_start = (now - 3 * 3_600_000) / CHUNK_MS * CHUNK_MS - CHUNK_MS;
    let a_start = b_start - CHUNK_MS;
    let mut expected: std::collections::BTreeMap<(String, i64), u64> = Default::default();
    let mut chunk_tables = vec![];
    for (chunk_start, halves) in [(a_start, 1), (b_start, 2)] {
        let (chunk_id, table): (i32, String) =
            sqlx::query_as("SELECT id, table_name::text FROM _prom_catalog.get_or_create_chunk($1, $2)")
                .bind(metric_id)
                .bind(PgTimestamp::from_unix_ms(chunk_start))
                .fetch_one(&db)
                .await
                .unwrap();
        chunk_tables.push((chunk_id, table.clone()));
        for (s, id) in ids.iter().enumerate() {
            let times: Vec<i64> = (0..400).map(|i| chunk_start + 60_000 + i * STEP).collect();
            let values: Vec<f64> = (0..400).map(|i| value(s, i)).collect();
            for (t, v) in times.iter().zip(&values) {
                expected.insert((format!("c{s}"), *t), v.to_bits());
            }
            let per = times.len() / halves;
            for h in 0..halves {
                let (t, v) = (&times[h * per..(h + 1) * per], &values[h * per..(h + 1) * per]);
                let mut encoder = BlockEncoder::new(t[0], false).without_packing();
                encoder.push_run(0, t, v);
                let block = encoder.finish();
                sqlx::query(&format!(
                    "INSERT INTO _prom_chunks.\"{table}\" (series_id, start_time, end_time, samples, data, exceptions)
                     VALUES ($1, $2, $3, $4, $5, $6)"
                ))
                .bind(id)
                .bind(PgTimestamp::from_unix_ms(t[0]))
                .bind(PgTimestamp::from_unix_ms(t[t.len() - 1]))
                .bind(t.len() as i32)
                .bind(&block.data)
                .bind((!block.exceptions.is_empty()).then_some(&block.exceptions))
                .execute(&db)
                .await
                .unwrap();
            }
        }
    }
    sqlx::query("UPDATE _prom_catalog.chunk SET sealed = true WHERE id = $1")
        .bind(chunk_tables[0].0)
        .execute(&db)
        .await
        .unwrap();
    let recent: Vec<i64> = (0..20).map(|i| now - 30 * 60_000 + i * STEP).collect();
    let mut encoder = BlockEncoder::new(recent[0], false).without_packing();
    for (s, id) in ids.iter().enumerate() {
        let values: Vec<f64> = (0..20).map(|i| value(s, i + 1000)).collect();
        for (t, v) in recent.iter().zip(&values) {
            expected.insert((format!("c{s}"), *t), v.to_bits());
        }
        encoder.push_run(*id, &recent, &values);
    }
    let block = encoder.finish();
    insert_head_row(&db, metric_id, (recent[0], recent[19]), 60, &block).await;

    let connector = upgraded_by_a_connector(&pg, &db).await;
    let stored = || async {
        view(&db, "upgrade_blocks")
            .await
            .into_iter()
            .map(|(cpu, t, v)| ((cpu, t), v))
            .collect::<std::collections::BTreeMap<_, _>>()
    };
    assert_eq!(stored().await, expected, "version 7's samples through the view");
    let client = reqwest::Client::new();
    let range = |start: i64, end: i64| {
        let client = client.clone();
        let url = connector.url("/api/v1/query_range");
        async move {
            let answer = json(client.post(url).form(&[
                ("query", "upgrade_blocks"),
                ("start", &format!("{}", start as f64 / 1000.0)),
                ("end", &format!("{}", end as f64 / 1000.0)),
                ("step", "60"),
            ]))
            .await;
            assert_eq!(answer["status"], "success", "{answer}");
            answer["data"].to_string()
        }
    };
    let before = range(a_start, now).await;
    assert!(before.contains("c2"), "{}", &before[..before.len().min(300)]);

    let stats = maintain(&db).await;
    assert_eq!(stats.samples, 60, "the head row compacted");
    let tables = |id: i32| {
        let db = db.clone();
        async move {
            sqlx::query_scalar::<_, Option<String>>("SELECT table_name::text FROM _prom_catalog.chunk WHERE id = $1")
                .bind(id)
                .fetch_one(&db)
                .await
                .unwrap()
        }
    };
    assert_eq!(
        tables(chunk_tables[0].0).await.as_deref(),
        Some(chunk_tables[0].1.as_str()),
        "sealed by version 7: kept"
    );
    assert_eq!(tables(chunk_tables[1].0).await, None, "sealed now, into blocks");
    // Whether a table of that name is still there.
    let exists = |table: String| {
        let db = db.clone();
        async move {
            sqlx::query_scalar::<_, bool>("SELECT to_regclass(format('_prom_chunks.%I', $1::text)) IS NOT NULL")
                .bind(table)
                .fetch_one(&db)
                .await
                .unwrap()
        }
    };
    assert!(!exists(chunk_tables[1].1.clone()).await, "its table is dropped");
    assert_eq!(stored().await, expected, "the same samples after maintenance");
    assert_eq!(range(a_start, now).await, before, "PromQL answers as before");

    // A late sample reopens chunk A, with a repeat of a time version 7 stored (its value
    // stays); sealing then turns chunk A into blocks as well.
    let late = a_start + 60_000 + 7_000;
    let repeated = a_start + 60_000 + 5 * STEP;
    let body = encode(vec![series(
        &[("__name__", "upgrade_blocks"), ("cpu", "c1")],
        &[(repeated, -5.0), (late, 42.0)],
    )]);
    assert_eq!(post(&client, &connector.url("/write"), body).await.unwrap().0, 204);
    expected.insert(("c1".to_string(), late), 42f64.to_bits());
    assert_eq!(stored().await, expected, "the stored value wins over the repeat");
    maintain(&db).await;
    assert_eq!(tables(chunk_tables[0].0).await, None);
    assert!(!exists(chunk_tables[0].1.clone()).await, "chunk A's table is dropped");
    assert_eq!(stored().await, expected, "and after sealing");
}

/// Version 11's sample blocks (values always coded as varint tokens) upgraded to version 12
/// (runs of changing values bit-packed): every sample reads the same through SQL and PromQL,
/// before and after maintenance rewrites the head into chunks, whose runs are then packed
/// where that is shorter, exceptions (stale markers, Inf, -0) kept in place.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_version_11_head_reads_the_same_and_is_compacted_into_packed_runs() {
    use promscale_connector::storage::codec::{run_sizes, BlockEncoder};
    use promscale_e2e::upgrade::create_series_in_sql;
    const STEP: i64 = 15_000;
    let pg = TestPostgres::start();
    let db = pg.pool().await;
    assert_eq!(migrate_to(&db, 11).await.unwrap(), 11);
    let mut ids = vec![];
    for cpu in ["c0", "c1", "c2", "c3"] {
        ids.push(create_series_in_sql(&db, &[("__name__", "upgrade_packing"), ("cpu", cpu)]).await);
    }
    let metric_id: i32 =
        sqlx::query_scalar("SELECT id FROM _prom_catalog.metric WHERE metric_name = 'upgrade_packing'")
            .fetch_one(&db)
            .await
            .unwrap();
    // An hour inside an 8 h chunk that has ended, whatever the time of day: across a chunk
    // boundary each series would be two runs, and a short one may not pack (a run of 21
    // samples of c3 did not, at 11:05 UTC).
    const CHUNK: i64 = 8 * 3_600_000;
    let chunk_start = (recent_ms() - 9 * 3_600_000) / CHUNK * CHUNK;
    let times: Vec<i64> = (0..240).map(|i| chunk_start + 600_000 + i * STEP).collect();
    // c0 to c2 as in the other upgrade tests; c3 a counter with irregular increments.
    let values = |s: usize| -> Vec<f64> {
        let mut total = 0.0;
        (0..240i64)
            .map(|i| match s {
                3 => {
                    total += ((i * 7919) % 50) as f64;
                    total
                }
                _ => value(s, i),
            })
            .collect()
    };
    let mut expected = std::collections::BTreeMap::new();
    let mut encoder = BlockEncoder::new(times[0], false).without_packing();
    for (s, id) in ids.iter().enumerate() {
        let values = values(s);
        for (t, v) in times.iter().zip(&values) {
            expected.insert((format!("c{s}"), *t), v.to_bits());
        }
        encoder.push_run(*id, &times, &values);
    }
    let block = encoder.finish();
    assert!(run_sizes(&block.data).unwrap().iter().all(|r| !r.is_packed()));
    insert_head_row(&db, metric_id, (times[0], times[239]), 4 * 240, &block).await;

    let connector = upgraded_by_a_connector(&pg, &db).await;
    let stored = || promscale_e2e::view_samples(&db, "upgrade_packing", "cpu");
    assert_eq!(stored().await, expected, "version 11's head through the view");
    let client = reqwest::Client::new();
    let base_url = connector.url("");
    let range = || promscale_e2e::query_range(&client, &base_url, "upgrade_packing", times[0], times[239], 60);
    let before = range().await;
    assert!(before.contains("c3"), "{}", &before[..before.len().min(300)]);

    let stats = maintain(&db).await;
    assert_eq!(stats.samples, 4 * 240, "the head row compacted");
    assert_eq!(stored().await, expected, "the same samples after compaction");
    assert_eq!(range().await, before, "PromQL answers as before");
    let blocks: Vec<Vec<u8>> = sqlx::query_scalar(
        "SELECT data FROM _prom_catalog.chunk_block UNION ALL SELECT data FROM _prom_catalog.series_chunk",
    )
    .fetch_all(&db)
    .await
    .unwrap();
    let runs: Vec<_> = blocks.iter().flat_map(|b| run_sizes(b).unwrap()).collect();
    let packed = |s: usize| runs.iter().filter(|r| r.series == ids[s]).all(|r| r.is_packed());
    assert!(packed(0) && packed(1) && packed(3), "{runs:?}");
    for s in [0, 1, 3] {
        let samples: usize = runs.iter().filter(|r| r.series == ids[s]).map(|r| r.samples).sum();
        assert_eq!(samples, 240, "c{s} in chunk blocks: {runs:?}");
    }
    assert!(runs.iter().any(|r| r.series == ids[0] && r.exceptions > 0), "{runs:?}");
    let bytes = |s: usize| {
        runs.iter()
            .filter(|r| r.series == ids[s])
            .map(|r| r.bytes)
            .sum::<usize>()
    };
    let before_bytes: usize = run_sizes(&block.data)
        .unwrap()
        .iter()
        .filter(|r| r.series != ids[2])
        .map(|r| r.bytes)
        .sum();
    assert!(
        (bytes(0) + bytes(1) + bytes(3)) * 2 < before_bytes,
        "{} bytes packed, {before_bytes} as tokens",
        bytes(0) + bytes(1) + bytes(3)
    );
}
