//! `spec.auth` of a PromscaleStack on a real kube-apiserver: the operator mounts the named
//! Secret keys into the connector pods and passes the flags naming them, takes basic-auth user
//! names from `secretKeyRef` variables, probes over HTTPS with TLS, and its status carries
//! `prometheusRemoteWrite`/`prometheusRemoteRead` items that the Prometheus Operator's real
//! `Prometheus` CRD accepts under strict field validation. A changed user name rolls the pods,
//! a rotated token or certificate does not (the connector reads its files again), a missing
//! Secret is named in the status, the CRD refuses `--auth.*` in `extraArgs`, and no secret
//! value appears in any object, status, Event or log.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Secret, Service};
use k8s_openapi::ByteString;
use kube::api::{Api, DynamicObject, ObjectMeta, Patch, PatchParams};
use kube::core::{ApiResource, GroupVersionKind};
use kube::Client;
use promscale_crds::stack::{AuthSpec, BasicAuth, Credentials, SecretKeyRef, TlsSpec};
use promscale_crds::PromscaleStack;
use promscale_e2e::k8s::config_hash;
use promscale_e2e::k8s::{apply, condition, events_about, has_condition, put_secret, uri_stack, wait_until};
use promscale_e2e::kube_cluster::KubeCluster;
use promscale_e2e::operator::Operator;
use promscale_e2e::postgres::TestPostgres;
use serde_json::{json, Value};

const WAIT: Duration = Duration::from_secs(60);

// Secret values: none of them may show up outside their Secrets.
const COMMON_TOKEN: &str = "common-token-4f9d1c7e";
const ROTATED_TOKEN: &str = "rotated-token-0b3a2e51";
const WRITE_USER: &str = "writer-7c2d";
const ROTATED_USER: &str = "writer-rotated-91aa";
const WRITE_PASSWORD: &str = "write-password-e83b6a90";
const READ_TOKEN: &str = "read-token-5d0f8b12";
const TLS_KEY: &str = "-----BEGIN PRIVATE KEY-----\nc2VydmVyLWtleS1kM2E5\n-----END PRIVATE KEY-----\n";
const TLS_CERT: &str = "-----BEGIN CERTIFICATE-----\nc2VydmVyLWNlcnQ=\n-----END CERTIFICATE-----\n";
const CA_CERT: &str = "-----BEGIN CERTIFICATE-----\nY2EtY2VydA==\n-----END CERTIFICATE-----\n";

