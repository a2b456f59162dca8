//! A stack's PostgreSQL database, as the operator reaches it: connection options built from
//! the stack's spec and Secrets, and errors that never carry the password.

use std::time::Duration;

use k8s_openapi::api::core::v1::Secret;
use kube::{Api, Client};
use promscale_crds::stack::{DatabaseSpec, SecretKeyRef};
use sqlx::postgres::{PgConnectOptions, PgSslMode};
use sqlx::{ConnectOptions, Connection, PgConnection};

#[derive(Debug, thiserror::Error)]
pub enum DatabaseError {
    #[error("Secret {name:?} does not exist in namespace {namespace:?}; create it or fix {field}")]
    SecretMissing {
        namespace: String,
        name: String,
        /// The part of the stack's spec naming the Secret, e.g. `spec.database`.
        field: &'static str,
    },
    #[error("Secret {name:?} has no key {key:?}; add it or fix {field}")]
    SecretKeyMissing {
        name: String,
        key: String,
        field: &'static str,
    },
    #[error("the value of key {key:?} in Secret {name:?} is not a valid PostgreSQL URI (postgres://user:password@host:5432/dbname)")]
    InvalidUri { name: String, key: String },
    #[error("cannot reach the database: {0}")]
    Unreachable(String),
    #[error("the database has no promscale schema yet: a connector creates it when it first starts")]
    SchemaMissing,
    #[error("the database refused a request: {0}")]
    Refused(String),
    #[error("cannot read Secret {name:?}: {source}")]
    SecretUnreadable {
        name: String,
        #[source]
        source: kube::Error,
    },
}

impl DatabaseError {
    /// The condition reason (and metric label) for this error.
    pub fn reason(&self) -> &'static str {
        match self {
            DatabaseError::SecretMissing { .. } | DatabaseError::SecretKeyMissing { .. } => "SecretMissing",
            DatabaseError::SecretUnreadable { .. } => "SecretUnreadable",
            DatabaseError::InvalidUri { .. } => "InvalidDatabaseURI",
            DatabaseError::Unreachable(_) => "DatabaseUnreachable",
            DatabaseError::SchemaMissing => "WaitingForSchema",
            DatabaseError::Refused(_) => "DatabaseError",
        }
    }
}

impl From<sqlx::Error> for DatabaseError {
    fn from(err: sqlx::Error) -> Self {
        match err {
            sqlx::Error::Database(db) => {
                let code = db.code().unwrap_or_default().to_string();
                // Class 08 is connection trouble, 28 authentication, 57P0x a shutting down
                // server: all mean "cannot use the database now".
                if code.starts_with("08") || code.starts_with("28") || code.starts_with("57P0") {
                    DatabaseError::Unreachable(format!("{} (SQLSTATE {code})", db.message()))
                } else {
                    DatabaseError::Refused(format!("{} (SQLSTATE {code})", db.message()))
                }
            }
            // Configuration errors may quote the connection string, password included.
            sqlx::Error::Configuration(_) => DatabaseError::Unreachable("invalid connection settings".into()),
            other => DatabaseError::Unreachable(other.to_string()),
        }
    }
}

/// Where a stack's database is, read from its Secrets.
pub struct Target {
    pub options: PgConnectOptions,
    /// `name@resourceVersion` of each Secret used: a change of credentials changes this and so
    /// rolls the connector pods, without putting anything secret into the pod template.
    pub secret_versions: Vec<String>,
}

impl Target {
    pub async fn resolve(client: &Client, namespace: &str, spec: &DatabaseSpec) -> Result<Self, DatabaseError> {
        let secrets: Api<Secret> = Api::namespaced(client.clone(), namespace);
        let mut secret_versions = Vec::new();
        let mut options = match &spec.uri_secret_ref {
            Some(reference) => {
                let uri = read_key(&secrets, namespace, reference, &mut secret_versions).await?;
                uri.trim()
                    .parse::<PgConnectOptions>()
                    .map_err(|_| DatabaseError::InvalidUri {
                        name: reference.name.clone(),
                        key: reference.key.clone(),
                    })?
            }
            None => PgConnectOptions::new_without_pgpass(),
        };
        if let Some(host) = &spec.host {
            options = options.host(host);
        }
        if let Some(port) = spec.port {
            options = options.port(u16::try_from(port).unwrap_or(5432));
        }
        if let Some(user) = &spec.user {
            options = options.username(user);
        }
        if let Some(dbname) = &spec.dbname {
            options = options.database(dbname);
        }
        if let Some(reference) = &spec.password_secret_ref {
            let password = read_key(&secrets, namespace, reference, &mut secret_versions).await?;
            options = options.password(&password);
        }
        if let Some(mode) = spec.ssl_mode {
            options = options.ssl_mode(
                mode.as_str()
                    .parse::<PgSslMode>()
                    .expect("the CRD enum holds libpq's modes"),
            );
        }
        Ok(Target {
            options: options
                .application_name("promscale-operator")
                .disable_statement_logging(),
            secret_versions,
        })
    }

    /// One connection, for one reconciliation.
    pub async fn connect(&self, timeout: Duration) -> Result<PgConnection, DatabaseError> {
        match tokio::time::timeout(timeout, PgConnection::connect_with(&self.options)).await {
            Ok(connection) => Ok(connection?),
            Err(_) => Err(DatabaseError::Unreachable(format!(
                "no connection within {}",
                humantime::format_duration(timeout)
            ))),
        }
    }
}

/// The Secret `name`, or the error that names the spec `field` referring to it.
pub async fn get_secret(
    secrets: &Api<Secret>,
    namespace: &str,
    name: &str,
    field: &'static str,
) -> Result<Secret, DatabaseError> {
    secrets
        .get_opt(name)
        .await
        .map_err(|source| DatabaseError::SecretUnreadable {
            name: name.to_string(),
            source,
        })?
        .ok_or_else(|| DatabaseError::SecretMissing {
            namespace: namespace.to_string(),
            name: name.to_string(),
            field,
        })
}

async fn read_key(
    secrets: &Api<Secret>,
    namespace: &str,
    reference: &SecretKeyRef,
    versions: &mut Vec<String>,
) -> Result<String, DatabaseError> {
    let secret = get_secret(secrets, namespace, &reference.name, "spec.database").await?;
    let missing = || DatabaseError::SecretKeyMissing {
        name: reference.name.clone(),
        key: reference.key.clone(),
        field: "spec.database",
    };
    let value = match secret.data.as_ref().and_then(|d| d.get(&reference.key)) {
        Some(bytes) => String::from_utf8(bytes.0.clone()).map_err(|_| missing())?,
        None => secret
            .string_data
            .as_ref()
            .and_then(|d| d.get(&reference.key))
            .cloned()
            .ok_or_else(missing)?,
    };
    versions.push(format!(
        "{}@{}",
        reference.name,
        secret.metadata.resource_version.unwrap_or_default()
    ));
    Ok(value)
}

/// Whether the connector has created the schema (with the `prom_api` functions) yet.
pub async fn schema_exists(connection: &mut PgConnection) -> Result<(), DatabaseError> {
    let exists: bool = sqlx::query_scalar("SELECT to_regclass('_prom_catalog.migration') IS NOT NULL")
        .fetch_one(&mut *connection)
        .await?;
    if exists {
        Ok(())
    } else {
        Err(DatabaseError::SchemaMissing)
    }
}

/// Closes a connection politely; a failure to do so changes nothing.
pub async fn close(connection: PgConnection) {
    let _ = connection.close().await;
}
