//! Series creation when writers race (migration 9): `create_series` inserts new series with a
//! plain insert and falls back to a conflict-tolerant one only when another writer created
//! one of them first. Whichever way, each label set gets exactly one series, every caller is
//! answered with that series' id, and the other new series of the batch are created. Series
//! a version 8, 12, 13, 21, 22, 23 or 24 catalog holds keep their ids. New series draw their ids
//! in the order they are asked for (migration 14), whatever the order of their labels. A
//! series with a label its own transaction created skips the lookup and the catalog's indexes
//! (migration 22): it is written into `_prom_catalog.series_fresh`, found there by every other
//! writer and reader, and moved into the indexed catalog by `index_fresh_series`. Since
//! migration 24 every other new series is written there too once looked up, unique through
//! that table's exclusion constraint and a check against the indexed catalog after the insert.
//! Since migration 25 the lookups, ids and insert of a call are one statement, and version
//! 24's function sorts out conflicts, duplicates and stricter isolation levels; two moves
//! into the indexed catalog at once index each series once, and the merge pass gives back
//! the pages of the series it moved. The lookup of the series limits answers every series of
//! a call in order. A call mixing series of labels its transaction created with stored series
//! finds the stored ones (migration 26). Since migration 28 the series of a label above the
//! recent label floor are created without lookups, once each, also by two writers at once;
//! the floor rises only while no writer creates such series, and their series stay among the
//! fresh ones until it has. Since migration 29 labels are created by `create_labels`, once
//! each, also by two writers at once, and labels found draw no id. Since migration 30 the
//! connector draws the ids of recent series (`draw_recent_series_ids`, above the floor only)
//! and writes them with COPY; a COPY that meets series another connector created (or one of
//! version 29) is rolled back and those series keep their ids. Since migration 31 the fresh
//! series are unique by a btree over the 64-bit hash of their labels, which every lookup
//! finds them through before comparing labels; series of one hash are refused (503) until one
//! of them can go into the indexed catalog.

use std::time::Duration;

use promscale_connector::storage::compaction::CompactionOptions;
use promscale_connector::storage::maintenance::{merge_once, Outcome};
use promscale_connector::storage::migrations::{latest_version, migrate_to};
use promscale_e2e::connector::Connector;
use promscale_e2e::postgres::TestPostgres;
use promscale_e2e::remote_write::{encode, post, series};
use sqlx::{Connection, PgConnection};

/// The merge pass' move of new series into the indexed catalog, the recent label floor raised
/// first (migration 28), as `maintenance::index_fresh_series` does it, but in one statement,
/// so that it can run inside a test's transaction (the floor's lock is then held through the
/// move, where the merge pass raises it in a transaction of its own).
const INDEX_FRESH_SERIES: &str =
    "SELECT _prom_catalog.index_fresh_series() FROM (SELECT _prom_catalog.raise_recent_label_floor()) AS floor";

/// `create_series` for series of one metric, each `[__name__ id, k id]`.
async fn create(conn: &mut PgConnection, metric_id: i32, arrays: &[[i32; 2]]) -> Vec<(i32, i64)> {
    let flat: Vec<i32> = arrays.iter().flatten().copied().collect();
    sqlx::query_as("SELECT idx, series_id FROM _prom_catalog.create_series($1, $2, $3) ORDER BY idx")
        .bind(vec![metric_id; arrays.len()])
        .bind(vec![2i32; arrays.len()])
        .bind(flat)
        .fetch_all(conn)
        .await
        .unwrap()
}

/// `create_recent_series` (migration 28) for series of one metric, each `[__name__ id, k id]`,
/// each sent with its highest label as the recent one: the ids, None for a series not taken
/// for recent, and the floor.
async fn create_recent(
    conn: &mut PgConnection,
    metric_id: i32,
    arrays: &[[i32; 2]],
) -> (Vec<Option<i64>>, Option<i32>) {
    let highest: Vec<i32> = arrays.iter().map(|a| a[0].max(a[1])).collect();
    create_recent_as(conn, metric_id, arrays, highest).await
}

/// As [`create_recent`], each series sent with the given label as its recent one.
async fn create_recent_as(
    conn: &mut PgConnection,
    metric_id: i32,
    arrays: &[[i32; 2]],
    recent: Vec<i32>,
) -> (Vec<Option<i64>>, Option<i32>) {
    let flat: Vec<i32> = arrays.iter().flatten().copied().collect();
    sqlx::query_as("SELECT series_ids, label_floor FROM _prom_catalog.create_recent_series($1, $2, $3, $4)")
        .bind(vec![metric_id; arrays.len()])
        .bind(vec![2i32; arrays.len()])
        .bind(flat)
        .bind(recent)
        .fetch_one(conn)
        .await
        .unwrap()
}

/// The metric `race` with label key `k`, and the ids of `__name__="race"` and of `k` = each
/// of `values`.
async fn race_labels(db: &sqlx::PgPool, values: &[&str]) -> (i32, i32, Vec<i32>) {
    let (metric_id, name_pos, k_pos): (i32, i32, i32) = sqlx::query_as(
        "SELECT min(metric_id), min(pos) FILTER (WHERE idx = 0), min(pos) FILTER (WHERE idx = 1)
           FROM _prom_catalog.get_or_create_label_positions(ARRAY['race', 'race'], ARRAY['__name__', 'k'])",
    )
    .fetch_one(db)
    .await
    .unwrap();
    assert_eq!((name_pos, k_pos), (1, 2));
    let mut keys = vec!["__name__"];
    keys.extend(std::iter::repeat_n("k", values.len()));
    let mut wanted = vec!["race"];
    wanted.extend_from_slice(values);
    let ids: Vec<i32> =
        sqlx::query_scalar("SELECT label_id FROM _prom_catalog.get_or_create_label_ids($1, $2) ORDER BY idx")
            .bind(keys)
            .bind(wanted)
            .fetch_all(db)
            .await
            .unwrap();
    (metric_id, ids[0], ids[1..].to_vec())
}

/// Waits until a session running a statement that names `function` waits on a lock (another
/// writer's open transaction); how many do.
async fn sessions_waiting_on_a_lock_in(db: &sqlx::PgPool, function: &str) -> i64 {
    let pattern = format!("%{function}%");
    promscale_e2e::wait_for(
        &format!("a writer to wait in {function}"),
        Duration::from_secs(30),
        || {
            let (db, pattern) = (db.clone(), pattern.clone());
            async move {
                let waiting: i64 = sqlx::query_scalar(
                    "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND query LIKE $1",
                )
                .bind(pattern)
                .fetch_one(&db)
                .await
                .unwrap();
                (waiting > 0).then_some(waiting)
            }
        },
    )
    .await
}

/// Series a catalog of `version` created resolve to the same ids through the latest
/// `create_series`, which creates only the new ones, in one call with them.
async fn series_of_an_older_catalog_keep_their_ids(version: i32) {
    let pg = TestPostgres::start();
    let db = pg.pool().await;
    migrate_to(&db, version).await.unwrap();
    let (metric_id, name, ids) = race_labels(&db, &["a", "b", "c", "d"]).await;
    let mut conn = PgConnection::connect(&pg.uri()).await.unwrap();
    let old = create(&mut conn, metric_id, &[[name, ids[0]], [name, ids[2]]]).await;
    assert_eq!(old.len(), 2);

    migrate_to(&db, latest_version()).await.unwrap();
    let mut conn = PgConnection::connect(&pg.uri()).await.unwrap();
    // Known and new series interleaved, as a request after a connector restart sends them.
    let now = create(
        &mut conn,
        metric_id,
        &[[name, ids[0]], [name, ids[1]], [name, ids[2]], [name, ids[3]]],
    )
    .await;
    assert_eq!(now.len(), 4, "{now:?}");
    assert_eq!(now[0], (0, old[0].1), "version {version}'s series keeps its id");
    assert_eq!(now[2], (2, old[1].1), "version {version}'s series keeps its id");
    let mut distinct: Vec<i64> = now.iter().map(|(_, id)| *id).collect();
    distinct.sort();
    distinct.dedup();
    assert_eq!(distinct.len(), 4, "a series of its own for each new label set: {now:?}");
    let count: i64 = sqlx::query_scalar("SELECT count(*) FROM _prom_catalog.series")
        .fetch_one(&db)
        .await
        .unwrap();
    assert_eq!(count, 4);
    // Asked again, every one is found and none is created.
    let again = create(
        &mut conn,
        metric_id,
        &[[name, ids[0]], [name, ids[1]], [name, ids[2]], [name, ids[3]]],
    )
    .await;
    assert_eq!(again, now);
    let count: i64 = sqlx::query_scalar("SELECT count(*) FROM _prom_catalog.series")
        .fetch_one(&db)
        .await
        .unwrap();
    assert_eq!(count, 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn series_of_a_version_8_catalog_keep_their_ids() {
    series_of_an_older_catalog_keep_their_ids(8).await;
}

/// Version 13 answers known series from its lookup instead of joining the whole catalog.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn series_of_a_version_12_catalog_keep_their_ids() {
    series_of_an_older_catalog_keep_their_ids(12).await;
}

/// Version 14 draws ids in the order series are asked for and inserts them in labels order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn series_of_a_version_13_catalog_keep_their_ids() {
    series_of_an_older_catalog_keep_their_ids(13).await;
}

/// Version 22 writes series with a label of their own transaction apart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn series_of_a_version_21_catalog_keep_their_ids() {
    series_of_an_older_catalog_keep_their_ids(21).await;
}

/// Version 23 creates the fresh series of the connector's requests in one statement.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn series_of_a_version_22_catalog_keep_their_ids() {
    series_of_an_older_catalog_keep_their_ids(22).await;
}

