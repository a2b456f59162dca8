//! `POST /write` and `POST /api/v1/write`: answers so that Prometheus does the right thing.
//! 2xx only once the samples are committed; 4xx for data that can never be stored
//! (Prometheus drops it); 5xx when the database is unavailable (Prometheus retries), with
//! the database's own message in the log, not in the answer. A request with some series that
//! cannot be stored has the others committed first, then gets a 400 naming what was left
//! out: Prometheus does not resend it, and nothing storable is lost.
//!
//! Remote write 1.0 and 2.0 share the endpoints; the `Content-Type` says which
//! (`application/x-protobuf`, with `proto=prometheus.WriteRequest`, the default, or
//! `proto=io.prometheus.write.v2.Request`); anything else is a 415. Answers to 2.0 requests
//! carry the `X-Prometheus-Remote-Write-{Samples,Histograms,Exemplars}-Written` counts of
//! what was committed, on a 204 and on a partial 400 alike.

use std::sync::Arc;
use std::time::Instant;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Extension;

use super::decode::{decode_snappy, decode_v2_snappy, DecodeError, Refusals};
use crate::metrics::{CodeLabel, ProtocolLabel, ReasonLabel, TenantLabel, TenantReasonLabel};
use crate::server::{AppState, DATABASE_UNAVAILABLE};
use crate::storage::StorageError;
use crate::tenancy::{TenantIdentity, WriteTenant};

#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    #[error("unsupported Content-Encoding {0:?}: remote-write bodies are snappy-compressed")]
    UnsupportedEncoding(String),
    #[error("unsupported Content-Type {0:?}: remote-write 1.0 (application/x-protobuf;proto=prometheus.WriteRequest) and 2.0 (application/x-protobuf;proto=io.prometheus.write.v2.Request) are accepted")]
    UnsupportedProtocol(String),
    #[error(transparent)]
    Decode(#[from] DecodeError),
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error("not ready: the database schema is not migrated yet")]
    NotReady,
    #[error(transparent)]
    Tenancy(#[from] crate::tenancy::TenancyError),
    #[error("ingestion rate limit of {rate} samples/s exceeded (--limits.ingestion-rate, or per tenant prom_api.set_tenant_limits): {samples} samples not stored; send them again in {retry_after} s (Prometheus does with queue_config.retry_on_http_429: true)")]
    RateLimited {
        rate: f64,
        samples: usize,
        retry_after: u64,
    },
    #[error("{stored} series stored; {} left out: {}", refused.series, describe_refused(refused))]
    PartlyRefused { stored: usize, refused: Refusals },
}

/// The first few reasons, then how many more.
fn describe_refused(refused: &Refusals) -> String {
    let mut out: Vec<String> = refused.first.iter().map(ToString::to_string).collect();
    if refused.series > refused.first.len() {
        out.push(format!("and {} more", refused.series - refused.first.len()));
    }
    out.join("; ")
}

impl WriteError {
    pub fn status(&self) -> StatusCode {
        match self {
            WriteError::UnsupportedEncoding(_) | WriteError::UnsupportedProtocol(_) => {
                StatusCode::UNSUPPORTED_MEDIA_TYPE
            }
            WriteError::Decode(_)
            | WriteError::Storage(StorageError::Rejected(_))
            | WriteError::PartlyRefused { .. } => StatusCode::BAD_REQUEST,
            WriteError::Storage(StorageError::Unavailable(_)) | WriteError::NotReady => StatusCode::SERVICE_UNAVAILABLE,
            WriteError::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            WriteError::Tenancy(e) => e.status(),
        }
    }

    /// What the client is told; the log gets the whole error.
    pub fn client_message(&self) -> String {
        match self {
            WriteError::Storage(StorageError::Unavailable(_)) => DATABASE_UNAVAILABLE.to_string(),
            // The database's words stay in the log: they can name tables, roles and settings.
            WriteError::Storage(StorageError::Rejected(_)) => {
                "the database refused this request's data; the reason is in the connector's log".to_string()
            }
            other => other.to_string(),
        }
    }
}

/// The protocol of a request, from its `Content-Type` (absent or empty: 1.0, as Prometheus).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Protocol {
    V1,
    V2,
}

/// The protocol of a request from its headers; a 415 for an encoding or a message type
/// this connector does not read.
pub fn protocol(headers: &HeaderMap) -> Result<Protocol, WriteError> {
    if let Some(encoding) = headers.get(header::CONTENT_ENCODING) {
        let encoding = String::from_utf8_lossy(encoding.as_bytes());
        if !encoding.trim().eq_ignore_ascii_case("snappy") {
            return Err(WriteError::UnsupportedEncoding(encoding.into_owned()));
        }
    }
    let Some(value) = headers
        .get(header::CONTENT_TYPE)
        .filter(|v| !v.as_bytes().trim_ascii().is_empty())
    else {
        return Ok(Protocol::V1);
    };
    let text = String::from_utf8_lossy(value.as_bytes());
    let unsupported = || WriteError::UnsupportedProtocol(text.to_string());
    let mut parts = text.split(';');
    let media = parts.next().unwrap_or_default().trim();
    if !media.eq_ignore_ascii_case("application/x-protobuf") {
        return Err(unsupported());
    }
    for parameter in parts {
        let (key, value) = parameter.split_once('=').ok_or_else(unsupported)?;
        if key.trim().eq_ignore_ascii_case("proto") {
            return match value.trim().trim_matches('"') {
                "prometheus.WriteRequest" => Ok(Protocol::V1),
                "io.prometheus.write.v2.Request" => Ok(Protocol::V2),
                _ => Err(unsupported()),
            };
        }
    }
    Ok(Protocol::V1)
}

