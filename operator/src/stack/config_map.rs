//! The connector's non-secret settings, as the environment of its container.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::ConfigMap;
use promscale_crds::stack::CONNECTOR_PORT;
use promscale_crds::PromscaleStackSpec;

use super::names::StackNames;

/// Environment variables of the connector (see `promscale-connector --help`); credentials are
/// not here but in Secret references of the Deployment.
pub fn connector_env(names: &StackNames, spec: &PromscaleStackSpec) -> BTreeMap<String, String> {
    let mut env = BTreeMap::from([
        (
            "PROMSCALE_WEB_LISTEN_ADDRESS".to_string(),
            format!("0.0.0.0:{CONNECTOR_PORT}"),
        ),
        ("PROMSCALE_LOG_LEVEL".to_string(), spec.connector.log_level.clone()),
        ("PROMSCALE_STACK_NAME".to_string(), names.stack.clone()),
    ]);
    let database = &spec.database;
    let mut set = |key: &str, value: Option<String>| {
        if let Some(value) = value {
            env.insert(key.to_string(), value);
        }
    };
    set("PROMSCALE_DB_HOST", database.host.clone());
    set("PROMSCALE_DB_PORT", database.port.map(|p| p.to_string()));
    set("PROMSCALE_DB_NAME", database.dbname.clone());
    set("PROMSCALE_DB_USER", database.user.clone());
    set(
        "PROMSCALE_DB_SSL_MODE",
        database.ssl_mode.map(|m| m.as_str().to_string()),
    );
    // An environment variable, not a flag: a flag in extraArgs then overrides it instead of
    // being refused as given twice.
    set(
        "PROMSCALE_METRICS_PROMQL_SEMANTICS",
        spec.connector.promql_semantics.map(|s| s.as_str().to_string()),
    );
    if let Some(limits) = &spec.connector.limits {
        let number = |n: Option<u64>| n.map(|n| n.to_string());
        set(
            "PROMSCALE_LIMITS_MAX_LABELS_PER_SERIES",
            number(limits.max_labels_per_series.map(u64::from)),
        );
        set(
            "PROMSCALE_LIMITS_MAX_LABEL_NAME_LENGTH",
            number(limits.max_label_name_length.map(u64::from)),
        );
        set(
            "PROMSCALE_LIMITS_MAX_LABEL_VALUE_LENGTH",
            number(limits.max_label_value_length.map(u64::from)),
        );
        set("PROMSCALE_LIMITS_INGESTION_RATE", number(limits.ingestion_rate));
        set("PROMSCALE_LIMITS_INGESTION_BURST", number(limits.ingestion_burst));
        set("PROMSCALE_LIMITS_MAX_ACTIVE_SERIES", number(limits.max_active_series));
        set(
            "PROMSCALE_LIMITS_MAX_ACTIVE_SERIES_PER_METRIC",
            number(limits.max_active_series_per_metric),
        );
        set(
            "PROMSCALE_LIMITS_MAX_NEW_SERIES_PER_MINUTE",
            number(limits.max_new_series_per_minute),
        );
    }
    if let Some(tenancy) = &spec.connector.multi_tenancy {
        set("PROMSCALE_METRICS_MULTI_TENANCY", Some("true".to_string()));
        set("PROMSCALE_METRICS_MULTI_TENANCY_HEADER", tenancy.header.clone());
        set(
            "PROMSCALE_METRICS_MULTI_TENANCY_DEFAULT_WRITE_TENANT",
            tenancy.default_write_tenant.clone(),
        );
        set(
            "PROMSCALE_METRICS_MULTI_TENANCY_ALLOW_CROSS_TENANT_QUERIES",
            tenancy.allow_cross_tenant_queries.map(|b| b.to_string()),
        );
    }
    if let Some(ha) = &spec.connector.high_availability {
        set("PROMSCALE_METRICS_HIGH_AVAILABILITY", Some("true".to_string()));
        set("PROMSCALE_METRICS_HA_CLUSTER_LABEL", ha.cluster_label.clone());
        set("PROMSCALE_METRICS_HA_REPLICA_LABEL", ha.replica_label.clone());
        set("PROMSCALE_METRICS_HA_LEASE_TIMEOUT", ha.lease_timeout.clone());
    }
    env
}

pub fn config_map(names: &StackNames, data: BTreeMap<String, String>) -> ConfigMap {
    ConfigMap {
        metadata: names.metadata(),
        data: Some(data),
        ..Default::default()
    }
}
