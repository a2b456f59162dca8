//! Deletions asked for in SQL (`prom_api.delete_series`, `prom_api.drop_metric`, migration
//! 19): each connector listens on the `promscale_deletion` channel and, when told (or once a
//! minute, or at start), carries out the pending requests with [`super::deletion::delete`],
//! as the admin API's `delete_series` does. A request is claimed with `FOR UPDATE SKIP
//! LOCKED`, so that one connector carries it out while the others go on to the next; the
//! claim is held until the outcome is recorded, so a connector that dies midway leaves it
//! pending for another (deleting again what is already deleted changes nothing).

use std::time::Duration;

use sqlx::postgres::PgListener;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use super::deletion::Deleted;
use super::select::PgSeriesSource;

/// The channel `prom_api.delete_series` notifies.
const CHANNEL: &str = "promscale_deletion";
/// Pending requests are looked for this often without a notification (one lost while the
/// listener reconnected, or sent before this connector started).
const POLL: Duration = Duration::from_secs(60);

/// A request's selector as matchers, refused as `/api/v1/series` refuses its `match[]` (the
/// parser refuses a selector whose every matcher matches the empty value).
fn matchers(selector: &str) -> Result<Vec<promql_parser::label::Matcher>, String> {
    use promql_parser::parser::Expr;
    match promscale_promql::parse::parse(selector, promscale_promql::parse::MAX_DEPTH) {
        Ok(Expr::VectorSelector(vs)) => Ok(promscale_promql::parse::selector_matchers(&vs)),
        Ok(_) => Err(format!(
            "{selector}: expected a series selector, e.g. {{__name__=\"up\", job=\"api\"}}"
        )),
        Err(e) => Err(format!("{selector}: {e}")),
    }
}

/// Carries out the pending requests, oldest first, until none is left that another
/// connector has not claimed; returns how many this connector finished.
pub async fn run_pending(pool: &PgPool) -> Result<usize, sqlx::Error> {
    let mut finished = 0;
    loop {
        let mut tx = pool.begin().await?;
        let claimed: Option<(i64, String, i64, i64)> = sqlx::query_as(
            "SELECT id, selector,
                    CASE WHEN start_time = '-infinity' THEN -9223372036854775808
                         ELSE ceil(extract(epoch FROM start_time) * 1000)::int8 END,
                    CASE WHEN end_time = 'infinity' THEN 9223372036854775807
                         ELSE floor(extract(epoch FROM end_time) * 1000)::int8 END
               FROM _prom_catalog.deletion_request
              WHERE finished_at IS NULL
              ORDER BY id LIMIT 1 FOR UPDATE SKIP LOCKED",
        )
        .fetch_optional(&mut *tx)
        .await?;
        let Some((id, selector, start_ms, end_ms)) = claimed else {
            return Ok(finished);
        };
        let outcome = match matchers(&selector) {
            Err(e) => Err(e),
            Ok(matchers) => {
                // SQL users see every tenant: no scope.
                let source = PgSeriesSource::new(pool.clone());
                match source.select_series(&matchers).await {
                    Err(e) => Err(e.to_string()),
                    Ok(selected) => {
                        let ids: Vec<i64> = selected.into_iter().flat_map(|s| s.ids).collect();
                        super::deletion::delete(pool, &ids, start_ms, end_ms)
                            .await
                            .map(|deleted| (ids.len(), deleted))
                            // The database's words: the requester is a database user.
                            .map_err(|e| format!("deleting failed: {e}"))
                    }
                }
            }
        };
        let (series, deleted, error) = match outcome {
            Ok((series, deleted)) => (Some(series as i64), deleted, None),
            Err(e) => (None, Deleted::default(), Some(e)),
        };
        match &error {
            None => tracing::info!(
                request = id,
                selector,
                series,
                samples = deleted.samples,
                histograms = deleted.histograms,
                exemplars = deleted.exemplars,
                "carried out a deletion asked for in SQL"
            ),
            Some(e) => tracing::warn!(request = id, error = %e, "a deletion asked for in SQL failed"),
        }
        sqlx::query(
            "UPDATE _prom_catalog.deletion_request
                SET finished_at = now(), series = $2, samples = $3, histograms = $4, exemplars = $5, error = $6
              WHERE id = $1",
        )
        .bind(id)
        .bind(series)
        .bind(error.is_none().then_some(deleted.samples as i64))
        .bind(error.is_none().then_some(deleted.histograms as i64))
        .bind(error.is_none().then_some(deleted.exemplars as i64))
        .bind(&error)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        finished += 1;
    }
}

/// Listens for requests until `stop`, once `ready` says the schema is migrated.
pub async fn listen(pool: PgPool, ready: impl Fn() -> bool, stop: CancellationToken) {
    while !ready() {
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(Duration::from_millis(500)) => {}
        }
    }
    loop {
        let mut listener = match PgListener::connect_with(&pool).await {
            Ok(mut l) => match l.listen(CHANNEL).await {
                Ok(()) => Some(l),
                Err(e) => {
                    tracing::warn!(error = %e, "cannot listen for deletions asked for in SQL; looking for them once a minute");
                    None
                }
            },
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for deletions asked for in SQL; looking for them once a minute");
                None
            }
        };
        loop {
            if let Err(e) = run_pending(&pool).await {
                tracing::warn!(error = %e, "carrying out deletions asked for in SQL failed; trying again later");
            }
            let woken = async {
                match listener.as_mut() {
                    Some(l) => l.recv().await.map(|_| ()),
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                () = stop.cancelled() => return,
                () = tokio::time::sleep(POLL) => {
                    if listener.is_none() {
                        // Try listening again.
                        break;
                    }
                }
                received = woken => {
                    if received.is_err() {
                        // The connection dropped: listen again.
                        break;
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn selectors_are_checked_as_match_parameters() {
        assert_eq!(matchers("{__name__=\"up\", job=\"a\"}").unwrap().len(), 2);
        assert!(matchers("up").is_ok());
        assert!(matchers("{job=\"\"}").unwrap_err().contains("non-empty matcher"));
        assert!(matchers("{job=~\".*\"}").unwrap_err().contains("non-empty matcher"));
        assert!(matchers("rate(up[5m])").unwrap_err().contains("series selector"));
        assert!(matchers("{").is_err());
    }
}