/// Series a catalog of `version` holds, fresh and indexed, are found by every lookup of the
/// latest version (create_series, existing_series), keep their ids and are never created
/// twice; the merge pass indexes them under the same ids.
async fn fresh_and_indexed_series_of_an_older_catalog_keep_their_ids(version: i32) {
    let pg = TestPostgres::start();
    let db = pg.pool().await;
    migrate_to(&db, version).await.unwrap();
    let (metric_id, name, ids) = race_labels(&db, &["indexed", "other"]).await;
    let (indexed, other) = (ids[0], ids[1]);
    // One series indexed by the old version's merge pass, one fresh (its label new in the
    // transaction that created it).
    let mut conn = PgConnection::connect(&pg.uri()).await.unwrap();
    let old_indexed = create(&mut conn, metric_id, &[[name, indexed]]).await;
    sqlx::query("SELECT _prom_catalog.index_fresh_series()")
        .execute(&db)
        .await
        .unwrap();
    sqlx::query("BEGIN").execute(&mut conn).await.unwrap();
    let fresh = label_in(&mut conn, "fresh").await;
    let old_fresh = create(&mut conn, metric_id, &[[name, fresh]]).await;
    sqlx::query("COMMIT").execute(&mut conn).await.unwrap();
    let old = [old_fresh[0], (1, old_indexed[0].1)];
    assert_eq!(where_series_are(&db).await, (1, 1));

    migrate_to(&db, latest_version()).await.unwrap();
    let (floor, newest): (i32, i32) = sqlx::query_as(
        "SELECT (SELECT label_id FROM _prom_catalog.recent_label_floor), (SELECT max(id) FROM _prom_catalog.label)",
    )
    .fetch_one(&db)
    .await
    .unwrap();
    assert_eq!(floor, newest, "no label of an older catalog is recent");
    // Fresh series are unique by their labels (an exclusion constraint up to version 30, a
    // unique index since): a second row of the fresh series' labels is refused.
    let copy = sqlx::query(
        "INSERT INTO _prom_catalog.series_fresh (id, metric_id, labels)
         SELECT f.id + 1000000, f.metric_id, f.labels FROM ONLY _prom_catalog.series_fresh f",
    )
    .execute(&db)
    .await
    .unwrap_err();
    assert_eq!(
        copy.as_database_error().and_then(|e| e.code()).as_deref(),
        Some("23505"),
        "fresh series are unique by their labels: {copy}"
    );
    // Another writer (a connector that restarted) finds both and creates only the new one,
    // unindexed although none of its labels is new.
    let mut conn = PgConnection::connect(&pg.uri()).await.unwrap();
    let now = create(&mut conn, metric_id, &[[name, other], [name, indexed], [name, fresh]]).await;
    assert_eq!(now[1], (1, old[1].1), "the indexed series keeps its id");
    assert_eq!(now[2], (2, old[0].1), "the fresh series keeps its id");
    assert!(now[0].1 != old[0].1 && now[0].1 != old[1].1, "{now:?}");
    assert_eq!(where_series_are(&db).await, (2, 1));
    // The lookup of the series limits finds them all, by name.
    let found: Vec<(i32, Option<i32>, Option<i64>)> =
        sqlx::query_as("SELECT idx, metric_id, series_id FROM _prom_catalog.existing_series($1, $2, $3, $4)")
            .bind(vec!["race"; 4])
            .bind(vec![2i32; 4])
            .bind(vec!["__name__", "k", "__name__", "k", "__name__", "k", "__name__", "k"])
            .bind(vec![
                "race", "fresh", "race", "indexed", "race", "other", "race", "unknown",
            ])
            .fetch_all(&db)
            .await
            .unwrap();
    assert_eq!(
        found,
        vec![
            (0, Some(metric_id), Some(old[0].1)),
            (1, Some(metric_id), Some(old[1].1)),
            (2, Some(metric_id), Some(now[0].1)),
            (3, Some(metric_id), None),
        ]
    );
    // Asked again, nothing is created; indexed by the merge pass, all keep their ids.
    assert_eq!(
        create(&mut conn, metric_id, &[[name, other], [name, indexed], [name, fresh]]).await,
        now
    );
    let moved: i64 = sqlx::query_scalar("SELECT _prom_catalog.index_fresh_series()")
        .fetch_one(&db)
        .await
        .unwrap();
    assert_eq!(moved, 2);
    assert_eq!(
        create(&mut conn, metric_id, &[[name, fresh], [name, indexed], [name, other]]).await,
        vec![(0, old[0].1), (1, old[1].1), (2, now[0].1)]
    );
    assert_eq!(where_series_are(&db).await, (0, 3));
}

/// Version 24 writes every new series unindexed, under an exclusion constraint of the fresh
/// series.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn series_of_a_version_23_catalog_keep_their_ids() {
    fresh_and_indexed_series_of_an_older_catalog_keep_their_ids(23).await;
}

/// Version 25 looks up, draws ids for and inserts the new series of a call in one statement.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn series_of_a_version_24_catalog_keep_their_ids() {
    fresh_and_indexed_series_of_an_older_catalog_keep_their_ids(24).await;
}

/// Version 26 tells the series holding a label of their own transaction by a hash join.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn series_of_a_version_25_catalog_keep_their_ids() {
    fresh_and_indexed_series_of_an_older_catalog_keep_their_ids(25).await;
}

/// Version 27 packs the series that stopped into batches.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn series_of_a_version_26_catalog_keep_their_ids() {
    fresh_and_indexed_series_of_an_older_catalog_keep_their_ids(26).await;
}

/// Version 28 creates the series of recent labels without lookups.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn series_of_a_version_27_catalog_keep_their_ids() {
    fresh_and_indexed_series_of_an_older_catalog_keep_their_ids(27).await;
}

/// A call in a transaction that created many labels (a rollout's request: some of its series
/// hold a new pod's labels, others labels another shard created, or belong to series stored
/// before) writes the series of its own labels without looking them up, and finds every
/// other series where it is: none is stored twice, each keeps its id (migration 26 tells the
/// first kind by a join with the labels created).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_mixing_series_of_its_own_labels_and_stored_series_finds_the_stored_ones() {
    let pg = TestPostgres::start();
    let db = pg.pool().await;
    migrate_to(&db, latest_version()).await.unwrap();
    let (metric_id, name, ids) = race_labels(&db, &["indexed", "fresh", "other"]).await;
    let (indexed, fresh, other) = (ids[0], ids[1], ids[2]);
    let mut conn = PgConnection::connect(&pg.uri()).await.unwrap();
    let stored_indexed = create(&mut conn, metric_id, &[[name, indexed]]).await[0].1;
    sqlx::query(INDEX_FRESH_SERIES).execute(&db).await.unwrap();
    let stored_fresh = create(&mut conn, metric_id, &[[name, fresh]]).await[0].1;
    assert_eq!(where_series_are(&db).await, (1, 1));

    sqlx::query("BEGIN").execute(&mut conn).await.unwrap();
    let values: Vec<String> = (0..300).map(|n| format!("pod-{n}")).collect();
    let created: Vec<(i32, bool)> = sqlx::query_as(
        "SELECT label_id, created FROM _prom_catalog.get_or_create_label_ids_created(array_fill('k'::text, ARRAY[cardinality($1::text[])]), $1) ORDER BY idx",
    )
    .bind(&values)
    .fetch_all(&mut conn)
    .await
    .unwrap();
    assert!(created.iter().all(|&(_, new)| new));
    // The stored and known-label series between the new ones, in the order of a request.
    let mut arrays: Vec<[i32; 2]> = created.iter().map(|&(id, _)| [name, id]).collect();
    arrays.insert(100, [name, indexed]);
    arrays.insert(200, [name, fresh]);
    arrays.insert(250, [name, other]);
    let drawn = || async {
        sqlx::query_scalar::<_, i64>("SELECT last_value FROM _prom_catalog.series_number")
            .fetch_one(&db)
            .await
            .unwrap()
    };
    let before = drawn().await;
    let answered = create(&mut conn, metric_id, &arrays).await;
    sqlx::query("COMMIT").execute(&mut conn).await.unwrap();
    // One id for each new series and none for the stored ones: a stored series taken for one
    // of the transaction's own would be inserted again, meet its first copy and send the
    // whole call to the conflict path, which draws ids again.
    assert_eq!(
        drawn().await - before,
        301,
        "ids drawn in one go, for the new series only"
    );
    assert_eq!(answered.len(), 303);
    assert_eq!(answered[100], (100, stored_indexed), "the indexed series is found");
    assert_eq!(answered[200], (200, stored_fresh), "the fresh series is found");
    let mut ids: Vec<i64> = answered.iter().map(|&(_, id)| id).collect();
    assert!(ids.windows(2).all(|w| w[0] != w[1]));
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), 303, "every series its own id");
    // 300 series of new labels and {k="other"} are new: 302 fresh with the one before.
    assert_eq!(where_series_are(&db).await, (302, 1));
    let distinct: bool = sqlx::query_scalar("SELECT count(DISTINCT labels) = count(*) FROM _prom_catalog.series")
        .fetch_one(&db)
        .await
        .unwrap();
    assert!(distinct, "no label set stored twice");
}

/// The merge pass gives back the space of the series it moves out of `series_fresh`: readers
/// of fresh series scan that table, and a rollout's burst of new series would otherwise keep
/// its pages until autovacuum came by.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_merge_pass_gives_back_the_space_of_the_series_it_indexes() {
    let pg = TestPostgres::start();
    let db = pg.pool().await;
    migrate_to(&db, latest_version()).await.unwrap();
    let values: Vec<String> = (0..3000).map(|i| format!("pod-{i}")).collect();
    let values: Vec<&str> = values.iter().map(String::as_str).collect();
    let (metric_id, name, ids) = race_labels(&db, &values).await;
    let arrays: Vec<[i32; 2]> = ids.iter().map(|&id| [name, id]).collect();
    let mut conn = PgConnection::connect(&pg.uri()).await.unwrap();
    let created = create(&mut conn, metric_id, &arrays).await;
    assert_eq!(created.len(), 3000);
    assert_eq!(where_series_are(&db).await, (3000, 0));
    let fresh_size = || async {
        sqlx::query_scalar::<_, i64>("SELECT pg_relation_size('_prom_catalog.series_fresh')")
            .fetch_one(&db)
            .await
            .unwrap()
    };
    assert!(fresh_size().await > 8192 * 10, "3,000 series take pages");

    let outcome = merge_once(&db, &CompactionOptions::merge_only()).await.unwrap();
    assert!(matches!(outcome, Outcome::Done(_)), "{outcome:?}");
    assert_eq!(where_series_are(&db).await, (0, 3000));
    assert_eq!(fresh_size().await, 0, "the emptied pages are given back");
    // Found under the same ids afterwards.
    assert_eq!(create(&mut conn, metric_id, &arrays).await, created);
    assert_eq!(where_series_are(&db).await, (0, 3000));
}

/// A burst of new series grows the fresh series' labels index, which never gives pages back:
/// once a pass has emptied the table, the index is rebuilt small. A reader using the index
/// at that moment makes the rebuild give up (after 50 ms) without failing the pass; the next
/// maintenance run rebuilds it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_fresh_series_index_shrinks_back_after_a_burst() {
    let pg = TestPostgres::start();
    let db = pg.pool().await;
    migrate_to(&db, latest_version()).await.unwrap();
    let index_size = || async {
        sqlx::query_scalar::<_, i64>(
            "SELECT sum(pg_relation_size(indexrelid))::int8 FROM pg_index WHERE indrelid = '_prom_catalog.series_fresh'::regclass",
        )
        .fetch_one(&db)
        .await
        .unwrap()
    };
    let burst = |from: usize| {
        let db = db.clone();
        let uri = pg.uri();
        async move {
            let values: Vec<String> = (from..from + 10_000).map(|i| format!("pod-{i}")).collect();
            let values: Vec<&str> = values.iter().map(String::as_str).collect();
            let (metric_id, name, ids) = race_labels(&db, &values).await;
            let arrays: Vec<[i32; 2]> = ids.iter().map(|&id| [name, id]).collect();
            let mut conn = PgConnection::connect(&uri).await.unwrap();
            assert_eq!(create(&mut conn, metric_id, &arrays).await.len(), 10_000);
        }
    };
    let small = index_size().await;
    burst(0).await;
    let grown = index_size().await;
    assert!(
        grown > 128 * 1024,
        "10,000 series grow the index: {small} -> {grown} bytes"
    );
    let outcome = merge_once(&db, &CompactionOptions::merge_only()).await.unwrap();
    assert!(matches!(outcome, Outcome::Done(_)), "{outcome:?}");
    assert_eq!(where_series_are(&db).await, (0, 10_000));
    // Autovacuum, come by after the burst, can hold the table and make the pass leave the
    // rebuild to a later one: maintenance runs take it up.
    let rebuilt_by_maintenance = || async {
        let mut size = index_size().await;
        for _ in 0..10 {
            if size <= 64 * 1024 {
                break;
            }
            promscale_e2e::maintain_with(&db, &CompactionOptions::merge_only()).await;
            size = index_size().await;
            if size > 64 * 1024 {
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
        size
    };
    let rebuilt = rebuilt_by_maintenance().await;
    assert!(
        rebuilt <= 64 * 1024,
        "rebuilt over the emptied table: {grown} -> {rebuilt} bytes"
    );

    // Another burst while a reader holds the index: the pass moves the series and leaves the
    // index as it is; maintenance later rebuilds it.
    burst(10_000).await;
    let grown = index_size().await;
    assert!(grown > 128 * 1024);
    let mut reader = PgConnection::connect(&pg.uri()).await.unwrap();
    sqlx::query("BEGIN").execute(&mut reader).await.unwrap();
    sqlx::query("SELECT id FROM ONLY _prom_catalog.series_fresh WHERE labels = ARRAY[1, 2]")
        .execute(&mut reader)
        .await
        .unwrap();
    let outcome = merge_once(&db, &CompactionOptions::merge_only()).await.unwrap();
    assert!(matches!(outcome, Outcome::Done(_)), "{outcome:?}");
    assert_eq!(where_series_are(&db).await, (0, 20_000));
    assert_eq!(index_size().await, grown, "not rebuilt under a reader");
    sqlx::query("COMMIT").execute(&mut reader).await.unwrap();
    let rebuilt = rebuilt_by_maintenance().await;
    assert!(
        rebuilt <= 64 * 1024,
        "rebuilt by maintenance: {grown} -> {rebuilt} bytes"
    );
}

/// Two moves at once (one connector's merge pass, another's maintenance): the second's plain
/// insert meets the first's rows, waits for it, and falls back to the conflict-tolerant move,
/// which finds nothing left. Each series is indexed once, under its id.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_moves_at_once_index_each_series_once() {
    let pg = TestPostgres::start();
    let db = pg.pool().await;
    migrate_to(&db, latest_version()).await.unwrap();
    let (metric_id, name, ids) = race_labels(&db, &["a", "b", "c"]).await;
    let arrays: Vec<[i32; 2]> = ids.iter().map(|&id| [name, id]).collect();
    let mut conn = PgConnection::connect(&pg.uri()).await.unwrap();
    let created = create(&mut conn, metric_id, &arrays).await;
    assert_eq!(where_series_are(&db).await, (3, 0));

    let mut first = PgConnection::connect(&pg.uri()).await.unwrap();
    sqlx::query("BEGIN").execute(&mut first).await.unwrap();
    let moved: i64 = sqlx::query_scalar(INDEX_FRESH_SERIES)
        .fetch_one(&mut first)
        .await
        .unwrap();
    assert_eq!(moved, 3);
    let uri = pg.uri();
    let second = tokio::spawn(async move {
        let mut conn = PgConnection::connect(&uri).await.unwrap();
        sqlx::query_scalar::<_, i64>(INDEX_FRESH_SERIES)
            .fetch_one(&mut conn)
            .await
    });
    assert_eq!(sessions_waiting_on_a_lock_in(&db, "index_fresh_series").await, 1);
    sqlx::query("COMMIT").execute(&mut first).await.unwrap();
    assert_eq!(second.await.unwrap().unwrap(), 0, "nothing left to move");
    assert_eq!(where_series_are(&db).await, (0, 3));
    assert_eq!(create(&mut conn, metric_id, &arrays).await, created);
}

