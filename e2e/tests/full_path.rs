//! The whole path a user takes, on a real kube-apiserver, PostgreSQL and Prometheus:
//! `helm install` the chart, apply the chart's examples (the Prometheus Operator `Prometheus`
//! checked by its real CRD schema), the operator (the project's image, run as the pod its
//! Deployment describes) reconciles the stack, a connector (the project's image) runs as the
//! pod of the generated Deployment, Prometheus remote-writes into it, and the data answers
//! PromQL and SQL with the policies' settings in place. Then GitOps re-applies change nothing, `helm upgrade` upgrades the operator and the
//! CRDs, and `helm uninstall` keeps the CRDs and the user's objects.
//!
//! `make e2e` runs this test alone.

use std::path::{Path, PathBuf};
use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, DynamicObject, ObjectMeta, PostParams};
use kube::{Client, ResourceExt};
use promscale_crds::{MetricPolicy, PromscaleStack};
use promscale_e2e::container::ContainerPod;
use promscale_e2e::helm::{chart_dir, Helm};
use promscale_e2e::k8s::{apply_yaml, has_condition, wait_until};
use promscale_e2e::kube_cluster::KubeCluster;
use promscale_e2e::kubeconform::Kubeconform;
use promscale_e2e::pod::PodRun;
use promscale_e2e::postgres::TestPostgres;
use promscale_e2e::prometheus::Prometheus;
use promscale_e2e::{free_port, wait_for};
use serde_json::Value;
use sqlx::PgPool;

const WAIT: Duration = Duration::from_secs(90);
const KUBERNETES_VERSION: &str = "1.35.4";

fn examples() -> PathBuf {
    chart_dir().join("examples")
}

fn example(name: &str) -> String {
    std::fs::read_to_string(examples().join(name)).unwrap()
}

fn prometheus_operator_crds() -> Vec<PathBuf> {
    let folder = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/prometheus-operator-crds/v0.93.0");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&folder)
        .unwrap_or_else(|e| {
            panic!(
                "{} is missing ({e}): the Prometheus Operator CRDs are test data from ../shared",
                folder.display()
            )
        })
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .collect();
    files.sort();
    assert_eq!(files.len(), 5, "the five CRDs of the Prometheus Operator");
    files
}

/// Runs the first container of a Deployment's pod as a container of its image, with a real
/// token of its service account.
async fn run_pod(cluster: &KubeCluster, client: &Client, namespace: &str, deployment: &str) -> ContainerPod {
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), namespace);
    let deployment = wait_until(&deployments, deployment, "created", WAIT, |_| true).await;
    let run = PodRun::from_deployment(client, &deployment).await;
    let token = cluster.service_account_token(namespace, &run.service_account).await;
    let pod = ContainerPod::start(&run, cluster, &token);
    pod.wait_ready(WAIT).await;
    pod
}

async fn metric_settings(pool: &PgPool, metric: &str) -> Option<(String, String, bool)> {
    sqlx::query_as(
        "SELECT retention_period::text, chunk_interval::text, compression FROM prom_info.metric WHERE metric_name = $1",
    )
    .bind(metric)
    .fetch_optional(pool)
    .await
    .unwrap()
}

/// A PromQL query as `tenant` (the example stack keeps tenants apart).
async fn promql(url: &str, tenant: &str, query: &str) -> Value {
    let response = reqwest::Client::new()
        .get(url)
        .header("X-Scope-OrgID", tenant)
        .query(&[("query", query)])
        .send()
        .await
        .unwrap();
    response.json().await.unwrap()
}

