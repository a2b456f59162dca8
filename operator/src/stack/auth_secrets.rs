//! The Secrets `spec.auth` names, looked at before the connector pods need them. A missing
//! Secret or key is reported in the stack's status (the pods could not start without it). The
//! versions of the Secrets holding basic-auth user names, which reach the connector as
//! environment variables that a running pod never sees change, go into the pod template's
//! hash, so that a changed user name rolls the pods; mounted files need no roll (the kubelet
//! updates them and the connector reads them again). Only names, keys and versions leave this
//! module, never a value.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Secret;
use kube::{Api, Client};
use promscale_crds::stack::AuthSpec;

use super::deployment::{auth_secret_keys, auth_usernames};
use crate::database::{get_secret, DatabaseError};

const FIELD: &str = "spec.auth";

/// Checks that every Secret key `auth` mounts or puts into the environment exists; returns
/// `name@resourceVersion` of the Secrets holding user names.
pub async fn check(client: &Client, namespace: &str, auth: &AuthSpec) -> Result<Vec<String>, DatabaseError> {
    let api: Api<Secret> = Api::namespaced(client.clone(), namespace);
    let mut secrets: BTreeMap<String, Secret> = BTreeMap::new();
    for reference in auth_secret_keys(auth) {
        if !secrets.contains_key(&reference.name) {
            let secret = get_secret(&api, namespace, &reference.name, FIELD).await?;
            secrets.insert(reference.name.clone(), secret);
        }
        let secret = &secrets[&reference.name];
        let has_key = secret.data.as_ref().is_some_and(|d| d.contains_key(&reference.key))
            || secret
                .string_data
                .as_ref()
                .is_some_and(|d| d.contains_key(&reference.key));
        if !has_key {
            return Err(DatabaseError::SecretKeyMissing {
                name: reference.name.clone(),
                key: reference.key.clone(),
                field: FIELD,
            });
        }
    }
    let mut versions: Vec<String> = auth_usernames(auth)
        .into_iter()
        .map(|(_, reference)| {
            let version = secrets[&reference.name].metadata.resource_version.clone();
            format!("{}@{}", reference.name, version.unwrap_or_default())
        })
        .collect();
    versions.sort();
    versions.dedup();
    Ok(versions)
}
