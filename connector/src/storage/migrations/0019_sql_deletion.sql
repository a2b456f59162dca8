-- Schema version 19: deleting series data from SQL.
--
-- prom_api.delete_series(selector, start_time, end_time) and prom_api.drop_metric(name) queue
-- a request; a connector carries it out (connector/src/storage/deletion_queue.rs) with the
-- same code as the admin API's delete_series, which rewrites compressed chunks exactly: PL/pgSQL
-- cannot encode them. The request is picked up at once through NOTIFY, else within a minute;
-- prom_info.deletion_request shows its progress and outcome.

CREATE TABLE _prom_catalog.deletion_request (
    id           bigserial PRIMARY KEY,
    -- A PromQL series selector, as /api/v1/series' match[] takes it.
    selector     text NOT NULL,
    start_time   timestamptz NOT NULL,
    end_time     timestamptz NOT NULL,
    requested_at timestamptz NOT NULL DEFAULT now(),
    requested_by name NOT NULL DEFAULT current_user,
    finished_at  timestamptz,
    series       bigint,
    samples      bigint,
    histograms   bigint,
    exemplars    bigint,
    error        text,
    CHECK (start_time <= end_time)
);
CREATE INDEX deletion_request_pending ON _prom_catalog.deletion_request (id) WHERE finished_at IS NULL;

-- Deletes every sample, native histogram and exemplar of the series `selector` selects in
-- [start_time, end_time] (both included, to the millisecond). Returns the request's id; the
-- deletion is done by a connector once this transaction commits.
CREATE FUNCTION prom_api.delete_series(
    selector text,
    start_time timestamptz DEFAULT '-infinity',
    end_time timestamptz DEFAULT 'infinity')
RETURNS bigint
LANGUAGE plpgsql AS $fn$
DECLARE
    v_id bigint;
BEGIN
    IF selector IS NULL OR btrim(selector) = '' THEN
        RAISE EXCEPTION 'prom_api.delete_series needs a series selector, e.g. ''{__name__="http_requests_total", job="api"}''';
    END IF;
    IF start_time IS NULL OR end_time IS NULL OR start_time > end_time THEN
        RAISE EXCEPTION 'prom_api.delete_series: start_time (%) must not be after end_time (%)', start_time, end_time;
    END IF;
    INSERT INTO _prom_catalog.deletion_request (selector, start_time, end_time)
    VALUES (selector, start_time, end_time)
    RETURNING id INTO v_id;
    PERFORM pg_notify('promscale_deletion', v_id::text);
    RETURN v_id;
END
$fn$;

-- Deletes all of a metric's data: every sample, native histogram and exemplar of its series,
-- over the whole time line. Its series stay in the catalog (connectors cache their ids), with
-- no data. Returns the request's id.
CREATE FUNCTION prom_api.drop_metric(metric_name text)
RETURNS bigint
LANGUAGE plpgsql AS $fn$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM _prom_catalog.metric m WHERE m.metric_name = drop_metric.metric_name) THEN
        RAISE EXCEPTION 'prom_api.drop_metric: there is no metric %', quote_literal(metric_name);
    END IF;
    -- The name as a PromQL string: backslashes, quotes and line ends escaped.
    RETURN prom_api.delete_series(
        '{__name__="' || replace(replace(replace(replace(metric_name, '\', '\\'), '"', '\"'), E'\n', '\n'), E'\r', '\r') || '"}');
END
$fn$;

CREATE VIEW prom_info.deletion_request AS
SELECT id, selector, start_time, end_time, requested_at, requested_by,
       CASE WHEN finished_at IS NULL THEN 'pending' WHEN error IS NULL THEN 'done' ELSE 'failed' END AS status,
       finished_at, series, samples, histograms, exemplars, error
  FROM _prom_catalog.deletion_request;
