//! What a stack's status says: conditions from the reconciliation's outcome and from the
//! entries the connector pods write, the endpoint URLs, and the Prometheus Operator
//! `remoteWrite`/`remoteRead` items (references to the Secrets of `spec.auth`, never their
//! contents).

use std::time::Duration;

use k8s_openapi::jiff::Timestamp;
use promscale_crds::conditions::{DEGRADED, PROGRESSING, READY};
use promscale_crds::stack::{
    AuthSpec, Credential, Endpoints, PrometheusAuthorization, PrometheusRemoteEndpoint, PrometheusSecretOrConfigMap,
    PrometheusTlsConfig, SecretKeyRef, TLS_CA_KEY, TLS_CERT_KEY, TLS_KEY_KEY,
};
use promscale_crds::ConnectorStatus;

use crate::conditions::Observed;
use crate::database::DatabaseError;

use super::names::StackNames;

/// How many connector pods report ready, counting only entries refreshed within `stale_after`.
pub fn ready_connectors(entries: &[ConnectorStatus], now: Timestamp, stale_after: Duration) -> i32 {
    entries.iter().filter(|c| c.ready && age(c, now) <= stale_after).count() as i32
}

/// Entries whose pod stopped reporting `forget_after` ago: their pods are gone.
pub fn forgotten(
    entries: &[ConnectorStatus],
    now: Timestamp,
    forget_after: Duration,
) -> impl Iterator<Item = (usize, &ConnectorStatus)> {
    entries
        .iter()
        .enumerate()
        .filter(move |(_, c)| age(c, now) > forget_after)
}

fn age(entry: &ConnectorStatus, now: Timestamp) -> Duration {
    Duration::try_from(now.duration_since(entry.last_report_time.0)).unwrap_or(Duration::ZERO)
}

fn tls_of(auth: Option<&AuthSpec>) -> bool {
    auth.is_some_and(|a| a.tls.is_some())
}

pub fn endpoints(names: &StackNames, cluster_domain: &str, port: i32, auth: Option<&AuthSpec>) -> Endpoints {
    let base = names.service_url(cluster_domain, port, tls_of(auth));
    Endpoints {
        remote_write: format!("{base}/write"),
        remote_read: format!("{base}/read"),
        query: base,
    }
}

/// The item for a Prometheus Operator `Prometheus`' `spec.remoteWrite`.
pub fn prometheus_remote_write(
    names: &StackNames,
    cluster_domain: &str,
    port: i32,
    auth: Option<&AuthSpec>,
) -> PrometheusRemoteEndpoint {
    let url = endpoints(names, cluster_domain, port, auth).remote_write;
    let credential = auth.and_then(|a| a.write_credentials().next());
    remote_endpoint(url, names, cluster_domain, auth, credential, None)
}

/// The item for a Prometheus Operator `Prometheus`' `spec.remoteRead`; it reads recent data
/// too, as Promscale recommends.
pub fn prometheus_remote_read(
    names: &StackNames,
    cluster_domain: &str,
    port: i32,
    auth: Option<&AuthSpec>,
) -> PrometheusRemoteEndpoint {
    let url = endpoints(names, cluster_domain, port, auth).remote_read;
    let credential = auth.and_then(|a| a.read_credentials().next());
    remote_endpoint(url, names, cluster_domain, auth, credential, Some(true))
}