/// The lookup of the series limits (`existing_series`, by names) answers every series of a
/// call, in order: one found with its id, any other with its metric's id if the metric exists
/// (an unknown label value or key, no labels besides the name, or none at all); 2,000 series
/// of one call each with their own id.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_lookup_of_the_series_limits_answers_every_series_in_order() {
    let pg = TestPostgres::start();
    let db = pg.pool().await;
    migrate_to(&db, latest_version()).await.unwrap();
    let values: Vec<String> = (0..2000).map(|i| format!("v{i}")).collect();
    let values: Vec<&str> = values.iter().map(String::as_str).collect();
    let (metric_id, name, ids) = race_labels(&db, &values).await;
    let arrays: Vec<[i32; 2]> = ids.iter().map(|&id| [name, id]).collect();
    let mut conn = PgConnection::connect(&pg.uri()).await.unwrap();
    let created = create(&mut conn, metric_id, &arrays).await;
    let lookup = |metrics: Vec<&'static str>, counts: Vec<i32>, keys: Vec<String>, values: Vec<String>| {
        let db = db.clone();
        async move {
            sqlx::query_as::<_, (i32, Option<i32>, Option<i64>)>(
                "SELECT idx, metric_id, series_id FROM _prom_catalog.existing_series($1, $2, $3, $4)",
            )
            .bind(metrics)
            .bind(counts)
            .bind(keys)
            .bind(values)
            .fetch_all(&db)
            .await
            .unwrap()
        }
    };
    let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<String>>();
    let found = lookup(
        vec!["race", "race", "race", "nosuch", "race", "race", "race"],
        vec![2, 2, 1, 2, 2, 0, 2],
        s(&[
            "__name__", "k", "__name__", "k", "__name__", "__name__", "k", "__name__", "other", "__name__", "k",
        ]),
        s(&[
            "race", "v7", "race", "unknown", "race", "nosuch", "v7", "race", "x", "race", "v0",
        ]),
    )
    .await;
    assert_eq!(
        found,
        vec![
            (0, Some(metric_id), Some(created[7].1)),
            (1, Some(metric_id), None),
            (2, Some(metric_id), None),
            (3, None, None),
            (4, Some(metric_id), None),
            (5, Some(metric_id), None),
            (6, Some(metric_id), Some(created[0].1)),
        ]
    );
    // All 2,000 in one call, last first.
    let n = values.len();
    let found = lookup(
        vec!["race"; n],
        vec![2; n],
        (0..n).flat_map(|_| s(&["__name__", "k"])).collect(),
        values.iter().rev().flat_map(|v| s(&["race", v])).collect(),
    )
    .await;
    let expected: Vec<(i32, Option<i32>, Option<i64>)> = created
        .iter()
        .rev()
        .enumerate()
        .map(|(i, (_, id))| (i as i32, Some(metric_id), Some(*id)))
        .collect();
    assert_eq!(found, expected);
}

/// A series another writer creates while this one looks it up, and which the merge pass
/// indexes before this writer inserts its own copy, is not stored twice: the exclusion
/// constraint of the fresh series no longer sees it, the check after the insert does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_series_indexed_while_another_writer_creates_it_gets_one_id() {
    let pg = TestPostgres::start();
    let db = pg.pool().await;
    migrate_to(&db, latest_version()).await.unwrap();
    let (metric_id, name, ids) = race_labels(&db, &["a", "x"]).await;
    let (a, x) = (ids[0], ids[1]);
    // Writer 1 creates {k="x"} and, in the same transaction, the merge pass indexes it.
    let mut first = PgConnection::connect(&pg.uri()).await.unwrap();
    sqlx::query("BEGIN").execute(&mut first).await.unwrap();
    let by_first = create(&mut first, metric_id, &[[name, x]]).await;
    let moved: i64 = sqlx::query_scalar(INDEX_FRESH_SERIES)
        .fetch_one(&mut first)
        .await
        .unwrap();
    assert_eq!(moved, 1);
    // Writer 2 looks {k="x"} up before writer 1 commits (and so misses it), then waits at
    // the exclusion constraint for writer 1's fresh row, which writer 1 deleted.
    let uri = pg.uri();
    let second = tokio::spawn(async move {
        let mut conn = PgConnection::connect(&uri).await.unwrap();
        create(&mut conn, metric_id, &[[name, a], [name, x]]).await
    });
    sessions_waiting_on_a_lock_in(&db, "create_series").await;
    sqlx::query("COMMIT").execute(&mut first).await.unwrap();
    let by_second = second.await.unwrap();
    assert_eq!(by_second[1], (1, by_first[0].1), "writer 1's series: {by_second:?}");
    assert_ne!(by_second[0].1, by_first[0].1);
    let copies: i64 = sqlx::query_scalar("SELECT count(*) FROM _prom_catalog.series WHERE labels = $1")
        .bind(vec![name, x])
        .fetch_one(&db)
        .await
        .unwrap();
    assert_eq!(copies, 1, "one series for one label set");
    assert_eq!(where_series_are(&db).await, (1, 1));
}

/// A series asked for twice in one call is refused, fresh or not. In a transaction stricter
/// than READ COMMITTED (where the check after the insert could not see a moved copy) new
/// series go into the indexed catalog, found and created once as before; the connector's own
/// sessions run at READ COMMITTED whatever the database's default.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn series_are_created_once_at_any_isolation_level() {
    let pg = TestPostgres::start();
    let db = pg.pool().await;
    migrate_to(&db, latest_version()).await.unwrap();
    let (metric_id, name, ids) = race_labels(&db, &["a", "b"]).await;
    let (a, b) = (ids[0], ids[1]);
    let refused = sqlx::query("SELECT * FROM _prom_catalog.create_series($1, $2, $3)")
        .bind(vec![metric_id; 2])
        .bind(vec![2i32; 2])
        .bind(vec![name, a, name, a])
        .fetch_all(&db)
        .await
        .unwrap_err()
        .to_string();
    assert!(refused.contains("each series once"), "{refused}");
    assert_eq!(where_series_are(&db).await, (0, 0));

    // At REPEATABLE READ, series of labels above the recent label floor (migration 28) are
    // refused with a serialization failure, until the floor has risen past them.
    let mut conn = PgConnection::connect(&pg.uri()).await.unwrap();
    sqlx::query("BEGIN ISOLATION LEVEL REPEATABLE READ")
        .execute(&mut conn)
        .await
        .unwrap();
    let error = sqlx::query("SELECT * FROM _prom_catalog.create_series($1, $2, $3)")
        .bind(vec![metric_id])
        .bind(vec![2i32])
        .bind(vec![name, a])
        .fetch_all(&mut conn)
        .await
        .unwrap_err();
    let code = error.as_database_error().and_then(|e| e.code()).map(|c| c.to_string());
    assert_eq!(code.as_deref(), Some("40001"), "{error}");
    sqlx::query("ROLLBACK").execute(&mut conn).await.unwrap();
    sqlx::query(INDEX_FRESH_SERIES).execute(&db).await.unwrap();
    sqlx::query("BEGIN ISOLATION LEVEL REPEATABLE READ")
        .execute(&mut conn)
        .await
        .unwrap();
    let created = create(&mut conn, metric_id, &[[name, a]]).await;
    sqlx::query("COMMIT").execute(&mut conn).await.unwrap();
    assert_eq!(where_series_are(&db).await, (0, 1), "indexed at REPEATABLE READ");
    sqlx::query("BEGIN ISOLATION LEVEL REPEATABLE READ")
        .execute(&mut conn)
        .await
        .unwrap();
    let again = create(&mut conn, metric_id, &[[name, b], [name, a]]).await;
    sqlx::query("COMMIT").execute(&mut conn).await.unwrap();
    assert_eq!(again[1], (1, created[0].1));
    assert_eq!(where_series_are(&db).await, (0, 2));

    // A database whose default is REPEATABLE READ: the connector still writes a new series of
    // known labels unindexed (its sessions are READ COMMITTED).
    sqlx::query(&format!(
        "ALTER DATABASE {} SET default_transaction_isolation = 'repeatable read'",
        db.connect_options().get_database().unwrap_or("postgres")
    ))
    .execute(&db)
    .await
    .unwrap();
    let connector = connector_without_maintenance(&pg).await;
    let body = encode(vec![series(
        &[("__name__", "race")],
        &[(promscale_e2e::recent_ms(), 1.0)],
    )]);
    let (status, text) = post(&reqwest::Client::new(), &connector.url("/write"), body)
        .await
        .unwrap();
    assert_eq!(status, 204, "{text}");
    let isolation: String =
        sqlx::query_scalar("SELECT setting FROM pg_settings WHERE name = 'default_transaction_isolation'")
            .fetch_one(&mut PgConnection::connect(&pg.uri()).await.unwrap())
            .await
            .unwrap();
    assert_eq!(isolation, "repeatable read", "the database's default is kept");
    assert_eq!(where_series_are(&db).await, (1, 2));
}