/// What a request committed, for remote write 2.0's answer headers.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Written {
    pub samples: usize,
    pub histograms: usize,
    pub exemplars: usize,
}

pub async fn write(
    State(app): State<Arc<AppState>>,
    identity: Option<Extension<TenantIdentity>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let started = Instant::now();
    let protocol = protocol(&headers);
    let is_v2 = matches!(protocol, Ok(Protocol::V2));
    let mut written = Written::default();
    let result = match protocol {
        Ok(protocol) => {
            let label = ProtocolLabel {
                protocol: match protocol {
                    Protocol::V1 => "1.0",
                    Protocol::V2 => "2.0",
                },
            };
            app.metrics.write_protocols.get_or_create(&label).inc();
            match &app.tenancy {
                Some(options) => match crate::tenancy::write_tenant(options, &headers, identity.as_deref()) {
                    Ok(tenant) => store(&app, protocol, Some(&tenant), &body, &mut written).await,
                    Err(e) => Err(e.into()),
                },
                None => store(&app, protocol, None, &body, &mut written).await,
            }
        }
        Err(e) => Err(e),
    };
    let status = match &result {
        Ok(()) => StatusCode::NO_CONTENT,
        Err(e) => {
            let status = e.status();
            tracing::warn!(status = status.as_u16(), error = %e, "remote-write request refused");
            status
        }
    };
    app.metrics
        .write_requests
        .get_or_create(&CodeLabel { code: status.as_u16() })
        .inc();
    app.metrics
        .write_request_duration
        .observe(started.elapsed().as_secs_f64());
    let retry_after = match &result {
        Err(WriteError::RateLimited { retry_after, .. }) => Some(*retry_after),
        _ => None,
    };
    let mut response = match result {
        Ok(()) => status.into_response(),
        Err(e) => (status, format!("{}\n", e.client_message())).into_response(),
    };
    if let Some(seconds) = retry_after {
        response.headers_mut().insert(header::RETRY_AFTER, seconds.into());
    }
    if is_v2 {
        let headers = response.headers_mut();
        headers.insert("X-Prometheus-Remote-Write-Samples-Written", written.samples.into());
        headers.insert(
            "X-Prometheus-Remote-Write-Histograms-Written",
            written.histograms.into(),
        );
        headers.insert("X-Prometheus-Remote-Write-Exemplars-Written", written.exemplars.into());
    }
    response
}

/// Samples and native histograms of a batch by the tenant label of their series.
fn samples_by_tenant(batch: &crate::remote_write::decode::WriteBatch) -> std::collections::BTreeMap<String, usize> {
    let mut out = std::collections::BTreeMap::new();
    for s in &batch.series {
        let tenant = s
            .labels
            .iter()
            .find(|l| l.name() == crate::tenancy::TENANT_LABEL)
            .map(|l| l.value())
            .unwrap_or_default();
        let n = s.samples.len() + s.histograms.len();
        if let Some(count) = out.get_mut(tenant) {
            *count += n;
        } else {
            out.insert(tenant.to_string(), n);
        }
    }
    out
}

fn count_tenant_refused(app: &AppState, tenant: &str, reason: &'static str, samples: usize) {
    let label = TenantReasonLabel {
        tenant: app.metrics.tenant_label(tenant),
        reason,
    };
    app.metrics
        .tenant_samples_refused
        .get_or_create(&label)
        .inc_by(samples as u64);
}

