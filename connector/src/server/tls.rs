//! HTTPS for the HTTP server (rustls, ring): the certificate, key and optional client CA come
//! from PEM files and are read again when one of them changes (cert-manager renews
//! certificates in place), checked at most every few seconds when a connection arrives. A
//! renewal that cannot be loaded keeps the previous configuration and logs why.
//!
//! With a client CA, a client certificate is verified during the handshake when one is sent;
//! the connection then carries [`ClientCertificate`] into every request, and [`super::auth`]
//! refuses requests without one on every endpoint but the health checks.

/// Whether the connection a request came on presented a client certificate that verified.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClientCertificate(pub bool);

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use anyhow::{anyhow, Context};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};

use crate::config::AuthConfig;

const RECHECK: Duration = Duration::from_secs(5);

pub struct TlsFiles {
    cert: PathBuf,
    key: PathBuf,
    client_ca: Option<PathBuf>,
}

pub struct ReloadingTls {
    files: TlsFiles,
    state: Mutex<State>,
}

struct State {
    checked: Instant,
    stamps: Vec<Option<(SystemTime, u64)>>,
    config: Arc<ServerConfig>,
}

impl TlsFiles {
    /// `None` when TLS is not configured; an error when it is half configured.
    pub fn from_config(config: &AuthConfig) -> anyhow::Result<Option<TlsFiles>> {
        match (&config.tls_cert_file, &config.tls_key_file) {
            (Some(cert), Some(key)) => Ok(Some(TlsFiles {
                cert: cert.clone(),
                key: key.clone(),
                client_ca: config.tls_client_ca_file.clone(),
            })),
            (None, None) if config.tls_client_ca_file.is_some() => Err(anyhow!(
                "--auth.tls-client-ca-file needs --auth.tls-cert-file and --auth.tls-key-file"
            )),
            (None, None) => Ok(None),
            _ => Err(anyhow!(
                "--auth.tls-cert-file and --auth.tls-key-file must be given together"
            )),
        }
    }

    pub fn requires_client_certificates(&self) -> bool {
        self.client_ca.is_some()
    }

    fn paths(&self) -> Vec<&Path> {
        let mut paths = vec![self.cert.as_path(), self.key.as_path()];
        paths.extend(self.client_ca.as_deref());
        paths
    }

    fn stamps(&self) -> Vec<Option<(SystemTime, u64)>> {
        self.paths()
            .into_iter()
            .map(|p| {
                std::fs::metadata(p)
                    .ok()
                    .map(|m| (m.modified().unwrap_or(SystemTime::UNIX_EPOCH), m.len()))
            })
            .collect()
    }

    fn load(&self) -> anyhow::Result<ServerConfig> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&self.cert)
            .with_context(|| format!("cannot read the TLS certificate file {}", self.cert.display()))?
            .collect::<Result<_, _>>()
            .with_context(|| format!("{} is not a PEM certificate chain", self.cert.display()))?;
        if certs.is_empty() {
            return Err(anyhow!("{} holds no PEM certificate", self.cert.display()));
        }
        let key = PrivateKeyDer::from_pem_file(&self.key)
            .with_context(|| format!("cannot read a PEM private key from {}", self.key.display()))?;
        let builder = ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .context("TLS protocol versions")?;
        let builder = match &self.client_ca {
            Some(ca) => {
                let mut roots = RootCertStore::empty();
                for cert in CertificateDer::pem_file_iter(ca)
                    .with_context(|| format!("cannot read the client CA file {}", ca.display()))?
                {
                    let cert = cert.with_context(|| format!("{} is not a PEM certificate bundle", ca.display()))?;
                    roots
                        .add(cert)
                        .with_context(|| format!("a certificate in {} is not a valid CA", ca.display()))?;
                }
                // A certificate, when sent, must verify; whether one is needed is decided per
                // endpoint ([`super::auth`]): the kubelet's probes of /healthz send none.
                let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                    .allow_unauthenticated()
                    .build()
                    .with_context(|| format!("no usable client CA in {}", ca.display()))?;
                builder.with_client_cert_verifier(verifier)
            }
            None => builder.with_no_client_auth(),
        };
        let mut config = builder
            .with_single_cert(certs, key)
            .context("the TLS certificate and key do not form a usable pair")?;
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(config)
    }
}

impl ReloadingTls {
    pub fn new(files: TlsFiles) -> anyhow::Result<ReloadingTls> {
        let stamps = files.stamps();
        let config = Arc::new(files.load()?);
        Ok(ReloadingTls {
            files,
            state: Mutex::new(State {
                checked: Instant::now(),
                stamps,
                config,
            }),
        })
    }

    /// The configuration for a new connection, reloaded first if a file changed.
    pub fn current(&self) -> Arc<ServerConfig> {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if state.checked.elapsed() >= RECHECK {
            state.checked = Instant::now();
            let stamps = self.files.stamps();
            if stamps != state.stamps {
                match self.files.load() {
                    Ok(config) => {
                        tracing::info!(cert = %self.files.cert.display(), "reloaded the TLS certificate");
                        state.config = Arc::new(config);
                        // Only once loaded: a renewal caught half-written is tried again.
                        state.stamps = stamps;
                    }
                    Err(e) => {
                        tracing::warn!(
                            error = format!("{e:#}"),
                            "cannot reload the TLS files; still serving the previous certificate"
                        )
                    }
                }
            }
        }
        state.config.clone()
    }
}
