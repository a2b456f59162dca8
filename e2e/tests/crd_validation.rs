//! The CRDs under crds/, applied to a real kube-apiserver: bad objects are refused at
//! `kubectl apply` time with a message saying what to fix; good ones get their defaults.

use kube::api::{Api, DynamicObject, PostParams};
use kube::core::ApiResource;
use kube::Resource;
use promscale_crds::{MetricPolicy, PromscaleStack};
use promscale_e2e::kube_cluster::KubeCluster;
use serde_json::{json, Value};

fn api<K: Resource<DynamicType = ()>>(client: &kube::Client) -> Api<DynamicObject> {
    Api::namespaced_with(client.clone(), "default", &ApiResource::erase::<K>(&()))
}

async fn create(api: &Api<DynamicObject>, object: Value) -> Result<DynamicObject, String> {
    let object: DynamicObject = serde_json::from_value(object).unwrap();
    api.create(&PostParams::default(), &object).await.map_err(|e| match e {
        kube::Error::Api(status) => format!("{} {}", status.code, status.message),
        other => panic!("not an API refusal: {other}"),
    })
}

fn stack(name: &str, spec: Value) -> Value {
    json!({"apiVersion": "promscale.dev/v1alpha1", "kind": "PromscaleStack", "metadata": {"name": name}, "spec": spec})
}

fn policy(name: &str, spec: Value) -> Value {
    json!({"apiVersion": "promscale.dev/v1alpha1", "kind": "MetricPolicy", "metadata": {"name": name}, "spec": spec})
}

fn uri_database() -> Value {
    json!({"uriSecretRef": {"name": "db", "key": "uri"}})
}