#[tokio::test]
async fn helm_install_to_promql_and_sql_then_upgrade_and_uninstall() {
    let cluster = KubeCluster::start().await;
    let client = cluster.client().await;
    for file in prometheus_operator_crds() {
        cluster.apply_crd_file(&file).await;
    }
    let namespaces: Api<Namespace> = Api::all(client.clone());
    namespaces
        .create(
            &PostParams::default(),
            &Namespace {
                metadata: ObjectMeta {
                    name: Some("monitoring".into()),
                    ..Default::default()
                },
                ..Default::default()
            },
        )
        .await
        .unwrap();

    // --- helm install, as the README says
    let helm = Helm::new(&cluster.admin_kubeconfig());
    let metrics_port = free_port().unwrap().to_string();
    let chart = chart_dir();
    let chart = chart.to_str().unwrap();
    let set_port = format!("metrics.port={metrics_port}");
    helm.run(&[
        "install",
        "promscale",
        chart,
        "--namespace",
        "promscale-system",
        "--create-namespace",
        "--set",
        &set_port,
        "--set",
        "leaderElection.leaseDuration=6s",
        // Connector reports and new metrics are looked at on each resync; a test waits less.
        "--set",
        "extraArgs={--policy.resync-interval=3s,--stack.resync-interval=3s}",
    ]);
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    for name in ["promscalestacks.promscale.dev", "metricpolicies.promscale.dev"] {
        let crd = crds
            .get(name)
            .await
            .unwrap_or_else(|e| panic!("the chart installs {name}: {e}"));
        assert_eq!(
            crd.annotations().get("helm.sh/resource-policy").map(String::as_str),
            Some("keep")
        );
        assert_eq!(
            crd.labels().get("helm.sh/chart").map(String::as_str),
            Some("promscale-operator-0.1.0")
        );
    }
    let operator_deployments: Api<Deployment> = Api::namespaced(client.clone(), "promscale-system");
    let operator_deployment = operator_deployments.get("promscale-operator").await.unwrap();
    let operator_pod_spec = operator_deployment.spec.clone().unwrap().template.spec.unwrap();
    let security = operator_pod_spec.containers[0].security_context.clone().unwrap();
    assert_eq!(security.read_only_root_filesystem, Some(true));
    assert_eq!(security.run_as_non_root, Some(true));
    assert_eq!(
        operator_pod_spec.containers[0].image.as_deref(),
        Some("ghcr.io/promscale-rs/promscale-operator:0.1.0")
    );

    // --- the operator, as its pod: its image, the chart's args and env, the chart's
    //     ServiceAccount (so the chart's RBAC is what it runs with)
    let mut operator = run_pod(&cluster, &client, "promscale-system", "promscale-operator").await;
    wait_for("the operator to lead", WAIT, || {
        let url = operator.url("http-metrics", "/metrics");
        async move {
            let text = reqwest::get(url).await.ok()?.text().await.ok()?;
            text.contains("promscale_operator_leader 1").then_some(())
        }
    })
    .await;

    // --- the examples, with the test database's URI in the Secret
    let pg = TestPostgres::start();
    let secret = example("postgres-secret.yaml").replace(
        "postgres://promscale:CHANGE-ME@postgres.monitoring.svc:5432/metrics?sslmode=require",
        &pg.uri(),
    );
    assert!(
        secret.contains(&pg.uri()),
        "the example Secret holds the URI the README says"
    );
    apply_yaml(&client, &secret, "kubectl").await.unwrap();
    let manifests: Vec<String> = [
        "promscalestack.yaml",
        "metricpolicy-runtime.yaml",
        "metricpolicy-slo.yaml",
        "prometheus.yaml",
        "prometheus-team-b.yaml",
    ]
    .iter()
    .map(|f| example(f))
    .collect();
    for manifest in &manifests {
        apply_yaml(&client, manifest, "argocd-controller").await.unwrap();
    }
    // The Prometheus Operator's schema refuses what it does not know: it really checks.
    let bad = example("prometheus.yaml").replace("readRecent: true", "readRecent: \"yes\"");
    let refused = apply_yaml(&client, &bad, "argocd-controller")
        .await
        .expect_err("a bad Prometheus is refused");
    assert!(refused.to_string().contains("readRecent"), "{refused}");

    // --- the connector, as the pod of the Deployment the operator generated: its image, user,
    //     read-only root filesystem, env from the ConfigMap and Secret, in-cluster identity
    let connector = run_pod(&cluster, &client, "monitoring", "metrics-connector").await;
    let stacks: Api<PromscaleStack> = Api::namespaced(client.clone(), "monitoring");
    let stack = stacks.get("metrics").await.unwrap();
    let endpoints = stack.status.clone().unwrap().endpoints.unwrap();

    // --- Prometheus remote-writes there, configured from the example Prometheus resource;
    //     the Service's DNS name stands for the pod, as cluster DNS would resolve it
    let prometheus_object: DynamicObject = serde_saphyr::from_str(&example("prometheus.yaml")).unwrap();
    let remote_write = prometheus_object.data["spec"]["remoteWrite"][0]["url"]
        .as_str()
        .unwrap()
        .to_string();
    let remote_read = prometheus_object.data["spec"]["remoteRead"][0]["url"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(
        remote_write, endpoints.remote_write,
        "the example points at the stack's endpoint"
    );
    assert_eq!(remote_read, endpoints.remote_read);
    let service_address = "metrics-connector.monitoring.svc.cluster.local:9201";
    let pod_address = format!("127.0.0.1:{}", connector.run.port("http"));
    let (write_url, read_url) = (
        remote_write.replace(service_address, &pod_address),
        remote_read.replace(service_address, &pod_address),
    );
    // Each example Prometheus as the first replica of its HA pair, with the external labels
    // the Prometheus Operator gives it (`<namespace>/<name>` under the names the example
    // sets) and the tenant header of its remoteWrite and remoteRead. Prometheus 3: Debian's
    // 2.42 does not send `headers`.
    let mut prometheus_servers = Vec::new();
    let mut tenants = Vec::new();
    for file in ["prometheus.yaml", "prometheus-team-b.yaml"] {
        let object: DynamicObject = serde_saphyr::from_str(&example(file)).unwrap();
        let spec = &object.data["spec"];
        let text = |v: &Value| v.as_str().unwrap_or_else(|| panic!("{file}: {v}")).to_string();
        assert_eq!(text(&spec["remoteWrite"][0]["url"]), remote_write, "{file}");
        assert_eq!(text(&spec["remoteRead"][0]["url"]), remote_read, "{file}");
        let tenant = text(&spec["remoteWrite"][0]["headers"]["X-Scope-OrgID"]);
        assert_eq!(
            text(&spec["remoteRead"][0]["headers"]["X-Scope-OrgID"]),
            tenant,
            "{file}"
        );
        let cluster = format!(
            "{}/{}",
            object.metadata.namespace.clone().unwrap(),
            object.metadata.name.clone().unwrap()
        );
        let (cluster_label, replica_label) = (
            text(&spec["prometheusExternalLabelName"]),
            text(&spec["replicaExternalLabelName"]),
        );
        let (write_url, read_url) = (write_url.clone(), read_url.clone());
        let replica = format!("prometheus-{}-0", object.metadata.name.clone().unwrap());
        let config_tenant = tenant.clone();
        let config_cluster = cluster.clone();
        let config_replica = replica.clone();
        let config_labels = (cluster_label.clone(), replica_label.clone());
        prometheus_servers.push(
            Prometheus::start_v3(
                move |own_port| {
                    let (cluster_label, replica_label) = config_labels;
                    format!(
                        "global:\n  scrape_interval: 1s\n  external_labels:\n    {cluster_label}: {config_cluster}\n    {replica_label}: {config_replica}\n\
                         scrape_configs:\n  - job_name: prometheus\n    static_configs:\n      - targets: ['127.0.0.1:{own_port}']\n\
                         remote_write:\n  - url: {write_url}\n    headers:\n      X-Scope-OrgID: {config_tenant}\n    queue_config:\n      batch_send_deadline: 1s\n\
                         remote_read:\n  - url: {read_url}\n    headers:\n      X-Scope-OrgID: {config_tenant}\n    read_recent: true\n"
                    )
                },
                &[],
            )
            .await,
        );
        tenants.push((tenant, cluster, cluster_label, replica_label, replica));
    }
    assert_ne!(tenants[0].0, tenants[1].0, "the examples are two tenants");

    // --- the data answers PromQL (the connector's HTTP API) and SQL (the views); each
    //     tenant sees its own Prometheus' series only
    let query_url = format!("http://{pod_address}/api/v1/query");
    let pool = pg.pool().await;
    for (tenant, cluster, cluster_label, replica_label, replica) in &tenants {
        wait_for(
            &format!("up{{job=\"prometheus\"}} of {tenant} through PromQL"),
            WAIT,
            || {
                let url = query_url.clone();
                async move {
                    let answer = promql(&url, tenant, "up{job=\"prometheus\"}").await;
                    (answer["data"]["result"][0]["value"][1] == "1").then_some(())
                }
            },
        )
        .await;
        // The example stack deduplicates HA pairs: the replica holds the lease, its label is
        // not stored, the pair's is; and the tenant label is not shown to the tenant itself.
        let answer = promql(&query_url, tenant, "up{job=\"prometheus\"}").await;
        let result = answer["data"]["result"].as_array().unwrap();
        assert_eq!(result.len(), 1, "{tenant} sees one series: {answer}");
        let labels = &result[0]["metric"];
        assert_eq!(labels[cluster_label.as_str()], cluster.as_str(), "{answer}");
        assert!(labels.get(replica_label.as_str()).is_none(), "{answer}");
        assert!(labels.get("__tenant__").is_none(), "{answer}");
        let leader: String = sqlx::query_scalar("SELECT leader FROM prom_info.ha_lease WHERE cluster = $1")
            .bind(format!("{tenant}|{cluster}"))
            .fetch_one(&pool)
            .await
            .unwrap();
        assert_eq!(&leader, replica);
    }
    let rows: Vec<(String, i64)> = sqlx::query_as(
        "SELECT __tenant__, count(*) FROM prom_metric.up WHERE job = 'prometheus' AND value = 1 GROUP BY 1 ORDER BY 1",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(
        rows.iter().map(|(t, _)| t.as_str()).collect::<Vec<_>>(),
        tenants.iter().map(|t| t.0.as_str()).collect::<Vec<_>>(),
        "SQL sees both tenants apart: {rows:?}"
    );

    // --- the MetricPolicy settings are in prom_info.metric
    wait_for("the SLO policy on up", WAIT, || {
        let pool = pool.clone();
        async move { (metric_settings(&pool, "up").await? == ("730 days".into(), "1 day".into(), true)).then_some(()) }
    })
    .await;
    wait_for("the runtime policy on go_goroutines", WAIT, || {
        let pool = pool.clone();
        async move {
            (metric_settings(&pool, "go_goroutines").await? == ("7 days".into(), "02:00:00".into(), true)).then_some(())
        }
    })
    .await;
    let policies: Api<MetricPolicy> = Api::namespaced(client.clone(), "monitoring");
    for name in ["runtime-metrics", "slo-metrics"] {
        wait_until(&policies, name, "Ready", WAIT, |p| {
            p.status
                .as_ref()
                .is_some_and(|s| has_condition(&s.conditions, "Ready", "True", "Applied") && s.applied_metrics > 0)
        })
        .await;
    }

    // --- the stack status: the pod's entry, and Ready
    let pod_name = connector.run.pod_name.clone();
    let ready = wait_until(&stacks, "metrics", "Ready with the pod's entry", WAIT, |s| {
        s.status.as_ref().is_some_and(|st| {
            has_condition(&st.conditions, "Ready", "True", "Available")
                && st
                    .connectors
                    .iter()
                    .any(|c| c.pod == pod_name && c.ready && c.last_successful_write.is_some())
        })
    })
    .await;
    assert_eq!(ready.status.unwrap().connectors_ready.as_deref(), Some("1/2"));

    // --- GitOps: applying the same manifests again changes nothing, and only the user's
    //     manager owns any spec field (the operator never writes spec)
    let before: Vec<(String, String)> = stored_versions(&client, &manifests).await;
    for manifest in &manifests {
        apply_yaml(&client, manifest, "argocd-controller").await.unwrap();
    }
    assert_eq!(
        stored_versions(&client, &manifests).await,
        before,
        "a second apply must be a no-op"
    );
    for manifest in &manifests {
        for object in apply_yaml(&client, manifest, "argocd-controller").await.unwrap() {
            for entry in object.metadata.managed_fields.unwrap_or_default() {
                let owns_spec = entry.fields_v1.as_ref().is_some_and(|f| f.0.get("f:spec").is_some());
                if owns_spec {
                    assert_eq!(
                        entry.manager.as_deref(),
                        Some("argocd-controller"),
                        "{} spec owned by {:?}",
                        object.metadata.name.unwrap(),
                        entry.manager
                    );
                }
            }
        }
    }

    // --- lint and offline schema validation of the rendered chart, and of the examples
    let kubeconform = Kubeconform::from_cluster(&cluster, KUBERNETES_VERSION);
    let rendered = tempfile::tempdir().unwrap();
    let combinations: [&[&str]; 4] = [
        &[],
        &[
            "--set",
            "metrics.serviceMonitor.enabled=true",
            "--set",
            "metrics.serviceMonitor.labels.release=prometheus",
        ],
        &[
            "--set",
            "watchNamespace=monitoring",
            "--set",
            "replicaCount=2",
            "--set",
            "logFormat=json",
        ],
        &[
            "--set",
            "crds.install=false",
            "--set",
            "serviceAccount.create=false",
            "--set",
            "serviceAccount.name=ops",
            "--set",
            "leaderElection.enabled=false",
        ],
    ];
    for (i, values) in combinations.iter().enumerate() {
        let mut lint = vec!["lint", "--strict", chart];
        lint.extend_from_slice(values);
        helm.run(&lint);
        let mut template = vec![
            "template",
            "promscale",
            chart,
            "--namespace",
            "promscale-system",
            "--kube-version",
            KUBERNETES_VERSION,
        ];
        template.extend_from_slice(values);
        let path = rendered.path().join(format!("combination-{i}.yaml"));
        std::fs::write(&path, helm.run(&template)).unwrap();
        kubeconform
            .validate(&[&path])
            .unwrap_or_else(|e| panic!("rendered chart with {values:?} is invalid:\n{e}"));
    }
    let example_files: Vec<PathBuf> = std::fs::read_dir(examples())
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    let example_refs: Vec<&Path> = example_files.iter().map(PathBuf::as_path).collect();
    let summary = kubeconform
        .validate(&example_refs)
        .unwrap_or_else(|e| panic!("examples are invalid:\n{e}"));
    assert!(summary.contains("Valid: 6"), "{summary}");
    let typo = helm
        .try_run(&[
            "template",
            "promscale",
            chart,
            "--set",
            "metrics.serviceMonitr.enabled=true",
        ])
        .expect_err("a misspelt value must fail");
    assert!(typo.contains("serviceMonitr"), "{typo}");

    // --- helm upgrade: new values, and a new chart version whose CRDs come along
    let upgraded_chart = tempfile::tempdir().unwrap();
    copy_dir(&chart_dir(), upgraded_chart.path());
    let chart_yaml = upgraded_chart.path().join("Chart.yaml");
    let text = std::fs::read_to_string(&chart_yaml)
        .unwrap()
        .replace("version: 0.1.0", "version: 0.1.1");
    std::fs::write(&chart_yaml, text).unwrap();
    let new_port = free_port().unwrap().to_string();
    let set_new_port = format!("metrics.port={new_port}");
    helm.run(&[
        "upgrade",
        "promscale",
        upgraded_chart.path().to_str().unwrap(),
        "--namespace",
        "promscale-system",
        "--set",
        &set_new_port,
        "--set",
        "leaderElection.leaseDuration=6s",
        "--set",
        "logLevel=debug",
        "--set",
        "replicaCount=2",
    ]);
    for name in ["promscalestacks.promscale.dev", "metricpolicies.promscale.dev"] {
        let crd = crds.get(name).await.unwrap();
        assert_eq!(
            crd.labels().get("helm.sh/chart").map(String::as_str),
            Some("promscale-operator-0.1.1"),
            "{name} upgraded"
        );
    }
    let upgraded = operator_deployments.get("promscale-operator").await.unwrap();
    let upgraded_spec = upgraded.spec.clone().unwrap();
    assert_eq!(upgraded_spec.replicas, Some(2));
    let args = upgraded_spec.template.spec.unwrap().containers[0].args.clone().unwrap();
    assert!(args.contains(&"--log.level=debug".to_string()), "{args:?}");
    // The rollout: the old pod goes, a pod of the new template takes over and reconciles.
    operator.stop();
    let new_operator = run_pod(&cluster, &client, "promscale-system", "promscale-operator").await;
    let changed = example("promscalestack.yaml").replace("replicas: 2", "replicas: 3");
    apply_yaml(&client, &changed, "argocd-controller").await.unwrap();
    let connector_deployments: Api<Deployment> = Api::namespaced(client.clone(), "monitoring");
    wait_until(
        &connector_deployments,
        "metrics-connector",
        "scaled by the upgraded operator",
        WAIT,
        |d| d.spec.as_ref().is_some_and(|s| s.replicas == Some(3)),
    )
    .await;
    drop(new_operator);

    // --- helm uninstall: the operator goes, the CRDs and the user's objects stay
    helm.run(&["uninstall", "promscale", "--namespace", "promscale-system"]);
    assert!(operator_deployments
        .get_opt("promscale-operator")
        .await
        .unwrap()
        .is_none());
    for name in ["promscalestacks.promscale.dev", "metricpolicies.promscale.dev"] {
        assert!(
            crds.get_opt(name).await.unwrap().is_some(),
            "{name} is kept on uninstall"
        );
    }
    assert!(
        stacks.get_opt("metrics").await.unwrap().is_some(),
        "the user's stack survives"
    );
}

/// `name@resourceVersion` of every object of the manifests.
async fn stored_versions(client: &Client, manifests: &[String]) -> Vec<(String, String)> {
    let mut versions = Vec::new();
    for manifest in manifests {
        for document in serde_saphyr::from_multiple::<DynamicObject>(manifest).unwrap() {
            let types = document.types.clone().unwrap();
            let gvk = kube::core::GroupVersionKind::try_from(&types).unwrap();
            let (resource, _) = kube::discovery::pinned_kind(client, &gvk).await.unwrap();
            let api: Api<DynamicObject> = Api::namespaced_with(
                client.clone(),
                document.metadata.namespace.as_deref().unwrap(),
                &resource,
            );
            let stored = api.get(&document.name_any()).await.unwrap();
            versions.push((document.name_any(), stored.resource_version().unwrap()));
        }
    }
    versions
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}