/// Series rows in the fresh table and in the indexed catalog: (fresh, indexed). The indexed
/// rows' table is `series_row` since migration 27, `series` before.
async fn where_series_are(db: &sqlx::PgPool) -> (i64, i64) {
    let table: String = sqlx::query_scalar(
        "SELECT coalesce(to_regclass('_prom_catalog.series_row'), '_prom_catalog.series'::regclass)::text",
    )
    .fetch_one(db)
    .await
    .unwrap();
    sqlx::query_as(&format!(
        "SELECT (SELECT count(*) FROM ONLY _prom_catalog.series_fresh), (SELECT count(*) FROM ONLY {table})"
    ))
    .fetch_one(db)
    .await
    .unwrap()
}

/// The id of label `k` = `value`, created by the transaction of `conn` if it is new.
async fn label_in(conn: &mut PgConnection, value: &str) -> i32 {
    sqlx::query_scalar("SELECT label_id FROM _prom_catalog.get_or_create_label_ids(ARRAY['k'], ARRAY[$1])")
        .bind(value)
        .fetch_one(conn)
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn series_with_a_label_of_their_own_transaction_are_written_apart_and_found_by_everyone() {
    let pg = TestPostgres::start();
    let db = pg.pool().await;
    migrate_to(&db, latest_version()).await.unwrap();
    // `k="old"` exists before; `k="new"` is created by the writer's own transaction.
    let (metric_id, name, ids) = race_labels(&db, &["old"]).await;
    let old = ids[0];
    let mut conn = PgConnection::connect(&pg.uri()).await.unwrap();
    sqlx::query("BEGIN").execute(&mut conn).await.unwrap();
    let new = label_in(&mut conn, "new").await;
    let created = create(&mut conn, metric_id, &[[name, new], [name, old]]).await;
    sqlx::query("COMMIT").execute(&mut conn).await.unwrap();
    assert!(
        created[0].1 < created[1].1,
        "ids in the order sent, of both kinds: {created:?}"
    );
    assert_eq!(
        where_series_are(&db).await,
        (2, 0),
        "new series are written unindexed, fresh labels or not"
    );

    // Any other writer finds both (a connector after a restart), and creates nothing.
    let mut other = PgConnection::connect(&pg.uri()).await.unwrap();
    assert_eq!(
        create(&mut other, metric_id, &[[name, old], [name, new]]).await,
        vec![(0, created[1].1), (1, created[0].1)]
    );
    assert_eq!(where_series_are(&db).await, (2, 0));
    // Readers of _prom_catalog.series see it: views, PromQL's selection, the label APIs.
    let seen: Vec<i64> =
        sqlx::query_scalar("SELECT id FROM _prom_catalog.series WHERE labels && ARRAY[$1] ORDER BY id")
            .bind(new)
            .fetch_all(&db)
            .await
            .unwrap();
    assert_eq!(seen, vec![created[0].1]);

    // The merge pass indexes it; it keeps its id, and is still found, only once.
    let moved: i64 = sqlx::query_scalar(INDEX_FRESH_SERIES).fetch_one(&db).await.unwrap();
    assert_eq!(moved, 2);
    assert_eq!(where_series_are(&db).await, (0, 2));
    assert_eq!(
        create(&mut other, metric_id, &[[name, new]]).await,
        vec![(0, created[0].1)]
    );
    assert_eq!(where_series_are(&db).await, (0, 2));

    // A fresh series asked for twice in one call is refused, not created twice.
    sqlx::query("BEGIN").execute(&mut other).await.unwrap();
    let twice = label_in(&mut other, "twice").await;
    let refused = sqlx::query("SELECT * FROM _prom_catalog.create_series($1, $2, $3)")
        .bind(vec![metric_id; 2])
        .bind(vec![2i32; 2])
        .bind(vec![name, twice, name, twice])
        .fetch_all(&mut other)
        .await
        .unwrap_err()
        .to_string();
    assert!(refused.contains("each series once"), "{refused}");
    sqlx::query("ROLLBACK").execute(&mut other).await.unwrap();
    // Labels a transaction created count for that transaction only.
    let mut later = PgConnection::connect(&pg.uri()).await.unwrap();
    let _ = create(&mut later, metric_id, &[[name, new]]).await;
    let recorded: Vec<i32> = sqlx::query_scalar("SELECT unnest(_prom_catalog.labels_created_here())")
        .fetch_all(&mut later)
        .await
        .unwrap();
    assert!(recorded.is_empty(), "{recorded:?}");
}

/// Through a connector: the series of a new instance are written fresh, answered by PromQL
/// and the user view at once, and answered the same once maintenance has indexed them; a
/// second connector (knowing none of them) writing them again creates nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rollouts_series_are_answered_before_and_after_they_are_indexed() {
    let pg = TestPostgres::start();
    let db = pg.pool().await;
    let first = connector_without_maintenance(&pg).await;
    let client = reqwest::Client::new();
    let t = promscale_e2e::recent_ms();
    let write = |instances: std::ops::Range<usize>, t: i64| {
        encode(
            instances
                .flat_map(|i| {
                    let instance = format!("pod-{i}");
                    ["0", "1"].map(|cpu| {
                        series(
                            &[
                                ("__name__", "rollout_cpu_seconds_total"),
                                ("cpu", cpu),
                                ("instance", instance.as_str()),
                            ],
                            &[(t, i as f64)],
                        )
                    })
                })
                .collect(),
        )
    };
    let (status, text) = post(&client, &first.url("/write"), write(0..50, t)).await.unwrap();
    assert_eq!(status, 204, "{text}");
    assert_eq!(
        where_series_are(&db).await,
        (100, 0),
        "a new instance's series are fresh"
    );

    let answers = || async {
        let promql = promscale_e2e::instant_query(&client, &first.url(""), "sum(rollout_cpu_seconds_total)", t).await;
        let in_view: (i64, f64) = sqlx::query_as(
            "SELECT count(DISTINCT series_id), sum(value) FROM prom_metric.rollout_cpu_seconds_total
              WHERE time = to_timestamp($1 / 1000.0)",
        )
        .bind(t as f64)
        .fetch_one(&db)
        .await
        .unwrap();
        (promql["data"]["result"][0]["value"][1].clone(), in_view)
    };
    let expected = (serde_json::json!("2450"), (100, 2450.0));
    assert_eq!(answers().await, expected);

    // A second connector writes the same series (and 50 new instances): it finds the first
    // 100 and creates only the new ones.
    let second = connector_without_maintenance(&pg).await;
    let (status, text) = post(&client, &second.url("/write"), write(0..100, t + 15_000))
        .await
        .unwrap();
    assert_eq!(status, 204, "{text}");
    assert_eq!(where_series_are(&db).await, (200, 0));
    // Each sample reached its own series (a request of known and fresh series: ids mapped
    // back right), and the new series drew their ids in the order the request sent them.
    let (right, in_order): (i64, bool) = sqlx::query_as(
        "SELECT count(*) FILTER (WHERE value = substring(instance FROM 5)::float8),
                bool_and(rank = rank_by_id)
           FROM (SELECT instance, value,
                        rank() OVER (ORDER BY substring(instance FROM 5)::int, cpu) AS rank,
                        rank() OVER (ORDER BY series_id) AS rank_by_id
                   FROM prom_metric.rollout_cpu_seconds_total
                  WHERE time = to_timestamp($1 / 1000.0)) s",
    )
    .bind((t + 15_000) as f64)
    .fetch_one(&db)
    .await
    .unwrap();
    assert_eq!((right, in_order), (200, true));

    promscale_e2e::maintain(&db).await;
    // Indexed, or packed when the hour before now lies in a chunk that has ended (whose
    // sealing packs series silent since): none is left among the fresh series.
    let (fresh, rows) = where_series_are(&db).await;
    let all: i64 = sqlx::query_scalar("SELECT count(*) FROM _prom_catalog.series")
        .fetch_one(&db)
        .await
        .unwrap();
    assert_eq!(
        (fresh, all),
        (0, 200),
        "maintenance indexes or packs them ({rows} rows)"
    );
    assert_eq!(answers().await, expected);
}

/// A connector on `pg` that runs neither maintenance nor the merge pass on its own, so that
/// new series stay where their creation put them.
async fn connector_without_maintenance(pg: &TestPostgres) -> Connector {
    Connector::start(
        &pg.uri(),
        &["--maintenance.interval", "0s", "--maintenance.merge-interval", "0s"],
    )
    .await
}

/// `promscale_series_creation_conflicts_total` of a connector (migration 30): its requests
/// whose COPY of new series met series already created.
async fn creation_conflicts(connector: &Connector) -> f64 {
    let text = connector.metrics_text().await;
    text.lines()
        .find_map(|l| l.strip_prefix("promscale_series_creation_conflicts_total "))
        .map(|v| v.trim().parse().unwrap())
        .unwrap_or_else(|| panic!("no conflicts counter in {text}"))
}

/// A connector that has not seen a rollout's series writes them too (another replica, or
/// one restarted): its COPY of them meets the rows the first connector committed, so its
/// transaction is rolled back and the series are looked up (migration 30). Each series keeps
/// its one id, every sample reaches it, and the request's series that were new are created.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recent_series_another_connector_created_keep_their_ids() {
    let pg = TestPostgres::start();
    let db = pg.pool().await;
    let first = connector_without_maintenance(&pg).await;
    let second = connector_without_maintenance(&pg).await;
    let client = reqwest::Client::new();
    let t = promscale_e2e::recent_ms();
    let write = |pods: std::ops::Range<usize>, t: i64| {
        encode(
            pods.map(|i| {
                let pod = format!("pod-{i}");
                series(&[("__name__", "copied_up"), ("pod", pod.as_str())], &[(t, i as f64)])
            })
            .collect(),
        )
    };

    let (status, text) = post(&client, &first.url("/write"), write(0..20, t)).await.unwrap();
    assert_eq!(status, 204, "{text}");
    let (status, text) = post(&client, &second.url("/write"), write(0..30, t + 15_000))
        .await
        .unwrap();
    assert_eq!(status, 204, "{text}");
    assert_eq!(creation_conflicts(&first).await, 0.0);
    assert_eq!(
        creation_conflicts(&second).await,
        1.0,
        "the second connector's COPY met the first's series"
    );

    assert_eq!(where_series_are(&db).await, (30, 0), "one series a label set");
    let (series_ids, samples, right, twice): (i64, i64, i64, i64) = sqlx::query_as(
        "SELECT count(DISTINCT series_id), count(*),
                count(*) FILTER (WHERE value = substring(pod FROM 5)::float8),
                (SELECT count(*) FROM (SELECT pod FROM prom_metric.copied_up
                                        GROUP BY pod HAVING count(DISTINCT series_id) = 1 AND count(*) = 2) p)
           FROM prom_metric.copied_up",
    )
    .fetch_one(&db)
    .await
    .unwrap();
    assert_eq!((series_ids, samples, right, twice), (30, 50, 50, 20));
}

