//! TLS towards PostgreSQL, as managed databases require it: `sslmode=require` encrypts,
//! `verify-full` with the database's CA connects, and `verify-full` against an unknown CA is
//! refused (not ready, nothing written) without the password in any message.

use std::time::Duration;

use promscale_e2e::connector::Connector;
use promscale_e2e::postgres::TestPostgres;
use promscale_e2e::remote_write::{encode, post, series};

#[tokio::test]
async fn the_connector_speaks_tls_to_postgresql_and_verifies_the_server() {
    let pg = TestPostgres::start();
    let ca = pg.enable_tls().await;
    let pool = pg.pool().await;
    let http = reqwest::Client::new();

    let required = Connector::start(&format!("{}?sslmode=require", pg.uri()), &[]).await;
    let body = encode(vec![series(
        &[("__name__", "tls_probe"), ("job", "t")],
        &[(promscale_e2e::recent_ms(), 1.0)],
    )]);
    let (code, text) = post(&http, &required.url("/write"), body).await.unwrap();
    assert_eq!(code, 204, "{text}");
    let encrypted: bool = sqlx::query_scalar(
        "SELECT bool_and(s.ssl) FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid)
          WHERE a.application_name = 'promscale-connector'",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert!(encrypted, "every connection of the connector is encrypted");

    let verified = Connector::start(
        &format!("{}?sslmode=verify-full&sslrootcert={}", pg.uri(), ca.display()),
        &[],
    )
    .await;
    let (code, text) = post(
        &http,
        &verified.url("/write"),
        encode(vec![series(
            &[("__name__", "tls_probe"), ("job", "v")],
            &[(promscale_e2e::recent_ms(), 2.0)],
        )]),
    )
    .await
    .unwrap();
    assert_eq!(code, 204, "{text}");

    // The public roots do not know the test CA: refused, and said so.
    let password = pg
        .uri()
        .split(':')
        .nth(2)
        .unwrap()
        .split('@')
        .next()
        .unwrap()
        .to_string();
    let mut untrusted = Connector::spawn(Some(&format!("{}?sslmode=verify-full", pg.uri())), &[]);
    tokio::time::sleep(Duration::from_secs(3)).await;
    let ready = http.get(untrusted.url("/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), 503);
    untrusted.stop();
    let log = untrusted.log();
    assert!(log.to_lowercase().contains("certificate"), "{log}");
    assert!(!log.contains(&password), "the password leaked into the log");
}
