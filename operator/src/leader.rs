//! Leader election through a `coordination.k8s.io` Lease: only the holder reconciles, so two
//! operator replicas never fight over the same objects.

use std::time::Duration;

use anyhow::Context as _;
use kube::Client;
use kube_lease_manager::{LeaseManager, LeaseManagerBuilder};
use tokio::sync::watch;

use crate::config::Config;

pub struct Leadership {
    leading: watch::Receiver<bool>,
    task: tokio::task::JoinHandle<kube_lease_manager::Result<LeaseManager>>,
}

impl Leadership {
    /// Joins the election; the Lease is created when missing.
    pub async fn join(client: Client, config: &Config) -> anyhow::Result<Self> {
        let namespace = if !config.leader_election_namespace.is_empty() {
            config.leader_election_namespace.clone()
        } else {
            std::env::var("POD_NAMESPACE").unwrap_or_else(|_| "default".into())
        };
        let identity = if !config.leader_election_identity.is_empty() {
            config.leader_election_identity.clone()
        } else {
            let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
            format!("{}-{}", host.trim(), std::process::id())
        };
        let duration = config.leader_election_lease_duration.as_secs().max(3);
        let manager = LeaseManagerBuilder::new(client, &config.leader_election_lease_name)
            .with_namespace(&namespace)
            .with_identity(&identity)
            .with_duration(duration)
            .with_grace((duration / 3).max(1))
            .build()
            .await
            .with_context(|| {
                format!(
                    "cannot use Lease {namespace}/{} for leader election (the operator needs get, create, update and patch on leases there)",
                    config.leader_election_lease_name
                )
            })?;
        tracing::info!(%identity, lease = %config.leader_election_lease_name, %namespace, "joined the leader election");
        let (leading, task) = manager.watch().await;
        Ok(Leadership { leading, task })
    }

    /// Completes once this replica holds the Lease.
    pub async fn acquired(&mut self) -> anyhow::Result<()> {
        self.leading
            .wait_for(|leading| *leading)
            .await
            .map(|_| ())
            .context("the leader election stopped")
    }

    /// Completes when this replica loses the Lease.
    pub async fn lost(&mut self) {
        let _ = self.leading.wait_for(|leading| !*leading).await;
    }

    /// Gives the Lease up so that another replica can take over at once.
    pub async fn release(self) {
        drop(self.leading);
        match tokio::time::timeout(Duration::from_secs(5), self.task).await {
            Ok(Ok(Ok(manager))) => {
                if let Err(e) = manager.release().await {
                    tracing::warn!(error = %e, "cannot release the leader Lease; it expires on its own");
                }
            }
            _ => tracing::warn!("the leader election did not stop cleanly; the Lease expires on its own"),
        }
    }
}