/// A connector whose recent label floor is behind the database's (the merge pass raised it
/// since) takes for recent a new series of labels the floor has passed: no id is drawn for it,
/// and it is looked up and created by create_series, beside the request's series that are
/// recent, which are copied; every sample reaches its own series.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_series_the_floor_passed_since_the_connector_learnt_it_is_looked_up() {
    let pg = TestPostgres::start();
    let db = pg.pool().await;
    let connector = connector_without_maintenance(&pg).await;
    let client = reqwest::Client::new();
    let t = promscale_e2e::recent_ms();
    let write = |series_values: &[(&str, &str, f64)], t: i64| {
        encode(
            series_values
                .iter()
                .map(|&(pod, cpu, v)| series(&[("__name__", "floor_up"), ("cpu", cpu), ("pod", pod)], &[(t, v)]))
                .collect(),
        )
    };
    let (status, text) = post(
        &client,
        &connector.url("/write"),
        write(&[("a", "0", 1.0), ("b", "1", 2.0)], t),
    )
    .await
    .unwrap();
    assert_eq!(status, 204, "{text}");
    promscale_e2e::maintain(&db).await;
    let (floor, newest): (i32, i32) = sqlx::query_as(
        "SELECT (SELECT label_id FROM _prom_catalog.recent_label_floor), (SELECT max(id) FROM _prom_catalog.label)",
    )
    .fetch_one(&db)
    .await
    .unwrap();
    assert_eq!(floor, newest, "the merge pass raised the floor past every label");

    // pod "a" with cpu "1" is new, but all its labels are old; pod "c" is new.
    let (status, text) = post(
        &client,
        &connector.url("/write"),
        write(&[("a", "1", 3.0), ("c", "0", 4.0), ("a", "0", 5.0)], t + 15_000),
    )
    .await
    .unwrap();
    assert_eq!(status, 204, "{text}");
    let rows: Vec<(String, String, f64, i64)> =
        sqlx::query_as("SELECT pod, cpu, value, series_id FROM prom_metric.floor_up ORDER BY time, pod, cpu")
            .fetch_all(&db)
            .await
            .unwrap();
    let points: Vec<(&str, &str, f64)> = rows.iter().map(|(p, c, v, _)| (p.as_str(), c.as_str(), *v)).collect();
    assert_eq!(
        points,
        vec![
            ("a", "0", 1.0),
            ("b", "1", 2.0),
            ("a", "0", 5.0),
            ("a", "1", 3.0),
            ("c", "0", 4.0)
        ]
    );
    assert_eq!(rows[0].3, rows[2].3, "pod a, cpu 0 keeps its series");
    let distinct: std::collections::HashSet<i64> = rows.iter().map(|r| r.3).collect();
    assert_eq!(distinct.len(), 4, "{rows:?}");
    let copies: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM (SELECT labels FROM _prom_catalog.series GROUP BY labels HAVING count(*) > 1) d",
    )
    .fetch_one(&db)
    .await
    .unwrap();
    assert_eq!(copies, 0, "one series a label set");
    assert_eq!(
        creation_conflicts(&connector).await,
        0.0,
        "nothing met another writer's series"
    );
}

/// Recent series a catalog of `version` holds (created by its create_recent_series) keep
/// their ids when a connector of this version writes them: its COPY meets them (at the
/// exclusion constraint up to version 30, at the unique index since), and the lookup after it
/// finds them; the request's new series are created. create_series and existing_series find
/// them too, through the fresh series' index of this version.
async fn recent_series_of_an_older_catalog_keep_their_ids(version: i32) {
    let pg = TestPostgres::start();
    let db = pg.pool().await;
    migrate_to(&db, version).await.unwrap();
    let (metric_id, name, ids) = race_labels(&db, &["a", "b"]).await;
    let mut conn = PgConnection::connect(&pg.uri()).await.unwrap();
    let (old, _) = create_recent(&mut conn, metric_id, &[[name, ids[0]], [name, ids[1]]]).await;
    let old: Vec<i64> = old
        .into_iter()
        .map(|id| id.expect("recent at the older version"))
        .collect();
    // The settings the functions of the series run with (their plans, jit), which a
    // migration that replaces them has to give them again.
    let settings = || async {
        sqlx::query_as::<_, (String, Vec<String>)>(
            "SELECT proname::text, proconfig FROM pg_proc
              WHERE pronamespace = '_prom_catalog'::regnamespace
                AND proname IN ('create_series', 'create_series_resolving_conflicts_27', 'existing_series',
                                'create_recent_series')
              ORDER BY proname",
        )
        .fetch_all(&db)
        .await
        .unwrap()
    };
    let old_settings = settings().await;
    assert_eq!(old_settings.len(), 4, "{old_settings:?}");

    let connector = connector_without_maintenance(&pg).await;
    assert_eq!(settings().await, old_settings);
    let t = promscale_e2e::recent_ms();
    let body = encode(
        ["a", "b", "c"]
            .iter()
            .map(|k| series(&[("__name__", "race"), ("k", k)], &[(t, 1.0)]))
            .collect(),
    );
    let (status, text) = post(&reqwest::Client::new(), &connector.url("/write"), body)
        .await
        .unwrap();
    assert_eq!(status, 204, "{text}");
    let by_k: Vec<(String, i64)> = sqlx::query_as("SELECT k, series_id FROM prom_metric.race ORDER BY k")
        .fetch_all(&db)
        .await
        .unwrap();
    assert_eq!(by_k.len(), 3, "{by_k:?}");
    assert_eq!((by_k[0].1, by_k[1].1), (old[0], old[1]), "{by_k:?}");
    assert!(!old.contains(&by_k[2].1), "{by_k:?}");
    assert_eq!(where_series_are(&db).await, (3, 0));
    assert_eq!(creation_conflicts(&connector).await, 1.0, "the COPY met the old series");

    let mut other = PgConnection::connect(&pg.uri()).await.unwrap();
    sqlx::query("BEGIN").execute(&mut other).await.unwrap();
    assert_eq!(
        create(&mut other, metric_id, &[[name, ids[1]], [name, ids[0]]]).await,
        vec![(0, old[1]), (1, old[0])]
    );
    // Found through the fresh series' index, without a scan of the table (this transaction's
    // own counts).
    let (index_scans, table_scans): (i64, i64) = sqlx::query_as(
        "SELECT pg_stat_get_xact_numscans('_prom_catalog.series_fresh_labels'::regclass),
                (SELECT coalesce(sum(seq_scan), 0)::int8 FROM pg_stat_xact_user_tables
                  WHERE schemaname = '_prom_catalog' AND relname = 'series_fresh')",
    )
    .fetch_one(&mut other)
    .await
    .unwrap();
    assert!(index_scans >= 2, "{index_scans} scans of the fresh series' index");
    assert_eq!(table_scans, 0, "no scan of the fresh series");
    sqlx::query("COMMIT").execute(&mut other).await.unwrap();
    let found: Vec<(i32, Option<i32>, Option<i64>)> =
        sqlx::query_as("SELECT idx, metric_id, series_id FROM _prom_catalog.existing_series($1, $2, $3, $4)")
            .bind(vec!["race"; 3])
            .bind(vec![2i32; 3])
            .bind(vec!["__name__", "k", "__name__", "k", "__name__", "k"])
            .bind(vec!["race", "b", "race", "a", "race", "c"])
            .fetch_all(&db)
            .await
            .unwrap();
    assert_eq!(
        found,
        vec![
            (0, Some(metric_id), Some(old[1])),
            (1, Some(metric_id), Some(old[0])),
            (2, Some(metric_id), Some(by_k[2].1)),
        ]
    );
    assert_eq!(where_series_are(&db).await, (3, 0), "nothing created twice");
}

/// Version 30 writes recent series with COPY.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recent_series_of_a_version_29_catalog_keep_their_ids() {
    recent_series_of_an_older_catalog_keep_their_ids(29).await;
}

/// Version 31 keeps the fresh series unique by a btree over the 64-bit hash of their labels.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recent_series_of_a_version_30_catalog_keep_their_ids() {
    recent_series_of_an_older_catalog_keep_their_ids(30).await;
}

/// A metric with 700 label names (a series' labels array has an element per name of its
/// metric, so the series of the last names hold arrays of about 700 label ids): its series
/// are created once each, by one connector and then by another that has not seen them, whose
/// COPY meets them at the unique index of their hash (migration 31); each keeps its id, and
/// after maintenance has moved them a third connector finds them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn series_of_a_metric_with_700_label_names_are_created_once() {
    let pg = TestPostgres::start();
    let db = pg.pool().await;
    let t = promscale_e2e::recent_ms();
    // Series i holds __name__ and label l<i>: as many positions as names, so the series of
    // the last names hold arrays of about 700 label ids.
    let write = |t: i64| {
        encode(
            (0..700)
                .map(|i| {
                    let name = format!("l{i:03}");
                    series(&[("__name__", "wide"), (name.as_str(), "x")], &[(t, i as f64)])
                })
                .collect(),
        )
    };
    let client = reqwest::Client::new();
    for (n, t) in [(0, t), (1, t + 15_000)] {
        let connector = connector_without_maintenance(&pg).await;
        let (status, text) = post(&client, &connector.url("/write"), write(t)).await.unwrap();
        assert_eq!(status, 204, "{text}");
        assert_eq!(
            creation_conflicts(&connector).await,
            n as f64,
            "the second connector's COPY met the first's series"
        );
    }
    let (long, longest): (i64, i32) = sqlx::query_as(
        "SELECT count(*) FILTER (WHERE cardinality(labels) > 670), max(cardinality(labels))
           FROM ONLY _prom_catalog.series_fresh",
    )
    .fetch_one(&db)
    .await
    .unwrap();
    assert!(
        long >= 10 && longest > 690,
        "{long} series of over 670 label ids, {longest} at most"
    );
    let counts = || async {
        sqlx::query_as::<_, (i64, i64, i64)>(
            "SELECT count(DISTINCT series_id), count(*), count(*) FILTER (WHERE time = $1 OR time = $1 + interval '15 s')
               FROM prom_data.wide",
        )
        .bind(chrono::DateTime::from_timestamp_millis(t).unwrap())
        .fetch_one(&db)
        .await
        .unwrap()
    };
    assert_eq!(counts().await, (700, 1400, 1400));
    assert_eq!(where_series_are(&db).await, (700, 0), "one series a label set");

    // Maintenance moves them out of the fresh series (into the indexed catalog, or packed into
    // batches once their samples are compacted).
    let stored = || async {
        sqlx::query_as::<_, (i64, i64)>(
            "SELECT count(*), count(DISTINCT labels) FROM _prom_catalog.series
              WHERE metric_id = (SELECT id FROM _prom_catalog.metric WHERE metric_name = 'wide')",
        )
        .fetch_one(&db)
        .await
        .unwrap()
    };
    promscale_e2e::maintain(&db).await;
    assert_eq!(where_series_are(&db).await.0, 0, "maintenance moved them");
    assert_eq!(stored().await, (700, 700));
    let connector = connector_without_maintenance(&pg).await;
    let (status, text) = post(&client, &connector.url("/write"), write(t + 30_000))
        .await
        .unwrap();
    assert_eq!(status, 204, "{text}");
    assert_eq!(where_series_are(&db).await.0, 0, "found where maintenance moved them");
    assert_eq!(stored().await, (700, 700));
    assert_eq!(counts().await.0, 700);
}

/// A writer that needs a label another writer's open transaction is creating waits for it,
/// and then finds that writer's series rather than creating a second one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fresh_series_another_writer_is_creating_gets_one_id() {
    let pg = TestPostgres::start();
    let db = pg.pool().await;
    migrate_to(&db, latest_version()).await.unwrap();
    let (metric_id, name, _) = race_labels(&db, &[]).await;
    let mut first = PgConnection::connect(&pg.uri()).await.unwrap();
    sqlx::query("BEGIN").execute(&mut first).await.unwrap();
    let label = label_in(&mut first, "pod-1").await;
    let by_first = create(&mut first, metric_id, &[[name, label]]).await;

    let uri = pg.uri();
    let second = tokio::spawn(async move {
        let mut conn = PgConnection::connect(&uri).await.unwrap();
        sqlx::query("BEGIN").execute(&mut conn).await.unwrap();
        let label = label_in(&mut conn, "pod-1").await;
        let ids = create(&mut conn, metric_id, &[[name, label]]).await;
        sqlx::query("COMMIT").execute(&mut conn).await.unwrap();
        (label, ids)
    });
    sessions_waiting_on_a_lock_in(&db, "get_or_create_label_ids").await;
    sqlx::query("COMMIT").execute(&mut first).await.unwrap();
    let (label_second, by_second) = second.await.unwrap();
    assert_eq!(label_second, label, "one label");
    assert_eq!(by_second, by_first, "one series");
    assert_eq!(where_series_are(&db).await, (1, 0));
}

