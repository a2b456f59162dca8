//! Who may call which endpoint: bearer tokens and HTTP basic auth read from files, as
//! Prometheus' `remote_write`/`remote_read` `authorization` and `basic_auth` send them.
//!
//! Endpoints fall in four classes ([`Access`]): `/healthz` and `/readyz` are open; remote
//! write needs a common or a write credential; the admin API (`/api/v1/admin/...`, deletion)
//! a common credential; everything else (remote read, the query API, `/metrics`) a common or
//! a read credential. Tenant credentials (`--auth.tenant-tokens-file`, `tenant:token` lines)
//! open remote write, remote read and the query API for their tenant only (see
//! `crate::tenancy`). With no credential configured at all, every
//! endpoint is open. Secret files are stat'ed at most once a second and read again when they
//! change, so a rotated Kubernetes Secret takes effect without a restart. Comparisons take
//! the same time whatever the input (`subtle`), and neither a secret nor what a client sent
//! is ever logged.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use axum::extract::{Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use base64::Engine;
use subtle::ConstantTimeEq;

use super::tls::ClientCertificate;
use crate::config::AuthConfig;

/// What an endpoint needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    Open,
    Write,
    Read,
    /// The common credentials only.
    Admin,
}

impl Access {
    pub fn of_path(path: &str) -> Access {
        match path {
            "/healthz" | "/readyz" => Access::Open,
            "/write" | "/api/v1/write" => Access::Write,
            _ if path.starts_with("/api/v1/admin/") => Access::Admin,
            _ => Access::Read,
        }
    }
}

/// A secret kept in a file, read again when the file changes.
struct SecretFile {
    path: PathBuf,
    state: Mutex<FileState>,
}

struct FileState {
    checked: Option<Instant>,
    stamp: Option<(SystemTime, u64)>,
    /// The file's content without a trailing newline; `None` while the file cannot be read.
    value: Option<Arc<Vec<u8>>>,
}

const RECHECK: Duration = Duration::from_secs(1);

impl SecretFile {
    fn open(path: &Path, what: &str) -> anyhow::Result<SecretFile> {
        let file = SecretFile {
            path: path.to_path_buf(),
            state: Mutex::new(FileState {
                checked: None,
                stamp: None,
                value: None,
            }),
        };
        match file.current() {
            Some(_) => Ok(file),
            None => anyhow::bail!("the {what} file {} cannot be read or is empty", path.display()),
        }
    }

    fn current(&self) -> Option<Arc<Vec<u8>>> {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if state.checked.is_some_and(|t| t.elapsed() < RECHECK) {
            return state.value.clone();
        }
        state.checked = Some(Instant::now());
        let stamp = std::fs::metadata(&self.path)
            .ok()
            .map(|m| (m.modified().unwrap_or(SystemTime::UNIX_EPOCH), m.len()));
        if stamp.is_some() && stamp == state.stamp {
            return state.value.clone();
        }
        state.stamp = stamp;
        state.value = match std::fs::read(&self.path) {
            Ok(mut bytes) => {
                while bytes.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
                    bytes.pop();
                }
                if bytes.is_empty() {
                    // Emptied (or caught between truncate and write): an empty secret would
                    // accept an empty password.
                    tracing::warn!(file = %self.path.display(), "a credentials file is empty; its credential is refused until it holds one");
                    None
                } else {
                    Some(Arc::new(bytes))
                }
            }
            Err(e) => {
                tracing::warn!(file = %self.path.display(), error = %e, "cannot read a credentials file; its credential is refused until it can be read");
                None
            }
        };
        state.value.clone()
    }
}

enum Credential {
    Bearer(SecretFile),
    Basic { username: String, password: SecretFile },
}

impl Credential {
    fn accepts(&self, authorization: &[u8]) -> bool {
        match self {
            Credential::Bearer(token) => {
                let Some(sent) = strip_scheme(authorization, "bearer") else {
                    return false;
                };
                token.current().is_some_and(|t| bool::from(t.as_slice().ct_eq(sent)))
            }
            Credential::Basic { username, password } => {
                let Some(sent) = strip_scheme(authorization, "basic") else {
                    return false;
                };
                let Ok(decoded) = base64::engine::general_purpose::STANDARD.decode(sent) else {
                    return false;
                };
                let Some(colon) = decoded.iter().position(|b| *b == b':') else {
                    return false;
                };
                let (user, pass) = (&decoded[..colon], &decoded[colon + 1..]);
                let Some(expected) = password.current() else {
                    return false;
                };
                // Both compared, always, so that timing tells nothing about which one failed.
                let user_ok = user.ct_eq(username.as_bytes());
                let pass_ok = pass.ct_eq(expected.as_slice());
                bool::from(user_ok & pass_ok)
            }
        }
    }
}

