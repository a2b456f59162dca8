//! A real Kubernetes API server, envtest-style: etcd and kube-apiserver on loopback ports with
//! private folders, RBAC on, no kubelet or controller-manager (so Deployments get no pods and
//! nothing garbage-collects: tests check owner references instead).
//!
//! The binaries are built from pinned Go modules by `e2e/tools/build.sh` (`make tools`).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::ServiceAccount;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::Client;

use crate::{free_port, terminate, wait_for};

pub struct KubeCluster {
    etcd: Option<Child>,
    apiserver: Option<Child>,
    dir: tempfile::TempDir,
    url: String,
    admin_token: String,
}

/// The path of a tool built by `e2e/tools/build.sh`, building it when missing.
pub fn tool(name: &str) -> PathBuf {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tools/build.sh");
    let output = Command::new(&script)
        .arg(name)
        .stderr(Stdio::inherit())
        .output()
        .unwrap_or_else(|e| panic!("running {}: {e}", script.display()));
    assert!(
        output.status.success(),
        "{} {name} failed; run `make tools`",
        script.display()
    );
    PathBuf::from(String::from_utf8(output.stdout).expect("a UTF-8 path").trim())
}

fn random_token() -> String {
    use rand::Rng;
    let mut rng = rand::thread_rng();
    (0..32).map(|_| format!("{:x}", rng.gen_range(0..16))).collect()
}

