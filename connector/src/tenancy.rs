//! Whose series a request writes or reads when tenants are kept apart
//! (`--metrics.multi-tenancy`; docs/multi-tenancy.md).
//!
//! A tenant is stored as the label [`TENANT_LABEL`] of each of its series: writes get it set
//! here ([`assign`]), replacing whatever the sender put there; reads get a [`ReadScope`] that
//! the series source adds as a matcher to every selection, so that no endpoint can select,
//! list or count another tenant's series. A request's tenant is the one of the tenant
//! credential that authenticated it (`--auth.tenant-tokens-file`, put in the request's
//! extensions by `server::auth` as a [`TenantIdentity`]), else its tenant header; a tenant
//! credential naming another tenant in the header is refused (403), never obeyed.

use axum::http::{HeaderMap, StatusCode};
use promql_parser::label::{MatchOp, Matcher};

use crate::model::Label;
use crate::remote_write::decode::{describe_series, DecodeError, WriteBatch, MAX_LABELS};

/// The label naming a series' tenant, as Promscale stored it.
pub const TENANT_LABEL: &str = "__tenant__";

/// Longest tenant name, as Mimir's.
const MAX_TENANT_BYTES: usize = 150;

/// The tenant of a request authenticated by a tenant credential.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TenantIdentity(pub String);

/// Where a write that names no tenant goes (`--metrics.multi-tenancy.default-write-tenant`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DefaultWrite {
    Refuse,
    /// Each series' own `__tenant__` label.
    FromLabel,
    Tenant(String),
}

#[derive(Clone, Debug)]
pub struct TenancyOptions {
    pub header: axum::http::HeaderName,
    /// The header's name as configured, for messages.
    pub header_text: String,
    pub default_write: DefaultWrite,
    pub cross_tenant: bool,
}

impl TenancyOptions {
    /// From the flags; None when tenancy is off.
    pub fn from_config(config: &crate::config::Config) -> anyhow::Result<Option<TenancyOptions>> {
        if !config.multi_tenancy {
            if config.auth.tenant_tokens_file.is_some() {
                anyhow::bail!("--auth.tenant-tokens-file needs --metrics.multi-tenancy");
            }
            return Ok(None);
        }
        let header = axum::http::HeaderName::try_from(config.tenancy_header.as_str()).map_err(|_| {
            anyhow::anyhow!(
                "--metrics.multi-tenancy.header {:?} is not an HTTP header name",
                config.tenancy_header
            )
        })?;
        let default_write = match config.tenancy_default_write.as_str() {
            "none" => DefaultWrite::Refuse,
            "label" => DefaultWrite::FromLabel,
            tenant if is_valid_tenant(tenant) => DefaultWrite::Tenant(tenant.to_string()),
            other => anyhow::bail!(
                "--metrics.multi-tenancy.default-write-tenant {other:?} is neither none, label nor a valid tenant name ({TENANT_RULE})"
            ),
        };
        Ok(Some(TenancyOptions {
            header,
            header_text: config.tenancy_header.clone(),
            default_write,
            cross_tenant: config.tenancy_cross_tenant,
        }))
    }
}

const TENANT_RULE: &str = "1 to 150 characters of letters, digits and !-_.*'(), not \".\" nor \"..\"";

