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

    /// Turns TLS on with a certificate for 127.0.0.1 signed by a test CA; returns the CA's
    /// certificate file (for `sslrootcert`).
    pub async fn enable_tls(&self) -> std::path::PathBuf {
        use std::os::unix::fs::MetadataExt;
        let pgdata = self.server.dir().join("pgdata");
        let tls = self.server.dir().join("tls");
        std::fs::create_dir_all(&tls).unwrap();
        crate::certs::generate(&tls);
        // The server reads its key as the cluster's owner, and only from a private file.
        let owner = std::fs::metadata(&pgdata).unwrap();
        for file in ["server.crt", "server.key"] {
            let target = pgdata.join(file);
            std::fs::copy(tls.join(file), &target).unwrap();
            std::os::unix::fs::chown(&target, Some(owner.uid()), Some(owner.gid())).unwrap();
            std::fs::set_permissions(&target, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
        }
        let pool = self.pool().await;
        for statement in [
            "ALTER SYSTEM SET ssl_cert_file = 'server.crt'",
            "ALTER SYSTEM SET ssl_key_file = 'server.key'",
            "ALTER SYSTEM SET ssl = on",
            "SELECT pg_reload_conf()",
        ] {
            sqlx::query(statement).execute(&pool).await.unwrap();
        }
        pool.close().await;
        tls.join("ca.crt")
    }

    /// Turns on `pg_stat_statements` (nested statements included), restarting the server: for
    /// benches that report where the database's time goes.
    pub async fn enable_statement_stats(&mut self) {
        use std::io::Write;
        let conf = self.server.dir().join("pgdata").join("postgresql.conf");
        let mut file = std::fs::OpenOptions::new().append(true).open(&conf).unwrap();
        writeln!(
            file,
            "shared_preload_libraries = 'pg_stat_statements'\npg_stat_statements.track = 'all'"
        )
        .unwrap();
        self.stop(StopMode::Fast);
        self.restart();
        let pool = self.pool().await;
        sqlx::query("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
            .execute(&pool)
            .await
            .unwrap();
        pool.close().await;
    }

    pub fn stop(&mut self, mode: StopMode) {
        self.server.stop(mode).expect("stopping the test PostgreSQL");
    }

    pub fn restart(&mut self) {
        self.server.restart().expect("restarting the test PostgreSQL");
    }
}