impl KubeCluster {
    pub async fn start() -> Self {
        let etcd_bin = tool("etcd");
        let apiserver_bin = tool("kube-apiserver");
        let dir = tempfile::Builder::new()
            .prefix("promscale-test-kube-")
            .tempdir()
            .expect("temporary folder");
        let path = dir.path();
        let (client_port, peer_port) = (free_port().unwrap(), free_port().unwrap());

        let etcd_data = path.join("etcd");
        std::fs::create_dir(&etcd_data).unwrap();
        std::fs::set_permissions(&etcd_data, std::os::unix::fs::PermissionsExt::from_mode(0o700)).unwrap();
        let etcd = Command::new(etcd_bin)
            .arg("--name=test")
            .arg(format!("--data-dir={}", etcd_data.display()))
            .arg(format!("--listen-client-urls=http://127.0.0.1:{client_port}"))
            .arg(format!("--advertise-client-urls=http://127.0.0.1:{client_port}"))
            .arg(format!("--listen-peer-urls=http://127.0.0.1:{peer_port}"))
            .arg(format!("--initial-advertise-peer-urls=http://127.0.0.1:{peer_port}"))
            .arg(format!("--initial-cluster=test=http://127.0.0.1:{peer_port}"))
            .arg("--initial-cluster-state=new")
            .stdin(Stdio::null())
            .stdout(log_file(&path.join("etcd.log")))
            .stderr(log_file(&path.join("etcd.log")))
            .spawn()
            .expect("starting etcd");

        // The service-account signing key, so that TokenRequest works (tests act as the
        // connector's service account with a real token).
        let key = path.join("sa.key");
        let public = path.join("sa.pub");
        run("openssl", &["genrsa", "-out", key.to_str().unwrap(), "2048"]);
        run(
            "openssl",
            &[
                "rsa",
                "-in",
                key.to_str().unwrap(),
                "-pubout",
                "-out",
                public.to_str().unwrap(),
            ],
        );
        let admin_token = random_token();
        std::fs::write(
            path.join("tokens.csv"),
            format!("{admin_token},test-admin,test-admin-uid,\"system:masters\"\n"),
        )
        .unwrap();

        // A port found free can be taken before the API server binds it (by any process's
        // outgoing connection): it then exits at once, and is started again on another.
        let mut attempts = 0;
        let (apiserver, url) = loop {
            attempts += 1;
            let api_port = free_port().unwrap();
            let url = format!("https://127.0.0.1:{api_port}");
            let mut apiserver = Command::new(&apiserver_bin)
                .arg("--bind-address=127.0.0.1")
                .arg("--advertise-address=127.0.0.1")
                .arg(format!("--secure-port={api_port}"))
                .arg(format!("--cert-dir={}", path.join("certs").display()))
                .arg(format!("--etcd-servers=http://127.0.0.1:{client_port}"))
                .arg("--service-cluster-ip-range=10.0.0.0/24")
                .arg(format!("--service-account-issuer={url}"))
                .arg(format!("--service-account-key-file={}", public.display()))
                .arg(format!("--service-account-signing-key-file={}", key.display()))
                .arg(format!("--token-auth-file={}", path.join("tokens.csv").display()))
                .arg("--authorization-mode=RBAC")
                .arg("--allow-privileged=true")
                .arg("--disable-admission-plugins=ServiceAccount")
                .arg("--endpoint-reconciler-type=none")
                .stdin(Stdio::null())
                .stdout(log_file(&path.join("kube-apiserver.log")))
                .stderr(log_file(&path.join("kube-apiserver.log")))
                .spawn()
                .expect("starting kube-apiserver");
            // Listening, or gone.
            let exited = wait_for("kube-apiserver to listen", Duration::from_secs(60), || {
                let exited = apiserver.try_wait().expect("kube-apiserver's status").is_some();
                let listening = std::net::TcpStream::connect(("127.0.0.1", api_port)).is_ok();
                async move { (exited || listening).then_some(exited) }
            })
            .await;
            if !exited {
                break (apiserver, url);
            }
            let log = std::fs::read_to_string(path.join("kube-apiserver.log")).unwrap_or_default();
            assert!(
                attempts < 3 && log.contains("address already in use"),
                "kube-apiserver exited as it started:\n{log}"
            );
        };

        let cluster = KubeCluster {
            etcd: Some(etcd),
            apiserver: Some(apiserver),
            dir,
            url,
            admin_token,
        };
        std::fs::write(cluster.admin_kubeconfig(), cluster.kubeconfig(&cluster.admin_token)).unwrap();
        // Its self-signed certificate (the CA of the kubeconfigs) is written as it starts.
        let cert = cluster.dir.path().join("certs/apiserver.crt");
        wait_for("kube-apiserver's certificate", Duration::from_secs(60), || {
            let ready = std::fs::metadata(&cert).is_ok_and(|m| m.len() > 0);
            async move { ready.then_some(()) }
        })
        .await;
        // Ready once it serves the default namespace, which a post-start hook creates.
        let client = cluster.client().await;
        let namespaces: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(client);
        wait_for(
            "kube-apiserver to serve the default namespace",
            Duration::from_secs(120),
            || {
                let namespaces = namespaces.clone();
                async move { namespaces.get_opt("default").await.ok().flatten() }
            },
        )
        .await;
        cluster
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    /// The bearer token of the cluster admin (group system:masters).
    pub fn admin_token(&self) -> &str {
        &self.admin_token
    }

    /// The API server's self-signed CA certificate.
    pub fn ca_file(&self) -> PathBuf {
        self.dir.path().join("certs/apiserver.crt")
    }

    /// A kubeconfig authenticating with `token`, trusting the API server's self-signed CA.
    pub fn kubeconfig(&self, token: &str) -> String {
        let ca = self.ca_file();
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: test\n  cluster:\n    server: {url}\n    certificate-authority: {ca}\n\
             users:\n- name: user\n  user:\n    token: {token}\ncontexts:\n- name: test\n  context:\n    cluster: test\n    user: user\n    namespace: default\n\
             current-context: test\n",
            url = self.url,
            ca = ca.display(),
        )
    }

    /// A kubeconfig file for the cluster admin (group system:masters).
    pub fn admin_kubeconfig(&self) -> PathBuf {
        self.dir.path().join("admin.kubeconfig")
    }

    /// Writes a kubeconfig file for a token, e.g. a service account's.
    pub fn write_kubeconfig(&self, name: &str, token: &str) -> PathBuf {
        let path = self.dir.path().join(format!("{name}.kubeconfig"));
        std::fs::write(&path, self.kubeconfig(token)).unwrap();
        path
    }