/// The connector learns which labels its transaction created, and creates the series holding
/// one of them in one statement: in the order given, fresh, found by every later lookup (its
/// own transaction's included) and indexed later under the same ids.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn labels_say_whether_they_were_created_and_their_series_are_created_in_one_statement() {
    let pg = TestPostgres::start();
    let db = pg.pool().await;
    migrate_to(&db, latest_version()).await.unwrap();
    let (metric_id, name, ids) = race_labels(&db, &["old"]).await;
    let old = ids[0];
    let mut conn = PgConnection::connect(&pg.uri()).await.unwrap();
    sqlx::query("BEGIN").execute(&mut conn).await.unwrap();
    let labels: Vec<(i32, i32, bool)> = sqlx::query_as(
        "SELECT idx, label_id, created FROM _prom_catalog.get_or_create_label_ids_created($1, $2) ORDER BY idx",
    )
    .bind(vec!["k", "k", "k"])
    .bind(vec!["new2", "old", "new1"])
    .fetch_all(&mut conn)
    .await
    .unwrap();
    let [(0, new2, true), (1, found, false), (2, new1, true)] = labels[..] else {
        panic!("two labels created, one found: {labels:?}")
    };
    assert_eq!(found, old);
    let created: Vec<(i32, i64)> =
        sqlx::query_as("SELECT idx, series_id FROM _prom_catalog.create_fresh_series($1, $2, $3)")
            .bind(vec![metric_id; 2])
            .bind(vec![2i32; 2])
            .bind(vec![name, new2, name, new1])
            .fetch_all(&mut conn)
            .await
            .unwrap();
    let [(0, a), (1, b)] = created[..] else {
        panic!("{created:?}")
    };
    assert!(a < b, "ids in the order given: {created:?}");
    // The same transaction finds them through create_series, and creates the old one.
    assert_eq!(
        create(&mut conn, metric_id, &[[name, new1], [name, old], [name, new2]]).await[..],
        [(0, b), (1, b + 1), (2, a)][..]
    );
    sqlx::query("COMMIT").execute(&mut conn).await.unwrap();
    assert_eq!(where_series_are(&db).await, (3, 0));
    let moved: i64 = sqlx::query_scalar(INDEX_FRESH_SERIES).fetch_one(&db).await.unwrap();
    assert_eq!(moved, 3);
    let mut other = PgConnection::connect(&pg.uri()).await.unwrap();
    assert_eq!(
        create(&mut other, metric_id, &[[name, new2], [name, new1]]).await,
        vec![(0, a), (1, b)]
    );
    assert_eq!(where_series_are(&db).await, (0, 3));
    // Input that would store NULL labels is refused.
    let refused = sqlx::query("SELECT * FROM _prom_catalog.create_fresh_series($1, $2, $3)")
        .bind(vec![metric_id])
        .bind(vec![Option::<i32>::None])
        .bind(vec![name])
        .fetch_all(&db)
        .await
        .unwrap_err()
        .to_string();
    assert!(refused.contains("no NULL"), "{refused}");
    // So is input whose counts do not add up to its labels.
    let refused = sqlx::query("SELECT * FROM _prom_catalog.create_fresh_series($1, $2, $3)")
        .bind(vec![metric_id; 2])
        .bind(vec![2i32; 2])
        .bind(vec![name, new1, name])
        .fetch_all(&db)
        .await
        .unwrap_err()
        .to_string();
    assert!(refused.contains("labels as many as counted"), "{refused}");
}

/// The order a request sends new series in is the order of their ids, which is the order
/// queries read them in (and which decides the ties of topk), as in Prometheus' head.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_series_draw_ids_in_the_order_they_are_sent() {
    let pg = TestPostgres::start();
    let db = pg.pool().await;
    migrate_to(&db, latest_version()).await.unwrap();
    let (metric_id, name, ids) = race_labels(&db, &["a", "b", "c", "d"]).await;
    let mut conn = PgConnection::connect(&pg.uri()).await.unwrap();
    // Not in labels order: d, b, a (and c, known already, in the middle).
    let known = create(&mut conn, metric_id, &[[name, ids[2]]]).await;
    let created = create(
        &mut conn,
        metric_id,
        &[[name, ids[3]], [name, ids[1]], [name, ids[2]], [name, ids[0]]],
    )
    .await;
    assert_eq!(created[2], (2, known[0].1), "a known series keeps its id");
    let (d, b, a) = (created[0].1, created[1].1, created[3].1);
    assert!(known[0].1 < d && d < b && b < a, "ids in the order sent: {created:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_series_another_writer_is_creating_gets_one_id_and_its_batch_is_created_too() {
    let pg = TestPostgres::start();
    let db = pg.pool().await;
    migrate_to(&db, latest_version()).await.unwrap();
    let (metric_id, name, ids) = race_labels(&db, &["a", "x", "b"]).await;
    let (a, x, b) = (ids[0], ids[1], ids[2]);

    // Writer 1 creates {k="x"} and holds its transaction open.
    let mut first = PgConnection::connect(&pg.uri()).await.unwrap();
    sqlx::query("BEGIN").execute(&mut first).await.unwrap();
    let by_first = create(&mut first, metric_id, &[[name, x]]).await;
    assert_eq!(by_first.len(), 1);
    let x_id = by_first[0].1;

    // Writer 2 creates {k="a"}, {k="x"}, {k="b"} in one batch: it waits on writer 1's row.
    let uri = pg.uri();
    let second = tokio::spawn(async move {
        let mut conn = PgConnection::connect(&uri).await.unwrap();
        create(&mut conn, metric_id, &[[name, a], [name, x], [name, b]]).await
    });
    let waiting = sessions_waiting_on_a_lock_in(&db, "create_series").await;
    assert_eq!(waiting, 1);
    sqlx::query("COMMIT").execute(&mut first).await.unwrap();
    let by_second = second.await.unwrap();

    assert_eq!(by_second.len(), 3, "an id for each series of the batch: {by_second:?}");
    assert_eq!(by_second[1], (1, x_id), "the series writer 1 created");
    let rows: Vec<(i64, Vec<i32>)> =
        sqlx::query_as("SELECT id, labels FROM _prom_catalog.series WHERE metric_id = $1 ORDER BY labels[2]")
            .bind(metric_id)
            .fetch_all(&db)
            .await
            .unwrap();
    let mut expected = vec![
        (by_second[0].1, vec![name, a]),
        (x_id, vec![name, x]),
        (by_second[2].1, vec![name, b]),
    ];
    expected.sort_by_key(|(_, l)| l[1]);
    assert_eq!(rows, expected, "one series per label set, with the ids returned");

    // The same batch again finds all three without creating any.
    let mut conn = PgConnection::connect(&pg.uri()).await.unwrap();
    let again = create(&mut conn, metric_id, &[[name, a], [name, x], [name, b]]).await;
    assert_eq!(again, by_second);
    let count: i64 = sqlx::query_scalar("SELECT count(*) FROM _prom_catalog.series")
        .fetch_one(&db)
        .await
        .unwrap();
    assert_eq!(count, 3);
}

/// Input no connector sends (a NULL label count, arrays of different lengths) is refused,
/// not answered with an id that was never stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_input_is_refused() {
    let pg = TestPostgres::start();
    let db = pg.pool().await;
    migrate_to(&db, latest_version()).await.unwrap();
    let (metric_id, name, ids) = race_labels(&db, &["a"]).await;
    for (metric_ids, counts, labels) in [
        (vec![Some(metric_id)], vec![None], vec![Some(name), Some(ids[0])]),
        (
            vec![Some(metric_id), Some(metric_id)],
            vec![Some(2)],
            vec![Some(name), Some(ids[0])],
        ),
        (vec![Some(metric_id)], vec![Some(2)], vec![Some(name), None]),
    ] {
        let result: Result<Vec<(i32, i64)>, _> =
            sqlx::query_as("SELECT idx, series_id FROM _prom_catalog.create_series($1, $2, $3)")
                .bind(&metric_ids)
                .bind(&counts)
                .bind(&labels)
                .fetch_all(&db)
                .await;
        let error = result.expect_err("refused").to_string();
        assert!(
            error.contains("one metric id and one label count per series"),
            "{error}"
        );
    }
    let error = sqlx::query("SELECT * FROM _prom_catalog.create_series(NULL, ARRAY[2], ARRAY[1, 2])")
        .execute(&db)
        .await
        .expect_err("refused")
        .to_string();
    assert!(
        error.contains("one metric id and one label count per series"),
        "{error}"
    );
    let count: i64 = sqlx::query_scalar("SELECT count(*) FROM _prom_catalog.series")
        .fetch_one(&db)
        .await
        .unwrap();
    assert_eq!(count, 0);
}

/// The recent label floor (migration 28).
async fn recent_label_floor(db: &sqlx::PgPool) -> i32 {
    sqlx::query_scalar("SELECT label_id FROM _prom_catalog.recent_label_floor")
        .fetch_one(db)
        .await
        .unwrap()
}

/// The floor and where a series is: (recent label floor, the series' copies among the fresh
/// series, among the indexed rows).
async fn floor_and_copies(db: &sqlx::PgPool, labels: [i32; 2]) -> (i32, i64, i64) {
    sqlx::query_as(
        "SELECT (SELECT label_id FROM _prom_catalog.recent_label_floor),
                (SELECT count(*) FROM ONLY _prom_catalog.series_fresh WHERE labels = $1),
                (SELECT count(*) FROM ONLY _prom_catalog.series_row WHERE labels = $1)",
    )
    .bind(labels.to_vec())
    .fetch_one(db)
    .await
    .unwrap()
}

/// Series holding a label above the recent label floor are created by one insert, without
/// lookups (migration 28): each once, whether asked for again, twice in one call, or by a
/// writer at a stricter isolation level. A series whose label the floor has passed, or whose
/// recent label is not among its labels, is not answered (create_series creates it), and
/// every answer says the floor.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn series_of_recent_labels_are_created_once_without_lookups() {
    let pg = TestPostgres::start();
    let db = pg.pool().await;
    migrate_to(&db, latest_version()).await.unwrap();
    let floor = recent_label_floor(&db).await;
    let (metric_id, name, ids) = race_labels(&db, &["a", "b", "c"]).await;
    let (a, b, c) = (ids[0], ids[1], ids[2]);
    assert!(
        name > floor && a > floor,
        "labels created since the migration are recent"
    );
    let mut conn = PgConnection::connect(&pg.uri()).await.unwrap();

    let (first, answered_floor) = create_recent(&mut conn, metric_id, &[[name, a], [name, b]]).await;
    assert_eq!(answered_floor, Some(floor));
    let [Some(id_a), Some(id_b)] = first[..] else {
        panic!("both created: {first:?}")
    };
    assert!(id_a < id_b, "ids drawn in the order given");
    assert_eq!(where_series_are(&db).await, (2, 0), "written among the fresh series");
    // Asked again (with a new one, and one given twice): the same ids, one copy each.
    let (again, _) = create_recent(&mut conn, metric_id, &[[name, c], [name, b], [name, a], [name, c]]).await;
    let Some(id_c) = again[0] else {
        panic!("c created: {again:?}")
    };
    assert_eq!(again, vec![Some(id_c), Some(id_b), Some(id_a), Some(id_c)]);
    assert_eq!(where_series_are(&db).await, (3, 0));
    // create_series finds them where they are.
    assert_eq!(
        create(&mut conn, metric_id, &[[name, a], [name, b], [name, c]]).await,
        vec![(0, id_a), (1, id_b), (2, id_c)]
    );

    // A recent label that is not the series' own is not taken on trust.
    let (wrong, _) = create_recent_as(&mut conn, metric_id, &[[name, a]], vec![a + 1000]).await;
    assert_eq!(wrong, vec![None]);

    // At a stricter isolation level, nothing is taken for recent.
    sqlx::query("BEGIN ISOLATION LEVEL REPEATABLE READ")
        .execute(&mut conn)
        .await
        .unwrap();
    let (strict, strict_floor) = create_recent(&mut conn, metric_id, &[[name, a]]).await;
    assert_eq!((strict, strict_floor), (vec![None], None));
    sqlx::query("COMMIT").execute(&mut conn).await.unwrap();

    // Once the floor passes their labels, they are not recent any more: the merge pass moves
    // them, and create_recent_series leaves them to create_series, which finds them.
    sqlx::query(INDEX_FRESH_SERIES).execute(&db).await.unwrap();
    let newest = c.max(name);
    assert_eq!(floor_and_copies(&db, [name, a]).await, (newest, 0, 1));
    let (after, after_floor) = create_recent(&mut conn, metric_id, &[[name, a], [name, c]]).await;
    assert_eq!((after, after_floor), (vec![None, None], Some(newest)));
    assert_eq!(
        create(&mut conn, metric_id, &[[name, a], [name, c]]).await,
        vec![(0, id_a), (1, id_c)]
    );
    assert_eq!(where_series_are(&db).await, (0, 3));
}

