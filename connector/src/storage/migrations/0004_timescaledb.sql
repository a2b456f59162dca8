-- The TimescaleDB storage path.
--
-- Chosen once, when the schema is first created on a database where the timescaledb
-- extension is available: metric tables then become hypertables, and TimescaleDB's own
-- chunking, compression (segment by series, order by time) and chunk dropping replace the
-- native partitioning and compression of migrations 1 to 3. Everything users see stays the
-- same: prom_api, the prom_metric views and prom_info.metric.
--
-- Nothing outside this file and the choice of insert function in storage/samples.rs knows
-- about TimescaleDB. The extension cannot be installed on the machines this project is
-- tested on, so this path is checked for syntax only (the functions below are created on
-- every database); see the README.

INSERT INTO _prom_catalog.default_setting (key, value) VALUES ('storage', 'postgresql');

CREATE FUNCTION _prom_catalog.uses_timescaledb() RETURNS boolean
LANGUAGE sql STABLE AS $fn$
    SELECT coalesce((SELECT value = 'timescaledb' FROM _prom_catalog.default_setting WHERE key = 'storage'), false)
$fn$;

-- A schema that already holds metrics keeps its layout: the two cannot be mixed.
DO $do$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_available_extensions WHERE name = 'timescaledb')
       AND NOT EXISTS (SELECT 1 FROM _prom_catalog.metric) THEN
        CREATE EXTENSION IF NOT EXISTS timescaledb;
        UPDATE _prom_catalog.default_setting SET value = 'timescaledb' WHERE key = 'storage';
    END IF;
END
$do$;

CREATE SCHEMA _prom_timescaledb;

-- The extension's schema, so that its functions are called by their full names whatever the
-- session's search_path.
CREATE FUNCTION _prom_timescaledb.extension_schema() RETURNS name
LANGUAGE sql STABLE AS $fn$
    SELECT n.nspname FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace WHERE e.extname = 'timescaledb'
$fn$;

-- Replaces the natively partitioned table that get_or_create_metric made for a new metric by
-- a hypertable (same name, same columns, same unique index).
CREATE FUNCTION _prom_timescaledb.make_hypertable(p_metric_id int) RETURNS void
LANGUAGE plpgsql AS $fn$
DECLARE
    v_table name;
    v_ts name := _prom_timescaledb.extension_schema();
BEGIN
    SELECT table_name INTO STRICT v_table FROM _prom_catalog.metric WHERE id = p_metric_id;
    EXECUTE format('DROP VIEW prom_metric.%I', v_table);
    EXECUTE format('ALTER TABLE _prom_catalog.samples DETACH PARTITION prom_data.%I', v_table);
    EXECUTE format('DROP TABLE prom_data.%I', v_table);
    EXECUTE format('CREATE TABLE prom_data.%I (LIKE _prom_catalog.samples)', v_table);
    EXECUTE format('CREATE UNIQUE INDEX %I ON prom_data.%I (series_id, time) INCLUDE (value)',
                   _prom_catalog.identifier_for(v_table || '_series_id_time'), v_table);
    EXECUTE format('SELECT %I.create_hypertable(%L::regclass, ''time'', chunk_time_interval => %L::interval,'
                   ' create_default_indexes => false)',
                   v_ts, format('prom_data.%I', v_table), _prom_catalog.metric_chunk_interval(p_metric_id));
    EXECUTE format('ALTER TABLE prom_data.%I SET (timescaledb.compress, timescaledb.compress_segmentby = ''series_id'','
                   ' timescaledb.compress_orderby = ''time'')', v_table);
    PERFORM _prom_catalog.refresh_metric_view(p_metric_id);
END
$fn$;

-- The TimescaleDB counterpart of _prom_catalog.insert_samples: one INSERT per metric, since
-- hypertables cannot be partitions of _prom_catalog.samples. Samples beyond retention are
-- stored and dropped by the next maintenance, so none are reported as expired.
CREATE FUNCTION _prom_timescaledb.insert_samples(
    p_times timestamptz[], p_values float8[], p_series_ids int8[], p_skip_duplicates boolean)