/// A tenant name as Mimir accepts them: it never holds `|` (the separator of cross-tenant
/// reads) nor `:` (the separator of the tenant tokens file).
pub fn is_valid_tenant(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_TENANT_BYTES
        && name != "."
        && name != ".."
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!-_.*'()".contains(&b))
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TenancyError {
    #[error("no tenant: send the {0} header naming the tenant (--metrics.multi-tenancy is on)")]
    Missing(String),
    #[error("the {header} header holds {value:?}, not a tenant name ({TENANT_RULE})")]
    Invalid { header: String, value: String },
    #[error("the {0} header names several tenants, which only --metrics.multi-tenancy.allow-cross-tenant-queries allows, for reads, and not with a tenant credential")]
    CrossTenant(String),
    #[error("this credential belongs to another tenant than the {0} header names")]
    OtherTenant(String),
}

impl TenancyError {
    pub fn status(&self) -> StatusCode {
        match self {
            TenancyError::OtherTenant(_) => StatusCode::FORBIDDEN,
            _ => StatusCode::BAD_REQUEST,
        }
    }
}

/// The tenants the header names (several only when `several` is allowed), checked.
fn header_tenants(options: &TenancyOptions, headers: &HeaderMap, several: bool) -> Result<Vec<String>, TenancyError> {
    let name = options.header_text.clone();
    let mut out = Vec::new();
    for value in headers.get_all(&options.header) {
        let text = String::from_utf8_lossy(value.as_bytes());
        if text.trim().is_empty() {
            continue;
        }
        for tenant in text.split('|').map(str::trim) {
            if !is_valid_tenant(tenant) {
                return Err(TenancyError::Invalid {
                    header: name,
                    value: text.into_owned(),
                });
            }
            if !out.iter().any(|t| t == tenant) {
                out.push(tenant.to_string());
            }
        }
    }
    if out.len() > 1 && !several {
        return Err(TenancyError::CrossTenant(name));
    }
    Ok(out)
}

/// The credential's tenant, checked against what the header names.
fn identity_tenant(
    options: &TenancyOptions,
    headers: &HeaderMap,
    identity: &TenantIdentity,
) -> Result<String, TenancyError> {
    let named = header_tenants(options, headers, false)?;
    if named.iter().any(|t| *t != identity.0) {
        return Err(TenancyError::OtherTenant(options.header_text.clone()));
    }
    Ok(identity.0.clone())
}

/// Whose series a write stores.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WriteTenant {
    One(String),
    FromLabel,
}

pub fn write_tenant(
    options: &TenancyOptions,
    headers: &HeaderMap,
    identity: Option<&TenantIdentity>,
) -> Result<WriteTenant, TenancyError> {
    if let Some(identity) = identity {
        return identity_tenant(options, headers, identity).map(WriteTenant::One);
    }
    if let Some(tenant) = header_tenants(options, headers, false)?.pop() {
        return Ok(WriteTenant::One(tenant));
    }
    match &options.default_write {
        DefaultWrite::Refuse => Err(TenancyError::Missing(options.header_text.clone())),
        DefaultWrite::FromLabel => Ok(WriteTenant::FromLabel),
        DefaultWrite::Tenant(t) => Ok(WriteTenant::One(t.clone())),
    }
}

/// Sets every series' tenant label (in its place among the sorted labels), replacing any the
/// sender set; with [`WriteTenant::FromLabel`], series without a valid one are refused. The
/// request's metadata is the tenant's; with [`WriteTenant::FromLabel`], that of the one tenant
/// all its series name (kept by none when they name several).
pub fn assign(batch: &mut WriteBatch, tenant: &WriteTenant) {
    let refused = &mut batch.refused;
    batch.series.retain_mut(|series| {
        let samples = series.samples.len() + series.histograms.len();
        let at = series.labels.partition_point(|l| l.name() < TENANT_LABEL);
        let present = series.labels.get(at).is_some_and(|l| l.name() == TENANT_LABEL);
        let problem = match tenant {
            WriteTenant::One(t) => {
                let label = Label::new(TENANT_LABEL, t.as_str());
                if present {
                    series.labels[at] = label;
                    None
                } else if series.labels.len() >= MAX_LABELS {
                    Some(DecodeError::TooManyLabels {
                        series: describe_series(&series.labels),
                        count: series.labels.len() + 1,
                    })
                } else {
                    series.labels.insert(at, label);
                    None
                }
            }
            WriteTenant::FromLabel if present && is_valid_tenant(series.labels[at].value()) => None,
            WriteTenant::FromLabel => Some(DecodeError::InvalidTenant {
                series: describe_series(&series.labels),
            }),
        };
        match problem {
            None => true,
            Some(e) => {
                refused.push(e, samples);
                false
            }
        }
    });
    let owner = match tenant {
        WriteTenant::One(t) => Some(t.clone()),
        WriteTenant::FromLabel => {
            let mut named = batch.series.iter().filter_map(|s| {
                s.labels
                    .iter()
                    .find(|l| l.name() == TENANT_LABEL)
                    .map(|l| l.value().to_string())
            });
            let first = named.next();
            first.filter(|f| named.all(|n| n == *f))
        }
    };
    match owner {
        Some(owner) => batch.metadata.iter_mut().for_each(|m| m.tenant = owner.clone()),
        None => {
            batch.metadata_dropped += batch.metadata.len();
            batch.metadata.clear();
        }
    }
}

