//! A real PostgreSQL cluster per test, started with the connector's own embedded launcher.

use promscale_connector::embedded_db::{EmbeddedPostgres, StopMode};
use sqlx::postgres::PgPoolOptions;
use sqlx::PgPool;

pub struct TestPostgres {
    server: EmbeddedPostgres,
    _dir: tempfile::TempDir,
}

impl TestPostgres {
    pub fn start() -> Self {
        let dir = crate::private_dir("promscale-test-pg-");
        let server =
            EmbeddedPostgres::start(&dir.path().join("cluster"), None).expect("starting PostgreSQL for a test");
        TestPostgres { server, _dir: dir }
    }

    pub fn uri(&self) -> String {
        self.server.uri()
    }

    pub async fn pool(&self) -> PgPool {
        PgPoolOptions::new()
            .max_connections(4)
            .connect(&self.uri())
            .await
            .expect("connecting to the test PostgreSQL")
    }

    pub fn stop(&mut self, mode: StopMode) {
        self.server.stop(mode).expect("stopping the test PostgreSQL");
    }

    pub fn restart(&mut self) {
        self.server.restart().expect("restarting the test PostgreSQL");
    }
}
