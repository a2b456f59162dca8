//! One reconciliation of a MetricPolicy: work out which metrics it wins, apply its settings to
//! them, write the status; on deletion, reset what it set.

use std::sync::Arc;

use kube::api::{ListParams, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::finalizer::{finalizer, Event};
use kube::runtime::reflector::ObjectRef;
use kube::{Api, Resource, ResourceExt};
use promscale_crds::conditions::{DEGRADED, PROGRESSING, READY};
use promscale_crds::duration::MetricDuration;
use promscale_crds::{MetricPolicy, MetricPolicyStatus, PromscaleStack};
use serde_json::json;

use super::claims::{self, Claimant, Claims, Selector};
use super::settings::{self, Desired, Owner};
use crate::conditions::{self, Observed};
use crate::context::{Context, FIELD_MANAGER};
use crate::database::{self, DatabaseError, Target};
use crate::error::{Error, Result};
use crate::interval::interval;

pub const CONTROLLER: &str = "metricpolicy";
pub const FINALIZER: &str = "promscale.dev/reset-metric-settings";

pub async fn reconcile(policy: Arc<MetricPolicy>, ctx: Arc<Context>) -> Result<Action> {
    let _timer = ctx.metrics.reconcile(CONTROLLER);
    let namespace = policy.namespace().ok_or(Error::MissingField("metadata.namespace"))?;
    let api: Api<MetricPolicy> = Api::namespaced(ctx.client.clone(), &namespace);
    let shared = ctx.clone();
    finalizer(&api, FINALIZER, policy, move |event| async move {
        let ctx = shared;
        match event {
            Event::Apply(policy) => apply(&policy, &namespace, &ctx).await,
            Event::Cleanup(policy) => cleanup(&policy, &namespace, &ctx).await,
        }
    })
    .await
    .map_err(|e| Error::Finalizer(Box::new(e)))
}

/// How applying went, before it becomes conditions.
enum Outcome {
    Applied(Claims),
    InvalidSpec(String),
    StackNotFound,
    Failed(DatabaseError),
}

async fn apply(policy: &MetricPolicy, namespace: &str, ctx: &Context) -> Result<Action> {
    let outcome = match try_apply(policy, namespace, ctx).await {
        Ok(outcome) => outcome,
        Err(Error::Database(e)) => Outcome::Failed(e),
        Err(e) => return Err(e),
    };
    write_status(policy, namespace, ctx, &outcome).await?;
    match outcome {
        Outcome::Applied(_) | Outcome::StackNotFound | Outcome::Failed(DatabaseError::SchemaMissing) => {
            Ok(Action::requeue(ctx.config.policy_resync_interval))
        }
        // Only a change of the spec can help.
        Outcome::InvalidSpec(_) => Ok(Action::await_change()),
        // Recorded in the status; returning it makes the controller retry with backoff.
        Outcome::Failed(e) => Err(e.into()),
    }
}

async fn try_apply(policy: &MetricPolicy, namespace: &str, ctx: &Context) -> Result<Outcome> {
    let selector = match Selector::new(&policy.spec.metrics) {
        Ok(selector) => selector,
        Err(e) => {
            return Ok(Outcome::InvalidSpec(format!(
                "spec.metrics.regex does not compile: {e}"
            )))
        }
    };
    let desired = match desired(policy) {
        Ok(desired) => desired,
        Err(e) => return Ok(Outcome::InvalidSpec(e)),
    };
    let stacks: Api<PromscaleStack> = Api::namespaced(ctx.client.clone(), namespace);
    let Some(stack) = stacks.get_opt(&policy.spec.stack_ref.name).await? else {
        return Ok(Outcome::StackNotFound);
    };
    let siblings = siblings(policy, namespace, ctx).await?;
    let mut claimants: Vec<Claimant> = siblings
        .iter()
        .filter_map(|p| {
            Some(Claimant {
                name: p.name_any(),
                created: p.metadata.creation_timestamp.as_ref().map(|t| t.0),
                selector: Selector::new(&p.spec.metrics).ok()?,
            })
        })
        .collect();
    claimants.push(Claimant {
        name: policy.name_any(),
        created: policy.metadata.creation_timestamp.as_ref().map(|t| t.0),
        selector,
    });

    let target = Target::resolve(&ctx.client, namespace, &stack.spec.database).await?;
    let mut connection = target.connect(ctx.config.db_connect_timeout).await?;
    let uid = policy.uid().ok_or(Error::MissingField("metadata.uid"))?;
    let owner_name = format!("{namespace}/{}", policy.name_any());
    let result = async {
        database::schema_exists(&mut connection).await?;
        let metrics = settings::metric_names(&mut connection).await?;
        let claims = claims::resolve(&policy.name_any(), &claimants, &metrics);
        let owner = Owner {
            uid: &uid,
            name: &owner_name,
        };
        let changed = settings::apply(&mut connection, &owner, &claims.won, &desired).await?;
        Ok::<_, DatabaseError>((claims, changed))
    }
    .await;
    database::close(connection).await;
    let (claims, changed) = result?;
    if changed > 0 {
        ctx.event(
            policy,
            false,
            "SettingsApplied",
            format!(
                "{changed} settings changed; the policy covers {} metrics",
                claims.won.len()
            ),
        )
        .await;
        // What this policy took or let go of may change what its siblings win.
        for sibling in &siblings {
            let _ = ctx.policy_trigger.unbounded_send(ObjectRef::from_obj(sibling));
        }
    }
    Ok(Outcome::Applied(claims))
}

async fn cleanup(policy: &MetricPolicy, namespace: &str, ctx: &Context) -> Result<Action> {
    let stacks: Api<PromscaleStack> = Api::namespaced(ctx.client.clone(), namespace);
    let Some(stack) = stacks.get_opt(&policy.spec.stack_ref.name).await? else {
        ctx.event(
            policy,
            true,
            "StackNotFound",
            format!(
                "PromscaleStack {:?} is gone, so its database is unknown: the settings this policy made stay",
                policy.spec.stack_ref.name
            ),
        )
        .await;
        return Ok(Action::await_change());
    };
    let uid = policy.uid().ok_or(Error::MissingField("metadata.uid"))?;
    let target = Target::resolve(&ctx.client, namespace, &stack.spec.database).await?;
    let mut connection = target.connect(ctx.config.db_connect_timeout).await?;
    let result = async {
        match database::schema_exists(&mut connection).await {
            Err(DatabaseError::SchemaMissing) => Ok(0),
            Err(e) => Err(e),
            Ok(()) => settings::release(&mut connection, &uid).await,
        }
    }
    .await;
    database::close(connection).await;
    let reset = result?;
    ctx.event(
        policy,
        false,
        "SettingsReset",
        format!("policy deleted: {reset} metric settings reset to the defaults"),
    )
    .await;
    for sibling in siblings(policy, namespace, ctx).await? {
        let _ = ctx.policy_trigger.unbounded_send(ObjectRef::from_obj(&sibling));
    }
    Ok(Action::await_change())
}

/// The other live policies of the same stack.
async fn siblings(policy: &MetricPolicy, namespace: &str, ctx: &Context) -> Result<Vec<MetricPolicy>> {
    let api: Api<MetricPolicy> = Api::namespaced(ctx.client.clone(), namespace);
    Ok(api
        .list(&ListParams::default())
        .await?
        .items
        .into_iter()
        .filter(|p| {
            p.spec.stack_ref == policy.spec.stack_ref
                && p.uid() != policy.uid()
                && p.meta().deletion_timestamp.is_none()
        })
        .collect())
}

fn desired(policy: &MetricPolicy) -> Result<Desired, String> {
    let parse = |field: &str, text: &Option<String>| {
        text.as_deref()
            .map(|t| {
                MetricDuration::parse(t)
                    .map(interval)
                    .map_err(|e| format!("spec.{field}: {e}"))
            })
            .transpose()
    };
    Ok(Desired {
        retention: parse("retentionPeriod", &policy.spec.retention_period)?,
        chunk: parse("chunkInterval", &policy.spec.chunk_interval)?,
        compression: policy.spec.compression,
        max_active_series: policy.spec.max_active_series,
    })
}

async fn write_status(policy: &MetricPolicy, namespace: &str, ctx: &Context, outcome: &Outcome) -> Result<()> {
    let previous = policy.status.clone().unwrap_or_default();
    let stack = &policy.spec.stack_ref.name;
    let (observed, applied, pending, conflicts) = match outcome {
        Outcome::Applied(claims) => {
            let pending = if claims.pending.is_empty() {
                String::new()
            } else {
                format!("; {} named metrics not written yet", claims.pending.len())
            };
            let mut observed = vec![
                Observed::new(
                    READY,
                    true,
                    "Applied",
                    format!("applied to {} metrics{pending}", claims.won.len()),
                ),
                Observed::new(PROGRESSING, false, "Applied", "settings match the spec"),
            ];
            observed.push(match claims.conflicts.first() {
                None => Observed::new(DEGRADED, false, "AsExpected", "no other policy claims these metrics"),
                Some(first) => Observed::new(
                    DEGRADED,
                    true,
                    "Conflict",
                    format!(
                        "{} metrics are also claimed by other policies of stack {stack:?}, e.g. {:?} by {} (winner: {}); make the policies disjoint",
                        claims.conflicts.len(),
                        first.metric,
                        first.policies.join(", "),
                        first.winner
                    ),
                ),
            });
            let listed = claims
                .conflicts
                .iter()
                .take(claims::MAX_LISTED_CONFLICTS)
                .cloned()
                .collect();
            (observed, claims.won.len() as i32, claims.pending.len() as i32, listed)
        }
        Outcome::InvalidSpec(message) => (failure("InvalidSpec", message, false), 0, 0, Vec::new()),
        Outcome::StackNotFound => (
            failure(
                "StackNotFound",
                &format!("PromscaleStack {stack:?} does not exist in namespace {namespace:?}"),
                false,
            ),
            0,
            0,
            Vec::new(),
        ),
        Outcome::Failed(e @ DatabaseError::SchemaMissing) => {
            (failure(e.reason(), &e.to_string(), true), 0, 0, Vec::new())
        }
        // The last known counts stay: the database could not be asked.
        Outcome::Failed(e) => (
            failure(e.reason(), &e.to_string(), false),
            previous.applied_metrics,
            previous.pending_metrics,
            previous.conflicts.clone(),
        ),
    };
    let generation = policy.metadata.generation;
    let status = MetricPolicyStatus {
        observed_generation: generation,
        conditions: conditions::merge(&previous.conditions, &observed, generation),
        applied_metrics: applied,
        pending_metrics: pending,
        conflicts,
    };
    let api: Api<MetricPolicy> = Api::namespaced(ctx.client.clone(), namespace);
    let patch = json!({
        "apiVersion": MetricPolicy::api_version(&()),
        "kind": MetricPolicy::kind(&()),
        "status": status,
    });
    api.patch_status(
        &policy.name_any(),
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(&patch),
    )
    .await?;
    if conditions::turned(&previous.conditions, &status.conditions, DEGRADED, true) {
        if let Some(c) = status.conditions.iter().find(|c| c.type_ == DEGRADED) {
            ctx.event(policy, true, &c.reason, c.message.clone()).await;
        }
    }
    Ok(())
}

/// Conditions of a policy that could not be applied; `waiting` when it only needs time.
fn failure(reason: &'static str, message: &str, waiting: bool) -> Vec<Observed> {
    vec![
        Observed::new(READY, false, reason, message),
        Observed::new(PROGRESSING, waiting, reason, message),
        Observed::new(DEGRADED, !waiting, reason, message),
    ]
}
