-- Schema version 20: limits per tenant and per metric, set from SQL (docs/limits.md).
--
-- A tenant's row overrides the connector's --limits.* flags for it: series limits (below),
-- its ingestion rate and burst (samples a second per connector), and its label limits.
--
-- A connector refuses a new series of a tenant (the whole store without multi-tenancy:
-- tenant '') that has its limit of active series, of new series in the current minute, or
-- whose metric has its limit of active series for that tenant; series it already has are
-- always written. The limits come from the connector's --limits.* flags, overridden here per
-- tenant and per metric. An active series is one that received a sample within the last 10
-- to 20 minutes: connectors mark each series of a limited tenant or metric in
-- _prom_catalog.active_series once per 10-minute window, and count them every 10 seconds,
-- so that every replica counts the series the others write.

-- Per-tenant limits; NULL keeps the connector's flag, 0 is no limit.
CREATE TABLE _prom_catalog.tenant_limits (
    tenant                     text PRIMARY KEY,
    max_active_series          bigint CHECK (max_active_series >= 0),
    max_new_series_per_minute  bigint CHECK (max_new_series_per_minute >= 0),
    ingestion_rate             double precision CHECK (ingestion_rate >= 0 AND ingestion_rate < 'Infinity'),
    ingestion_burst            double precision CHECK (ingestion_burst >= 0 AND ingestion_burst < 'Infinity'),
    max_labels_per_series      int CHECK (max_labels_per_series >= 0),
    max_label_name_length      int CHECK (max_label_name_length >= 0),
    max_label_value_length     int CHECK (max_label_value_length >= 0),
    updated_at                 timestamptz NOT NULL DEFAULT now()
);

-- Per-metric limit of active series a tenant may have of the metric; NULL keeps the flag.
ALTER TABLE _prom_catalog.metric ADD COLUMN max_active_series bigint CHECK (max_active_series >= 0);

-- The window each tracked series last received a sample in (its start).
CREATE TABLE _prom_catalog.active_series (
    tenant    text        NOT NULL,
    series_id bigint      NOT NULL,
    seen      timestamptz NOT NULL,
    PRIMARY KEY (tenant, series_id)
);

-- Series created by all connectors per tenant and minute (unix minute), added after commit.
CREATE TABLE _prom_catalog.new_series_count (
    tenant  text   NOT NULL,
    minute  bigint NOT NULL,
    created bigint NOT NULL,
    PRIMARY KEY (tenant, minute)
);