/// `Bearer abc` -> `abc`, the scheme matched without regard to case.
fn strip_scheme<'a>(authorization: &'a [u8], scheme: &str) -> Option<&'a [u8]> {
    let space = authorization.iter().position(|b| *b == b' ')?;
    let (name, rest) = authorization.split_at(space);
    if !name.eq_ignore_ascii_case(scheme.as_bytes()) {
        return None;
    }
    let rest = &rest[1..];
    let start = rest.iter().position(|b| *b != b' ').unwrap_or(rest.len());
    Some(&rest[start..])
}

/// The tenant credentials (`--auth.tenant-tokens-file`): a file of `tenant:token` lines,
/// read again when it changes.
struct TenantTokens(SecretFile);

impl TenantTokens {
    fn open(path: &Path) -> anyhow::Result<TenantTokens> {
        let file = SecretFile::open(path, "tenant tokens")?;
        let content = file.current().unwrap_or_default();
        let (entries, bad) = Self::parse(&content);
        if let Some(line) = bad {
            // The line number only: the line holds a secret.
            anyhow::bail!(
                "line {line} of the tenant tokens file {} is not `tenant:token` with a valid tenant name, or repeats the token of an earlier line",
                path.display()
            );
        }
        if entries.is_empty() {
            anyhow::bail!("the tenant tokens file {} holds no `tenant:token` line", path.display());
        }
        Ok(TenantTokens(file))
    }

    /// The (tenant, token) entries, and the number of the first line that is not one (blank
    /// lines and `#` comments aside) or repeats an earlier line's token: a token given to two
    /// tenants opens neither.
    fn parse(content: &[u8]) -> (Vec<(&str, &[u8])>, Option<usize>) {
        let mut entries = Vec::new();
        let mut repeated: Vec<&[u8]> = Vec::new();
        let mut bad = None;
        for (n, line) in content.split(|b| *b == b'\n').enumerate() {
            let line = line.trim_ascii();
            if line.is_empty() || line.starts_with(b"#") {
                continue;
            }
            let entry = line.iter().position(|b| *b == b':').and_then(|colon| {
                let tenant = std::str::from_utf8(&line[..colon]).ok()?;
                let token = line[colon + 1..].trim_ascii();
                (crate::tenancy::is_valid_tenant(tenant) && !token.is_empty()).then_some((tenant, token))
            });
            match entry {
                Some(e) if !entries.iter().any(|(_, t): &(&str, &[u8])| *t == e.1) && !repeated.contains(&e.1) => {
                    entries.push(e)
                }
                Some(e) => {
                    entries.retain(|(_, t)| *t != e.1);
                    repeated.push(e.1);
                    bad.get_or_insert(n + 1);
                }
                None => {
                    bad.get_or_insert(n + 1);
                }
            }
        }
        (entries, bad)
    }

    /// The tenant whose token was sent, if any.
    fn tenant_of(&self, authorization: &[u8]) -> Option<String> {
        let sent = strip_scheme(authorization, "bearer")?;
        let content = self.0.current()?;
        let (entries, _) = Self::parse(&content);
        // Every entry is compared, so that timing does not tell which one is close (tokens
        // are unique: `parse` leaves out repeated ones).
        let mut found = None;
        for (tenant, token) in entries {
            if bool::from(token.ct_eq(sent)) && found.is_none() {
                found = Some(tenant.to_string());
            }
        }
        found
    }
}

/// What tenant credentials open: remote write and read, and the query API's data and status
/// endpoints (each scoped to the tenant); an endpoint added later stays closed to them until
/// listed here.
const TENANT_PATHS: &[&str] = &[
    "/write",
    "/api/v1/write",
    "/read",
    "/api/v1/read",
    "/api/v1/query",
    "/api/v1/query_range",
    "/api/v1/query_exemplars",
    "/api/v1/series",
    "/api/v1/labels",
    "/api/v1/metadata",
    "/api/v1/status/buildinfo",
    "/api/v1/status/tsdb",
    "/api/v1/status/flags",
    "/api/v1/status/runtimeinfo",
];