/// Two writers creating the same recent series at once meet at the fresh series' exclusion
/// constraint: the second waits for the first and answers with its id, and still creates
/// the other series of its call.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_recent_series_two_writers_create_at_once_gets_one_id() {
    let pg = TestPostgres::start();
    let db = pg.pool().await;
    migrate_to(&db, latest_version()).await.unwrap();
    let (metric_id, name, ids) = race_labels(&db, &["pod-1", "pod-2"]).await;
    let (one, two) = (ids[0], ids[1]);
    let mut first = PgConnection::connect(&pg.uri()).await.unwrap();
    sqlx::query("BEGIN").execute(&mut first).await.unwrap();
    let (by_first, _) = create_recent(&mut first, metric_id, &[[name, one]]).await;

    let uri = pg.uri();
    let second = tokio::spawn(async move {
        let mut conn = PgConnection::connect(&uri).await.unwrap();
        create_recent(&mut conn, metric_id, &[[name, two], [name, one]]).await.0
    });
    sessions_waiting_on_a_lock_in(&db, "create_recent_series").await;
    sqlx::query("COMMIT").execute(&mut first).await.unwrap();
    let by_second = second.await.unwrap();
    assert_eq!(by_second[1], by_first[0], "the first writer's series");
    assert!(by_second[0].is_some() && by_second[0] != by_first[0], "{by_second:?}");
    assert_eq!(floor_and_copies(&db, [name, one]).await.1, 1, "one copy");
    assert_eq!(where_series_are(&db).await, (2, 0));
}

/// The floor rises only while no writer is creating series of recent labels, whose series stay
/// among the fresh series meanwhile: a merge pass that runs while a writer's transaction is
/// open leaves the floor and that writer's series where they are (after waiting 200 ms for
/// it), and the next pass raises the floor and moves them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_floor_waits_for_the_writers_of_recent_series() {
    let pg = TestPostgres::start();
    let db = pg.pool().await;
    migrate_to(&db, latest_version()).await.unwrap();
    let floor = recent_label_floor(&db).await;
    let (metric_id, name, ids) = race_labels(&db, &["pod-1"]).await;
    let mut writer = PgConnection::connect(&pg.uri()).await.unwrap();
    sqlx::query("BEGIN").execute(&mut writer).await.unwrap();
    let (created, _) = create_recent(&mut writer, metric_id, &[[name, ids[0]]]).await;
    assert!(created[0].is_some());

    the_raise_waits_for_a_writer_and_gives_up(&db, floor).await;
    let moved: i64 = sqlx::query_scalar(INDEX_FRESH_SERIES).fetch_one(&db).await.unwrap();
    assert_eq!(moved, 0);
    assert_eq!(floor_and_copies(&db, [name, ids[0]]).await.0, floor, "the floor stays");

    sqlx::query("COMMIT").execute(&mut writer).await.unwrap();
    // The move alone leaves a series of a label above the floor where it is.
    let moved: i64 = sqlx::query_scalar("SELECT _prom_catalog.index_fresh_series()")
        .fetch_one(&db)
        .await
        .unwrap();
    assert_eq!(moved, 0);
    assert_eq!(floor_and_copies(&db, [name, ids[0]]).await, (floor, 1, 0));
    let moved: i64 = sqlx::query_scalar(INDEX_FRESH_SERIES).fetch_one(&db).await.unwrap();
    assert_eq!(moved, 1);
    assert_eq!(floor_and_copies(&db, [name, ids[0]]).await, (ids[0].max(name), 0, 1));
}

/// `draw_recent_series_ids` (migration 30): ids, in the order given, for the series whose
/// recent label is above the floor, none for the others or at a stricter isolation level; the
/// floor stays where it is until the drawing transaction ends; malformed input is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ids_are_drawn_for_series_above_the_floor_only() {
    let pg = TestPostgres::start();
    let db = pg.pool().await;
    migrate_to(&db, latest_version()).await.unwrap();
    let floor = recent_label_floor(&db).await;
    let (metric_id, _, ids) = race_labels(&db, &["a", "b"]).await;
    let draw = "SELECT series_ids, label_floor FROM _prom_catalog.draw_recent_series_ids($1, $2)";
    let mut writer = PgConnection::connect(&pg.uri()).await.unwrap();
    sqlx::query("BEGIN").execute(&mut writer).await.unwrap();
    let (drawn, answered): (Vec<Option<i64>>, Option<i32>) = sqlx::query_as(draw)
        .bind(vec![metric_id; 3])
        .bind(vec![ids[1], floor, ids[0]])
        .fetch_one(&mut writer)
        .await
        .unwrap();
    assert_eq!(answered, Some(floor));
    let [Some(first), None, Some(second)] = drawn[..] else {
        panic!("an id for each series above the floor: {drawn:?}")
    };
    assert!(first < second, "in the order given: {drawn:?}");
    assert_eq!((first >> 40, second >> 40), (metric_id as i64, metric_id as i64));

    the_raise_waits_for_a_writer_and_gives_up(&db, floor).await;
    sqlx::query("COMMIT").execute(&mut writer).await.unwrap();

    sqlx::query("BEGIN ISOLATION LEVEL REPEATABLE READ")
        .execute(&mut writer)
        .await
        .unwrap();
    let strict: (Vec<Option<i64>>, Option<i32>) = sqlx::query_as(draw)
        .bind(vec![metric_id; 2])
        .bind(vec![ids[0], ids[1]])
        .fetch_one(&mut writer)
        .await
        .unwrap();
    assert_eq!(strict, (vec![None, None], None));
    sqlx::query("COMMIT").execute(&mut writer).await.unwrap();

    for (metric_ids, recent) in [
        (None, Some(vec![Some(ids[0])])),
        (Some(vec![Some(metric_id)]), Some(vec![Some(ids[0]), Some(ids[1])])),
        (Some(vec![Some(metric_id)]), Some(vec![None])),
        (Some(vec![None]), Some(vec![Some(ids[0])])),
    ] {
        let error = sqlx::query(draw)
            .bind(metric_ids)
            .bind(recent)
            .execute(&db)
            .await
            .expect_err("refused")
            .to_string();
        assert!(
            error.contains("one metric id and one recent label per series"),
            "{error}"
        );
    }
}

/// Asserts that raising the recent label floor now waits (200 ms) for a writer of recent
/// series and then leaves the floor at `floor`, not having had the lock.
async fn the_raise_waits_for_a_writer_and_gives_up(db: &sqlx::PgPool, floor: i32) {
    let started = std::time::Instant::now();
    let (kept, locked): (i32, bool) =
        sqlx::query_as("SELECT label_floor, locked FROM _prom_catalog.raise_recent_label_floor()")
            .fetch_one(db)
            .await
            .unwrap();
    assert!(
        started.elapsed() >= Duration::from_millis(200),
        "the raise waited for the writer"
    );
    assert_eq!((kept, locked), (floor, false));
}

/// `create_labels` (migration 29): the ids of `(key, value)` pairs in the order given.
async fn create_labels<'e>(executor: impl sqlx::PgExecutor<'e>, pairs: &[(&str, &str)]) -> Vec<(i32, i32)> {
    let (keys, values): (Vec<&str>, Vec<&str>) = pairs.iter().copied().unzip();
    sqlx::query_as("SELECT idx, label_id FROM _prom_catalog.create_labels($1, $2) ORDER BY idx")
        .bind(keys)
        .bind(values)
        .fetch_all(executor)
        .await
        .unwrap()
}

/// How many label ids have been drawn from the labels' sequence.
async fn label_ids_drawn(db: &sqlx::PgPool) -> i64 {
    sqlx::query_scalar("SELECT CASE WHEN is_called THEN last_value ELSE 0 END FROM _prom_catalog.label_id_seq")
        .fetch_one(db)
        .await
        .unwrap()
}

/// Labels are created once each (migration 29): a pair given twice in one call, or asked for
/// again, answers one id; labels found draw no id; values longer than the index holds are told
/// apart by all their bytes; the ids are those the function of version 28 answers (connectors
/// of both versions during a rolling upgrade); a call of 20,000 new labels (a large first
/// round) answers them all; and malformed input is refused with a clear error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn labels_are_created_once_and_found_without_drawing_ids() {
    let pg = TestPostgres::start();
    let db = pg.pool().await;
    migrate_to(&db, latest_version()).await.unwrap();
    let long_a = format!("{}a", "x".repeat(1500));
    let long_b = format!("{}b", "x".repeat(1500));
    let pairs = [
        ("pod", "a"),
        ("pod", "b"),
        ("pod", "a"),
        ("node", "a"),
        ("pod", long_a.as_str()),
        ("pod", long_b.as_str()),
    ];
    let before = label_ids_drawn(&db).await;
    let first = create_labels(&db, &pairs).await;
    assert_eq!(first.iter().map(|r| r.0).collect::<Vec<_>>(), vec![0, 1, 2, 3, 4, 5]);
    let ids: Vec<i32> = first.iter().map(|r| r.1).collect();
    assert_eq!(ids[0], ids[2], "one label for a pair given twice");
    let mut distinct = ids.clone();
    distinct.sort();
    distinct.dedup();
    assert_eq!(distinct.len(), 5, "a label of its own for each pair: {ids:?}");
    assert_eq!(label_ids_drawn(&db).await - before, 5);

    // Asked again with one new pair: the same ids, one more drawn.
    let mut again_pairs = pairs.to_vec();
    again_pairs.insert(1, ("pod", "c"));
    let again = create_labels(&db, &again_pairs).await;
    let mut expected = ids.clone();
    expected.insert(1, again[1].1);
    assert_eq!(again.iter().map(|r| r.1).collect::<Vec<_>>(), expected);
    assert!(!ids.contains(&again[1].1));
    assert_eq!(label_ids_drawn(&db).await - before, 6);
    let stored: i64 = sqlx::query_scalar("SELECT count(*) FROM _prom_catalog.label")
        .fetch_one(&db)
        .await
        .unwrap();
    assert_eq!(stored, 6);
    let (keys, values): (Vec<&str>, Vec<&str>) = again_pairs.iter().copied().unzip();
    let by_version_28: Vec<i32> =
        sqlx::query_scalar("SELECT label_id FROM _prom_catalog.get_or_create_label_ids($1, $2) ORDER BY idx")
            .bind(keys)
            .bind(values)
            .fetch_all(&db)
            .await
            .unwrap();
    assert_eq!(by_version_28, expected);

    let many: Vec<String> = (0..20_000)
        .map(|n| format!("10.1.{}.{}:9100", n / 250, n % 250))
        .collect();
    let many_pairs: Vec<(&str, &str)> = many.iter().map(|v| ("instance", v.as_str())).collect();
    let created = create_labels(&db, &many_pairs).await;
    assert_eq!(created.len(), 20_000);
    assert!(created.iter().enumerate().all(|(n, r)| r.0 == n as i32));
    assert_eq!(label_ids_drawn(&db).await - before, 20_006);

    for (keys, values) in [
        (vec![Some("pod")], vec![Some("a"), Some("b")]),
        (vec![None], vec![Some("a")]),
        (vec![Some("pod")], vec![None]),
    ] {
        let error = sqlx::query("SELECT * FROM _prom_catalog.create_labels($1, $2)")
            .bind(keys)
            .bind(values)
            .execute(&db)
            .await
            .expect_err("refused")
            .to_string();
        assert!(
            error.contains("create_labels takes one value per key, and no NULL"),
            "{error}"
        );
    }
    assert_eq!(label_ids_drawn(&db).await - before, 20_006);
}

