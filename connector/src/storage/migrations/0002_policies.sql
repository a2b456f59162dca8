-- The SQL API for per-metric retention and chunk interval (Promscale's prom_api), and the
-- maintenance that applies them. The operator's MetricPolicy drives these functions.

CREATE SCHEMA IF NOT EXISTS prom_api;

-- The id of an existing metric, or a clear error.
CREATE FUNCTION _prom_catalog.existing_metric_id(p_metric_name text) RETURNS int
LANGUAGE plpgsql STABLE AS $fn$
DECLARE
    v_id int;
BEGIN
    SELECT id INTO v_id FROM _prom_catalog.metric WHERE metric_name = p_metric_name;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'metric "%" does not exist', p_metric_name
            USING ERRCODE = 'undefined_object',
                  HINT = 'A metric exists once samples of it were written; prom_info.metric lists them.';
    END IF;
    RETURN v_id;
END
$fn$;

CREATE FUNCTION _prom_catalog.check_interval(p_what text, p_value interval, p_minimum interval) RETURNS void
LANGUAGE plpgsql IMMUTABLE AS $fn$
BEGIN
    IF p_value IS NULL OR p_value < p_minimum THEN
        RAISE EXCEPTION '% must be at least %, got %', p_what, p_minimum, coalesce(p_value::text, 'NULL')
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
END
$fn$;

-- Retention period ------------------------------------------------------------------------

CREATE FUNCTION prom_api.set_default_retention_period(retention_period interval) RETURNS boolean
LANGUAGE plpgsql AS $fn$
BEGIN
    PERFORM _prom_catalog.check_interval('retention period', retention_period, interval '1 minute');
    UPDATE _prom_catalog.default_setting SET value = retention_period::text WHERE key = 'retention_period';
    RETURN true;
END
$fn$;

CREATE FUNCTION prom_api.get_default_retention_period() RETURNS interval
LANGUAGE sql STABLE AS $fn$
    SELECT value::interval FROM _prom_catalog.default_setting WHERE key = 'retention_period'
$fn$;

CREATE FUNCTION prom_api.set_metric_retention_period(metric_name text, new_retention_period interval) RETURNS boolean
LANGUAGE plpgsql AS $fn$
#variable_conflict use_variable
BEGIN
    PERFORM _prom_catalog.check_interval('retention period', new_retention_period, interval '1 minute');
    UPDATE _prom_catalog.metric SET retention_period = new_retention_period
     WHERE id = _prom_catalog.existing_metric_id(metric_name);
    RETURN true;
END
$fn$;

CREATE FUNCTION prom_api.reset_metric_retention_period(metric_name text) RETURNS boolean
LANGUAGE plpgsql AS $fn$
#variable_conflict use_variable
BEGIN
    UPDATE _prom_catalog.metric SET retention_period = NULL WHERE id = _prom_catalog.existing_metric_id(metric_name);
    RETURN true;
END
$fn$;

CREATE FUNCTION prom_api.get_metric_retention_period(metric_name text) RETURNS interval
LANGUAGE sql STABLE AS $fn$
    SELECT _prom_catalog.metric_retention_period(_prom_catalog.existing_metric_id(metric_name))
$fn$;

-- Chunk interval ----------------------------------------------------------------------------
-- A new interval applies to chunks created from then on; existing chunks keep their bounds.

CREATE FUNCTION prom_api.set_default_chunk_interval(chunk_interval interval) RETURNS boolean
LANGUAGE plpgsql AS $fn$
BEGIN
    PERFORM _prom_catalog.check_interval('chunk interval', chunk_interval, interval '1 minute');
    UPDATE _prom_catalog.default_setting SET value = chunk_interval::text WHERE key = 'chunk_interval';
    RETURN true;
END
$fn$;

CREATE FUNCTION prom_api.get_default_chunk_interval() RETURNS interval
LANGUAGE sql STABLE AS $fn$
    SELECT value::interval FROM _prom_catalog.default_setting WHERE key = 'chunk_interval'
$fn$;

CREATE FUNCTION prom_api.set_metric_chunk_interval(metric_name text, chunk_interval interval) RETURNS boolean
LANGUAGE plpgsql AS $fn$
#variable_conflict use_variable
BEGIN
    PERFORM _prom_catalog.check_interval('chunk interval', chunk_interval, interval '1 minute');
    UPDATE _prom_catalog.metric SET chunk_interval = set_metric_chunk_interval.chunk_interval
     WHERE id = _prom_catalog.existing_metric_id(metric_name);
    RETURN true;
END
$fn$;

CREATE FUNCTION prom_api.reset_metric_chunk_interval(metric_name text) RETURNS boolean
LANGUAGE plpgsql AS $fn$
#variable_conflict use_variable
BEGIN
    UPDATE _prom_catalog.metric SET chunk_interval = NULL WHERE id = _prom_catalog.existing_metric_id(metric_name);
    RETURN true;
END
$fn$;

CREATE FUNCTION prom_api.get_metric_chunk_interval(metric_name text) RETURNS interval
LANGUAGE sql STABLE AS $fn$
    SELECT _prom_catalog.metric_chunk_interval(_prom_catalog.existing_metric_id(metric_name))
$fn$;

-- Maintenance ------------------------------------------------------------------------------

-- Drops both parts of a chunk and forgets it.
CREATE FUNCTION _prom_catalog.drop_chunk(p_chunk _prom_catalog.chunk) RETURNS void
LANGUAGE plpgsql AS $fn$
BEGIN
    IF p_chunk.table_name IS NOT NULL THEN
        EXECUTE format('DROP TABLE _prom_chunks.%I', p_chunk.table_name);
    END IF;
    IF p_chunk.compressed_table_name IS NOT NULL THEN
        EXECUTE format('DROP TABLE _prom_chunks.%I', p_chunk.compressed_table_name);
    END IF;
    DELETE FROM _prom_catalog.chunk WHERE id = p_chunk.id;
END
$fn$;

-- Drops the metric's chunks that lie entirely beyond its retention period and, for a metric
-- being written (a chunk covers now), creates the next chunk ahead of the data.
CREATE FUNCTION _prom_catalog.maintain_metric(p_metric_id int) RETURNS void
LANGUAGE plpgsql AS $fn$
DECLARE
    v_chunk _prom_catalog.chunk;
    v_current_end timestamptz;
BEGIN
    -- The lock chunk creation takes: chunks neither appear nor vanish under us.
    PERFORM pg_advisory_xact_lock(7355609, p_metric_id);
    FOR v_chunk IN SELECT * FROM _prom_catalog.chunk c
                    WHERE c.metric_id = p_metric_id
                      AND c.end_time <= now() - _prom_catalog.metric_retention_period(p_metric_id)
                    ORDER BY c.start_time LOOP
        PERFORM _prom_catalog.drop_chunk(v_chunk);
    END LOOP;
    SELECT c.end_time INTO v_current_end FROM _prom_catalog.chunk c
     WHERE c.metric_id = p_metric_id AND c.start_time <= now() AND c.end_time > now();
    IF FOUND THEN
        PERFORM _prom_catalog.get_or_create_chunk(p_metric_id, v_current_end);
    END IF;
END
$fn$;

-- Applies retention and creates chunks ahead, one metric per transaction, so that an
-- interrupted run loses at most one metric's progress and holds locks only briefly. The
-- connector runs it on a schedule, one connector at a time; it can also be called by hand:
-- CALL prom_api.execute_maintenance();
CREATE PROCEDURE prom_api.execute_maintenance()
LANGUAGE plpgsql AS $fn$
DECLARE
    v_metric_id int;
BEGIN
    FOR v_metric_id IN SELECT id FROM _prom_catalog.metric ORDER BY id LOOP
        PERFORM _prom_catalog.maintain_metric(v_metric_id);
        COMMIT;
    END LOOP;
END
$fn$;

-- Overview ---------------------------------------------------------------------------------

DROP VIEW prom_info.metric;
CREATE VIEW prom_info.metric AS
SELECT m.id,
       m.metric_name,
       m.table_name,
       ARRAY(SELECT p.key FROM _prom_catalog.label_key_position p WHERE p.metric_id = m.id ORDER BY p.pos) AS label_keys,
       _prom_catalog.metric_retention_period(m.id) AS retention_period,
       _prom_catalog.metric_chunk_interval(m.id) AS chunk_interval,
       c.total_chunks,
       c.total_bytes AS size_bytes,
       pg_size_pretty(c.total_bytes) AS size,
       c.oldest_chunk_start,
       c.newest_chunk_end
  FROM _prom_catalog.metric m
  LEFT JOIN LATERAL (
      SELECT count(*) AS total_chunks,
             coalesce(sum(pg_total_relation_size(to_regclass('_prom_chunks.' || quote_ident(ch.table_name)))), 0)::bigint
                 AS total_bytes,
             min(ch.start_time) AS oldest_chunk_start,
             max(ch.end_time) AS newest_chunk_end
        FROM _prom_catalog.chunk ch WHERE ch.metric_id = m.id
  ) c ON true;
