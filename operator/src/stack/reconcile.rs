//! One reconciliation of a PromscaleStack: check the Secrets of `spec.auth`, apply the owned
//! objects, apply the database defaults, forget connectors that stopped reporting, write the
//! status.

use std::sync::Arc;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::{Api, Resource};
use promscale_crds::conditions::{DEGRADED, READY};
use promscale_crds::{PromscaleStack, PromscaleStackStatus};
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::json;

use super::names::StackNames;
use super::{auth_secrets, config_map, defaults, deployment, disruption, rbac, service, status};
use crate::conditions;
use crate::context::{Context, FIELD_MANAGER};
use crate::database::{self, DatabaseError, Target};
use crate::error::{Error, Result};

pub const CONTROLLER: &str = "promscalestack";

pub async fn reconcile(stack: Arc<PromscaleStack>, ctx: Arc<Context>) -> Result<Action> {
    let _timer = ctx.metrics.reconcile(CONTROLLER);
    let names = StackNames::of(&stack)?;
    let target = Target::resolve(&ctx.client, &names.namespace, &stack.spec.database).await;
    let auth = match &stack.spec.auth {
        Some(auth) => auth_secrets::check(&ctx.client, &names.namespace, auth).await,
        None => Ok(Vec::new()),
    };
    let mut secret_versions = target.as_ref().map(|t| t.secret_versions.clone()).unwrap_or_default();
    secret_versions.extend(auth.as_ref().cloned().unwrap_or_default());

    apply_owned_objects(&ctx, &names, &stack, &secret_versions).await?;

    let database = match target {
        Ok(target) => apply_database_defaults(&ctx, &stack, &target).await,
        Err(e) => Err(e),
    };
    // A database failure says the most; a missing auth Secret comes next (the pods cannot
    // start), before a schema the connectors have yet to create.
    let database = match (database, auth) {
        (Err(e), _) if !matches!(e, DatabaseError::SchemaMissing) => Err(e),
        (_, Err(e)) => Err(e),
        (database, Ok(_)) => database,
    };

    let entries = stack.status.as_ref().map(|s| s.connectors.clone()).unwrap_or_default();
    forget_gone_connectors(&ctx, &names, &entries).await?;

    let now = Timestamp::now();
    let desired = stack.spec.connector.replicas;
    let ready = status::ready_connectors(&entries, now, ctx.config.connector_stale_after);
    let previous = stack.status.as_ref().map(|s| s.conditions.clone()).unwrap_or_default();
    let generation = stack.metadata.generation;
    let new_status = PromscaleStackStatus {
        observed_generation: generation,
        conditions: conditions::merge(&previous, &status::conditions(&database, ready, desired), generation),
        endpoints: Some(status::endpoints(
            &names,
            &ctx.config.cluster_domain,
            stack.spec.service.port,
            stack.spec.auth.as_ref(),
        )),
        prometheus_remote_write: Some(status::prometheus_remote_write(
            &names,
            &ctx.config.cluster_domain,
            stack.spec.service.port,
            stack.spec.auth.as_ref(),
        )),
        prometheus_remote_read: Some(status::prometheus_remote_read(
            &names,
            &ctx.config.cluster_domain,
            stack.spec.service.port,
            stack.spec.auth.as_ref(),
        )),
        connectors_ready: Some(format!("{ready}/{desired}")),
        connectors: Vec::new(), // the pods' part: never written by the operator
    };
    let api: Api<PromscaleStack> = Api::namespaced(ctx.client.clone(), &names.namespace);
    let patch = json!({
        "apiVersion": PromscaleStack::api_version(&()),
        "kind": PromscaleStack::kind(&()),
        "status": new_status,
    });
    api.patch_status(
        &names.stack,
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(&patch),
    )
    .await?;
    announce_transitions(&ctx, &stack, &previous, &new_status).await;

    match database {
        Err(DatabaseError::SchemaMissing) | Ok(()) => Ok(Action::requeue(ctx.config.stack_resync_interval)),
        // Recorded in the status; returning it makes the controller retry with backoff.
        Err(e) => Err(e.into()),
    }
}

/// Server-side applies every object of the stack; a field changed by hand is set back.
async fn apply_owned_objects(
    ctx: &Context,
    names: &StackNames,
    stack: &PromscaleStack,
    secret_versions: &[String],
) -> Result<()> {
    let env = config_map::connector_env(names, &stack.spec);
    let deployment = deployment::deployment(&deployment::DeploymentInput {
        names,
        spec: &stack.spec,
        default_image: &ctx.config.connector_image,
        config: &env,
        secret_versions,
    });
    apply(ctx, names, &rbac::service_account(names)).await?;
    apply(ctx, names, &rbac::role(names)).await?;
    apply(ctx, names, &rbac::role_binding(names)).await?;
    apply(ctx, names, &config_map::config_map(names, env)).await?;
    apply(ctx, names, &service::service(names, &stack.spec)).await?;
    apply(ctx, names, &disruption::disruption_budget(names)).await?;
    let before: Option<Deployment> = Api::<Deployment>::namespaced(ctx.client.clone(), &names.namespace)
        .get_opt(&names.connector)
        .await?;
    let after = apply(ctx, names, &deployment).await?;
    if before.as_ref().and_then(|d| d.spec.as_ref()).map(|s| &s.template) != after.spec.as_ref().map(|s| &s.template) {
        let verb = if before.is_some() { "rolling" } else { "created" };
        ctx.event(
            stack,
            false,
            "DeploymentUpdated",
            format!("connector Deployment {} {verb}", names.connector),
        )
        .await;
    }
    Ok(())
}

