//! The MetricPolicy controller: a policy becomes per-metric settings in its stack's database.

mod claims;
mod reconcile;
pub mod settings;

use std::sync::Arc;

use futures::channel::mpsc::UnboundedReceiver;
use futures::StreamExt;
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::{predicates, reflector, watcher, Predicate, WatchStreamExt};
use kube::ResourceExt;
use promscale_crds::MetricPolicy;

use crate::context::Context;
use crate::error::Error;
use crate::scope;

pub use reconcile::{CONTROLLER, FINALIZER};

/// Runs until `shutdown` completes; `triggers` asks for policies to be looked at again.
pub async fn run(
    ctx: Arc<Context>,
    triggers: UnboundedReceiver<ObjectRef<MetricPolicy>>,
    shutdown: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) {
    let (reader, writer) = reflector::store();
    // Spec changes, and the finalizer being added or deletion starting (which leave the
    // generation alone); the operator's own status writes are not worth a reconciliation.
    let policies = watcher(
        scope::api::<MetricPolicy>(&ctx.client, &ctx.config.watch_namespace),
        watcher::Config::default(),
    )
    .default_backoff()
    .reflect(writer)
    .applied_objects()
    .predicate_filter(
        predicates::generation.combine(predicates::finalizers),
        Default::default(),
    );
    Controller::for_stream(policies, reader)
        .reconcile_on(triggers)
        .graceful_shutdown_on(shutdown)
        .run(reconcile::reconcile, error_policy, ctx.clone())
        .for_each(|result| {
            match result {
                Ok((policy, _)) => ctx.succeeded(&format!("policy/{policy}")),
                Err(e) => tracing::debug!(error = %e, "policy reconciliation ended in an error"),
            }
            std::future::ready(())
        })
        .await;
}

fn error_policy(policy: Arc<MetricPolicy>, error: &Error, ctx: Arc<Context>) -> Action {
    ctx.metrics.failed(CONTROLLER, error.metric_reason());
    let delay = ctx.backoff(&format!("policy/{}", ObjectRef::from_obj(&*policy)));
    tracing::warn!(policy = %policy.name_any(), namespace = ?policy.namespace(), error = %error, retry_in = ?delay, "reconciling the policy failed");
    Action::requeue(delay)
}
