//! Two operator replicas on one API server: only the holder of the Lease reconciles; when it
//! dies without a word, the other takes over once the Lease expires.

use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::coordination::v1::Lease;
use kube::api::Api;
use promscale_crds::PromscaleStack;
use promscale_e2e::k8s::{apply, uri_stack, wait_until};
use promscale_e2e::kube_cluster::KubeCluster;
use promscale_e2e::operator::Operator;
use promscale_e2e::prometheus::sum_metric;
use promscale_e2e::wait_for;

const WAIT: Duration = Duration::from_secs(60);

async fn leading(operator: &Operator) -> f64 {
    sum_metric(&operator.metrics().await, "promscale_operator_leader").unwrap_or(-1.0)
}

#[tokio::test]
async fn only_the_lease_holder_reconciles_and_a_standby_takes_over() {
    let cluster = KubeCluster::start().await;
    cluster.install_crds().await;
    let client = cluster.client().await;
    let mut first = Operator::start(&cluster.admin_kubeconfig(), &["--leader-election.identity=operator-a"]).await;
    wait_for("operator-a to lead", WAIT, || async {
        (leading(&first).await == 1.0).then_some(())
    })
    .await;
    let second = Operator::start(&cluster.admin_kubeconfig(), &["--leader-election.identity=operator-b"]).await;

    let leases: Api<Lease> = Api::namespaced(client.clone(), "default");
    let lease = leases.get("promscale-operator").await.unwrap();
    assert_eq!(lease.spec.unwrap().holder_identity.as_deref(), Some("operator-a"));

    let stacks: Api<PromscaleStack> = Api::namespaced(client.clone(), "default");
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), "default");
    apply(&stacks, &uri_stack("first", "default", "db")).await;
    wait_until(
        &deployments,
        "first-connector",
        "reconciled by the leader",
        WAIT,
        |_| true,
    )
    .await;
    assert_eq!(leading(&second).await, 0.0, "the standby must not reconcile");
    assert!(!second.log().contains("reconciled"), "the standby reconciled something");

    // The leader dies without releasing the Lease; the standby waits for it to expire.
    first.kill();
    wait_for("operator-b to take the Lease", WAIT, || async {
        (leading(&second).await == 1.0).then_some(())
    })
    .await;
    let lease = leases.get("promscale-operator").await.unwrap();
    assert_eq!(lease.spec.unwrap().holder_identity.as_deref(), Some("operator-b"));
    apply(&stacks, &uri_stack("second", "default", "db")).await;
    wait_until(
        &deployments,
        "second-connector",
        "reconciled by the new leader",
        WAIT,
        |_| true,
    )
    .await;
}
