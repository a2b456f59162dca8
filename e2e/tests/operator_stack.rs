//! The operator on a real kube-apiserver and a real PostgreSQL: a PromscaleStack becomes its
//! objects and database defaults, spec changes roll the Deployment, drift is reverted, and a
//! database outage is reported, retried and survived. The password never leaks.

use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Service, ServiceAccount};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use kube::api::{Api, DeleteParams, ObjectMeta, Patch, PatchParams};
use kube::ResourceExt;
use promscale_crds::stack::MetricDefaults;
use promscale_crds::PromscaleStack;
use promscale_e2e::k8s::{apply, events_about, has_condition, put_secret, uri_stack, wait_until};
use promscale_e2e::kube_cluster::KubeCluster;
use promscale_e2e::operator::Operator;
use promscale_e2e::postgres::TestPostgres;
use serde_json::json;

const WAIT: Duration = Duration::from_secs(60);

fn password_of(uri: &str) -> String {
    let after_scheme = uri.split("://").nth(1).unwrap();
    let credentials = after_scheme.split('@').next().unwrap();
    credentials.split(':').nth(1).unwrap().to_string()
}

fn stack(name: &str, secret: &str, replicas: i32, defaults: MetricDefaults) -> PromscaleStack {
    let mut stack = uri_stack(name, "default", secret);
    stack.spec.connector.replicas = replicas;
    stack.spec.connector.extra_args = vec!["--ingest.writers=2".into()];
    stack.spec.connector.node_selector = [("kubernetes.io/os".to_string(), "linux".to_string())].into();
    stack.spec.defaults = defaults;
    stack
}

fn defaults(retention: &str, chunk: &str, compression: bool) -> MetricDefaults {
    MetricDefaults {
        retention_period: retention.into(),
        chunk_interval: chunk.into(),
        compression,
    }
}

async fn database_defaults(pool: &sqlx::PgPool) -> Option<(String, String, bool)> {
    sqlx::query_as(
        "SELECT prom_api.get_default_retention_period()::text, prom_api.get_default_chunk_interval()::text,
                prom_api.get_default_compression_setting()",
    )
    .fetch_one(pool)
    .await
    .ok()
}

