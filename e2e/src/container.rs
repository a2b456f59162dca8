//! A [`PodRun`] run as a container of the project's own images (`make images`), with podman,
//! as close to the kubelet as one machine allows: the pod's image, args, env and user, a
//! read-only root filesystem with only the declared volumes writable, no capabilities, no
//! privilege escalation, and the service-account token, CA and namespace mounted where
//! in-cluster clients look for them. The network is the host's (`0.0.0.0:<port>` already
//! became a free loopback port in the [`PodRun`]).

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use crate::kube_cluster::KubeCluster;
use crate::pod::PodRun;

/// Where `images/build.sh` keeps the images.
fn images_dir() -> PathBuf {
    match std::env::var_os("PROMSCALE_IMAGES_DIR") {
        Some(dir) => PathBuf::from(dir),
        None => PathBuf::from(std::env::var_os("HOME").expect("HOME")).join(".cache/promscale-rs/images"),
    }
}

/// podman on the project's image storage.
pub fn podman() -> Command {
    let dir = images_dir();
    let mut command = Command::new("podman");
    command
        .env(
            "CONTAINERS_CONF",
            concat!(env!("CARGO_MANIFEST_DIR"), "/../images/containers.conf"),
        )
        .arg("--root")
        .arg(dir.join("storage"))
        .arg("--runroot")
        .arg(dir.join("run"))
        .arg("--storage-driver")
        .arg("vfs");
    command
}

/// Runs podman; stdout, or a panic with stderr.
pub fn podman_output(args: &[&str]) -> String {
    let output = podman()
        .args(args)
        .output()
        .expect("running podman (make images installs it)");
    assert!(
        output.status.success(),
        "podman {} failed: {}",
        args.join(" "),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// Panics with what to do when an image has not been built.
pub fn require_image(image: &str) {
    let status = podman()
        .args(["image", "exists", image])
        .status()
        .expect("running podman (make images installs it)");
    assert!(status.success(), "image {image} is not built; run `make images`");
}

pub struct ContainerPod {
    name: String,
    /// The env file and service-account mount; removed with the pod.
    _dir: tempfile::TempDir,
    pub run: PodRun,
}

impl ContainerPod {
    /// Starts the pod's container with `token` as its service account's.
    pub fn start(run: &PodRun, cluster: &KubeCluster, token: &str) -> Self {
        require_image(&run.image);
        let dir = crate::private_dir("promscale-test-container-");
        // The service-account mount, readable by the pod's user, as the kubelet projects it.
        let account = dir.path().join("serviceaccount");
        std::fs::create_dir(&account).unwrap();
        std::fs::write(account.join("token"), token).unwrap();
        std::fs::copy(cluster.ca_file(), account.join("ca.crt")).unwrap();
        std::fs::write(account.join("namespace"), &run.namespace).unwrap();
        for entry in std::fs::read_dir(&account).unwrap() {
            std::fs::set_permissions(
                entry.unwrap().path(),
                std::os::unix::fs::PermissionsExt::from_mode(0o644),
            )
            .unwrap();
        }
        std::fs::set_permissions(&account, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
        // The environment in a file, not on a command line (it holds the database URI).
        let mut env: Vec<String> = run.env.iter().map(|(k, v)| format!("{k}={v}")).collect();
        let api = url_host_port(cluster.url());
        env.push(format!("KUBERNETES_SERVICE_HOST={}", api.0));
        env.push(format!("KUBERNETES_SERVICE_PORT={}", api.1));
        let env_file = dir.path().join("env");
        std::fs::write(&env_file, env.join("\n") + "\n").unwrap();
        std::fs::set_permissions(&env_file, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();

        let name = format!("promscale-test-{}", run.pod_name);
        let user = run.run_as_user.map(|u| format!("{u}:{u}"));
        let mut args: Vec<String> = vec![
            "run".into(),
            "--detach".into(),
            "--name".into(),
            name.clone(),
            "--pull=never".into(),
            "--network=host".into(),
            "--cap-drop=ALL".into(),
            "--security-opt=no-new-privileges".into(),
            format!("--env-file={}", env_file.display()),
            format!(
                "--volume={}:/var/run/secrets/kubernetes.io/serviceaccount:ro",
                account.display()
            ),
        ];
        if run.read_only_root_filesystem {
            args.push("--read-only".into());
            args.push("--read-only-tmpfs=false".into());
        }
        for path in &run.writable_paths {
            args.push(format!("--tmpfs={path}:rw,mode=1777,size=64m"));
        }
        if let Some(user) = user {
            args.push(format!("--user={user}"));
        }
        args.push(run.image.clone());
        args.extend(run.args.iter().cloned());
        let output = podman().args(&args).output().expect("running podman");
        assert!(
            output.status.success(),
            "podman run for pod {} failed: {}",
            run.pod_name,
            String::from_utf8_lossy(&output.stderr)
        );
        ContainerPod {
            name,
            _dir: dir,
            run: run.clone(),
        }
    }

    /// Waits until the readiness probe answers 200.
    pub async fn wait_ready(&self, timeout: Duration) {
        let (path, port) = self.run.readiness.clone().expect("a readiness probe");
        let url = format!("http://127.0.0.1:{port}{path}");
        let http = reqwest::Client::new();
        let name = self.name.clone();
        crate::wait_for(&format!("container {name} to be ready"), timeout, || {
            let request = http.get(&url).send();
            async move { request.await.ok().filter(|r| r.status().is_success()).map(|_| ()) }
        })
        .await;
    }

    pub fn url(&self, port_name: &str, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.run.port(port_name))
    }

    pub fn logs(&self) -> String {
        let output = podman().args(["logs", &self.name]).output().expect("podman logs");
        String::from_utf8_lossy(&output.stdout).into_owned() + &String::from_utf8_lossy(&output.stderr)
    }

    /// `podman stop` (SIGTERM, then SIGKILL after 15 s), as the kubelet deletes a pod.
    pub fn stop(&mut self) {
        if self.name.is_empty() {
            return;
        }
        let _ = podman().args(["stop", "--time", "15", &self.name]).output();
        if std::thread::panicking() {
            eprintln!("--- logs of container {} ---\n{}", self.name, self.logs());
        }
        let _ = podman().args(["rm", "--force", &self.name]).output();
        self.name.clear();
    }
}

impl Drop for ContainerPod {
    fn drop(&mut self) {
        self.stop();
    }
}

fn url_host_port(url: &str) -> (String, String) {
    let authority = url.trim_start_matches("https://").trim_end_matches('/');
    let (host, port) = authority.rsplit_once(':').expect("host:port");
    (host.to_string(), port.to_string())
}
