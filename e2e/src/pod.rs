//! What a kubelet would run for a Deployment's pod, for a test API server that has no kubelet:
//! the first container's image, args and environment resolved exactly as Kubernetes resolves
//! them (envFrom ConfigMaps and Secrets, then env with `value`, `fieldRef`, `secretKeyRef` and
//! `configMapKeyRef`), its service account, probes, user and writable volumes.
//!
//! The one liberty: a pod has a network namespace of its own, so `0.0.0.0:<containerPort>`
//! in args or env becomes `127.0.0.1:<free port>` here, as the pod IP would be.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Container, Probe, Secret};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::api::Api;
use kube::{Client, ResourceExt};

use crate::free_port;

#[derive(Debug, Clone)]
pub struct PortMapping {
    pub name: Option<String>,
    pub container_port: i32,
    pub host_port: u16,
}

#[derive(Debug, Clone)]
pub struct PodRun {
    pub pod_name: String,
    pub namespace: String,
    pub service_account: String,
    pub image: String,
    pub args: Vec<String>,
    pub env: Vec<(String, String)>,
    pub ports: Vec<PortMapping>,
    /// (path, host port) of the readiness and liveness probes.
    pub readiness: Option<(String, u16)>,
    pub liveness: Option<(String, u16)>,
    pub run_as_user: Option<i64>,
    pub read_only_root_filesystem: bool,
    /// Where the container may write (its volume mounts).
    pub writable_paths: Vec<String>,
}

impl PodRun {
    /// Resolves the first container of `deployment`'s pod template.
    pub async fn from_deployment(client: &Client, deployment: &Deployment) -> Self {
        let namespace = deployment.namespace().expect("a namespaced Deployment");
        let template = deployment.spec.as_ref().expect("a spec").template.clone();
        let pod = template.spec.expect("a pod spec");
        let container: Container = pod.containers[0].clone();
        let suffix: String = {
            use rand::Rng;
            let mut rng = rand::thread_rng();
            (0..5).map(|_| (b'a' + rng.gen_range(0..26)) as char).collect()
        };
        let pod_name = format!("{}-6f7c9d8b5-{suffix}", deployment.name_any());
        let service_account = pod.service_account_name.clone().unwrap_or_else(|| "default".into());

        let ports: Vec<PortMapping> = container
            .ports
            .clone()
            .unwrap_or_default()
            .into_iter()
            .map(|p| PortMapping {
                name: p.name,
                container_port: p.container_port,
                host_port: free_port().expect("free port"),
            })
            .collect();
        let map_ports = |text: &str| {
            ports.iter().fold(text.to_string(), |t, p| {
                t.replace(
                    &format!("0.0.0.0:{}", p.container_port),
                    &format!("127.0.0.1:{}", p.host_port),
                )
            })
        };

        let config_maps: Api<ConfigMap> = Api::namespaced(client.clone(), &namespace);
        let secrets: Api<Secret> = Api::namespaced(client.clone(), &namespace);
        let mut env: BTreeMap<String, String> = BTreeMap::new();
        let mut order: Vec<String> = Vec::new();
        let mut set = |name: String, value: String, env: &mut BTreeMap<String, String>| {
            if !env.contains_key(&name) {
                order.push(name.clone());
            }
            env.insert(name, value);
        };
        for source in container.env_from.clone().unwrap_or_default() {
            let prefix = source.prefix.clone().unwrap_or_default();
            if let Some(reference) = source.config_map_ref {
                let map = config_maps.get(&reference.name).await.expect("the envFrom ConfigMap");
                for (k, v) in map.data.unwrap_or_default() {
                    set(format!("{prefix}{k}"), v, &mut env);
                }
            }
            if let Some(reference) = source.secret_ref {
                let secret = secrets.get(&reference.name).await.expect("the envFrom Secret");
                for (k, v) in secret.data.unwrap_or_default() {
                    set(format!("{prefix}{k}"), String::from_utf8(v.0).unwrap(), &mut env);
                }
            }
        }
        for var in container.env.clone().unwrap_or_default() {
            let value = match (var.value, var.value_from) {
                (Some(value), _) => value,
                (None, Some(from)) => {
                    if let Some(field) = from.field_ref {
                        match field.field_path.as_str() {
                            "metadata.name" => pod_name.clone(),
                            "metadata.namespace" => namespace.clone(),
                            "spec.serviceAccountName" => service_account.clone(),
                            other => panic!("fieldRef {other} is not emulated"),
                        }
                    } else if let Some(key) = from.secret_key_ref {
                        let secret = secrets.get(&key.name).await.expect("the secretKeyRef Secret");
                        let bytes = secret
                            .data
                            .unwrap_or_default()
                            .remove(&key.key)
                            .expect("the secretKeyRef key");
                        String::from_utf8(bytes.0).unwrap()
                    } else if let Some(key) = from.config_map_key_ref {
                        let map = config_maps.get(&key.name).await.expect("the configMapKeyRef ConfigMap");
                        map.data
                            .unwrap_or_default()
                            .remove(&key.key)
                            .expect("the configMapKeyRef key")
                    } else {
                        panic!("env {} has a valueFrom that is not emulated", var.name)
                    }
                }
                (None, None) => String::new(),
            };
            set(var.name, value, &mut env);
        }
        let env = order
            .into_iter()
            .map(|name| {
                let value = map_ports(&env[&name]);
                (name, value)
            })
            .collect();

        let probe = |probe: &Option<Probe>| {
            let action = probe.as_ref()?.http_get.as_ref()?;
            let host_port = ports
                .iter()
                .find(|p| match &action.port {
                    IntOrString::Int(n) => p.container_port == *n,
                    IntOrString::String(name) => p.name.as_deref() == Some(name.as_str()),
                })
                .expect("a probe on a declared port")
                .host_port;
            Some((action.path.clone().unwrap_or_else(|| "/".into()), host_port))
        };
        let security = container.security_context.clone().unwrap_or_default();
        let pod_security = pod.security_context.clone().unwrap_or_default();
        PodRun {
            readiness: probe(&container.readiness_probe),
            liveness: probe(&container.liveness_probe),
            args: container
                .args
                .clone()
                .unwrap_or_default()
                .iter()
                .map(|a| map_ports(a))
                .collect(),
            image: container.image.clone().expect("an image"),
            run_as_user: security.run_as_user.or(pod_security.run_as_user),
            read_only_root_filesystem: security.read_only_root_filesystem == Some(true),
            writable_paths: container
                .volume_mounts
                .clone()
                .unwrap_or_default()
                .into_iter()
                .filter(|m| m.read_only != Some(true))
                .map(|m| m.mount_path)
                .collect(),
            pod_name,
            namespace,
            service_account,
            env,
            ports,
        }
    }

    /// The host port standing for a named container port.
    pub fn port(&self, name: &str) -> u16 {
        self.ports
            .iter()
            .find(|p| p.name.as_deref() == Some(name))
            .unwrap_or_else(|| panic!("no container port named {name}"))
            .host_port
    }
}