/// The tenants a read may see.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReadScope {
    tenants: Vec<String>,
}

impl ReadScope {
    pub fn new(tenants: Vec<String>) -> Self {
        ReadScope { tenants }
    }

    /// The matcher every selection gets.
    pub fn matcher(&self) -> Matcher {
        match self.tenants.as_slice() {
            // Never built ([`read_scope`] refuses a read naming no tenant); if it were, it
            // would select nothing, not the series without a tenant.
            [] => Matcher::new(
                MatchOp::Re(regex::Regex::new("[^\\s\\S]").expect("a valid regex")),
                TENANT_LABEL,
                "[^\\s\\S]",
            ),
            [one] => Matcher::new(MatchOp::Equal, TENANT_LABEL, one),
            several => {
                // Tenant names hold no regex metacharacter but `.`, `*`, `(` and `)`: escaped.
                let alternatives: Vec<String> = several.iter().map(|t| regex::escape(t)).collect();
                let pattern = alternatives.join("|");
                let re = regex::Regex::new(&format!("^(?s:{pattern})$")).expect("escaped alternatives");
                Matcher::new(MatchOp::Re(re), TENANT_LABEL, &pattern)
            }
        }
    }

    /// A read of one tenant sees its series without the tenant label (as a Prometheus holding
    /// only that tenant's data would answer); a read of several keeps it to tell them apart.
    pub fn hides_label(&self) -> bool {
        self.tenants.len() == 1
    }

    pub fn tenants(&self) -> &[String] {
        &self.tenants
    }
}

