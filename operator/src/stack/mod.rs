//! The PromscaleStack controller: a stack becomes a connector Deployment, its Service, RBAC,
//! ConfigMap and PodDisruptionBudget, plus the database-wide defaults; `spec.auth` becomes
//! Secret mounts and flags of the connectors, and Prometheus Operator remote-write/read items
//! in the status.

mod auth_secrets;
pub mod config_map;
mod defaults;
pub mod deployment;
mod disruption;
pub mod names;
mod rbac;
mod reconcile;
mod service;
mod status;
mod tenant_limits;

use std::sync::Arc;

use futures::StreamExt;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Service, ServiceAccount};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::{predicates, reflector, watcher, WatchStreamExt};
use kube::ResourceExt;
use promscale_crds::PromscaleStack;

use crate::context::Context;
use crate::error::Error;
use crate::scope;

pub use reconcile::CONTROLLER;

/// Runs until `shutdown` completes.
pub async fn run(ctx: Arc<Context>, shutdown: impl std::future::Future<Output = ()> + Send + Sync + 'static) {
    let client = ctx.client.clone();
    let namespace = &ctx.config.watch_namespace;
    let (reader, writer) = reflector::store();
    // Status reports of the connector pods change the stack every few seconds; only spec
    // changes (and the periodic resync) are worth a reconciliation.
    let stacks = watcher(
        scope::api::<PromscaleStack>(&client, namespace),
        watcher::Config::default(),
    )
    .default_backoff()
    .reflect(writer)
    .applied_objects()
    .predicate_filter(predicates::generation, Default::default());
    let owned = || watcher::Config::default().labels("app.kubernetes.io/managed-by=promscale-operator");
    Controller::for_stream(stacks, reader)
        .owns(scope::api::<Deployment>(&client, namespace), owned())
        .owns(scope::api::<Service>(&client, namespace), owned())
        .owns(scope::api::<ConfigMap>(&client, namespace), owned())
        .owns(scope::api::<ServiceAccount>(&client, namespace), owned())
        .owns(scope::api::<Role>(&client, namespace), owned())
        .owns(scope::api::<RoleBinding>(&client, namespace), owned())
        .owns(scope::api::<PodDisruptionBudget>(&client, namespace), owned())
        .graceful_shutdown_on(shutdown)
        .run(reconcile::reconcile, error_policy, ctx.clone())
        .for_each(|result| {
            match result {
                Ok((stack, _)) => {
                    tracing::debug!(stack = %stack.name, namespace = ?stack.namespace, "reconciled");
                    ctx.succeeded(&format!("stack/{stack}"));
                }
                Err(e) => tracing::debug!(error = %e, "stack reconciliation ended in an error"),
            }
            std::future::ready(())
        })
        .await;
}

fn error_policy(stack: Arc<PromscaleStack>, error: &Error, ctx: Arc<Context>) -> Action {
    ctx.metrics.failed(CONTROLLER, error.metric_reason());
    let key = format!("stack/{}", kube::runtime::reflector::ObjectRef::from_obj(&*stack));
    let delay = ctx.backoff(&key);
    tracing::warn!(stack = %stack.name_any(), namespace = ?stack.namespace(), error = %error, retry_in = ?delay, "reconciling the stack failed");
    Action::requeue(delay)
}
