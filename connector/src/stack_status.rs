//! Reports this connector pod's state into its PromscaleStack's `status.connectors`.
//!
//! Each pod server-side-applies only its own entry (the list is keyed by pod name) with a
//! field manager of its own, so pods never overwrite each other or the operator's part of the
//! status. On shutdown the pod applies an empty list, which removes its entry.

use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Patch, PatchParams};
use kube::{Api, Client, Resource};
use promscale_crds::{ConnectorStatus, PromscaleStack};
use serde_json::json;

use crate::server::AppState;

/// Who this connector is in the cluster.
#[derive(Debug, Clone)]
pub struct PodIdentity {
    pub stack: String,
    pub pod: String,
    pub namespace: String,
}

impl PodIdentity {
    /// The identity when all three parts are given, `None` when none is; a partial identity is
    /// a configuration mistake worth refusing.
    pub fn from_parts(stack: &str, pod: &str, namespace: &str) -> anyhow::Result<Option<Self>> {
        match (stack.is_empty(), pod.is_empty(), namespace.is_empty()) {
            (true, true, true) => Ok(None),
            (false, false, false) => Ok(Some(PodIdentity {
                stack: stack.to_string(),
                pod: pod.to_string(),
                namespace: namespace.to_string(),
            })),
            _ => anyhow::bail!(
                "status reporting needs --k8s.stack-name, --k8s.pod-name and --k8s.pod-namespace \
                 (PROMSCALE_STACK_NAME, POD_NAME, POD_NAMESPACE) together; got stack={stack:?} pod={pod:?} namespace={namespace:?}"
            ),
        }
    }

    fn field_manager(&self) -> String {
        format!("promscale-connector/{}", self.pod)
    }
}

pub struct StatusReporter {
    identity: PodIdentity,
    api: Api<PromscaleStack>,
    app: Arc<AppState>,
}

impl StatusReporter {
    /// Connects with the pod's service account (or `KUBECONFIG` outside a cluster).
    pub async fn new(identity: PodIdentity, app: Arc<AppState>) -> anyhow::Result<Self> {
        let client = Client::try_default().await.map_err(|e| {
            anyhow::anyhow!(
                "cannot build a Kubernetes client for status reporting (in-cluster service account or KUBECONFIG): {e}"
            )
        })?;
        let api = Api::namespaced(client, &identity.namespace);
        Ok(StatusReporter { identity, api, app })
    }

    /// Reports every `interval` until `shutdown` completes, then removes the pod's entry.
    pub async fn run(self, interval: Duration, shutdown: impl std::future::Future<Output = ()>) {
        tokio::pin!(shutdown);
        let mut last_samples = self.app.metrics.samples_ingested.get();
        let mut last_report = Instant::now();
        let mut ticker = tokio::time::interval(interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = &mut shutdown => break,
                _ = ticker.tick() => {}
            }
            let samples = self.app.metrics.samples_ingested.get();
            let elapsed = last_report.elapsed().as_secs_f64().max(0.001);
            let entry = self.entry((samples - last_samples) as f64 / elapsed).await;
            last_samples = samples;
            last_report = Instant::now();
            match self.apply(vec![entry]).await {
                Ok(()) => tracing::debug!(stack = %self.identity.stack, "reported connector status"),
                // The API server may be briefly away; the next tick tries again.
                Err(e) => {
                    tracing::warn!(stack = %self.identity.stack, error = %e, "cannot report connector status into the PromscaleStack")
                }
            }
        }
        match tokio::time::timeout(Duration::from_secs(3), self.apply(Vec::new())).await {
            Ok(Ok(())) => {
                tracing::info!(stack = %self.identity.stack, "removed this pod's entry from the stack status")
            }
            Ok(Err(e)) => tracing::warn!(error = %e, "cannot remove this pod's entry from the stack status"),
            Err(_) => tracing::warn!("timed out removing this pod's entry from the stack status"),
        }
    }

    async fn entry(&self, samples_per_second: f64) -> ConnectorStatus {
        let last_commit = self.app.metrics.last_commit_timestamp.get();
        ConnectorStatus {
            pod: self.identity.pod.clone(),
            version: env!("CARGO_PKG_VERSION").to_string(),
            ready: self.app.database_ready().await.is_ok(),
            samples_per_second: (samples_per_second * 1000.0).round() / 1000.0,
            active_series: self.app.ingestor.activity().take_active_series() as i64,
            last_successful_write: (last_commit > 0)
                .then(|| Timestamp::from_second(last_commit).ok())
                .flatten()
                .map(Time),
            last_error: self.app.ingestor.activity().last_error(),
            last_report_time: Time(Timestamp::now()),
        }
    }

    async fn apply(&self, connectors: Vec<ConnectorStatus>) -> kube::Result<()> {
        let patch = json!({
            "apiVersion": PromscaleStack::api_version(&()),
            "kind": PromscaleStack::kind(&()),
            "status": { "connectors": connectors },
        });
        let params = PatchParams::apply(&self.identity.field_manager()).force();
        self.api
            .patch_status(&self.identity.stack, &params, &Patch::Apply(&patch))
            .await
            .map(|_| ())
    }
}