/// The scope of a read; None when tenancy is off (`options` None).
pub fn read_scope(
    options: Option<&TenancyOptions>,
    headers: &HeaderMap,
    identity: Option<&TenantIdentity>,
) -> Result<Option<ReadScope>, TenancyError> {
    let Some(options) = options else {
        return Ok(None);
    };
    if let Some(identity) = identity {
        return identity_tenant(options, headers, identity).map(|t| Some(ReadScope::new(vec![t])));
    }
    let tenants = header_tenants(options, headers, options.cross_tenant)?;
    if tenants.is_empty() {
        return Err(TenancyError::Missing(options.header_text.clone()));
    }
    Ok(Some(ReadScope::new(tenants)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Series;

    fn options(default_write: DefaultWrite, cross_tenant: bool) -> TenancyOptions {
        TenancyOptions {
            header: axum::http::HeaderName::from_static("x-scope-orgid"),
            header_text: "X-Scope-OrgID".into(),
            default_write,
            cross_tenant,
        }
    }

    fn headers(value: Option<&str>) -> HeaderMap {
        let mut h = HeaderMap::new();
        if let Some(v) = value {
            h.insert("X-Scope-OrgID", v.parse().unwrap());
        }
        h
    }

    #[test]
    fn tenant_names() {
        for ok in ["a", "team-a", "A.b_c*'()!", &"x".repeat(150)] {
            assert!(is_valid_tenant(ok), "{ok}");
        }
        for bad in ["", ".", "..", "a|b", "a:b", "a b", "é", &"x".repeat(151), "a/b"] {
            assert!(!is_valid_tenant(bad), "{bad}");
        }
    }

    #[test]
    fn a_tenant_credential_reads_and_writes_its_own_tenant_only() {
        let o = options(DefaultWrite::Refuse, true);
        let me = TenantIdentity("alpha".into());
        assert_eq!(
            write_tenant(&o, &headers(None), Some(&me)),
            Ok(WriteTenant::One("alpha".into()))
        );
        assert_eq!(
            write_tenant(&o, &headers(Some("alpha")), Some(&me)),
            Ok(WriteTenant::One("alpha".into()))
        );
        let other = write_tenant(&o, &headers(Some("beta")), Some(&me)).unwrap_err();
        assert_eq!(other.status(), StatusCode::FORBIDDEN);
        // Cross-tenant reads are allowed, but not with a tenant credential.
        assert!(read_scope(Some(&o), &headers(Some("alpha|beta")), Some(&me)).is_err());
        assert_eq!(
            read_scope(Some(&o), &headers(None), Some(&me)).unwrap(),
            Some(ReadScope::new(vec!["alpha".into()]))
        );
    }

    #[test]
    fn header_tenants_and_defaults() {
        let strict = options(DefaultWrite::Refuse, false);
        assert_eq!(
            write_tenant(&strict, &headers(None), None).unwrap_err().status(),
            StatusCode::BAD_REQUEST
        );
        assert!(read_scope(Some(&strict), &headers(None), None).is_err());
        assert!(read_scope(Some(&strict), &headers(Some("a|b")), None).is_err());
        assert!(write_tenant(&strict, &headers(Some("a|b")), None).is_err());
        assert!(read_scope(Some(&strict), &headers(Some("a/b")), None).is_err());
        assert_eq!(read_scope(None, &headers(Some("a")), None), Ok(None));
        let open = options(DefaultWrite::Tenant("anonymous".into()), true);
        assert_eq!(
            write_tenant(&open, &headers(None), None),
            Ok(WriteTenant::One("anonymous".into()))
        );
        let scope = read_scope(Some(&open), &headers(Some("a | b|a")), None)
            .unwrap()
            .unwrap();
        assert_eq!(scope.tenants(), ["a", "b"]);
        assert!(!scope.hides_label());
        let m = scope.matcher();
        assert!(m.is_match("a") && m.is_match("b") && !m.is_match("ab") && !m.is_match(""));
        let none = ReadScope::new(vec![]).matcher();
        assert!(!none.is_match("") && !none.is_match("a"));
        let dotted = ReadScope::new(vec!["a.b".into(), "c".into()]).matcher();
        assert!(dotted.is_match("a.b") && !dotted.is_match("axb"));
    }

    fn series(labels: &[(&str, &str)]) -> Series {
        Series {
            labels: labels.iter().map(|(k, v)| Label::new(*k, *v)).collect(),
            samples: vec![crate::model::Sample {
                timestamp: 1,
                value: 1.0,
            }],
            histograms: vec![],
            exemplars: vec![],
        }
    }

    fn names(s: &Series) -> Vec<(String, String)> {
        s.labels
            .iter()
            .map(|l| (l.name().to_string(), l.value().to_string()))
            .collect()
    }

    #[test]
    fn the_tenant_label_is_set_in_order_and_replaces_the_senders() {
        let mut batch = WriteBatch {
            series: vec![
                series(&[("__name__", "up"), ("job", "a")]),
                series(&[("__a", "x"), ("__name__", "up"), ("__tenant__", "beta"), ("job", "b")]),
            ],
            ..WriteBatch::default()
        };
        assign(&mut batch, &WriteTenant::One("alpha".into()));
        let want = |extra: &[(&str, &str)]| -> Vec<(String, String)> {
            let mut v: Vec<(String, String)> = extra.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
            v.sort();
            v
        };
        assert_eq!(
            names(&batch.series[0]),
            want(&[("__name__", "up"), ("__tenant__", "alpha"), ("job", "a")])
        );
        assert_eq!(
            names(&batch.series[1]),
            want(&[("__a", "x"), ("__name__", "up"), ("__tenant__", "alpha"), ("job", "b")])
        );
        assert!(batch.refused.is_empty());
    }

    #[test]
    fn from_labels_refuses_series_without_a_valid_tenant_alone() {
        let mut batch = WriteBatch {
            series: vec![
                series(&[("__name__", "up"), ("__tenant__", "alpha")]),
                series(&[("__name__", "up"), ("job", "x")]),
                series(&[("__name__", "up"), ("__tenant__", "a|b")]),
            ],
            ..WriteBatch::default()
        };
        assign(&mut batch, &WriteTenant::FromLabel);
        assert_eq!(batch.series.len(), 1);
        assert_eq!(batch.refused.series, 2);
        assert_eq!(batch.refused.by_reason["invalid_tenant"], (2, 2));
    }
}