#[tokio::test]
async fn invalid_objects_are_refused_with_a_message_and_valid_ones_get_defaults() {
    let cluster = KubeCluster::start().await;
    cluster.install_crds().await;
    let client = cluster.client().await;
    let stacks = api::<PromscaleStack>(&client);
    let policies = api::<MetricPolicy>(&client);

    let refused_stacks = [
        (
            stack(
                "both",
                json!({"database": {"uriSecretRef": {"name": "db", "key": "uri"}, "host": "pg", "user": "u", "passwordSecretRef": {"name": "db", "key": "pw"}}}),
            ),
            "set exactly one of database.uriSecretRef or database.host",
        ),
        (
            stack("neither", json!({"database": {}})),
            "set exactly one of database.uriSecretRef or database.host",
        ),
        (
            stack("nopassword", json!({"database": {"host": "pg", "user": "u"}})),
            "database.host needs database.user and database.passwordSecretRef",
        ),
        (
            stack(
                "shortretention",
                json!({"database": uri_database(), "defaults": {"retentionPeriod": "30s"}}),
            ),
            "must be a duration of at least 1m",
        ),
        (
            stack(
                "zeroretention",
                json!({"database": uri_database(), "defaults": {"chunkInterval": "0h"}}),
            ),
            "must be a duration of at least 1m",
        ),
        (
            stack(
                "negative",
                json!({"database": uri_database(), "connector": {"replicas": -1}}),
            ),
            "replicas must be between 0 and 100",
        ),
        (
            stack("9starts-with-digit", json!({"database": uri_database()})),
            "metadata.name must start with a letter",
        ),
        (
            stack(
                "dburiarg",
                json!({"database": uri_database(), "connector": {"extraArgs": ["--db.uri=postgres://x"]}}),
            ),
            "extraArgs must not set --db.*",
        ),
        (
            stack(
                "nodeport",
                json!({"database": uri_database(), "service": {"nodePort": 30001}}),
            ),
            "service.nodePort needs service.type NodePort or LoadBalancer",
        ),
        (
            stack(
                "loglevel",
                json!({"database": uri_database(), "connector": {"logLevel": "verbose"}}),
            ),
            "logLevel must be one of",
        ),
        (
            stack(
                "leasetimeout",
                json!({"database": uri_database(), "connector": {"highAvailability": {"leaseTimeout": "1 minute"}}}),
            ),
            "leaseTimeout must be a positive duration",
        ),
        (
            stack(
                "tenanttokens",
                json!({"database": uri_database(), "auth": {"tenantTokens": {"name": "tenants", "key": "tokens"}}}),
            ),
            "auth.tenantTokens needs connector.multiTenancy",
        ),
        (
            stack(
                "tenantheader",
                json!({"database": uri_database(), "connector": {"multiTenancy": {"header": "X Tenant"}}}),
            ),
            "multiTenancy.header must be an HTTP header name",
        ),
        (
            stack(
                "tenantdefault",
                json!({"database": uri_database(), "connector": {"multiTenancy": {"defaultWriteTenant": "a|b"}}}),
            ),
            "multiTenancy.defaultWriteTenant must be label or a tenant name",
        ),
        (
            stack(
                "tenantlimits",
                json!({"database": uri_database(), "tenantLimits": [{"tenant": "a|b", "maxActiveSeries": 10}]}),
            ),
            "a tenant is 1 to 150 letters, digits",
        ),
        (
            stack(
                "negativelimit",
                json!({"database": uri_database(), "tenantLimits": [{"tenant": "team-a", "maxActiveSeries": -1}]}),
            ),
            "should be greater than or equal to 0",
        ),
        (
            stack(
                "zerolease",
                json!({"database": uri_database(), "connector": {"highAvailability": {"leaseTimeout": "0s"}}}),
            ),
            "leaseTimeout must be a positive duration",
        ),
        (
            stack(
                "sslmode",
                json!({"database": {"host": "pg", "user": "u", "passwordSecretRef": {"name": "db", "key": "pw"}, "sslMode": "sometimes"}}),
            ),
            "Unsupported value: \"sometimes\"",
        ),
    ];
    for (object, message) in refused_stacks {
        let name = object["metadata"]["name"].as_str().unwrap().to_string();
        let error = create(&stacks, object)
            .await
            .err()
            .unwrap_or_else(|| panic!("stack {name} was accepted"));
        assert!(error.starts_with("422"), "stack {name}: {error}");
        assert!(error.contains(message), "stack {name}: expected {message:?} in {error}");
    }

    let refused_policies = [
        (
            policy(
                "nosettings",
                json!({"stackRef": {"name": "s"}, "metrics": {"names": ["up"]}}),
            ),
            "set at least one of spec.retentionPeriod, spec.chunkInterval, spec.compression or spec.maxActiveSeries",
        ),
        (
            policy(
                "nometrics",
                json!({"stackRef": {"name": "s"}, "metrics": {}, "compression": false}),
            ),
            "metrics needs names, a regex, or both",
        ),
        (
            policy(
                "badname",
                json!({"stackRef": {"name": "s"}, "metrics": {"names": ["up", ""]}, "compression": false}),
            ),
            "metrics.names must not hold an empty name",
        ),
        (
            policy(
                "badduration",
                json!({"stackRef": {"name": "s"}, "metrics": {"regex": "debug_.*"}, "retentionPeriod": "3 days"}),
            ),
            "must be a duration of at least 1m",
        ),
        (
            policy(
                "outoforder",
                json!({"stackRef": {"name": "s"}, "metrics": {"regex": "debug_.*"}, "chunkInterval": "30m1h"}),
            ),
            "must be a duration of at least 1m",
        ),
        (
            policy(
                "nostack",
                json!({"stackRef": {"name": ""}, "metrics": {"regex": "x"}, "compression": true}),
            ),
            "stackRef.name must not be empty",
        ),
    ];
    for (object, message) in refused_policies {
        let name = object["metadata"]["name"].as_str().unwrap().to_string();
        let error = create(&policies, object)
            .await
            .err()
            .unwrap_or_else(|| panic!("policy {name} was accepted"));
        assert!(error.starts_with("422"), "policy {name}: {error}");
        assert!(
            error.contains(message),
            "policy {name}: expected {message:?} in {error}"
        );
    }

    // A minimal stack is accepted and defaulted by the API server, as `kubectl apply` shows it.
    let created = create(&stacks, stack("minimal", json!({"database": uri_database()})))
        .await
        .expect("a minimal stack is valid");
    let spec = &created.data["spec"];
    assert_eq!(spec["connector"]["replicas"], 1);
    assert_eq!(spec["connector"]["logLevel"], "info");
    assert_eq!(
        spec["defaults"],
        json!({"retentionPeriod": "90d", "chunkInterval": "8h", "compression": true})
    );
    assert_eq!(spec["service"]["type"], "ClusterIP");
    assert_eq!(spec["service"]["port"], 9201);
    let typed: PromscaleStack = serde_json::from_value(serde_json::to_value(&created).unwrap()).unwrap();
    assert_eq!(typed.spec.connector.replicas, 1);
    // HA with its defaults, and with every field.
    for (name, ha) in [
        ("hadefaults", json!({})),
        (
            "hafull",
            json!({"clusterLabel": "prometheus", "replicaLabel": "prometheus_replica", "leaseTimeout": "1m30s"}),
        ),
    ] {
        let created = create(
            &stacks,
            stack(
                name,
                json!({"database": uri_database(), "connector": {"highAvailability": ha.clone()}}),
            ),
        )
        .await
        .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(created.data["spec"]["connector"]["highAvailability"], ha);
    }
    for (name, tenancy) in [
        ("tenancydefaults", json!({})),
        (
            "tenancyfull",
            json!({"header": "THANOS-TENANT", "defaultWriteTenant": "team-a", "allowCrossTenantQueries": true}),
        ),
    ] {
        let created = create(
            &stacks,
            stack(
                name,
                json!({"database": uri_database(), "connector": {"multiTenancy": tenancy.clone()}}),
            ),
        )
        .await
        .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(created.data["spec"]["connector"]["multiTenancy"], tenancy);
    }
    let limits = json!({"maxLabelsPerSeries": 30, "ingestionRate": 100000});
    let created = create(
        &stacks,
        stack(
            "limits",
            json!({"database": uri_database(), "connector": {"limits": limits.clone()}}),
        ),
    )
    .await
    .expect("limits are valid");
    assert_eq!(created.data["spec"]["connector"]["limits"], limits);
    assert!(
        create(
            &stacks,
            stack(
                "negativelimit",
                json!({"database": uri_database(), "connector": {"limits": {"ingestionRate": -1}}})
            ),
        )
        .await
        .is_err(),
        "a negative rate is refused"
    );

    let created = create(
        &policies,
        policy(
            "debug",
            json!({"stackRef": {"name": "minimal"}, "metrics": {"regex": "debug_.*", "names": ["queue_depth", "http.server.duration"]}, "retentionPeriod": "1y2w3d4h5m", "compression": false}),
        ),
    )
    .await
    .expect("a policy with a regex, names (a UTF-8 one too) and two settings is valid");
    assert_eq!(created.data["spec"]["retentionPeriod"], "1y2w3d4h5m");
    assert_eq!(created.data["spec"]["metrics"]["names"][1], "http.server.duration");
}
