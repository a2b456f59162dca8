//! Certificates for TLS tests, made with `openssl`: a CA, a server certificate for
//! 127.0.0.1 and a client certificate signed by it, and a client certificate from another
//! CA that the server must refuse.

use std::path::{Path, PathBuf};
use std::process::Command;

pub struct TestCertificates {
    pub dir: tempfile::TempDir,
}

fn openssl(dir: &Path, args: &[&str]) {
    let output = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("running openssl");
    assert!(
        output.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

fn ca(dir: &Path, name: &str) {
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-keyout",
            &format!("{name}.key"),
            "-out",
            &format!("{name}.crt"),
            "-days",
            "2",
            "-subj",
            &format!("/CN=promscale test {name}"),
        ],
    );
}

fn leaf(dir: &Path, name: &str, ca: &str, extensions: &str) {
    openssl(
        dir,
        &[
            "req",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-keyout",
            &format!("{name}.key"),
            "-out",
            &format!("{name}.csr"),
            "-subj",
            &format!("/CN={name}"),
        ],
    );
    std::fs::write(dir.join(format!("{name}.ext")), extensions).unwrap();
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            &format!("{name}.csr"),
            "-CA",
            &format!("{ca}.crt"),
            "-CAkey",
            &format!("{ca}.key"),
            "-CAcreateserial",
            "-out",
            &format!("{name}.crt"),
            "-days",
            "2",
            "-extfile",
            &format!("{name}.ext"),
        ],
    );
}

/// Writes the certificates and keys into `dir`: `ca.crt`, `server.crt` and `server.key` (for
/// 127.0.0.1), `client.crt` and `client.key` signed by the same CA, and `stranger.*` signed
/// by `other-ca`.
pub fn generate(dir: &Path) {
    ca(dir, "ca");
    ca(dir, "other-ca");
    leaf(
        dir,
        "server",
        "ca",
        "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n",
    );
    leaf(dir, "client", "ca", "extendedKeyUsage=clientAuth\n");
    leaf(dir, "stranger", "other-ca", "extendedKeyUsage=clientAuth\n");
}

impl TestCertificates {
    pub fn generate() -> Self {
        let dir = crate::private_dir("promscale-test-certs-");
        generate(dir.path());
        TestCertificates { dir }
    }

    /// `ca.crt`, `server.crt`, `server.key`, `client.crt`, `client.key`, `stranger.crt`, ...
    pub fn path(&self, file: &str) -> PathBuf {
        self.dir.path().join(file)
    }

    /// A reqwest identity (certificate and key, PEM) of `name` ("client" or "stranger").
    pub fn identity(&self, name: &str) -> reqwest::Identity {
        let mut pem = std::fs::read(self.path(&format!("{name}.crt"))).unwrap();
        pem.extend(std::fs::read(self.path(&format!("{name}.key"))).unwrap());
        reqwest::Identity::from_pem(&pem).expect("a PEM identity")
    }

    pub fn ca(&self) -> reqwest::Certificate {
        reqwest::Certificate::from_pem(&std::fs::read(self.path("ca.crt")).unwrap()).unwrap()
    }
}