    pub async fn client(&self) -> Client {
        client_from(&self.kubeconfig(&self.admin_token)).await
    }

    /// A real token of a service account, through the TokenRequest API, as a kubelet would mount it.
    pub async fn service_account_token(&self, namespace: &str, name: &str) -> String {
        let accounts: Api<ServiceAccount> = Api::namespaced(self.client().await, namespace);
        let request = TokenRequest {
            spec: TokenRequestSpec {
                audiences: vec![],
                expiration_seconds: Some(3600),
                ..Default::default()
            },
            ..Default::default()
        };
        let response: TokenRequest = accounts
            .create_subresource("token", name, &PostParams::default(), &request)
            .await
            .unwrap_or_else(|e| panic!("TokenRequest for {namespace}/{name}: {e}"));
        response.status.expect("a token").token
    }

    /// Applies the CRDs checked in under `crds/` (what users apply) and waits until served.
    pub async fn install_crds(&self) {
        let folder = Path::new(env!("CARGO_MANIFEST_DIR")).join("../crds");
        let mut files: Vec<_> = std::fs::read_dir(&folder)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
            .collect();
        files.sort();
        assert!(!files.is_empty(), "no CRD YAML under {}", folder.display());
        for file in files {
            self.apply_crd_file(&file).await;
        }
    }

    /// Server-side applies every CRD of a YAML file and waits for each to be Established.
    pub async fn apply_crd_file(&self, file: &Path) {
        let client = self.client().await;
        let crds: Api<CustomResourceDefinition> = Api::all(client);
        let text = std::fs::read_to_string(file).unwrap();
        for document in serde_saphyr::from_multiple::<serde_json::Value>(&text)
            .unwrap_or_else(|e| panic!("{}: {e}", file.display()))
        {
            if document.is_null() {
                continue;
            }
            let crd: CustomResourceDefinition = serde_json::from_value(document).unwrap();
            let name = crd.metadata.name.clone().unwrap();
            crds.patch(
                &name,
                &kube::api::PatchParams::apply("promscale-e2e").force(),
                &kube::api::Patch::Apply(&crd),
            )
            .await
            .unwrap_or_else(|e| panic!("applying CRD {name} from {}: {e}", file.display()));
            let condition = kube::runtime::wait::conditions::is_crd_established();
            tokio::time::timeout(
                Duration::from_secs(30),
                kube::runtime::wait::await_condition(crds.clone(), &name, condition),
            )
            .await
            .unwrap_or_else(|_| panic!("CRD {name} not established after 30s"))
            .unwrap();
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("kube-apiserver.log")).unwrap_or_default()
    }
}

/// A client from kubeconfig text.
pub async fn client_from(kubeconfig: &str) -> Client {
    let kubeconfig = Kubeconfig::from_yaml(kubeconfig).expect("a valid kubeconfig");
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .expect("a usable kubeconfig");
    Client::try_from(config).expect("a client")
}

fn run(program: &str, args: &[&str]) {
    let status = Command::new(program)
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .unwrap_or_else(|e| panic!("running {program}: {e}"));
    assert!(status.success(), "{program} {args:?} failed");
}

fn log_file(path: &Path) -> std::fs::File {
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .expect("log file")
}

impl Drop for KubeCluster {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let log = self.log();
            let tail: Vec<&str> = log.lines().rev().take(40).collect();
            eprintln!("--- last kube-apiserver log lines ---");
            for line in tail.into_iter().rev() {
                eprintln!("{line}");
            }
        }
        // The API server first: one whose etcd is gone is slow to stop.
        if let Some(mut child) = self.apiserver.take() {
            terminate(&mut child, Duration::from_secs(15));
        }
        if let Some(mut child) = self.etcd.take() {
            terminate(&mut child, Duration::from_secs(15));
        }
    }
}
