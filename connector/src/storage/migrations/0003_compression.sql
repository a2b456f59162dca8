-- Compression of closed chunks on plain PostgreSQL, with no extension: a compressed chunk
-- holds one row per series, whose arrays PostgreSQL's TOAST compression then shrinks.
--
-- Times are stored as microsecond deltas from the previous sample (constant for regular
-- scrapes, so they compress to almost nothing). Values are stored in a decimal-scaled
-- integer form when that is exact (the idea of ALP, "adaptive lossless floating-point"):
-- if v = round(v * 10^k) / 10^k holds bit for bit for every value of the series in the
-- chunk, the deltas of round(v * 10^k) are stored, and small integers compress far better
-- than IEEE 754 bit patterns. NaN (including Prometheus' staleness marker), ±Inf and -0 are
-- kept exactly as exceptions; a series whose values have no such form keeps raw values.
-- Everything decodes in plain SQL (_prom_catalog.decompress), bit for bit.

INSERT INTO _prom_catalog.default_setting (key, value) VALUES ('compression', 'true');
ALTER TABLE _prom_catalog.metric ADD COLUMN compression boolean;

-- Per-metric parents of the compressed chunks, partitioned by time like prom_data.
CREATE SCHEMA IF NOT EXISTS _prom_compressed;

CREATE TABLE _prom_catalog.compressed_samples (
    series_id           bigint      NOT NULL,
    start_time          timestamptz NOT NULL,  -- time of the series' first sample in the chunk
    end_time            timestamptz NOT NULL,  -- time of its last sample
    samples             int         NOT NULL,
    time_deltas         bigint[]    NOT NULL,  -- microseconds since the previous sample; first is 0
    value_scale         smallint,              -- with value_deltas: value = running sum / 10^value_scale
    value_deltas        bigint[],
    raw_values          double precision[],    -- when the values have no exact scaled form
    exception_positions int[],                 -- 1-based positions whose value is exception_values[i]
    exception_values    double precision[]
) PARTITION BY RANGE (series_id);

CREATE FUNCTION _prom_catalog.metric_compression(p_metric_id int) RETURNS boolean
LANGUAGE sql STABLE AS $fn$
    SELECT coalesce(m.compression, (SELECT value::boolean FROM _prom_catalog.default_setting WHERE key = 'compression'))
      FROM _prom_catalog.metric m WHERE m.id = p_metric_id
$fn$;

-- 10^k for k = 0..12, as float8 literals, so that encoding and decoding divide by exactly
-- the same numbers.
CREATE FUNCTION _prom_catalog.power_of_ten(k int) RETURNS float8
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE AS $fn$
    SELECT ('{1,10,100,1000,1e4,1e5,1e6,1e7,1e8,1e9,1e10,1e11,1e12}'::float8[])[k + 1]
$fn$;

-- Whether v survives scaling by 10^k and back, bit for bit.
CREATE FUNCTION _prom_catalog.scales_exactly(v float8, k int) RETURNS boolean
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE AS $fn$
    SELECT abs(v * _prom_catalog.power_of_ten(k)) < 9007199254740992
       AND float8send((round(v * _prom_catalog.power_of_ten(k))::int8)::float8 / _prom_catalog.power_of_ten(k)) = float8send(v)
$fn$;

-- The fewest decimal places that write v exactly, read off PostgreSQL's shortest exact text
-- form of a float8 (what it prints with extra_float_digits = 1): 1004.11 -> 2, 1.5e-07 -> 8,
-- 42 -> 0. Callers check the result with scales_exactly.
CREATE FUNCTION _prom_catalog.decimal_places(v float8) RETURNS int
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE AS $fn$
    SELECT CASE WHEN position('e' IN t) > 0
                THEN greatest(0, length(split_part(split_part(t, 'e', 1), '.', 2)) - split_part(t, 'e', 2)::int)
                ELSE length(split_part(t, '.', 2))
           END
      FROM (SELECT v::text AS t) x
$fn$;

-- The samples of one compressed row, in time order, exactly as they were written.
CREATE FUNCTION _prom_catalog.decompress(
    p_start_time timestamptz, p_time_deltas bigint[], p_value_scale smallint, p_value_deltas bigint[],
    p_raw_values float8[], p_exception_positions int[], p_exception_values float8[])
RETURNS TABLE (sample_time timestamptz, sample_value double precision)
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $fn$
    SELECT p_start_time + (sum(t.d) OVER w)::int8 * interval '1 microsecond',
           CASE WHEN p_raw_values IS NOT NULL THEN p_raw_values[t.n]
                ELSE coalesce(p_exception_values[array_position(p_exception_positions, t.n::int)],
                              (sum(t.vd) OVER w)::float8 / _prom_catalog.power_of_ten(p_value_scale))
           END
      FROM unnest(p_time_deltas, p_value_deltas) WITH ORDINALITY AS t(d, vd, n)
    WINDOW w AS (ORDER BY t.n)
$fn$;

-- The metric's parent of compressed chunks, created on first use.
CREATE FUNCTION _prom_catalog.compressed_parent(p_metric_id int) RETURNS name
LANGUAGE plpgsql AS $fn$
DECLARE
    v_table name;
BEGIN
    SELECT m.table_name INTO STRICT v_table FROM _prom_catalog.metric m WHERE m.id = p_metric_id;
    IF to_regclass(format('_prom_compressed.%I', v_table)) IS NULL THEN
        EXECUTE format('CREATE TABLE _prom_compressed.%I (LIKE _prom_catalog.compressed_samples) PARTITION BY RANGE (start_time)', v_table);
        EXECUTE format('ALTER TABLE _prom_catalog.compressed_samples ATTACH PARTITION _prom_compressed.%I FOR VALUES FROM (%s) TO (%s)',
                       v_table, _prom_catalog.first_series_id(p_metric_id), _prom_catalog.first_series_id(p_metric_id + 1));
        PERFORM _prom_catalog.refresh_metric_view(p_metric_id);
    END IF;
    RETURN v_table;
END
$fn$;

-- The metric's view reads both forms: uncompressed rows and decompressed rows.
CREATE OR REPLACE FUNCTION _prom_catalog.refresh_metric_view(p_metric_id int) RETURNS void
LANGUAGE plpgsql AS $fn$
DECLARE
    v_table name;
    v_columns text;
    v_samples text;
BEGIN
    SELECT table_name INTO STRICT v_table FROM _prom_catalog.metric WHERE id = p_metric_id;
    SELECT coalesce(string_agg(
               format(', (SELECT l.value FROM _prom_catalog.label l WHERE l.id = s.labels[%s]) AS %I',
                      p.pos, k.value_column_name), '' ORDER BY p.pos), '')
      INTO v_columns
      FROM _prom_catalog.label_key_position p
      JOIN _prom_catalog.label_key k ON k.key = p.key
     WHERE p.metric_id = p_metric_id AND p.key <> '__name__';
    v_samples := format('SELECT time, value, series_id FROM prom_data.%I', v_table);
    IF to_regclass(format('_prom_compressed.%I', v_table)) IS NOT NULL THEN
        v_samples := v_samples || format(
            ' UNION ALL SELECT x.sample_time, x.sample_value, c.series_id FROM _prom_compressed.%I c,'
            ' LATERAL _prom_catalog.decompress(c.start_time, c.time_deltas, c.value_scale, c.value_deltas,'
            ' c.raw_values, c.exception_positions, c.exception_values) x', v_table);
    END IF;
    EXECUTE format(
        'CREATE OR REPLACE VIEW prom_metric.%I AS '
        'SELECT d.time, d.value, d.series_id, s.labels%s '
        'FROM (%s) d JOIN _prom_catalog.series s ON s.id = d.series_id',
        v_table, v_columns, v_samples);
END
$fn$;

-- Compresses a chunk's uncompressed part, merging it with the chunk's compressed part if
-- there is one (late samples). A sample present in both keeps its compressed, earlier
-- written value. Leaves the chunk with only a compressed part.
CREATE FUNCTION _prom_catalog.compress_chunk(p_chunk_id int) RETURNS void
LANGUAGE plpgsql
SET extra_float_digits = 1  -- shortest exact float8 text, which decimal_places reads
AS $fn$
DECLARE
    v_chunk _prom_catalog.chunk;
    v_parent name;
    v_new name;
    v_source text;
    v_uncompressed_bytes bigint;
BEGIN
    SELECT metric_id INTO STRICT v_chunk.metric_id FROM _prom_catalog.chunk WHERE id = p_chunk_id;
    PERFORM pg_advisory_xact_lock(7355609, v_chunk.metric_id);
    SELECT * INTO STRICT v_chunk FROM _prom_catalog.chunk WHERE id = p_chunk_id;
    IF v_chunk.table_name IS NULL THEN
        RETURN;
    END IF;
    v_parent := _prom_catalog.compressed_parent(v_chunk.metric_id);
    v_uncompressed_bytes := coalesce(v_chunk.uncompressed_bytes, 0)
        + pg_total_relation_size(format('_prom_chunks.%I', v_chunk.table_name)::regclass);

    v_source := format('SELECT series_id, time, value, 1 AS priority FROM _prom_chunks.%I', v_chunk.table_name);
    IF v_chunk.compressed_table_name IS NOT NULL THEN
        v_source := v_source || format(
            ' UNION ALL SELECT c.series_id, x.sample_time, x.sample_value, 0 FROM _prom_chunks.%I c,'
            ' LATERAL _prom_catalog.decompress(c.start_time, c.time_deltas, c.value_scale, c.value_deltas,'
            ' c.raw_values, c.exception_positions, c.exception_values) x', v_chunk.compressed_table_name);
    END IF;

    v_new := _prom_catalog.identifier_for(v_parent || '_' || v_chunk.id || '_compressed_' || txid_current());
    EXECUTE format('CREATE TABLE _prom_chunks.%I (LIKE _prom_catalog.compressed_samples)', v_new);
    EXECUTE format($q$
        INSERT INTO _prom_chunks.%I
        WITH samples AS (
            SELECT DISTINCT ON (series_id, time) series_id, time, value,
                   value = 'NaN' OR value IN ('Infinity', '-Infinity') OR float8send(value) = '\x8000000000000000'
                       AS exceptional
              FROM (%s) s
             ORDER BY series_id, time, priority
        ), scaled AS (
            SELECT s.*, CASE WHEN s.exceptional THEN 0 ELSE _prom_catalog.decimal_places(s.value) END AS k
              FROM samples s
        ), per_series AS (
            SELECT series_id, CASE WHEN max(k) <= 12 THEN max(k) END AS k
              FROM scaled GROUP BY series_id
        ), encoded AS (
            SELECT s.series_id, s.time, s.value, s.exceptional,
                   -- The scale must hold for every value of the series, not just its own minimum.
                   p.k IS NOT NULL AND bool_and(s.exceptional OR _prom_catalog.scales_exactly(s.value, p.k::int))
                       OVER (PARTITION BY s.series_id) AS scaled,
                   p.k,
                   CASE WHEN s.exceptional OR p.k IS NULL OR NOT _prom_catalog.scales_exactly(s.value, p.k::int) THEN 0
                        ELSE round(s.value * _prom_catalog.power_of_ten(p.k::int))::int8 END AS scaled_value,
                   row_number() OVER (PARTITION BY s.series_id ORDER BY s.time) AS n
              FROM scaled s JOIN per_series p USING (series_id)
        ), deltas AS (
            SELECT e.*,
                   (extract(epoch FROM e.time - lag(e.time, 1, e.time) OVER w) * 1000000)::int8 AS time_delta,
                   e.scaled_value - lag(e.scaled_value, 1, 0::int8) OVER w AS value_delta
              FROM encoded e
            WINDOW w AS (PARTITION BY e.series_id ORDER BY e.time)
        )
        SELECT series_id, min(time), max(time), count(*),
               array_agg(time_delta ORDER BY n),
               CASE WHEN bool_and(scaled) THEN max(k) END,
               CASE WHEN bool_and(scaled) THEN array_agg(value_delta ORDER BY n) END,
               CASE WHEN NOT bool_and(scaled) THEN array_agg(value ORDER BY n) END,
               CASE WHEN bool_and(scaled) AND bool_or(exceptional) THEN array_agg(n::int ORDER BY n) FILTER (WHERE exceptional) END,
               CASE WHEN bool_and(scaled) AND bool_or(exceptional) THEN array_agg(value ORDER BY n) FILTER (WHERE exceptional) END
          FROM deltas GROUP BY series_id
        $q$, v_new, v_source);
    EXECUTE format('CREATE INDEX ON _prom_chunks.%I (series_id, start_time)', v_new);

    IF v_chunk.compressed_table_name IS NOT NULL THEN
        EXECUTE format('DROP TABLE _prom_chunks.%I', v_chunk.compressed_table_name);
    END IF;
    EXECUTE format('DROP TABLE _prom_chunks.%I', v_chunk.table_name);
    EXECUTE format('ALTER TABLE _prom_compressed.%I ATTACH PARTITION _prom_chunks.%I FOR VALUES FROM (%L) TO (%L)',
                   v_parent, v_new, v_chunk.start_time, v_chunk.end_time);
    UPDATE _prom_catalog.chunk
       SET table_name = NULL, compressed_table_name = v_new, uncompressed_bytes = v_uncompressed_bytes
     WHERE id = v_chunk.id;
END
$fn$;

-- Compression settings ------------------------------------------------------------------------

CREATE FUNCTION prom_api.set_default_compression_setting(compression_setting boolean) RETURNS boolean
LANGUAGE plpgsql AS $fn$
BEGIN
    IF compression_setting IS NULL THEN
        RAISE EXCEPTION 'compression setting must be true or false, got NULL' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    UPDATE _prom_catalog.default_setting SET value = compression_setting::text WHERE key = 'compression';
    RETURN true;
END
$fn$;

CREATE FUNCTION prom_api.get_default_compression_setting() RETURNS boolean
LANGUAGE sql STABLE AS $fn$
    SELECT value::boolean FROM _prom_catalog.default_setting WHERE key = 'compression'
$fn$;

-- Turning compression off stops compressing new chunks; compressed chunks stay compressed
-- (and stay readable).
CREATE FUNCTION prom_api.set_metric_compression_setting(metric_name text, new_compression_setting boolean) RETURNS boolean
LANGUAGE plpgsql AS $fn$
#variable_conflict use_variable
BEGIN
    IF new_compression_setting IS NULL THEN
        RAISE EXCEPTION 'compression setting must be true or false, got NULL' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    UPDATE _prom_catalog.metric SET compression = new_compression_setting
     WHERE id = _prom_catalog.existing_metric_id(metric_name);
    RETURN true;
END
$fn$;

CREATE FUNCTION prom_api.reset_metric_compression_setting(metric_name text) RETURNS boolean
LANGUAGE plpgsql AS $fn$
#variable_conflict use_variable
BEGIN
    UPDATE _prom_catalog.metric SET compression = NULL WHERE id = _prom_catalog.existing_metric_id(metric_name);
    RETURN true;
END
$fn$;

CREATE FUNCTION prom_api.get_metric_compression_setting(metric_name text) RETURNS boolean
LANGUAGE sql STABLE AS $fn$
    SELECT _prom_catalog.metric_compression(_prom_catalog.existing_metric_id(metric_name))
$fn$;

-- Maintenance ----------------------------------------------------------------------------------

-- Chunks are compressed once they ended at least this long ago: late samples (Prometheus
-- retries for up to about two hours) mostly arrive before that, and the rest are merged in
-- by the next maintenance.
CREATE FUNCTION _prom_catalog.compress_after() RETURNS interval
LANGUAGE sql IMMUTABLE AS $fn$ SELECT interval '1 hour' $fn$;

CREATE OR REPLACE FUNCTION _prom_catalog.maintain_metric(p_metric_id int) RETURNS void
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
    IF _prom_catalog.metric_compression(p_metric_id) THEN
        FOR v_chunk IN SELECT * FROM _prom_catalog.chunk c
                        WHERE c.metric_id = p_metric_id AND c.table_name IS NOT NULL
                          AND c.end_time <= now() - _prom_catalog.compress_after()
                        ORDER BY c.start_time LOOP
            PERFORM _prom_catalog.compress_chunk(v_chunk.id);
        END LOOP;
    END IF;
END
$fn$;

-- Overview ---------------------------------------------------------------------------------------

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
       round(c.before_compression_bytes::numeric / nullif(c.compressed_bytes, 0), 2) AS compression_ratio,
       c.oldest_chunk_start,
       c.newest_chunk_end
  FROM _prom_catalog.metric m
  LEFT JOIN LATERAL (
      SELECT count(*) AS total_chunks,
             count(*) FILTER (WHERE ch.compressed_table_name IS NOT NULL) AS compressed_chunks,
             coalesce(sum(coalesce(pg_total_relation_size(to_regclass('_prom_chunks.' || quote_ident(ch.table_name))), 0)
                        + coalesce(pg_total_relation_size(to_regclass('_prom_chunks.' || quote_ident(ch.compressed_table_name))), 0)),
                      0)::bigint AS total_bytes,
             sum(ch.uncompressed_bytes) FILTER (WHERE ch.compressed_table_name IS NOT NULL) AS before_compression_bytes,
             sum(pg_total_relation_size(to_regclass('_prom_chunks.' || quote_ident(ch.compressed_table_name))))
                 AS compressed_bytes,
             min(ch.start_time) AS oldest_chunk_start,
             max(ch.end_time) AS newest_chunk_end
        FROM _prom_catalog.chunk ch WHERE ch.metric_id = m.id
  ) c ON true;
