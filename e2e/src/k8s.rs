//! Small helpers for tests that talk to the test API server.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::time::Duration;

use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, ObjectMeta};
use k8s_openapi::ByteString;
use kube::api::{Api, ListParams, Patch, PatchParams};
use kube::{Client, Resource};
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::wait_for;

/// Creates or replaces a Secret holding one key.
pub async fn put_secret(client: &Client, namespace: &str, name: &str, key: &str, value: &str) {
    let secrets: Api<Secret> = Api::namespaced(client.clone(), namespace);
    let secret = Secret {
        metadata: ObjectMeta {
            name: Some(name.into()),
            ..Default::default()
        },
        data: Some(BTreeMap::from([(
            key.to_string(),
            ByteString(value.as_bytes().to_vec()),
        )])),
        ..Default::default()
    };
    secrets
        .patch(
            name,
            &PatchParams::apply("promscale-e2e").force(),
            &Patch::Apply(&secret),
        )
        .await
        .unwrap_or_else(|e| panic!("putting Secret {name}: {e}"));
}

/// Server-side applies an object as a user would with `kubectl apply --server-side`.
pub async fn apply<K>(api: &Api<K>, object: &K) -> K
where
    K: Resource + Serialize + DeserializeOwned + Clone + Debug,
{
    let name = object.meta().name.clone().expect("a named object");
    api.patch(&name, &PatchParams::apply("kubectl").force(), &Patch::Apply(object))
        .await
        .unwrap_or_else(|e| panic!("applying {name}: {e}"))
}

/// Waits until `name` exists and `check` accepts it; returns it.
pub async fn wait_until<K, F>(api: &Api<K>, name: &str, what: &str, timeout: Duration, check: F) -> K
where
    K: Resource + DeserializeOwned + Clone + Debug,
    F: Fn(&K) -> bool,
{
    let check = &check;
    wait_for(&format!("{name}: {what}"), timeout, || {
        let api = api.clone();
        async move {
            let object = api.get_opt(name).await.ok().flatten()?;
            check(&object).then_some(object)
        }
    })
    .await
}

/// The condition of a type, if present.
pub fn condition<'a>(conditions: &'a [Condition], type_: &str) -> Option<&'a Condition> {
    conditions.iter().find(|c| c.type_ == type_)
}

/// Whether the condition has this status and reason.
pub fn has_condition(conditions: &[Condition], type_: &str, status: &str, reason: &str) -> bool {
    condition(conditions, type_).is_some_and(|c| c.status == status && c.reason == reason)
}

/// The Events (events.k8s.io) about the object named `name`, oldest first.
pub async fn events_about(client: &Client, namespace: &str, name: &str) -> Vec<Event> {
    let events: Api<Event> = Api::namespaced(client.clone(), namespace);
    let mut found: Vec<Event> = events
        .list(&ListParams::default())
        .await
        .expect("listing events")
        .items
        .into_iter()
        .filter(|e| e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(name))
        .collect();
    found.sort_by_key(|e| e.event_time.as_ref().map(|t| t.0));
    found
}

/// Server-side applies every document of a YAML text, as `kubectl apply --server-side
/// --field-manager=<manager>` does (without forcing conflicts); returns what the API server
/// stored.
pub async fn apply_yaml(
    client: &Client,
    text: &str,
    manager: &str,
) -> Result<Vec<kube::api::DynamicObject>, kube::Error> {
    use kube::api::DynamicObject;
    use kube::core::GroupVersionKind;
    use kube::discovery::Scope;

    let mut stored = Vec::new();
    for document in serde_saphyr::from_multiple::<serde_json::Value>(text).expect("valid YAML") {
        if document.is_null() {
            continue;
        }
        let object: DynamicObject = serde_json::from_value(document).expect("a Kubernetes object");
        let types = object.types.clone().expect("apiVersion and kind");
        let gvk = GroupVersionKind::try_from(&types).expect("a valid apiVersion");
        let (resource, capabilities) = kube::discovery::pinned_kind(client, &gvk).await?;
        let api: Api<DynamicObject> = match capabilities.scope {
            Scope::Namespaced => Api::namespaced_with(
                client.clone(),
                object.metadata.namespace.as_deref().unwrap_or("default"),
                &resource,
            ),
            Scope::Cluster => Api::all_with(client.clone(), &resource),
        };
        let name = object.metadata.name.clone().expect("a named object");
        stored.push(
            api.patch(&name, &PatchParams::apply(manager), &Patch::Apply(&object))
                .await?,
        );
    }
    Ok(stored)
}

/// A PromscaleStack whose database URI is the key `uri` of Secret `secret`, all else default.
pub fn uri_stack(name: &str, namespace: &str, secret: &str) -> promscale_crds::PromscaleStack {
    use promscale_crds::stack::{DatabaseSpec, SecretKeyRef};
    let mut stack = promscale_crds::PromscaleStack::new(
        name,
        promscale_crds::PromscaleStackSpec {
            connector: Default::default(),
            database: DatabaseSpec {
                uri_secret_ref: Some(SecretKeyRef {
                    name: secret.into(),
                    key: "uri".into(),
                }),
                ..Default::default()
            },
            defaults: Default::default(),
            service: Default::default(),
            auth: None,
            tenant_limits: Vec::new(),
        },
    );
    stack.metadata.namespace = Some(namespace.into());
    stack
}

/// The operator's `promscale.dev/config-hash` annotation of a Deployment's pod template: it
/// changes exactly when the pods must roll.
pub fn config_hash(deployment: &k8s_openapi::api::apps::v1::Deployment) -> String {
    deployment
        .spec
        .as_ref()
        .and_then(|s| s.template.metadata.as_ref())
        .and_then(|m| m.annotations.as_ref())
        .and_then(|a| a.get("promscale.dev/config-hash"))
        .cloned()
        .expect("the pod template has a config-hash annotation")
}