async fn apply<K>(ctx: &Context, names: &StackNames, object: &K) -> Result<K>
where
    K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + Serialize
        + DeserializeOwned
        + Clone
        + std::fmt::Debug,
{
    let api: Api<K> = Api::namespaced(ctx.client.clone(), &names.namespace);
    let name = object.meta().name.clone().ok_or(Error::MissingField("metadata.name"))?;
    Ok(api
        .patch(&name, &PatchParams::apply(FIELD_MANAGER).force(), &Patch::Apply(object))
        .await?)
}

async fn apply_database_defaults(ctx: &Context, stack: &PromscaleStack, target: &Target) -> Result<(), DatabaseError> {
    let mut connection = target.connect(ctx.config.db_connect_timeout).await?;
    let uid = stack.metadata.uid.clone().unwrap_or_default();
    let name = format!(
        "{}/{}",
        stack.metadata.namespace.as_deref().unwrap_or_default(),
        stack.metadata.name.as_deref().unwrap_or_default()
    );
    let result = async {
        database::schema_exists(&mut connection).await?;
        let defaults = defaults::apply(&mut connection, &stack.spec.defaults).await?;
        let tenants = super::tenant_limits::apply(&mut connection, &uid, &name, &stack.spec.tenant_limits).await?;
        Ok::<_, DatabaseError>((defaults, tenants))
    }
    .await;
    database::close(connection).await;
    let (changed, tenants_changed) = result?;
    if tenants_changed > 0 {
        ctx.event(
            stack,
            false,
            "TenantLimitsApplied",
            format!(
                "limits of {tenants_changed} tenant(s) set from spec.tenantLimits ({} listed)",
                stack.spec.tenant_limits.len()
            ),
        )
        .await;
    }
    if changed > 0 {
        let d = &stack.spec.defaults;
        ctx.event(
            stack,
            false,
            "DefaultsApplied",
            format!(
                "database defaults set: retention {}, chunk interval {}, compression {}",
                d.retention_period, d.chunk_interval, d.compression
            ),
        )
        .await;
    }
    Ok(())
}

/// Removes status entries of pods that stopped reporting long ago; the `test` operations make
/// the patch fail rather than remove an entry that moved.
async fn forget_gone_connectors(
    ctx: &Context,
    names: &StackNames,
    entries: &[promscale_crds::ConnectorStatus],
) -> Result<()> {
    let mut gone: Vec<_> = status::forgotten(entries, Timestamp::now(), ctx.config.connector_forget_after).collect();
    if gone.is_empty() {
        return Ok(());
    }
    gone.reverse(); // highest index first, so earlier removals do not shift later ones
    let operations: Vec<_> = gone
        .iter()
        .flat_map(|(i, entry)| {
            [
                json!({"op": "test", "path": format!("/status/connectors/{i}/pod"), "value": entry.pod}),
                json!({"op": "remove", "path": format!("/status/connectors/{i}")}),
            ]
        })
        .collect();
    let patch: json_patch::Patch = serde_json::from_value(json!(operations)).expect("well-formed JSON patch");
    let api: Api<PromscaleStack> = Api::namespaced(ctx.client.clone(), &names.namespace);
    api.patch_status(&names.stack, &PatchParams::default(), &Patch::Json::<()>(patch))
        .await?;
    for (_, entry) in gone {
        tracing::info!(stack = %names.stack, pod = %entry.pod, "forgot a connector that stopped reporting");
    }
    Ok(())
}

async fn announce_transitions(
    ctx: &Context,
    stack: &PromscaleStack,
    previous: &[Condition],
    now: &PromscaleStackStatus,
) {
    let find = |type_: &str| now.conditions.iter().find(|c| c.type_ == type_);
    if conditions::turned(previous, &now.conditions, READY, true) {
        let message = find(READY).map(|c| c.message.clone()).unwrap_or_default();
        ctx.event(stack, false, "Ready", message).await;
    }
    if conditions::turned(previous, &now.conditions, DEGRADED, true) {
        if let Some(c) = find(DEGRADED) {
            ctx.event(stack, true, &c.reason, c.message.clone()).await;
        }
    }
}