fn is_tenant_path(path: &str) -> bool {
    TENANT_PATHS.contains(&path) || (path.starts_with("/api/v1/label/") && path.ends_with("/values"))
}

/// What a request may do, once its credential is checked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    Denied,
    Allowed,
    /// Allowed for this tenant's series only.
    Tenant(crate::tenancy::TenantIdentity),
}

/// The credentials of the server, by the endpoints they open.
pub struct Authenticator {
    common: Vec<Credential>,
    write: Vec<Credential>,
    read: Vec<Credential>,
    tenants: Option<TenantTokens>,
    /// Every endpoint but the health checks needs a verified client certificate.
    require_client_certificate: bool,
}

impl Authenticator {
    /// Checks that every configured file can be read now; a half-configured pair (a user name
    /// without a password file or the reverse) is an error, not silently open.
    pub fn from_config(config: &AuthConfig) -> anyhow::Result<Authenticator> {
        let set = |token: &Option<PathBuf>,
                   user: &Option<String>,
                   password: &Option<PathBuf>,
                   flags: &str|
         -> anyhow::Result<Vec<Credential>> {
            let mut out = vec![];
            if let Some(path) = token {
                out.push(Credential::Bearer(SecretFile::open(path, "bearer token")?));
            }
            match (user, password) {
                (Some(username), Some(path)) => out.push(Credential::Basic {
                    username: username.clone(),
                    password: SecretFile::open(path, "basic-auth password")?,
                }),
                (None, None) => {}
                _ => anyhow::bail!(
                    "--auth.{flags}basic-username and --auth.{flags}basic-password-file must be given together"
                ),
            }
            Ok(out)
        };
        Ok(Authenticator {
            common: set(
                &config.bearer_token_file,
                &config.basic_username,
                &config.basic_password_file,
                "",
            )?,
            write: set(
                &config.write_bearer_token_file,
                &config.write_basic_username,
                &config.write_basic_password_file,
                "write.",
            )?,
            read: set(
                &config.read_bearer_token_file,
                &config.read_basic_username,
                &config.read_basic_password_file,
                "read.",
            )?,
            tenants: config
                .tenant_tokens_file
                .as_deref()
                .map(TenantTokens::open)
                .transpose()?,
            require_client_certificate: config.tls_client_ca_file.is_some(),
        })
    }

    pub fn is_enabled(&self) -> bool {
        !(self.common.is_empty() && self.write.is_empty() && self.read.is_empty() && self.tenants.is_none())
    }

    /// Whether a request to an endpoint of class `access` with this `Authorization` header
    /// may go on.
    /// Whether the common and scoped credentials (not tenant credentials) let a request to an
    /// endpoint of class `access` with this `Authorization` header go on.
    pub fn allows(&self, access: Access, authorization: Option<&[u8]>) -> bool {
        self.verdict(access, "/", authorization) == Verdict::Allowed
    }

    /// Whether a request to `path`, an endpoint of class `access`, with this `Authorization`
    /// header may go on, and for which tenant. Tenant credentials open remote write, remote
    /// read and the query API ([`TENANT_PATHS`]), not `/metrics` (counts of every tenant) nor
    /// the admin API.
    pub fn verdict(&self, access: Access, path: &str, authorization: Option<&[u8]>) -> Verdict {
        if access == Access::Open || !self.is_enabled() {
            return Verdict::Allowed;
        }
        let Some(authorization) = authorization else {
            return Verdict::Denied;
        };
        if let Some(tenants) = &self.tenants {
            if matches!(access, Access::Write | Access::Read) && is_tenant_path(path) {
                if let Some(tenant) = tenants.tenant_of(authorization) {
                    return Verdict::Tenant(crate::tenancy::TenantIdentity(tenant));
                }
            }
        }
        let scoped: &[Credential] = match access {
            Access::Write => &self.write,
            Access::Read => &self.read,
            Access::Admin => &[],
            Access::Open => unreachable!(),
        };
        // Every credential is tried, so that timing does not tell which one is close.
        let ok = self
            .common
            .iter()
            .chain(scoped)
            .fold(false, |ok, c| c.accepts(authorization) | ok);
        if ok {
            Verdict::Allowed
        } else {
            Verdict::Denied
        }
    }
}