/// Two writers creating the same label at once get one label: the second waits for the first
/// and answers its id; had the first rolled back, the second creates it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_label_two_writers_create_at_once_gets_one_id() {
    let pg = TestPostgres::start();
    let db = pg.pool().await;
    migrate_to(&db, latest_version()).await.unwrap();
    for first_commits in [true, false] {
        let value = if first_commits { "pod-1" } else { "pod-2" };
        let mut first = PgConnection::connect(&pg.uri()).await.unwrap();
        sqlx::query("BEGIN").execute(&mut first).await.unwrap();
        let by_first = create_labels(&mut first, &[("pod", value)]).await;

        let uri = pg.uri();
        let second = tokio::spawn(async move {
            let mut conn = PgConnection::connect(&uri).await.unwrap();
            create_labels(&mut conn, &[("pod", "other"), ("pod", value)]).await
        });
        sessions_waiting_on_a_lock_in(&db, "create_labels").await;
        let end = if first_commits { "COMMIT" } else { "ROLLBACK" };
        sqlx::query(end).execute(&mut first).await.unwrap();
        let by_second = second.await.unwrap();
        if first_commits {
            assert_eq!(by_second[1], (1, by_first[0].1), "the first writer's label");
        } else {
            assert_ne!(by_second[1].1, by_first[0].1, "created by the second writer");
        }
        let copies: i64 =
            sqlx::query_scalar("SELECT count(*) FROM _prom_catalog.label WHERE key = 'pod' AND value = $1")
                .bind(value)
                .fetch_one(&db)
                .await
                .unwrap();
        assert_eq!(copies, 1, "{end}: one label");
        assert_eq!(create_labels(&db, &[("pod", value)]).await, vec![(0, by_second[1].1)]);
    }
}

/// A version 28 catalog upgraded to the latest keeps its labels' ids, draws no id for them,
/// and its series, recent and indexed, resolve to their ids; labels created after the upgrade
/// are recent, and so are their series.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn labels_and_series_of_a_version_28_catalog_keep_their_ids() {
    let pg = TestPostgres::start();
    let db = pg.pool().await;
    migrate_to(&db, 28).await.unwrap();
    let (metric_id, name, ids) = race_labels(&db, &["indexed"]).await;
    let indexed = ids[0];
    let mut conn = PgConnection::connect(&pg.uri()).await.unwrap();
    let (old_indexed, _) = create_recent(&mut conn, metric_id, &[[name, indexed]]).await;
    sqlx::query(INDEX_FRESH_SERIES).execute(&db).await.unwrap();
    // A label created after the floor rose: its series stays among the fresh ones.
    let recent = label_in(&mut conn, "recent").await;
    let (old_recent, _) = create_recent(&mut conn, metric_id, &[[name, recent]]).await;
    assert!(old_indexed[0].is_some() && old_recent[0].is_some());
    assert_eq!(where_series_are(&db).await, (1, 1));
    let drawn = label_ids_drawn(&db).await;

    migrate_to(&db, latest_version()).await.unwrap();
    assert_eq!(
        create_labels(&db, &[("k", "recent"), ("__name__", "race"), ("k", "indexed")]).await,
        vec![(0, recent), (1, name), (2, indexed)]
    );
    assert_eq!(label_ids_drawn(&db).await, drawn, "no label id drawn for labels found");
    let mut conn = PgConnection::connect(&pg.uri()).await.unwrap();
    assert_eq!(
        create(&mut conn, metric_id, &[[name, recent], [name, indexed]]).await,
        vec![(0, old_recent[0].unwrap()), (1, old_indexed[0].unwrap())]
    );
    let (again, _) = create_recent(&mut conn, metric_id, &[[name, recent]]).await;
    assert_eq!(again, old_recent, "the recent series, found by the conflict with it");
    let new = create_labels(&db, &[("k", "new")]).await[0].1;
    assert!(new > recent_label_floor(&db).await, "a new label is recent");
    let (created, _) = create_recent(&mut conn, metric_id, &[[name, new]]).await;
    assert!(created[0].is_some() && created != old_recent, "{created:?}");
    assert_eq!(where_series_are(&db).await, (2, 1));
}

/// `create_labels` keeps the plans it makes at its first call (migration 29), so they must
/// not depend on the catalog's size: made while the labels table was empty, they still look
/// each label up by one probe of its index once the table holds 20,000, scanning it whole
/// neither by its heap nor by its index.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn labels_are_looked_up_by_index_whatever_the_catalog_held_when_the_plan_was_made() {
    let pg = TestPostgres::start();
    let db = pg.pool().await;
    migrate_to(&db, latest_version()).await.unwrap();
    let mut conn = PgConnection::connect(&pg.uri()).await.unwrap();
    let stored: i64 = sqlx::query_scalar("SELECT count(*) FROM _prom_catalog.label")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert_eq!(stored, 0);
    create_labels(&mut conn, &[("pod", "first")]).await;
    let many: Vec<String> = (0..20_000).map(|n| format!("pod-{n}")).collect();
    let many_pairs: Vec<(&str, &str)> = many.iter().map(|v| ("pod", v.as_str())).collect();
    create_labels(&db, &many_pairs).await;

    let mut wanted: Vec<(&str, &str)> = many_pairs.iter().step_by(40).copied().collect();
    wanted.extend([("pod", "new-1"), ("pod", "new-2")]);
    // The session's scans of the labels table, counted as it goes (its counts reach the
    // shared statistics only between transactions, so they are read inside one).
    const SCANS: &str =
        "SELECT seq_scan, idx_scan FROM pg_stat_xact_user_tables WHERE relid = '_prom_catalog.label'::regclass";
    sqlx::query("BEGIN").execute(&mut conn).await.unwrap();
    let before: (i64, i64) = sqlx::query_as(SCANS).fetch_one(&mut conn).await.unwrap();
    let answered = create_labels(&mut conn, &wanted).await;
    let after: (i64, i64) = sqlx::query_as(SCANS).fetch_one(&mut conn).await.unwrap();
    sqlx::query("COMMIT").execute(&mut conn).await.unwrap();
    let (seq_scans, index_scans) = (after.0 - before.0, after.1 - before.1);
    assert_eq!(answered.len(), wanted.len());
    assert_eq!(seq_scans, 0, "no label table scan");
    assert!(
        index_scans >= 2 * wanted.len() as i64,
        "a probe a label in each statement: {index_scans} index scans for {} labels",
        wanted.len()
    );
}

/// Series of different labels and one hash (migration 31 keeps the fresh series unique by
/// the 64-bit hash of their labels; here an index that gives every series one hash stands in
/// for a collision, which no real pair of label sets can be found for). Two new ones in one
/// request: it is refused with a 503, to retry, and nothing of it is stored, until the merge
/// pass has raised the recent label floor past their labels; then one is written fresh and
/// the other into the indexed catalog. One new while another is fresh: refused until the
/// merge pass has moved the fresh one. Every series keeps its own id.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_series_whose_hash_a_fresh_series_holds_is_refused_until_the_merge_pass() {
    let pg = TestPostgres::start();
    let db = pg.pool().await;
    let connector = connector_without_maintenance(&pg).await;
    sqlx::query("DROP INDEX _prom_catalog.series_fresh_labels")
        .execute(&db)
        .await
        .unwrap();
    sqlx::query(
        "CREATE UNIQUE INDEX series_fresh_labels ON _prom_catalog.series_fresh ((hash_array_extended(labels, 0) & 0))",
    )
    .execute(&db)
    .await
    .unwrap();
    let client = reqwest::Client::new();
    let t = promscale_e2e::recent_ms();
    let write = |pods: &[(&str, f64)], t: i64| {
        encode(
            pods.iter()
                .map(|&(pod, v)| series(&[("__name__", "collide"), ("pod", pod)], &[(t, v)]))
                .collect(),
        )
    };
    let samples = || async {
        sqlx::query_as::<_, (String, f64, i64)>(
            "SELECT pod, value, series_id FROM prom_metric.collide ORDER BY time, pod",
        )
        .fetch_all(&db)
        .await
        .unwrap()
    };

    let (status, text) = post(&client, &connector.url("/write"), write(&[("a", 1.0), ("b", 2.0)], t))
        .await
        .unwrap();
    assert_eq!(status, 503, "refused while both are recent: {text}");
    assert_eq!(where_series_are(&db).await, (0, 0), "nothing of the request is stored");
    promscale_e2e::maintain(&db).await;
    let (status, text) = post(&client, &connector.url("/write"), write(&[("a", 1.0), ("b", 2.0)], t))
        .await
        .unwrap();
    assert_eq!(status, 204, "{text}");
    assert_eq!(where_series_are(&db).await, (1, 1), "one fresh, the other indexed");

    let (status, text) = post(&client, &connector.url("/write"), write(&[("c", 3.0)], t))
        .await
        .unwrap();
    assert_eq!(
        status, 503,
        "refused while the other series of its hash is fresh: {text}"
    );
    assert_eq!(samples().await.len(), 2);
    promscale_e2e::maintain(&db).await;
    assert_eq!(where_series_are(&db).await.0, 0, "the merge pass moved the fresh one");
    let (status, text) = post(&client, &connector.url("/write"), write(&[("c", 3.0)], t))
        .await
        .unwrap();
    assert_eq!(status, 204, "{text}");
    let (status, text) = post(
        &client,
        &connector.url("/write"),
        write(&[("a", 4.0), ("b", 5.0), ("c", 6.0)], t + 15_000),
    )
    .await
    .unwrap();
    assert_eq!(status, 204, "{text}");
    let stored = samples().await;
    let points: Vec<(&str, f64)> = stored.iter().map(|(p, v, _)| (p.as_str(), *v)).collect();
    assert_eq!(
        points,
        vec![("a", 1.0), ("b", 2.0), ("c", 3.0), ("a", 4.0), ("b", 5.0), ("c", 6.0)]
    );
    for k in 0..3 {
        assert_eq!(stored[k].2, stored[k + 3].2, "{} keeps its series", stored[k].0);
    }
    let ids: std::collections::HashSet<i64> = stored.iter().map(|r| r.2).collect();
    assert_eq!(ids.len(), 3, "each its own series: {stored:?}");
    let catalog: (i64, i64) = sqlx::query_as(
        "SELECT count(*), count(DISTINCT labels) FROM _prom_catalog.series
          WHERE metric_id = (SELECT id FROM _prom_catalog.metric WHERE metric_name = 'collide')",
    )
    .fetch_one(&db)
    .await
    .unwrap();
    assert_eq!(catalog, (3, 3), "one series a label set");
}
