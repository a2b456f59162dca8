//! Connector pods report into their stack's status: a real connector process runs with a pod
//! identity and a real service-account token (TokenRequest), writes its own entry through
//! server-side apply, may touch nothing else, and removes its entry when it stops. The
//! operator turns fresh ready entries into Ready=True.

use std::time::Duration;

use kube::api::{Api, Patch, PatchParams};
use promscale_crds::PromscaleStack;
use promscale_e2e::connector::Connector;
use promscale_e2e::k8s::{apply, has_condition, put_secret, uri_stack, wait_until};
use promscale_e2e::kube_cluster::{client_from, KubeCluster};
use promscale_e2e::operator::Operator;
use promscale_e2e::postgres::TestPostgres;
use promscale_e2e::remote_write::{encode, post, series};
use serde_json::json;

const WAIT: Duration = Duration::from_secs(60);

fn stack(name: &str, replicas: i32) -> PromscaleStack {
    let mut stack = uri_stack(name, "default", "metrics-db");
    stack.spec.connector.replicas = replicas;
    stack
}

#[tokio::test]
async fn connector_pods_report_into_the_stack_status_with_their_own_identity() {
    let cluster = KubeCluster::start().await;
    cluster.install_crds().await;
    let client = cluster.client().await;
    let pg = TestPostgres::start();
    put_secret(&client, "default", "metrics-db", "uri", &pg.uri()).await;
    let _operator = Operator::start(&cluster.admin_kubeconfig(), &[]).await;
    let stacks: Api<PromscaleStack> = Api::namespaced(client.clone(), "default");
    apply(&stacks, &stack("metrics", 2)).await;
    apply(&stacks, &stack("other", 1)).await;

    // The connector authenticates as the service account the operator created for it.
    let accounts: Api<k8s_openapi::api::core::v1::ServiceAccount> = Api::namespaced(client.clone(), "default");
    wait_until(&accounts, "metrics-connector", "created by the operator", WAIT, |_| {
        true
    })
    .await;
    let token = cluster.service_account_token("default", "metrics-connector").await;
    let kubeconfig = cluster.write_kubeconfig("metrics-connector", &token);
    let kubeconfig_path = kubeconfig.to_str().unwrap();
    let start_pod = |pod: &str| {
        Connector::spawn_with_env(
            Some(&pg.uri()),
            &["--k8s.status-interval=1s"],
            &[
                ("KUBECONFIG", kubeconfig_path),
                ("POD_NAME", pod),
                ("POD_NAMESPACE", "default"),
                ("PROMSCALE_STACK_NAME", "metrics"),
            ],
        )
    };
    let first = start_pod("metrics-connector-7d9f-a1");
    first.wait_ready(WAIT).await;

    let reported = wait_until(&stacks, "metrics", "the first pod's entry", WAIT, |s| {
        s.status.as_ref().is_some_and(|st| {
            st.connectors
                .iter()
                .any(|c| c.pod == "metrics-connector-7d9f-a1" && c.ready)
        })
    })
    .await;
    let entry = reported
        .status
        .as_ref()
        .unwrap()
        .connectors
        .iter()
        .find(|c| c.pod == "metrics-connector-7d9f-a1")
        .unwrap()
        .clone();
    assert_eq!(entry.version, env!("CARGO_PKG_VERSION"));
    assert_eq!(entry.last_error, None);
    let managers: Vec<String> = reported
        .metadata
        .managed_fields
        .clone()
        .unwrap_or_default()
        .into_iter()
        .filter_map(|m| m.manager)
        .collect();
    assert!(
        managers.contains(&"promscale-connector/metrics-connector-7d9f-a1".to_string()),
        "{managers:?}"
    );

    // The operator counts fresh ready entries: 1 of 2 is available, not complete.
    let status = wait_until(&stacks, "metrics", "1/2 connectors", WAIT, |s| {
        s.status
            .as_ref()
            .is_some_and(|st| st.connectors_ready.as_deref() == Some("1/2"))
    })
    .await
    .status
    .unwrap();
    assert!(has_condition(&status.conditions, "Ready", "True", "Available"));
    assert!(has_condition(
        &status.conditions,
        "Progressing",
        "True",
        "WaitingForConnectors"
    ));

    // Written samples show up in the entry.
    let http = reqwest::Client::new();
    let now_ms = promscale_e2e::recent_ms() + 3_500_000;
    let body = encode(
        (0..10)
            .map(|i| {
                series(
                    &[("__name__", "up"), ("instance", &format!("host-{i}")), ("job", "node")],
                    &[(now_ms, 1.0)],
                )
            })
            .collect(),
    );
    let (code, text) = post(&http, &first.url("/write"), body).await.unwrap();
    assert_eq!(code, 204, "{text}");
    let written = wait_until(&stacks, "metrics", "the write in the entry", WAIT, |s| {
        s.status.as_ref().is_some_and(|st| {
            st.connectors
                .iter()
                .any(|c| c.pod == "metrics-connector-7d9f-a1" && c.active_series == 10 && c.samples_per_second > 0.0)
        })
    })
    .await;
    let entry = written
        .status
        .unwrap()
        .connectors
        .into_iter()
        .find(|c| c.pod == "metrics-connector-7d9f-a1")
        .unwrap();
    assert!(entry.last_successful_write.is_some());

    // A second pod adds its own entry without disturbing the first; the stack is complete.
    let mut second = start_pod("metrics-connector-7d9f-b2");
    second.wait_ready(WAIT).await;
    let status = wait_until(&stacks, "metrics", "2/2 connectors", WAIT, |s| {
        s.status
            .as_ref()
            .is_some_and(|st| st.connectors_ready.as_deref() == Some("2/2"))
    })
    .await
    .status
    .unwrap();
    assert_eq!(status.connectors.len(), 2);
    assert!(has_condition(&status.conditions, "Ready", "True", "Available"));
    assert!(has_condition(&status.conditions, "Progressing", "False", "Complete"));

    // The connector's identity may write its own stack's status and nothing more.
    let as_connector = client_from(&cluster.kubeconfig(&token)).await;
    let their_stacks: Api<PromscaleStack> = Api::namespaced(as_connector.clone(), "default");
    let patch = json!({"apiVersion": "promscale.dev/v1alpha1", "kind": "PromscaleStack",
                       "status": {"connectors": [{"pod": "intruder", "version": "0", "ready": true, "samplesPerSecond": 0.0,
                                                  "activeSeries": 0, "lastReportTime": "2026-01-01T00:00:00Z"}]}});
    let refused = their_stacks
        .patch_status("other", &PatchParams::apply("intruder"), &Patch::Apply(&patch))
        .await
        .expect_err("patching another stack's status must be forbidden");
    assert!(matches!(refused, kube::Error::Api(ref s) if s.code == 403), "{refused}");
    let refused = their_stacks
        .patch("metrics", &PatchParams::apply("intruder"), &Patch::Apply(&json!({"apiVersion": "promscale.dev/v1alpha1", "kind": "PromscaleStack", "spec": {"connector": {"replicas": 9}}})))
        .await
        .expect_err("changing the spec must be forbidden");
    assert!(matches!(refused, kube::Error::Api(ref s) if s.code == 403), "{refused}");
    let secrets: Api<k8s_openapi::api::core::v1::Secret> = Api::namespaced(as_connector, "default");
    assert!(matches!(secrets.get("metrics-db").await, Err(kube::Error::Api(ref s)) if s.code == 403));

    // A pod that stops removes its entry.
    second.stop();
    let status = wait_until(&stacks, "metrics", "the second pod's entry removed", WAIT, |s| {
        s.status
            .as_ref()
            .is_some_and(|st| st.connectors.len() == 1 && st.connectors[0].pod == "metrics-connector-7d9f-a1")
    })
    .await
    .status
    .unwrap();
    assert_eq!(status.connectors[0].active_series, 0, "no writes in the last interval");
    wait_until(&stacks, "metrics", "1/2 connectors again", WAIT, |s| {
        s.status
            .as_ref()
            .is_some_and(|st| st.connectors_ready.as_deref() == Some("1/2"))
    })
    .await;
    drop(first);
}