/// Middleware: 401 for a request without a credential its endpoint accepts.
pub async fn require(State(auth): State<Arc<Authenticator>>, mut request: Request, next: Next) -> Response {
    let access = Access::of_path(request.uri().path());
    if auth.require_client_certificate && access != Access::Open {
        let verified = request.extensions().get::<ClientCertificate>().is_some_and(|c| c.0);
        if !verified {
            tracing::info!(path = %request.uri().path(), "request refused: no client certificate");
            return (
                StatusCode::UNAUTHORIZED,
                "unauthorized: this endpoint needs a client certificate signed by --auth.tls-client-ca-file\n",
            )
                .into_response();
        }
    }
    let sent = request.headers().get(header::AUTHORIZATION).map(|v| v.as_bytes());
    match auth.verdict(access, request.uri().path(), sent) {
        Verdict::Allowed => return next.run(request).await,
        Verdict::Tenant(identity) => {
            request.extensions_mut().insert(identity);
            return next.run(request).await;
        }
        Verdict::Denied => {}
    }
    tracing::info!(path = %request.uri().path(), credentials_sent = sent.is_some(), "request refused: not authenticated");
    (
        StatusCode::UNAUTHORIZED,
        [(header::WWW_AUTHENTICATE, "Basic realm=\"promscale\", Bearer")],
        "unauthorized: send a credential configured on the connector (--auth.*)\n",
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, content: &str) -> PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, content).unwrap();
        path
    }

    fn basic(user: &str, pass: &str) -> Vec<u8> {
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pass}"))
        )
        .into_bytes()
    }

    #[test]
    fn tenant_tokens_open_data_endpoints_for_their_tenant_only() {
        let dir = tempfile::tempdir().unwrap();
        let file = write(dir.path(), "tenants", "# tenants\nalpha:a-token\n\nbeta: b:token \n");
        let config = AuthConfig {
            bearer_token_file: Some(write(dir.path(), "token", "common-token\n")),
            tenant_tokens_file: Some(file.clone()),
            ..Default::default()
        };
        let auth = Authenticator::from_config(&config).unwrap();
        let tenant = |t: &str| Verdict::Tenant(crate::tenancy::TenantIdentity(t.into()));
        assert_eq!(
            auth.verdict(Access::Write, "/write", Some(b"Bearer a-token")),
            tenant("alpha")
        );
        assert_eq!(
            auth.verdict(Access::Read, "/api/v1/query", Some(b"Bearer b:token")),
            tenant("beta")
        );
        // Not /metrics (every tenant's counts), not the admin API, not as basic auth.
        assert_eq!(
            auth.verdict(Access::Read, "/metrics", Some(b"Bearer a-token")),
            Verdict::Denied
        );
        assert_eq!(
            auth.verdict(
                Access::Admin,
                "/api/v1/admin/tsdb/delete_series",
                Some(b"Bearer a-token")
            ),
            Verdict::Denied
        );
        assert_eq!(
            auth.verdict(Access::Read, "/api/v1/query", Some(b"Bearer a-toke")),
            Verdict::Denied
        );
        assert_eq!(
            auth.verdict(Access::Read, "/metrics", Some(b"Bearer common-token")),
            Verdict::Allowed
        );
        // A rotated file takes effect without a restart.
        std::fs::write(&file, "alpha:new-token\n").unwrap();
        std::thread::sleep(RECHECK + Duration::from_millis(100));
        assert_eq!(
            auth.verdict(Access::Write, "/write", Some(b"Bearer a-token")),
            Verdict::Denied
        );
        assert_eq!(
            auth.verdict(Access::Write, "/write", Some(b"Bearer new-token")),
            tenant("alpha")
        );
        // A token given to two tenants opens neither.
        std::fs::write(
            &file,
            "alpha:new-token\nbeta:b-token\ngamma:new-token\ndelta:new-token\n",
        )
        .unwrap();
        std::thread::sleep(RECHECK + Duration::from_millis(100));
        assert_eq!(
            auth.verdict(Access::Write, "/write", Some(b"Bearer new-token")),
            Verdict::Denied
        );
        assert_eq!(
            auth.verdict(Access::Write, "/write", Some(b"Bearer b-token")),
            tenant("beta")
        );
        // Only the listed data endpoints.
        assert_eq!(
            auth.verdict(Access::Read, "/api/v1/label/job/values", Some(b"Bearer b-token")),
            tenant("beta")
        );
        assert_eq!(
            auth.verdict(Access::Read, "/api/v1/other", Some(b"Bearer b-token")),
            Verdict::Denied
        );
        let duplicate = write(dir.path(), "duplicate", "alpha:same\nbeta:same\n");
        let error = Authenticator::from_config(&AuthConfig {
            tenant_tokens_file: Some(duplicate),
            ..Default::default()
        })
        .err()
        .unwrap()
        .to_string();
        assert!(error.contains("line 2") && !error.contains("same"), "{error}");
        // A malformed file is an error at start-up, naming the line but not its content.
        let bad = write(dir.path(), "bad", "alpha:x\nno-colon-secret\n");
        let error = Authenticator::from_config(&AuthConfig {
            tenant_tokens_file: Some(bad),
            ..Default::default()
        })
        .err()
        .unwrap()
        .to_string();
        assert!(
            error.contains("line 2") && !error.contains("no-colon-secret"),
            "{error}"
        );
    }

    #[test]
    fn classes_and_scopes() {
        let dir = tempfile::tempdir().unwrap();
        let config = AuthConfig {
            bearer_token_file: Some(write(dir.path(), "token", "common-token\n")),
            write_basic_username: Some("prometheus".into()),
            write_basic_password_file: Some(write(dir.path(), "wpass", "w-secret")),
            read_bearer_token_file: Some(write(dir.path(), "rtoken", "read-token")),
            ..Default::default()
        };
        let auth = Authenticator::from_config(&config).unwrap();
        assert!(auth.allows(Access::Open, None));
        assert!(!auth.allows(Access::Write, None));
        assert!(!auth.allows(Access::Read, None));
        assert!(auth.allows(Access::Write, Some(b"Bearer common-token")));
        assert!(auth.allows(Access::Read, Some(b"bearer common-token")));
        assert!(auth.allows(Access::Write, Some(&basic("prometheus", "w-secret"))));
        assert!(!auth.allows(Access::Read, Some(&basic("prometheus", "w-secret"))));
        assert!(auth.allows(Access::Read, Some(b"Bearer read-token")));
        assert!(!auth.allows(Access::Write, Some(b"Bearer read-token")));
        assert!(!auth.allows(Access::Write, Some(&basic("prometheus", "w-secre"))));
        assert!(!auth.allows(Access::Write, Some(&basic("prometheu", "w-secret"))));
        assert!(!auth.allows(Access::Write, Some(b"Bearer common-toke")));
        assert!(!auth.allows(Access::Write, Some(b"Basic !!!")));
        assert_eq!(Access::of_path("/api/v1/query_range"), Access::Read);
        assert_eq!(Access::of_path("/metrics"), Access::Read);
        assert_eq!(Access::of_path("/api/v1/write"), Access::Write);
        // Deletion: the common credentials only, neither scoped one.
        assert_eq!(Access::of_path("/api/v1/admin/tsdb/delete_series"), Access::Admin);
        assert!(auth.allows(Access::Admin, Some(b"Bearer common-token")));
        assert!(!auth.allows(Access::Admin, Some(b"Bearer read-token")));
        assert!(!auth.allows(Access::Admin, Some(&basic("prometheus", "w-secret"))));
        assert!(!auth.allows(Access::Admin, None));
    }

    #[test]
    fn rotated_token_takes_effect() {
        let dir = tempfile::tempdir().unwrap();
        let path = write(dir.path(), "token", "old");
        let auth = Authenticator::from_config(&AuthConfig {
            bearer_token_file: Some(path.clone()),
            ..Default::default()
        })
        .unwrap();
        assert!(auth.allows(Access::Read, Some(b"Bearer old")));
        std::fs::write(&path, "new-and-longer").unwrap();
        std::thread::sleep(RECHECK + Duration::from_millis(50));
        assert!(auth.allows(Access::Read, Some(b"Bearer new-and-longer")));
        assert!(!auth.allows(Access::Read, Some(b"Bearer old")));
        // An emptied file refuses everything, empty credentials included.
        std::fs::write(&path, "\n").unwrap();
        std::thread::sleep(RECHECK + Duration::from_millis(50));
        assert!(!auth.allows(Access::Read, Some(b"Bearer ")));
        assert!(!auth.allows(Access::Read, Some(b"Bearer new-and-longer")));
    }

    #[test]
    fn half_configured_pairs_and_unreadable_files_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        assert!(Authenticator::from_config(&AuthConfig {
            basic_username: Some("u".into()),
            ..Default::default()
        })
        .is_err());
        assert!(Authenticator::from_config(&AuthConfig {
            bearer_token_file: Some(dir.path().join("missing")),
            ..Default::default()
        })
        .is_err());
        assert!(!Authenticator::from_config(&AuthConfig::default()).unwrap().is_enabled());
    }
}
