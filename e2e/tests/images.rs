//! The container images `make images` builds: small, labelled, non-root, shell-less, and
//! runnable as the Deployments run them (read-only root filesystem, no capabilities). The full
//! path test (full_path.rs) runs both as pods against the test API server.

use promscale_e2e::container::{podman, podman_output, require_image};
use serde_json::Value;

const IMAGES: [&str; 2] = ["promscale-connector", "promscale-operator"];

fn image(name: &str) -> String {
    format!("ghcr.io/promscale-rs/{name}:{}", env!("CARGO_PKG_VERSION"))
}

#[test]
fn images_are_small_labelled_non_root_and_have_no_shell() {
    let revision = std::process::Command::new("git")
        .args(["rev-parse", "HEAD"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string());
    for name in IMAGES {
        let image = image(name);
        require_image(&image);
        let inspect: Value = serde_json::from_str(&podman_output(&["image", "inspect", &image])).unwrap();
        let inspect = &inspect[0];
        let annotations = &inspect["Annotations"];
        assert_eq!(
            annotations["org.opencontainers.image.version"],
            env!("CARGO_PKG_VERSION"),
            "{name}"
        );
        assert_eq!(annotations["org.opencontainers.image.title"], name);
        assert_eq!(
            annotations["org.opencontainers.image.source"],
            "https://github.com/promscale-rs/promscale-rs"
        );
        if let Some(revision) = &revision {
            assert_eq!(
                annotations["org.opencontainers.image.revision"].as_str(),
                Some(revision.as_str()),
                "{name} is older than the checkout: run `make images`"
            );
        }
        assert_eq!(
            inspect["Config"]["User"], "65532:65532",
            "{name} runs as a numeric non-root user"
        );
        assert_eq!(inspect["Config"]["Entrypoint"][0], format!("/usr/bin/{name}"));
        let size = inspect["Size"].as_f64().unwrap();
        assert!(size < 60e6, "{name} is {:.1} MB", size / 1e6);
        println!("{image}: {:.1} MB", size / 1e6);

        // Runs as the Deployment runs it: read-only, no capabilities, its own user.
        let version = podman_output(&[
            "run",
            "--rm",
            "--pull=never",
            "--network=host",
            "--read-only",
            "--read-only-tmpfs=false",
            "--cap-drop=ALL",
            "--security-opt=no-new-privileges",
            &image,
            "--version",
        ]);
        assert_eq!(version.trim(), format!("{name} {}", env!("CARGO_PKG_VERSION")));

        // Nothing to run but the program: no shell, no coreutils.
        for program in ["/bin/sh", "/usr/bin/sh", "/bin/bash", "/usr/bin/env", "/bin/ls"] {
            let status = podman()
                .args([
                    "run",
                    "--rm",
                    "--pull=never",
                    "--network=host",
                    "--entrypoint",
                    program,
                    &image,
                ])
                .output()
                .unwrap();
            assert!(!status.status.success(), "{name} has {program}");
        }
    }
}

#[test]
fn the_base_holds_ca_certificates_a_user_entry_and_time_zones() {
    // What the programs need from the system: the CA bundle (TLS to PostgreSQL with
    // sslmode=verify-full, to the Kubernetes API), a passwd entry for their user, zoneinfo.
    let image = image("promscale-connector");
    require_image(&image);
    let root = std::path::PathBuf::from(podman_output(&["image", "mount", &image]).trim());
    let read = |path: &str| std::fs::read_to_string(root.join(path)).unwrap_or_default();
    let bundle = read("etc/ssl/certs/ca-certificates.crt");
    let passwd = read("etc/passwd");
    let utc = root.join("usr/share/zoneinfo/Etc/UTC").is_file();
    let _ = podman().args(["image", "unmount", &image]).output();
    assert!(
        bundle.matches("BEGIN CERTIFICATE").count() > 100,
        "a CA bundle of Mozilla's roots"
    );
    assert!(passwd.contains("nonroot:x:65532:65532:"), "{passwd}");
    assert!(utc);
}