-- The tenant names a connector accepts (tenancy.rs): 1 to 150 characters of letters, digits
-- and !-_.*'(), not "." nor ".."; '' is the store without multi-tenancy.
CREATE FUNCTION _prom_catalog.check_limits_tenant(p_tenant text) RETURNS void
LANGUAGE plpgsql IMMUTABLE AS $fn$
BEGIN
    IF p_tenant IS NULL OR (p_tenant <> '' AND (p_tenant !~ '^[A-Za-z0-9!_.*''()-]{1,150}$'
                                                OR p_tenant IN ('.', '..'))) THEN
        RAISE EXCEPTION 'invalid tenant %: 1 to 150 characters of letters, digits and !-_.*''(), not "." nor ".."; '''' for a store without multi-tenancy', quote_nullable(p_tenant)
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
END
$fn$;

CREATE FUNCTION _prom_catalog.check_limit(p_what text, p_value bigint) RETURNS void
LANGUAGE plpgsql IMMUTABLE AS $fn$
BEGIN
    IF p_value < 0 THEN
        RAISE EXCEPTION '% must be 0 (no limit) or more, not %', p_what, p_value
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
END
$fn$;

-- Sets the limits given of a tenant (name them: prom_api.set_tenant_limits('team-a',
-- max_active_series => 100000)); the others stay as they are. 0 is no limit.
CREATE FUNCTION prom_api.set_tenant_limits(tenant text,
                                           max_active_series bigint DEFAULT NULL,
                                           max_new_series_per_minute bigint DEFAULT NULL,
                                           ingestion_rate double precision DEFAULT NULL,
                                           ingestion_burst double precision DEFAULT NULL,
                                           max_labels_per_series int DEFAULT NULL,
                                           max_label_name_length int DEFAULT NULL,
                                           max_label_value_length int DEFAULT NULL) RETURNS boolean
LANGUAGE plpgsql AS $fn$
#variable_conflict use_variable
BEGIN
    PERFORM _prom_catalog.check_limits_tenant(tenant);
    PERFORM _prom_catalog.check_limit('max_active_series', max_active_series);
    PERFORM _prom_catalog.check_limit('max_new_series_per_minute', max_new_series_per_minute);
    PERFORM _prom_catalog.check_limit('max_labels_per_series', max_labels_per_series);
    PERFORM _prom_catalog.check_limit('max_label_name_length', max_label_name_length);
    PERFORM _prom_catalog.check_limit('max_label_value_length', max_label_value_length);
    IF ingestion_rate < 0 OR ingestion_rate = 'Infinity' OR ingestion_rate = 'NaN'
       OR ingestion_burst < 0 OR ingestion_burst = 'Infinity' OR ingestion_burst = 'NaN' THEN
        RAISE EXCEPTION 'ingestion_rate and ingestion_burst must be 0 (no limit, one second of the rate) or more, and finite'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    INSERT INTO _prom_catalog.tenant_limits AS l
           (tenant, max_active_series, max_new_series_per_minute, ingestion_rate, ingestion_burst,
            max_labels_per_series, max_label_name_length, max_label_value_length)
    VALUES (tenant, max_active_series, max_new_series_per_minute, ingestion_rate, ingestion_burst,
            max_labels_per_series, max_label_name_length, max_label_value_length)
    ON CONFLICT ON CONSTRAINT tenant_limits_pkey DO UPDATE
       SET max_active_series = coalesce(EXCLUDED.max_active_series, l.max_active_series),
           max_new_series_per_minute = coalesce(EXCLUDED.max_new_series_per_minute, l.max_new_series_per_minute),
           ingestion_rate = coalesce(EXCLUDED.ingestion_rate, l.ingestion_rate),
           ingestion_burst = coalesce(EXCLUDED.ingestion_burst, l.ingestion_burst),
           max_labels_per_series = coalesce(EXCLUDED.max_labels_per_series, l.max_labels_per_series),
           max_label_name_length = coalesce(EXCLUDED.max_label_name_length, l.max_label_name_length),
           max_label_value_length = coalesce(EXCLUDED.max_label_value_length, l.max_label_value_length),
           updated_at = now();
    RETURN true;
END
$fn$;

-- Gives a tenant the connector's flags again, for every limit.
CREATE FUNCTION prom_api.reset_tenant_limits(tenant text) RETURNS boolean
LANGUAGE plpgsql AS $fn$
#variable_conflict use_variable
BEGIN
    PERFORM _prom_catalog.check_limits_tenant(tenant);
    DELETE FROM _prom_catalog.tenant_limits l WHERE l.tenant = tenant;
    RETURN true;
END
$fn$;

CREATE FUNCTION prom_api.set_metric_max_active_series(metric_name text, max_active_series bigint) RETURNS boolean
LANGUAGE plpgsql AS $fn$
#variable_conflict use_variable
BEGIN
    IF max_active_series IS NULL THEN
        RAISE EXCEPTION 'max_active_series must be 0 (no limit) or more; prom_api.reset_metric_max_active_series gives the metric the connector''s flag again'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    PERFORM _prom_catalog.check_limit('max_active_series', max_active_series);
    UPDATE _prom_catalog.metric m SET max_active_series = max_active_series
     WHERE m.id = _prom_catalog.existing_metric_id(metric_name);
    RETURN true;
END
$fn$;

CREATE FUNCTION prom_api.reset_metric_max_active_series(metric_name text) RETURNS boolean
LANGUAGE plpgsql AS $fn$
#variable_conflict use_variable
BEGIN
    UPDATE _prom_catalog.metric m SET max_active_series = NULL
     WHERE m.id = _prom_catalog.existing_metric_id(metric_name);
    RETURN true;
END
$fn$;

CREATE FUNCTION prom_api.get_metric_max_active_series(metric_name text) RETURNS bigint
LANGUAGE sql STABLE AS $fn$
    SELECT m.max_active_series FROM _prom_catalog.metric m
     WHERE m.id = _prom_catalog.existing_metric_id(metric_name)
$fn$;

-- The start of the oldest window whose marks still count as active.
CREATE FUNCTION _prom_catalog.active_series_since(p_now timestamptz) RETURNS timestamptz
LANGUAGE sql IMMUTABLE AS $fn$
    SELECT date_bin(interval '10 minutes', p_now, timestamptz '1970-01-01 00:00:00+00') - interval '10 minutes'
$fn$;

-- Limits set in SQL, and the active series of the tenants whose series are counted (those
-- with a limit): NULL limits are the connector's flags.
CREATE VIEW prom_info.tenant_limits AS
SELECT coalesce(l.tenant, a.tenant) AS tenant,
       l.max_active_series,
       l.max_new_series_per_minute,
       coalesce(a.active_series, 0)::int8 AS active_series,
       coalesce(n.created, 0)::int8 AS new_series_this_minute,
       l.ingestion_rate,
       l.ingestion_burst,
       l.max_labels_per_series,
       l.max_label_name_length,
       l.max_label_value_length
  FROM _prom_catalog.tenant_limits l
  FULL JOIN (SELECT s.tenant, count(*) AS active_series FROM _prom_catalog.active_series s
              WHERE s.seen >= _prom_catalog.active_series_since(now()) GROUP BY s.tenant) a
    ON a.tenant = l.tenant
  LEFT JOIN _prom_catalog.new_series_count n
    ON n.tenant = coalesce(l.tenant, a.tenant) AND n.minute = floor(extract(epoch FROM now()) / 60)::int8;

-- Metrics with a limit of their own, and each tenant's active series of them.
CREATE VIEW prom_info.metric_limits AS
SELECT m.metric_name,
       m.max_active_series,
       a.tenant,
       coalesce(a.active_series, 0)::int8 AS active_series
  FROM _prom_catalog.metric m
  LEFT JOIN (SELECT s.tenant, (s.series_id >> 40)::int4 AS metric_id, count(*) AS active_series
               FROM _prom_catalog.active_series s
              WHERE s.seen >= _prom_catalog.active_series_since(now())
              GROUP BY 1, 2) a ON a.metric_id = m.id
 WHERE m.max_active_series IS NOT NULL;

-- Which of a request's series exist, looked up without creating anything: for series i,
-- its metric p_metrics[i] and its label pairs (the metric name's included) p_keys/p_values,
-- p_counts[i] of them; its metric's id (NULL for a metric that does not exist) and its id
-- (NULL when its metric, one of its label positions or labels, or itself does not exist).
-- With a limit, a connector creates only the new series the limit admits, and nothing of
-- those it refuses. The dense label array is built as the connector builds it (migration 7).
CREATE FUNCTION _prom_catalog.existing_series(p_metrics text[], p_counts int[], p_keys text[], p_values text[])
RETURNS TABLE (idx int, metric_id int, series_id bigint)
LANGUAGE sql STABLE AS $fn$
    WITH s AS (
        SELECT (t.ord - 1)::int AS i, t.metric, t.n, sum(t.n) OVER (ORDER BY t.ord) AS stop
          FROM unnest(p_metrics, p_counts) WITH ORDINALITY AS t(metric, n, ord)
    ), sm AS (
        SELECT s.i, s.n, s.stop, m.id AS metric_id
          FROM s LEFT JOIN _prom_catalog.metric m ON m.metric_name = s.metric
    ), pairs AS (
        SELECT sm.i, sm.metric_id, p.pos, l.id AS label_id
          FROM sm
         CROSS JOIN LATERAL unnest(p_keys[sm.stop - sm.n + 1 : sm.stop], p_values[sm.stop - sm.n + 1 : sm.stop]) AS k(key, value)
          LEFT JOIN _prom_catalog.label_key_position p ON p.metric_id = sm.metric_id AND p.key = k.key
          LEFT JOIN _prom_catalog.label l
            ON l.key = k.key AND _prom_catalog.label_value_key(l.value) = _prom_catalog.label_value_key(k.value)
           AND l.value = k.value
    ), per_series AS (
        SELECT pr.i, min(pr.metric_id) AS metric_id,
               bool_and(pr.pos IS NOT NULL AND pr.label_id IS NOT NULL) AS complete,
               array_agg(pr.pos) AS positions, array_agg(pr.label_id) AS label_ids, max(pr.pos) AS width
          FROM pairs pr GROUP BY pr.i
    ), arrays AS (
        SELECT ps.i, ps.metric_id, ps.complete,
               CASE WHEN ps.complete THEN
                   (SELECT array_agg(coalesce(d.label_id, 0) ORDER BY g.g)
                      FROM generate_series(1, ps.width) AS g(g)
                      LEFT JOIN unnest(ps.positions, ps.label_ids) AS d(pos, label_id) ON d.pos = g.g)
               END AS labels
          FROM per_series ps
    )
    SELECT sm.i, sm.metric_id,
           (SELECT se.id FROM _prom_catalog.series se WHERE se.labels = a.labels)
      FROM sm LEFT JOIN arrays a ON a.i = sm.i
     ORDER BY sm.i
$fn$;
ALTER FUNCTION _prom_catalog.existing_series(text[], int[], text[], text[])
    SET plan_cache_mode = force_custom_plan SET random_page_cost = 1.1 SET enable_bitmapscan = off
    SET enable_seqscan = off SET jit = off;
