//! promscale-operator: reconciles `PromscaleStack` resources into connector Deployments,
//! Services and database defaults ([`stack`]), and `MetricPolicy` resources into per-metric
//! settings in the stack's database ([`policy`]).
//!
//! Only the replica holding the leader Lease ([`leader`]) runs the controllers; every replica
//! serves `/metrics` and health endpoints ([`http`]).

pub mod conditions;
pub mod config;
pub mod context;
pub mod database;
pub mod error;
pub mod http;
pub mod interval;
pub mod leader;
pub mod metrics;
pub mod policy;
pub mod scope;
pub mod stack;

use std::future::Future;
use std::sync::Arc;

use anyhow::Context as _;
use kube::Client;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::context::Context;
use crate::leader::Leadership;
use crate::metrics::Metrics;

/// Runs until `shutdown` completes. Losing the leader Lease is an error: the process exits and
/// its restart rejoins the election with a clean slate.
pub async fn run(config: Config, shutdown: impl Future<Output = ()> + Send + 'static) -> anyhow::Result<()> {
    let stop = CancellationToken::new();
    tokio::spawn({
        let stop = stop.clone();
        async move {
            shutdown.await;
            stop.cancel();
        }
    });
    let client = Client::try_default()
        .await
        .context("cannot build a Kubernetes client (in-cluster service account, or KUBECONFIG)")?;
    let metrics = Arc::new(Metrics::new());
    let server = http::serve(config.web_listen_address, metrics.clone(), stop.clone()).await?;

    let mut leadership = None;
    if config.leader_election {
        let mut joined = Leadership::join(client.clone(), &config).await?;
        tokio::select! {
            acquired = joined.acquired() => acquired?,
            _ = stop.cancelled() => {
                joined.release().await;
                return Ok(());
            }
        }
        tracing::info!("holding the leader Lease: reconciling");
        leadership = Some(joined);
    }
    metrics.leader.set(1);

    // The controllers stop on shutdown or when the Lease is lost.
    let controllers_stop = stop.child_token();
    let (policy_trigger, policy_triggers) = futures::channel::mpsc::unbounded();
    let ctx = Arc::new(Context::new(client, config, metrics.clone(), policy_trigger));
    let controllers = futures::future::join(
        stack::run(ctx.clone(), controllers_stop.clone().cancelled_owned()),
        policy::run(ctx.clone(), policy_triggers, controllers_stop.clone().cancelled_owned()),
    );
    let lost = async {
        match leadership.as_mut() {
            Some(leadership) => leadership.lost().await,
            None => std::future::pending().await,
        }
    };
    let mut controllers = std::pin::pin!(controllers);
    let lost_leadership = tokio::select! {
        _ = &mut controllers => false,
        _ = lost => true,
    };
    let result = if lost_leadership {
        controllers_stop.cancel();
        controllers.await;
        Err(anyhow::anyhow!(
            "lost the leader Lease to another replica; exiting so that a restart rejoins the election"
        ))
    } else {
        Ok(())
    };
    controllers_stop.cancel();
    metrics.leader.set(0);
    if let Some(leadership) = leadership {
        leadership.release().await;
    }
    stop.cancel();
    let _ = server.await;
    result
}