fn remote_endpoint(
    url: String,
    names: &StackNames,
    cluster_domain: &str,
    auth: Option<&AuthSpec>,
    credential: Option<Credential>,
    read_recent: Option<bool>,
) -> PrometheusRemoteEndpoint {
    let tls_config = auth.and_then(|a| a.tls.as_ref()).map(|tls| {
        let secret = |name: &str, key: &str| SecretKeyRef {
            name: name.into(),
            key: key.into(),
        };
        let client = tls.client_cert_secret_name.as_deref();
        PrometheusTlsConfig {
            ca: Some(PrometheusSecretOrConfigMap {
                secret: tls
                    .server_ca
                    .clone()
                    .unwrap_or_else(|| secret(&tls.secret_name, TLS_CA_KEY)),
            }),
            cert: client.map(|name| PrometheusSecretOrConfigMap {
                secret: secret(name, TLS_CERT_KEY),
            }),
            key_secret: client.map(|name| secret(name, TLS_KEY_KEY)),
            server_name: Some(names.service_host(cluster_domain)),
        }
    });
    let (authorization, basic_auth) = match credential {
        Some(Credential::BearerToken(token)) => (
            Some(PrometheusAuthorization {
                type_: "Bearer".into(),
                credentials: token.clone(),
            }),
            None,
        ),
        Some(Credential::BasicAuth(basic)) => (None, Some(basic.clone())),
        None => (None, None),
    };
    PrometheusRemoteEndpoint {
        url,
        authorization,
        basic_auth,
        tls_config,
        read_recent,
    }
}