RETURNS bigint
LANGUAGE plpgsql AS $fn$
DECLARE
    v_metric_id int;
    v_table name;
BEGIN
    FOR v_metric_id IN SELECT DISTINCT (s >> 40)::int FROM unnest(p_series_ids) AS s ORDER BY 1 LOOP
        SELECT table_name INTO STRICT v_table FROM _prom_catalog.metric WHERE id = v_metric_id;
        EXECUTE format('INSERT INTO prom_data.%I (time, value, series_id)'
                       ' SELECT u.t, u.v, u.s FROM unnest($1, $2, $3) AS u(t, v, s) WHERE (u.s >> 40)::int = $4 %s',
                       v_table, CASE WHEN p_skip_duplicates THEN 'ON CONFLICT DO NOTHING' ELSE '' END)
          USING p_times, p_values, p_series_ids, v_metric_id;
    END LOOP;
    RETURN 0;
END
$fn$;

-- Retention, chunk interval and compression of one metric, through TimescaleDB's own API.
CREATE FUNCTION _prom_timescaledb.maintain_metric(p_metric_id int) RETURNS void
LANGUAGE plpgsql AS $fn$
DECLARE
    v_table regclass;
    v_ts name := _prom_timescaledb.extension_schema();
BEGIN
    SELECT format('prom_data.%I', table_name)::regclass INTO STRICT v_table FROM _prom_catalog.metric WHERE id = p_metric_id;
    EXECUTE format('SELECT %I.set_chunk_time_interval($1, $2)', v_ts)
      USING v_table, _prom_catalog.metric_chunk_interval(p_metric_id);
    EXECUTE format('SELECT %I.drop_chunks($1, older_than => $2)', v_ts)
      USING v_table, now() - _prom_catalog.metric_retention_period(p_metric_id);
    IF _prom_catalog.metric_compression(p_metric_id) THEN
        EXECUTE format('SELECT %1$I.compress_chunk(c, if_not_compressed => true)'
                       ' FROM %1$I.show_chunks($1, older_than => $2) c', v_ts)
          USING v_table, now() - _prom_catalog.compress_after();
    END IF;
END
$fn$;

-- What prom_info.metric shows of a hypertable's chunks.
CREATE FUNCTION _prom_timescaledb.chunk_stats(p_metric_id int,
    OUT total_chunks bigint, OUT compressed_chunks bigint, OUT total_bytes bigint,
    OUT before_compression_bytes numeric, OUT compressed_bytes numeric,
    OUT oldest_chunk_start timestamptz, OUT newest_chunk_end timestamptz)
LANGUAGE plpgsql STABLE AS $fn$
DECLARE
    v_table name;
    v_ts name := _prom_timescaledb.extension_schema();
BEGIN
    SELECT table_name INTO STRICT v_table FROM _prom_catalog.metric WHERE id = p_metric_id;
    EXECUTE format('SELECT count(*), count(*) FILTER (WHERE is_compressed), min(range_start), max(range_end)'
                   ' FROM %I.chunks WHERE hypertable_schema = ''prom_data'' AND hypertable_name = $1',
                   'timescaledb_information')
      INTO total_chunks, compressed_chunks, oldest_chunk_start, newest_chunk_end USING v_table;
    EXECUTE format('SELECT %1$I.hypertable_size($1), s.before_compression_total_bytes, s.after_compression_total_bytes'
                   ' FROM %1$I.hypertable_compression_stats($1) s', v_ts)
      INTO total_bytes, before_compression_bytes, compressed_bytes USING format('prom_data.%I', v_table)::regclass;
END
$fn$;

-- The dispatch points -------------------------------------------------------------------------