async fn put_secret_data(client: &Client, name: &str, type_: &str, data: &[(&str, &str)]) {
    let secrets: Api<Secret> = Api::namespaced(client.clone(), "default");
    let secret = Secret {
        metadata: ObjectMeta {
            name: Some(name.into()),
            ..Default::default()
        },
        type_: Some(type_.into()),
        data: Some(
            data.iter()
                .map(|(k, v)| (k.to_string(), ByteString(v.as_bytes().to_vec())))
                .collect::<BTreeMap<_, _>>(),
        ),
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

fn key(name: &str, key: &str) -> SecretKeyRef {
    SecretKeyRef {
        name: name.into(),
        key: key.into(),
    }
}

fn auth() -> AuthSpec {
    AuthSpec {
        bearer_token: Some(key("metrics-auth", "token")),
        basic_auth: None,
        write: Some(Credentials {
            bearer_token: None,
            basic_auth: Some(BasicAuth {
                username: key("metrics-write", "username"),
                password: key("metrics-write", "password"),
            }),
        }),
        read: Some(Credentials {
            bearer_token: Some(key("metrics-read", "token")),
            basic_auth: None,
        }),
        tls: Some(TlsSpec {
            secret_name: "metrics-tls".into(),
            server_ca: None,
            client_ca: Some(key("metrics-client-ca", "ca.crt")),
            client_cert_secret_name: Some("prometheus-client".into()),
        }),
        tenant_tokens: None,
    }
}

fn prometheus_operator_crd() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../shared/prometheus-operator-crds/v0.93.0/monitoring.coreos.com_prometheuses.yaml")
}

#[tokio::test]
async fn auth_becomes_mounts_flags_and_prometheus_operator_blocks_without_leaking_a_secret() {
    let cluster = KubeCluster::start().await;
    cluster.install_crds().await;
    let crd = prometheus_operator_crd();
    assert!(
        crd.is_file(),
        "{} is missing: the Prometheus Operator CRDs are test data from ../shared",
        crd.display()
    );
    cluster.apply_crd_file(&crd).await;
    let client = cluster.client().await;
    let pg = TestPostgres::start();
    put_secret(&client, "default", "metrics-db", "uri", &pg.uri()).await;
    put_secret_data(&client, "metrics-auth", "Opaque", &[("token", COMMON_TOKEN)]).await;
    put_secret_data(
        &client,
        "metrics-write",
        "Opaque",
        &[("username", WRITE_USER), ("password", WRITE_PASSWORD)],
    )
    .await;
    put_secret_data(&client, "metrics-read", "Opaque", &[("token", READ_TOKEN)]).await;
    put_secret_data(
        &client,
        "metrics-tls",
        "kubernetes.io/tls",
        &[("tls.crt", TLS_CERT), ("tls.key", TLS_KEY), ("ca.crt", CA_CERT)],
    )
    .await;
    put_secret_data(&client, "metrics-client-ca", "Opaque", &[("ca.crt", CA_CERT)]).await;
    let mut operator = Operator::start(&cluster.admin_kubeconfig(), &[]).await;

    let stacks: Api<PromscaleStack> = Api::namespaced(client.clone(), "default");
    let mut stack = uri_stack("metrics", "default", "metrics-db");
    stack.spec.connector.extra_args = vec!["--ingest.writers=2".into()];
    stack.spec.auth = Some(auth());
    apply(&stacks, &stack).await;

    // --- the Deployment: flags on mounted files, user names from the Secret, HTTPS probes
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), "default");
    let deployment = wait_until(&deployments, "metrics-connector", "created", WAIT, |_| true).await;
    let pod = deployment.spec.clone().unwrap().template.spec.unwrap();
    let container = &pod.containers[0];
    assert_eq!(
        container.args.clone().unwrap(),
        vec![
            "--auth.bearer-token-file=/etc/promscale/auth/bearer-token",
            "--auth.write.basic-password-file=/etc/promscale/auth/write/basic-password",
            "--auth.read.bearer-token-file=/etc/promscale/auth/read/bearer-token",
            "--auth.tls-cert-file=/etc/promscale/auth/tls/tls.crt",
            "--auth.tls-key-file=/etc/promscale/auth/tls/tls.key",
            "--auth.tls-client-ca-file=/etc/promscale/auth/tls/client-ca.crt",
            "--ingest.writers=2",
        ]
    );
    let volume = pod
        .volumes
        .clone()
        .unwrap()
        .into_iter()
        .find(|v| v.name == "auth")
        .expect("the auth volume");
    let projected = volume.projected.unwrap();
    assert_eq!(projected.default_mode, Some(0o440));
    let mounted: Vec<(String, String, String)> = projected
        .sources
        .unwrap()
        .into_iter()
        .flat_map(|source| {
            let secret = source.secret.expect("Secrets only");
            assert_eq!(secret.optional, Some(false));
            let name = secret.name.clone();
            secret
                .items
                .unwrap()
                .into_iter()
                .map(move |item| (name.clone(), item.key, item.path))
        })
        .collect();
    let expected: Vec<(String, String, String)> = [
        ("metrics-auth", "token", "bearer-token"),
        ("metrics-write", "password", "write/basic-password"),
        ("metrics-read", "token", "read/bearer-token"),
        ("metrics-tls", "tls.crt", "tls/tls.crt"),
        ("metrics-tls", "tls.key", "tls/tls.key"),
        ("metrics-client-ca", "ca.crt", "tls/client-ca.crt"),
    ]
    .iter()
    .map(|(a, b, c)| (a.to_string(), b.to_string(), c.to_string()))
    .collect();
    assert_eq!(mounted, expected);
    let mount = container
        .volume_mounts
        .clone()
        .unwrap()
        .into_iter()
        .find(|m| m.name == "auth")
        .expect("the auth mount");
    assert_eq!(
        (mount.mount_path.as_str(), mount.read_only),
        ("/etc/promscale/auth", Some(true))
    );
    let env = container.env.clone().unwrap();
    let username = env
        .iter()
        .find(|e| e.name == "PROMSCALE_AUTH_WRITE_BASIC_USERNAME")
        .expect("the write user name");
    assert_eq!(username.value, None);
    let reference = username.value_from.clone().unwrap().secret_key_ref.unwrap();
    assert_eq!(
        (reference.name.as_str(), reference.key.as_str()),
        ("metrics-write", "username")
    );
    for probe in [&container.readiness_probe, &container.liveness_probe] {
        let get = probe.clone().unwrap().http_get.unwrap();
        assert_eq!(get.scheme.as_deref(), Some("HTTPS"));
    }
    assert_eq!(container.ports.clone().unwrap()[0].name.as_deref(), Some("https"));
    let services: Api<Service> = Api::namespaced(client.clone(), "default");
    let service = wait_until(&services, "metrics-connector", "created", WAIT, |_| true).await;
    assert_eq!(service.spec.unwrap().ports.unwrap()[0].name.as_deref(), Some("https"));

    // --- the status: https endpoints and the Prometheus Operator items
    let status = wait_until(&stacks, "metrics", "the Prometheus blocks", WAIT, |s| {
        s.status.as_ref().is_some_and(|st| st.prometheus_remote_read.is_some())
    })
    .await
    .status
    .unwrap();
    let url = "https://metrics-connector.default.svc.cluster.local:9201";
    assert_eq!(status.endpoints.as_ref().unwrap().remote_write, format!("{url}/write"));
    let write = serde_json::to_value(status.prometheus_remote_write.clone().unwrap()).unwrap();
    let read = serde_json::to_value(status.prometheus_remote_read.clone().unwrap()).unwrap();
    let tls = json!({
        "ca": {"secret": {"name": "metrics-tls", "key": "ca.crt"}},
        "cert": {"secret": {"name": "prometheus-client", "key": "tls.crt"}},
        "keySecret": {"name": "prometheus-client", "key": "tls.key"},
        "serverName": "metrics-connector.default.svc.cluster.local",
    });
    assert_eq!(
        write,
        json!({
            "url": format!("{url}/write"),
            "basicAuth": {
                "username": {"name": "metrics-write", "key": "username"},
                "password": {"name": "metrics-write", "key": "password"},
            },
            "tlsConfig": tls,
        })
    );
    assert_eq!(
        read,
        json!({
            "url": format!("{url}/read"),
            "authorization": {"type": "Bearer", "credentials": {"name": "metrics-read", "key": "token"}},
            "tlsConfig": tls,
            "readRecent": true,
        })
    );

    // --- pasted into a Prometheus Operator Prometheus, they pass its real schema, strictly
    let prometheuses: Api<DynamicObject> = Api::namespaced_with(
        client.clone(),
        "default",
        &ApiResource::from_gvk(&GroupVersionKind::gvk("monitoring.coreos.com", "v1", "Prometheus")),
    );
    let strict = PatchParams::apply("kubectl").force().validation_strict();
    let prometheus = |write: Value, read: Value| {
        json!({
            "apiVersion": "monitoring.coreos.com/v1",
            "kind": "Prometheus",
            "metadata": {"name": "k8s", "namespace": "default"},
            "spec": {"remoteWrite": [write], "remoteRead": [read]},
        })
    };
    let stored = prometheuses
        .patch("k8s", &strict, &Patch::Apply(prometheus(write.clone(), read.clone())))
        .await
        .unwrap_or_else(|e| panic!("the Prometheus CRD refused the status blocks: {e}"));
    assert_eq!(stored.data["spec"]["remoteWrite"][0], write);
    assert_eq!(stored.data["spec"]["remoteRead"][0], read);
    let mut misspelt = write.clone();
    misspelt["tlsConfig"]["serverNmae"] = json!("x");
    let refused = prometheuses
        .patch("k8s", &strict, &Patch::Apply(prometheus(misspelt, read.clone())))
        .await
        .expect_err("strict validation refuses unknown fields");
    assert!(refused.to_string().contains("serverNmae"), "{refused}");

    // --- a rotated token is a file the kubelet updates: no roll; a changed user name rolls
    let before = config_hash(&deployment);
    put_secret_data(&client, "metrics-auth", "Opaque", &[("token", ROTATED_TOKEN)]).await;
    tokio::time::sleep(Duration::from_secs(6)).await; // three resyncs
    assert_eq!(
        config_hash(&deployments.get("metrics-connector").await.unwrap()),
        before,
        "a rotated token must not roll the pods"
    );
    put_secret_data(
        &client,
        "metrics-write",
        "Opaque",
        &[("username", ROTATED_USER), ("password", WRITE_PASSWORD)],
    )
    .await;
    wait_until(
        &deployments,
        "metrics-connector",
        "rolled for the new user name",
        WAIT,
        |d| config_hash(d) != before,
    )
    .await;

    // --- a missing Secret is named in the status
    let mut locked = uri_stack("locked", "default", "metrics-db");
    locked.spec.auth = Some(AuthSpec {
        tls: Some(TlsSpec {
            secret_name: "no-such-tls".into(),
            ..Default::default()
        }),
        ..Default::default()
    });
    apply(&stacks, &locked).await;
    let locked = wait_until(&stacks, "locked", "reporting the missing Secret", WAIT, |s| {
        s.status
            .as_ref()
            .is_some_and(|st| has_condition(&st.conditions, "Degraded", "True", "SecretMissing"))
    })
    .await;
    let message = &condition(&locked.status.as_ref().unwrap().conditions, "Ready")
        .unwrap()
        .message;
    assert!(
        message.contains("\"no-such-tls\"") && message.contains("spec.auth"),
        "{message}"
    );

    // --- the CRD refuses what would fight spec.auth
    let dynamic_stacks: Api<DynamicObject> =
        Api::namespaced_with(client.clone(), "default", &ApiResource::erase::<PromscaleStack>(&()));
    let refused = [
        (
            json!({"connector": {"extraArgs": ["--auth.bearer-token-file=/x"]}}),
            "extraArgs must not set --db.*, --web.listen-address or --auth.*",
        ),
        (
            json!({"auth": {"write": {}}}),
            "auth.write and auth.read need bearerToken, basicAuth or both",
        ),
        (
            json!({"auth": {"tls": {"secretName": "t", "clientCertSecretName": "c"}}}),
            "it needs auth.tls.clientCA",
        ),
        (
            json!({"auth": {"basicAuth": {"username": {"name": "a", "key": "u"}}}}),
            "password",
        ),
    ];
    for (i, (extra, message)) in refused.into_iter().enumerate() {
        let mut spec = json!({"database": {"uriSecretRef": {"name": "metrics-db", "key": "uri"}}});
        spec.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
        let object = json!({
            "apiVersion": "promscale.dev/v1alpha1",
            "kind": "PromscaleStack",
            "metadata": {"name": format!("refused-{i}")},
            "spec": spec,
        });
        let error = dynamic_stacks
            .patch(
                &format!("refused-{i}"),
                &PatchParams::apply("kubectl"),
                &Patch::Apply(object),
            )
            .await
            .expect_err("refused");
        assert!(error.to_string().contains(message), "{error}");
    }

    // --- no secret value anywhere: objects, status, events, the operator's log
    let config_maps: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    let mut everything = String::new();
    everything += &serde_json::to_string(&deployments.get("metrics-connector").await.unwrap()).unwrap();
    everything += &serde_json::to_string(&config_maps.get("metrics-connector").await.unwrap()).unwrap();
    everything += &serde_json::to_string(&services.get("metrics-connector").await.unwrap()).unwrap();
    everything += &serde_json::to_string(&stacks.get("metrics").await.unwrap()).unwrap();
    everything += &serde_json::to_string(&stacks.get("locked").await.unwrap()).unwrap();
    everything += &serde_json::to_string(&events_about(&client, "default", "metrics").await).unwrap();
    everything += &serde_json::to_string(&events_about(&client, "default", "locked").await).unwrap();
    everything += &operator.log();
    assert!(everything.len() > 10_000);
    for value in [
        COMMON_TOKEN,
        ROTATED_TOKEN,
        WRITE_USER,
        ROTATED_USER,
        WRITE_PASSWORD,
        READ_TOKEN,
        "c2VydmVyLWtleS1kM2E5",
    ] {
        assert!(!everything.contains(value), "{value} leaked");
    }
    assert!(operator.running());
}
