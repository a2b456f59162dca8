//! The settings the operator hands a connector through its container's environment (the
//! stack's ConfigMap) are ones the connector reads, with values it accepts: a renamed flag or
//! a value the connector refuses would otherwise only show as a crash-looping pod.

use clap::{CommandFactory, Parser};
use promscale_connector::config::Config;
use promscale_crds::PromscaleStack;
use promscale_operator::stack::config_map::connector_env;
use promscale_operator::stack::names::StackNames;

#[test]
fn every_setting_of_a_stack_reaches_a_connector_flag_it_accepts() {
    // Every optional connector and database setting that becomes an environment variable.
    let mut stack: PromscaleStack = serde_json::from_value(serde_json::json!({
        "apiVersion": "promscale.dev/v1alpha1",
        "kind": "PromscaleStack",
        "metadata": {"name": "metrics", "namespace": "monitoring", "uid": "0a1b2c3d"},
        "spec": {
            "database": {
                "host": "db.example",
                "port": 5433,
                "dbname": "metrics",
                "user": "promscale",
                "passwordSecretRef": {"name": "metrics-db", "key": "password"},
                "sslMode": "verify-full"
            },
            "connector": {
                "logLevel": "debug",
                "promqlSemantics": "prometheus2",
                "highAvailability": {"clusterLabel": "prometheus", "replicaLabel": "prometheus_replica", "leaseTimeout": "1m30s"},
                "limits": {"maxLabelsPerSeries": 30, "maxLabelNameLength": 128, "maxLabelValueLength": 2048, "ingestionRate": 100000, "ingestionBurst": 200000, "maxActiveSeries": 50000, "maxActiveSeriesPerMetric": 5000, "maxNewSeriesPerMinute": 1000},
                "multiTenancy": {"header": "THANOS-TENANT", "defaultWriteTenant": "label", "allowCrossTenantQueries": true}
            }
        }
    }))
    .unwrap();
    stack.metadata.uid = Some("0a1b2c3d".into());
    let names = StackNames::of(&stack).unwrap();
    let env = connector_env(&names, &stack.spec);
    assert!(env.contains_key("PROMSCALE_METRICS_HIGH_AVAILABILITY"), "{env:?}");
    let command = Config::command();
    let mut args = vec!["promscale-connector".to_string()];
    for (key, value) in &env {
        let arg = command
            .get_arguments()
            .find(|a| a.get_env().is_some_and(|e| e == key.as_str()))
            .unwrap_or_else(|| panic!("the connector reads no {key}"));
        let long = arg.get_long().unwrap();
        // As clap reads the environment: a switch is on for "true".
        if arg.get_action().takes_values() {
            args.push(format!("--{long}={value}"));
        } else {
            assert_eq!(value, "true", "{key}");
            args.push(format!("--{long}"));
        }
    }
    // The same values as flags, through the connector's own parsers.
    let parsed = Config::try_parse_from(&args);
    assert!(parsed.is_ok(), "{args:?}: {}", parsed.err().unwrap());
    let config = parsed.unwrap();
    assert!(config.ha);
    assert_eq!(config.ha_replica_label, "prometheus_replica");
    assert_eq!(config.ha_lease_timeout, std::time::Duration::from_secs(90));
    assert_eq!(config.label_limits().max_value_bytes, 2048);
    assert_eq!(config.limits_ingestion_burst, 200_000.0);
    let series_limits = config.series_limit_flags();
    assert_eq!(
        (
            series_limits.max_active_series,
            series_limits.max_active_series_per_metric,
            series_limits.max_new_series_per_minute
        ),
        (50_000, 5_000, 1_000)
    );
    let tenancy = promscale_connector::tenancy::TenancyOptions::from_config(&config)
        .unwrap()
        .expect("tenancy on");
    assert_eq!(tenancy.header_text, "THANOS-TENANT");
    assert_eq!(
        tenancy.default_write,
        promscale_connector::tenancy::DefaultWrite::FromLabel
    );
    assert!(tenancy.cross_tenant);
}
