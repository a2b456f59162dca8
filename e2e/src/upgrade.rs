//! For the tests that upgrade a database written by an earlier schema version: series
//! created through that version's own SQL functions, and a connector of this version that
//! upgrades the schema when it starts.

use sqlx::PgPool;

use crate::connector::Connector;
use crate::postgres::TestPostgres;

/// Creates one series through the catalog functions of schema versions 7 to 10 (label
/// positions, label ids, `create_series`); `labels` sorted by name, `__name__` among them.
/// Returns its id.
pub async fn create_series_in_sql(db: &PgPool, labels: &[(&str, &str)]) -> i64 {
    let metric = labels
        .iter()
        .find(|(k, _)| *k == "__name__")
        .map(|(_, v)| v.to_string())
        .expect("a __name__ label");
    let keys: Vec<&str> = labels.iter().map(|(k, _)| *k).collect();
    let values: Vec<&str> = labels.iter().map(|(_, v)| *v).collect();
    let (metric_id,): (i32,) =
        sqlx::query_as("SELECT min(metric_id) FROM _prom_catalog.get_or_create_label_positions($1, $2)")
            .bind(vec![metric; keys.len()])
            .bind(&keys)
            .fetch_one(db)
            .await
            .unwrap();
    let ids: Vec<i32> =
        sqlx::query_scalar("SELECT label_id FROM _prom_catalog.get_or_create_label_ids($1, $2) ORDER BY idx")
            .bind(&keys)
            .bind(&values)
            .fetch_all(db)
            .await
            .unwrap();
    let (_, id): (i32, i64) = sqlx::query_as("SELECT idx, series_id FROM _prom_catalog.create_series($1, $2, $3)")
        .bind(vec![metric_id])
        .bind(vec![labels.len() as i32])
        .bind(ids)
        .fetch_one(db)
        .await
        .unwrap();
    id
}

/// Starts a connector of this version (maintenance off), which upgrades the schema at
/// start-up, and checks the database is then at the latest version.
pub async fn upgraded_by_a_connector(pg: &TestPostgres, db: &PgPool) -> Connector {
    upgraded_by_a_connector_with(pg, db, &[]).await
}

/// [`upgraded_by_a_connector`] with more flags.
pub async fn upgraded_by_a_connector_with(pg: &TestPostgres, db: &PgPool, flags: &[&str]) -> Connector {
    let mut args = vec!["--maintenance.interval", "0s"];
    args.extend_from_slice(flags);
    let connector = Connector::start(&pg.uri(), &args).await;
    let version: i32 = sqlx::query_scalar("SELECT max(version) FROM _prom_catalog.migration")
        .fetch_one(db)
        .await
        .unwrap();
    assert_eq!(version, promscale_connector::storage::migrations::latest_version());
    connector
}