/// The conditions for a reconciliation that applied every object, given how the database part
/// went and how many connectors report ready.
pub fn conditions(database: &Result<(), DatabaseError>, ready: i32, desired: i32) -> Vec<Observed> {
    let counted = format!("{ready}/{desired} connectors report ready");
    match database {
        Err(DatabaseError::SchemaMissing) => vec![
            Observed::new(
                READY,
                false,
                "WaitingForSchema",
                DatabaseError::SchemaMissing.to_string(),
            ),
            Observed::new(PROGRESSING, true, "WaitingForSchema", counted),
            Observed::new(DEGRADED, false, "AsExpected", "nothing is wrong"),
        ],
        Err(e) => vec![
            Observed::new(READY, false, e.reason(), e.to_string()),
            Observed::new(PROGRESSING, false, e.reason(), "retrying with backoff"),
            Observed::new(DEGRADED, true, e.reason(), e.to_string()),
        ],
        Ok(()) => {
            let (ready_condition, progressing) = if desired == 0 {
                (
                    Observed::new(READY, false, "ScaledToZero", "spec.connector.replicas is 0"),
                    Observed::new(PROGRESSING, false, "ScaledToZero", counted.clone()),
                )
            } else if ready == 0 {
                (
                    Observed::new(READY, false, "NoConnectorReady", counted.clone()),
                    Observed::new(PROGRESSING, true, "WaitingForConnectors", counted.clone()),
                )
            } else if ready < desired {
                (
                    Observed::new(READY, true, "Available", counted.clone()),
                    Observed::new(PROGRESSING, true, "WaitingForConnectors", counted.clone()),
                )
            } else {
                (
                    Observed::new(READY, true, "Available", counted.clone()),
                    Observed::new(PROGRESSING, false, "Complete", counted.clone()),
                )
            };
            vec![
                ready_condition,
                progressing,
                Observed::new(DEGRADED, false, "AsExpected", "database reachable, settings applied"),
            ]
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
    use promscale_crds::stack::{BasicAuth, Credentials, DatabaseSpec, TlsSpec};
    use promscale_crds::{PromscaleStack, PromscaleStackSpec};
    use serde_json::{json, Value};

    fn entry(pod: &str, ready: bool, seconds_ago: i64, now: Timestamp) -> ConnectorStatus {
        ConnectorStatus {
            pod: pod.into(),
            version: "0.1.0".into(),
            ready,
            samples_per_second: 0.0,
            active_series: 0,
            last_successful_write: None,
            last_error: None,
            last_report_time: Time(Timestamp::from_second(now.as_second() - seconds_ago).unwrap()),
        }
    }

    #[test]
    fn only_fresh_ready_entries_count_and_old_ones_are_forgotten() {
        let now = Timestamp::from_second(1_000_000).unwrap();
        let entries = vec![
            entry("fresh-ready", true, 10, now),
            entry("fresh-not-ready", false, 10, now),
            entry("stale-ready", true, 120, now),
            entry("gone", true, 3600, now),
        ];
        assert_eq!(ready_connectors(&entries, now, Duration::from_secs(60)), 1);
        let gone: Vec<_> = forgotten(&entries, now, Duration::from_secs(600))
            .map(|(i, c)| (i, c.pod.as_str()))
            .collect();
        assert_eq!(gone, vec![(3, "gone")]);
    }

    #[test]
    fn conditions_follow_database_and_connectors() {
        let ready = |c: &[Observed]| c.iter().find(|o| o.type_ == READY).unwrap().clone();
        assert!(ready(&conditions(&Ok(()), 2, 2)).status);
        assert_eq!(ready(&conditions(&Ok(()), 0, 2)).reason, "NoConnectorReady");
        let unreachable = conditions(&Err(DatabaseError::Unreachable("connection refused".into())), 2, 2);
        assert!(!ready(&unreachable).status);
        let degraded = unreachable.iter().find(|o| o.type_ == DEGRADED).unwrap();
        assert!(degraded.status);
        assert_eq!(degraded.reason, "DatabaseUnreachable");
        assert_eq!(
            ready(&conditions(&Err(DatabaseError::SchemaMissing), 0, 1)).reason,
            "WaitingForSchema"
        );
    }

    fn key(name: &str, key: &str) -> SecretKeyRef {
        SecretKeyRef {
            name: name.into(),
            key: key.into(),
        }
    }

    fn basic(secret: &str) -> BasicAuth {
        BasicAuth {
            username: key(secret, "username"),
            password: key(secret, "password"),
        }
    }

    fn names() -> StackNames {
        let mut stack = PromscaleStack::new(
            "metrics",
            PromscaleStackSpec {
                connector: Default::default(),
                database: DatabaseSpec::default(),
                defaults: Default::default(),
                service: Default::default(),
                auth: None,
                tenant_limits: Vec::new(),
            },
        );
        stack.metadata.namespace = Some("monitoring".into());
        stack.metadata.uid = Some("0a1b2c3d".into());
        StackNames::of(&stack).unwrap()
    }

    fn blocks(auth: Option<&AuthSpec>) -> (Value, Value) {
        let names = names();
        (
            serde_json::to_value(prometheus_remote_write(&names, "cluster.local", 9201, auth)).unwrap(),
            serde_json::to_value(prometheus_remote_read(&names, "cluster.local", 9201, auth)).unwrap(),
        )
    }

    #[test]
    fn without_auth_the_blocks_are_plain_urls() {
        let (write, read) = blocks(None);
        assert_eq!(
            write,
            json!({"url": "http://metrics-connector.monitoring.svc.cluster.local:9201/write"})
        );
        assert_eq!(
            read,
            json!({"url": "http://metrics-connector.monitoring.svc.cluster.local:9201/read", "readRecent": true})
        );
        assert_eq!(
            endpoints(&names(), "cluster.local", 9201, None).query,
            "http://metrics-connector.monitoring.svc.cluster.local:9201"
        );
    }

    #[test]
    fn write_and_read_blocks_prefer_their_own_credentials_and_tls_references_the_same_secrets() {
        let auth = AuthSpec {
            bearer_token: Some(key("metrics-auth", "token")),
            basic_auth: None,
            write: Some(Credentials {
                bearer_token: None,
                basic_auth: Some(basic("metrics-write")),
            }),
            read: Some(Credentials {
                bearer_token: Some(key("metrics-read", "token")),
                basic_auth: Some(basic("metrics-read")),
            }),
            tls: Some(TlsSpec {
                secret_name: "metrics-tls".into(),
                server_ca: None,
                client_ca: Some(key("metrics-client-ca", "ca.crt")),
                client_cert_secret_name: Some("prometheus-client".into()),
            }),
            tenant_tokens: None,
        };
        let (write, read) = blocks(Some(&auth));
        let tls = json!({
            "ca": {"secret": {"name": "metrics-tls", "key": "ca.crt"}},
            "cert": {"secret": {"name": "prometheus-client", "key": "tls.crt"}},
            "keySecret": {"name": "prometheus-client", "key": "tls.key"},
            "serverName": "metrics-connector.monitoring.svc.cluster.local",
        });
        assert_eq!(
            write,
            json!({
                "url": "https://metrics-connector.monitoring.svc.cluster.local:9201/write",
                "basicAuth": {
                    "username": {"name": "metrics-write", "key": "username"},
                    "password": {"name": "metrics-write", "key": "password"},
                },
                "tlsConfig": tls,
            })
        );
        assert_eq!(
            read,
            json!({
                "url": "https://metrics-connector.monitoring.svc.cluster.local:9201/read",
                "authorization": {"type": "Bearer", "credentials": {"name": "metrics-read", "key": "token"}},
                "tlsConfig": tls,
                "readRecent": true,
            })
        );
        assert_eq!(
            endpoints(&names(), "cluster.local", 9201, Some(&auth)).remote_write,
            "https://metrics-connector.monitoring.svc.cluster.local:9201/write"
        );
    }

    #[test]
    fn common_credentials_serve_both_and_a_token_wins_over_basic_auth() {
        let mut auth = AuthSpec {
            bearer_token: None,
            basic_auth: Some(basic("metrics-auth")),
            ..Default::default()
        };
        let (write, read) = blocks(Some(&auth));
        assert_eq!(
            write["basicAuth"]["password"],
            json!({"name": "metrics-auth", "key": "password"})
        );
        assert_eq!(read["basicAuth"], write["basicAuth"]);
        assert!(write.get("authorization").is_none() && write.get("tlsConfig").is_none());
        assert!(write["url"].as_str().unwrap().starts_with("http://"));

        auth.bearer_token = Some(key("metrics-auth", "token"));
        auth.write = Some(Credentials {
            bearer_token: Some(key("metrics-write", "token")),
            basic_auth: None,
        });
        auth.tls = Some(TlsSpec {
            secret_name: "metrics-tls".into(),
            server_ca: Some(key("corporate-ca", "root.pem")),
            ..Default::default()
        });
        let (write, read) = blocks(Some(&auth));
        assert_eq!(
            write["authorization"]["credentials"],
            json!({"name": "metrics-write", "key": "token"})
        );
        assert_eq!(
            read["authorization"]["credentials"],
            json!({"name": "metrics-auth", "key": "token"})
        );
        assert!(
            write.get("basicAuth").is_none(),
            "Prometheus takes one kind of credentials"
        );
        assert_eq!(
            read["tlsConfig"],
            json!({
                "ca": {"secret": {"name": "corporate-ca", "key": "root.pem"}},
                "serverName": "metrics-connector.monitoring.svc.cluster.local",
            })
        );
    }

    /// Validates `value` against an OpenAPI v3 schema of a CRD, as strictly as the API server's
    /// `fieldValidation=Strict`: types, required fields, enums, patterns, and no unknown fields.
    /// (The keywords used by the Prometheus Operator's remote endpoint schemas; anything else
    /// in them fails the test, so that a newer schema cannot pass unchecked.)
    fn validate(schema: &Value, value: &Value, path: &str) -> Result<(), String> {
        const KNOWN: [&str; 8] = [
            "type",
            "properties",
            "required",
            "description",
            "enum",
            "pattern",
            "default",
            "x-kubernetes-map-type",
        ];
        for keyword in schema.as_object().unwrap().keys() {
            if !KNOWN.contains(&keyword.as_str()) {
                return Err(format!(
                    "{path}: the schema uses {keyword}, which this check does not know"
                ));
            }
        }
        let type_ok = match schema["type"].as_str() {
            Some("object") => value.is_object(),
            Some("string") => value.is_string(),
            Some("boolean") => value.is_boolean(),
            Some("integer") => value.is_i64() || value.is_u64(),
            Some("array") => value.is_array(),
            other => return Err(format!("{path}: unexpected schema type {other:?}")),
        };
        if !type_ok {
            return Err(format!("{path}: {value} is not of type {}", schema["type"]));
        }
        if let Some(options) = schema.get("enum").and_then(Value::as_array) {
            if !options.contains(value) {
                return Err(format!("{path}: {value} is not one of {options:?}"));
            }
        }
        if let Some(pattern) = schema.get("pattern").and_then(Value::as_str) {
            if !regex::Regex::new(pattern).unwrap().is_match(value.as_str().unwrap()) {
                return Err(format!("{path}: {value} does not match {pattern}"));
            }
        }
        if let Some(object) = value.as_object() {
            for required in schema.get("required").and_then(Value::as_array).into_iter().flatten() {
                if !object.contains_key(required.as_str().unwrap()) {
                    return Err(format!("{path}: {required} is required"));
                }
            }
            for (field, inner) in object {
                let Some(field_schema) = schema.get("properties").and_then(|p| p.get(field)) else {
                    return Err(format!("{path}: unknown field {field:?}"));
                };
                validate(field_schema, inner, &format!("{path}.{field}"))?;
            }
        }
        Ok(())
    }

    /// The item schemas of `spec.remoteWrite` and `spec.remoteRead` of the Prometheus Operator's
    /// `Prometheus` CRD, test data in ../shared.
    fn prometheus_item_schemas() -> (Value, Value) {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../shared/prometheus-operator-crds/v0.93.0/monitoring.coreos.com_prometheuses.yaml");
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| {
            panic!(
                "{} is missing ({e}): the Prometheus Operator CRDs are test data from ../shared",
                path.display()
            )
        });
        let crd: Value = serde_saphyr::from_str(&text).unwrap();
        let version = crd["spec"]["versions"]
            .as_array()
            .unwrap()
            .iter()
            .find(|v| v["storage"] == json!(true))
            .unwrap();
        let spec = &version["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"];
        (
            spec["remoteWrite"]["items"].clone(),
            spec["remoteRead"]["items"].clone(),
        )
    }

    #[test]
    fn the_blocks_fit_the_prometheus_operator_schema() {
        let (write_schema, read_schema) = prometheus_item_schemas();
        assert!(write_schema["properties"]["url"].is_object(), "{write_schema}");
        let token_and_mtls = AuthSpec {
            bearer_token: Some(key("metrics-auth", "token")),
            tls: Some(TlsSpec {
                secret_name: "metrics-tls".into(),
                server_ca: None,
                client_ca: Some(key("metrics-client-ca", "ca.crt")),
                client_cert_secret_name: Some("prometheus-client".into()),
            }),
            ..Default::default()
        };
        let basic_only = AuthSpec {
            write: Some(Credentials {
                bearer_token: None,
                basic_auth: Some(basic("metrics-write")),
            }),
            read: Some(Credentials {
                bearer_token: None,
                basic_auth: Some(basic("metrics-read")),
            }),
            ..Default::default()
        };
        for auth in [None, Some(&token_and_mtls), Some(&basic_only)] {
            let (write, read) = blocks(auth);
            validate(&write_schema, &write, "remoteWrite[0]").unwrap_or_else(|e| panic!("{e}\n{write}"));
            validate(&read_schema, &read, "remoteRead[0]").unwrap_or_else(|e| panic!("{e}\n{read}"));
        }
        // The check is not a pushover: readRecent is no remote-write field, Basic no type.
        let (_, read) = blocks(Some(&token_and_mtls));
        assert!(validate(&write_schema, &read, "remoteWrite[0]")
            .unwrap_err()
            .contains("readRecent"));
        let mut wrong = read.clone();
        wrong["tlsConfig"]["ca"]["secrett"] = json!({});
        assert!(validate(&read_schema, &wrong, "remoteRead[0]").is_err());
    }
}