#[tokio::test]
async fn a_stack_becomes_its_objects_and_database_defaults_and_stays_that_way() {
    let cluster = KubeCluster::start().await;
    cluster.install_crds().await;
    let client = cluster.client().await;
    let pg = TestPostgres::start();
    let password = password_of(&pg.uri());
    put_secret(&client, "default", "metrics-db", "uri", &pg.uri()).await;
    let mut operator = Operator::start(&cluster.admin_kubeconfig(), &[]).await;

    let stacks: Api<PromscaleStack> = Api::namespaced(client.clone(), "default");
    let created = apply(
        &stacks,
        &stack("metrics", "metrics-db", 2, defaults("30d", "2h", false)),
    )
    .await;
    let uid = created.uid().unwrap();

    // --- every owned object, owned by the stack
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), "default");
    let deployment = wait_until(&deployments, "metrics-connector", "created", WAIT, |_| true).await;
    let owner_of = |meta: &ObjectMeta| {
        let owners = meta.owner_references.clone().unwrap_or_default();
        assert_eq!(owners.len(), 1, "{:?} has one owner", meta.name);
        let owner = &owners[0];
        assert_eq!(
            (owner.kind.as_str(), owner.name.as_str(), owner.uid.as_str()),
            ("PromscaleStack", "metrics", uid.as_str())
        );
        assert_eq!(owner.controller, Some(true));
        assert_eq!(owner.block_owner_deletion, Some(true));
    };
    owner_of(&deployment.metadata);
    let spec = deployment.spec.clone().unwrap();
    assert_eq!(spec.replicas, Some(2));
    let template = spec.template.clone();
    let pod = template.spec.clone().unwrap();
    let container = &pod.containers[0];
    assert_eq!(
        container.image.as_deref(),
        Some(format!("ghcr.io/promscale-rs/promscale-connector:{}", env!("CARGO_PKG_VERSION")).as_str())
    );
    assert_eq!(container.args.clone().unwrap(), vec!["--ingest.writers=2"]);
    assert_eq!(pod.service_account_name.as_deref(), Some("metrics-connector"));
    assert_eq!(pod.node_selector.clone().unwrap()["kubernetes.io/os"], "linux");
    let security = container.security_context.clone().unwrap();
    assert_eq!(security.read_only_root_filesystem, Some(true));
    assert_eq!(security.allow_privilege_escalation, Some(false));
    assert_eq!(pod.security_context.clone().unwrap().run_as_non_root, Some(true));
    let probe_path = |probe: &Option<k8s_openapi::api::core::v1::Probe>| {
        probe
            .as_ref()
            .and_then(|p| p.http_get.as_ref())
            .and_then(|h| h.path.clone())
    };
    assert_eq!(probe_path(&container.readiness_probe).as_deref(), Some("/readyz"));
    assert_eq!(probe_path(&container.liveness_probe).as_deref(), Some("/healthz"));
    let env = container.env.clone().unwrap();
    let uri_env = env
        .iter()
        .find(|e| e.name == "PROMSCALE_DB_URI")
        .expect("the URI comes from the Secret");
    let secret_ref = uri_env.value_from.clone().unwrap().secret_key_ref.unwrap();
    assert_eq!(
        (secret_ref.name.as_str(), secret_ref.key.as_str()),
        ("metrics-db", "uri")
    );
    assert!(env.iter().any(|e| e.name == "POD_NAME"
        && e.value_from.as_ref().unwrap().field_ref.as_ref().unwrap().field_path == "metadata.name"));
    let pod_labels = template.metadata.as_ref().unwrap().labels.clone().unwrap();
    assert!(
        spec.selector
            .match_labels
            .clone()
            .unwrap()
            .iter()
            .all(|(k, v)| pod_labels.get(k) == Some(v)),
        "the selector selects the pod template"
    );

    let config_maps: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    let config = wait_until(&config_maps, "metrics-connector", "created", WAIT, |_| true).await;
    owner_of(&config.metadata);
    let data = config.data.clone().unwrap();
    assert_eq!(data["PROMSCALE_STACK_NAME"], "metrics");
    assert_eq!(data["PROMSCALE_WEB_LISTEN_ADDRESS"], "0.0.0.0:9201");

    let services: Api<Service> = Api::namespaced(client.clone(), "default");
    let service = services.get("metrics-connector").await.unwrap();
    owner_of(&service.metadata);
    let service_spec = service.spec.clone().unwrap();
    assert_eq!(service_spec.ports.unwrap()[0].port, 9201);
    assert_eq!(service_spec.selector, spec.selector.match_labels);

    let accounts: Api<ServiceAccount> = Api::namespaced(client.clone(), "default");
    owner_of(&accounts.get("metrics-connector").await.unwrap().metadata);
    let roles: Api<Role> = Api::namespaced(client.clone(), "default");
    let role = roles.get("metrics-connector").await.unwrap();
    owner_of(&role.metadata);
    let rules = role.rules.unwrap();
    assert!(
        rules
            .iter()
            .all(|r| r.resource_names == Some(vec!["metrics".to_string()])),
        "the connector may touch its own stack only"
    );
    assert!(rules
        .iter()
        .any(|r| r.resources == Some(vec!["promscalestacks/status".to_string()])
            && r.verbs.contains(&"patch".to_string())));
    let bindings: Api<RoleBinding> = Api::namespaced(client.clone(), "default");
    let binding = bindings.get("metrics-connector").await.unwrap();
    owner_of(&binding.metadata);
    assert_eq!(binding.subjects.unwrap()[0].name, "metrics-connector");
    let budgets: Api<PodDisruptionBudget> = Api::namespaced(client.clone(), "default");
    owner_of(&budgets.get("metrics-connector").await.unwrap().metadata);

    // --- before any connector created the schema: waiting, with the endpoints to paste
    let waiting = wait_until(&stacks, "metrics", "waiting for the schema", WAIT, |s| {
        s.status
            .as_ref()
            .is_some_and(|st| has_condition(&st.conditions, "Ready", "False", "WaitingForSchema"))
    })
    .await;
    let endpoints = waiting.status.clone().unwrap().endpoints.unwrap();
    assert_eq!(
        endpoints.remote_write,
        "http://metrics-connector.default.svc.cluster.local:9201/write"
    );
    assert_eq!(
        endpoints.remote_read,
        "http://metrics-connector.default.svc.cluster.local:9201/read"
    );
    assert_eq!(
        endpoints.query,
        "http://metrics-connector.default.svc.cluster.local:9201"
    );

    // --- the schema appears: the stack's defaults land in the database
    let pool = pg.pool().await;
    promscale_connector::storage::migrations::migrate(&pool).await.unwrap();
    promscale_e2e::wait_for("the stack defaults in the database", WAIT, || {
        let pool = pool.clone();
        async move {
            (database_defaults(&pool).await? == ("30 days".to_string(), "02:00:00".to_string(), false)).then_some(())
        }
    })
    .await;
    let status = wait_until(&stacks, "metrics", "waiting for connectors", WAIT, |s| {
        s.status
            .as_ref()
            .is_some_and(|st| has_condition(&st.conditions, "Ready", "False", "NoConnectorReady"))
    })
    .await
    .status
    .unwrap();
    assert!(has_condition(&status.conditions, "Degraded", "False", "AsExpected"));
    assert!(has_condition(
        &status.conditions,
        "Progressing",
        "True",
        "WaitingForConnectors"
    ));
    assert_eq!(status.connectors_ready.as_deref(), Some("0/2"));
    assert_eq!(status.observed_generation, created.metadata.generation);
    let reasons: Vec<String> = events_about(&client, "default", "metrics")
        .await
        .into_iter()
        .filter_map(|e| e.reason)
        .collect();
    assert!(
        reasons.contains(&"DeploymentUpdated".to_string()),
        "events: {reasons:?}"
    );
    assert!(reasons.contains(&"DefaultsApplied".to_string()), "events: {reasons:?}");

    // --- a spec change rolls the Deployment and changes the database defaults
    let old_template = deployment.spec.clone().unwrap().template;
    let mut changed = stack("metrics", "metrics-db", 3, defaults("60d", "2h", false));
    changed.spec.connector.log_level = "debug".into();
    let changed = apply(&stacks, &changed).await;
    let rolled = wait_until(&deployments, "metrics-connector", "rolled to the new spec", WAIT, |d| {
        d.spec
            .as_ref()
            .is_some_and(|s| s.replicas == Some(3) && s.template != old_template)
    })
    .await;
    let hash = promscale_e2e::k8s::config_hash;
    assert_ne!(
        hash(&rolled),
        hash(&deployment),
        "a changed ConfigMap changes the pod template"
    );
    assert_eq!(
        config_maps.get("metrics-connector").await.unwrap().data.unwrap()["PROMSCALE_LOG_LEVEL"],
        "debug"
    );
    promscale_e2e::wait_for("the new retention default", WAIT, || {
        let pool = pool.clone();
        async move { (database_defaults(&pool).await?.0 == "60 days").then_some(()) }
    })
    .await;
    wait_until(&stacks, "metrics", "status of the new generation", WAIT, |s| {
        s.status
            .as_ref()
            .is_some_and(|st| st.observed_generation == changed.metadata.generation)
    })
    .await;

    // --- drift is reverted: a hand edit of the Deployment, a deleted Service
    deployments
        .patch(
            "metrics-connector",
            &PatchParams::apply("kubectl-edit").force(),
            &Patch::Apply(json!({"apiVersion": "apps/v1", "kind": "Deployment", "spec": {"replicas": 1}})),
        )
        .await
        .unwrap();
    wait_until(&deployments, "metrics-connector", "replicas set back to 3", WAIT, |d| {
        d.spec.as_ref().is_some_and(|s| s.replicas == Some(3))
    })
    .await;
    services
        .delete("metrics-connector", &DeleteParams::default())
        .await
        .unwrap();
    wait_until(&services, "metrics-connector", "recreated", WAIT, |s| {
        s.metadata.deletion_timestamp.is_none()
    })
    .await;

    // --- a database outage: Degraded with the reason, retried, never a crash
    let mut pg = pg;
    pool.close().await;
    pg.stop(promscale_connector::embedded_db::StopMode::Fast);
    let degraded = wait_until(&stacks, "metrics", "degraded by the outage", WAIT, |s| {
        s.status
            .as_ref()
            .is_some_and(|st| has_condition(&st.conditions, "Degraded", "True", "DatabaseUnreachable"))
    })
    .await;
    let message = &promscale_e2e::k8s::condition(&degraded.status.as_ref().unwrap().conditions, "Degraded")
        .unwrap()
        .message;
    assert!(message.contains("cannot reach the database"), "{message}");
    assert!(operator.running(), "a database outage must not stop the operator");
    let metrics = operator.metrics().await;
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("promscale_operator_reconcile_errors_total{")
                && l.contains("reason=\"DatabaseUnreachable\"")),
        "{metrics}"
    );
    assert!(metrics.contains("promscale_operator_leader 1"), "{metrics}");
    let warnings: Vec<_> = events_about(&client, "default", "metrics")
        .await
        .into_iter()
        .filter(|e| e.type_.as_deref() == Some("Warning"))
        .filter_map(|e| e.reason)
        .collect();
    assert!(warnings.contains(&"DatabaseUnreachable".to_string()), "{warnings:?}");
    pg.restart();
    wait_until(&stacks, "metrics", "recovered", WAIT, |s| {
        s.status
            .as_ref()
            .is_some_and(|st| has_condition(&st.conditions, "Degraded", "False", "AsExpected"))
    })
    .await;

    // --- a missing Secret is named in the status
    apply(
        &stacks,
        &stack("orphan", "no-such-secret", 1, defaults("90d", "8h", true)),
    )
    .await;
    let orphan = wait_until(&stacks, "orphan", "reporting the missing Secret", WAIT, |s| {
        s.status
            .as_ref()
            .is_some_and(|st| has_condition(&st.conditions, "Degraded", "True", "SecretMissing"))
    })
    .await;
    let message = promscale_e2e::k8s::condition(&orphan.status.unwrap().conditions, "Ready")
        .unwrap()
        .message
        .clone();
    assert!(message.contains("\"no-such-secret\""), "{message}");

    // --- deleting a stack: no finalizer holds it, and its objects point at it, so that the
    //     garbage collector (not running here) removes them with it
    let orphan_uid = stacks.get("orphan").await.unwrap().uid().unwrap();
    stacks.delete("orphan", &DeleteParams::default()).await.unwrap();
    promscale_e2e::wait_for("the orphan stack to be gone", WAIT, || {
        let stacks = stacks.clone();
        async move { stacks.get_opt("orphan").await.unwrap().is_none().then_some(()) }
    })
    .await;
    let left = deployments.get("orphan-connector").await.unwrap();
    assert_eq!(left.metadata.owner_references.unwrap()[0].uid, orphan_uid);
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(operator.running(), "a deleted stack must not stop the operator");

    // --- the password appears nowhere: objects, status, events, logs
    let mut everything = String::new();
    everything += &serde_json::to_string(&deployments.get("metrics-connector").await.unwrap()).unwrap();
    everything += &serde_json::to_string(&config_maps.get("metrics-connector").await.unwrap()).unwrap();
    everything += &serde_json::to_string(&stacks.get("metrics").await.unwrap()).unwrap();
    everything += &serde_json::to_string(&events_about(&client, "default", "metrics").await).unwrap();
    everything += &operator.log();
    assert!(everything.len() > 10_000);
    assert!(!everything.contains(&password), "the database password leaked");
}