-- New metrics get a hypertable in place of the partitioned table the native function makes.
ALTER FUNCTION _prom_catalog.get_or_create_metric(text) RENAME TO get_or_create_native_metric;
CREATE FUNCTION _prom_catalog.get_or_create_metric(p_metric_name text, OUT id int, OUT table_name name)
LANGUAGE plpgsql AS $fn$
BEGIN
    SELECT m.id, m.table_name INTO id, table_name FROM _prom_catalog.get_or_create_native_metric(p_metric_name) m;
    IF _prom_catalog.uses_timescaledb()
       AND (SELECT c.relkind FROM pg_class c WHERE c.oid = format('prom_data.%I', table_name)::regclass) = 'p' THEN
        PERFORM _prom_timescaledb.make_hypertable(id);
    END IF;
END
$fn$;

-- The native counterpart of _prom_timescaledb.chunk_stats.
CREATE FUNCTION _prom_catalog.chunk_stats(p_metric_id int,
    OUT total_chunks bigint, OUT compressed_chunks bigint, OUT total_bytes bigint,
    OUT before_compression_bytes numeric, OUT compressed_bytes numeric,
    OUT oldest_chunk_start timestamptz, OUT newest_chunk_end timestamptz)
LANGUAGE sql STABLE AS $fn$
    SELECT count(*),
           count(*) FILTER (WHERE ch.compressed_table_name IS NOT NULL),
           coalesce(sum(coalesce(pg_total_relation_size(to_regclass('_prom_chunks.' || quote_ident(ch.table_name))), 0)
                      + coalesce(pg_total_relation_size(to_regclass('_prom_chunks.' || quote_ident(ch.compressed_table_name))), 0)),
                    0)::bigint,
           sum(ch.uncompressed_bytes) FILTER (WHERE ch.compressed_table_name IS NOT NULL),
           sum(pg_total_relation_size(to_regclass('_prom_chunks.' || quote_ident(ch.compressed_table_name)))),
           min(ch.start_time),
           max(ch.end_time)
      FROM _prom_catalog.chunk ch WHERE ch.metric_id = p_metric_id
$fn$;

DROP VIEW prom_info.metric;
CREATE VIEW prom_info.metric AS
SELECT m.id,
       m.metric_name,
       m.table_name,
       ARRAY(SELECT p.key FROM _prom_catalog.label_key_position p WHERE p.metric_id = m.id ORDER BY p.pos) AS label_keys,
       _prom_catalog.metric_retention_period(m.id) AS retention_period,
       _prom_catalog.metric_chunk_interval(m.id) AS chunk_interval,
       _prom_catalog.metric_compression(m.id) AS compression,
       c.total_chunks,
       c.compressed_chunks,
       c.total_bytes AS size_bytes,
       pg_size_pretty(c.total_bytes) AS size,
       -- Size of the compressed chunks before compression over their size now.
       round(c.before_compression_bytes / nullif(c.compressed_bytes, 0), 2) AS compression_ratio,
       c.oldest_chunk_start,
       c.newest_chunk_end
  FROM _prom_catalog.metric m
  CROSS JOIN LATERAL (
      SELECT * FROM _prom_timescaledb.chunk_stats(m.id) WHERE _prom_catalog.uses_timescaledb()
      UNION ALL
      SELECT * FROM _prom_catalog.chunk_stats(m.id) WHERE NOT _prom_catalog.uses_timescaledb()
  ) c;

CREATE OR REPLACE PROCEDURE prom_api.execute_maintenance()
LANGUAGE plpgsql AS $fn$
DECLARE
    v_metric_id int;
BEGIN
    FOR v_metric_id IN SELECT id FROM _prom_catalog.metric ORDER BY id LOOP
        IF _prom_catalog.uses_timescaledb() THEN
            PERFORM _prom_timescaledb.maintain_metric(v_metric_id);
        ELSE
            PERFORM _prom_catalog.maintain_metric(v_metric_id);
        END IF;
        COMMIT;
    END LOOP;
END
$fn$;