/// Stores a request; `written` counts what was committed, also when some series were left
/// out.
async fn store(
    app: &Arc<AppState>,
    protocol: Protocol,
    tenant: Option<&WriteTenant>,
    body: &[u8],
    written: &mut Written,
) -> Result<(), WriteError> {
    let mut batch = match protocol {
        Protocol::V1 => decode_snappy(body, app.max_request_bytes)?,
        Protocol::V2 => decode_v2_snappy(body, app.max_request_bytes)?,
    };
    if !app.is_ready() {
        return Err(WriteError::NotReady);
    }
    let latest_ms = chrono::Utc::now()
        .timestamp_millis()
        .saturating_add(app.max_future.as_millis() as i64);
    batch.refuse_later_than(latest_ms, app.max_future);
    // The replica label of an HA pair is not stored: it counts for no limit.
    let replica_label = app.ha.as_ref().map(|ha| ha.options.replica_label.as_str());
    // A tenant's own limits (prom_api.set_tenant_limits) apply to its writes; series naming
    // their own tenants share those of tenant "", as they share one rate bucket.
    let limits_tenant = match tenant {
        Some(WriteTenant::One(t)) => t.as_str(),
        _ => "",
    };
    let own_limits = app.ingestor.series_limits();
    let label_limits = own_limits.map_or(app.label_limits, |l| l.label_limits(limits_tenant, app.label_limits));
    batch.refuse_over_label_limits(&label_limits, replica_label);
    // Set after the limits: the tenant label counts for none of them.
    if let Some(tenant) = tenant {
        crate::tenancy::assign(&mut batch, tenant);
    }
    let leaders = match &app.ha {
        Some(ha) => crate::ingest::ha::apply(&ha.options, &app.pool, &app.metrics, &mut batch).await?,
        None => Vec::new(),
    };
    // A tenant's own rate comes with its own burst, one second of it unless set; its own
    // burst alone applies to the flag's rate.
    let (own_rate, own_burst) = own_limits.map_or((None, None), |l| l.ingestion_rate(limits_tenant));
    let rate = own_rate.unwrap_or(app.rate_limits.rate);
    let burst = own_burst.unwrap_or(if own_rate.is_some() { 0.0 } else { app.rate_limits.burst });
    if rate > 0.0 {
        // A request with nothing to store (a standby's, exemplars or metadata alone) takes
        // nothing from the bucket and is never turned away.
        let samples = batch.sample_count() + batch.histogram_count();
        if samples > 0 {
            let bucket = limits_tenant;
            if let Err(retry_after) = app.rate_limits.try_take_at_rate(bucket, samples, rate, burst) {
                let reason = ReasonLabel { reason: "rate_limited" };
                app.metrics
                    .samples_refused
                    .get_or_create(&reason)
                    .inc_by(samples as u64);
                if tenant.is_some() {
                    count_tenant_refused(app, bucket, "rate_limited", samples);
                }
                return Err(WriteError::RateLimited {
                    rate,
                    samples,
                    retry_after,
                });
            }
        }
    }
    let mut refused = std::mem::take(&mut batch.refused);
    let mut stored = batch.series.len();
    let mut by_tenant = tenant.map(|_| samples_by_tenant(&batch));
    let mut report = app.ingestor.ingest(batch).await?;
    // New series a series limit left out: counted by their own tenant.
    let mut limited: std::collections::BTreeMap<(String, &'static str), usize> = Default::default();
    for (error, samples, series_tenant) in std::mem::take(&mut report.refused) {
        stored -= 1;
        if let Some(count) = by_tenant.as_mut().and_then(|b| b.get_mut(&series_tenant)) {
            *count -= samples.min(*count);
        }
        if tenant.is_some() {
            *limited.entry((series_tenant, error.reason())).or_default() += samples;
        }
        refused.push(error, samples);
    }
    for ((series_tenant, reason), samples) in limited {
        count_tenant_refused(app, &series_tenant, reason, samples);
    }
    for (tenant, samples) in by_tenant.into_iter().flatten() {
        app.metrics
            .tenant_samples_ingested
            .get_or_create(&TenantLabel {
                tenant: app.metrics.tenant_label(&tenant),
            })
            .inc_by(samples as u64);
    }
    written.samples = report.samples;
    written.histograms = report.histograms;
    written.exemplars = report.exemplars;
    if let Some(ha) = &app.ha {
        crate::ingest::ha::committed(&app.pool, &leaders).await;
        for leader in leaders.iter().filter(|l| l.pending) {
            if ha.start_replay(leader) {
                let (app, ha, leader) = (app.clone(), ha.clone(), leader.clone());
                tokio::spawn(async move {
                    let result =
                        crate::ingest::ha::replay_kept(&ha, &app.pool, &app.ingestor, &app.metrics, &leader).await;
                    if let Err(e) = result {
                        tracing::warn!(error = %e, cluster = leader.cluster, replica = leader.replica,
                            "writing a new HA leader's kept requests stopped; its next request resumes it");
                    }
                    ha.finish_replay(&leader);
                });
            }
        }
    }
    if refused.is_empty() {
        return Ok(());
    }
    for (&reason, &(series, samples)) in &refused.by_reason {
        let counted_by_series_tenant = matches!(reason, "series_limit" | "metric_series_limit" | "new_series_limit");
        if let Some(tenant) = tenant.filter(|_| !counted_by_series_tenant) {
            // Series naming their own tenant that are refused have none worth a label.
            let name = match tenant {
                WriteTenant::One(t) => t.as_str(),
                WriteTenant::FromLabel => "",
            };
            count_tenant_refused(app, name, reason, samples);
        }
        let reason = ReasonLabel { reason };
        app.metrics.series_refused.get_or_create(&reason).inc_by(series as u64);
        app.metrics
            .samples_refused
            .get_or_create(&reason)
            .inc_by(samples as u64);
    }
    Err(WriteError::PartlyRefused { stored, refused })
}
