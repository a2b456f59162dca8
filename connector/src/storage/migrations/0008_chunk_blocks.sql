-- Small time chunks as blocks in one shared table (docs/storage.md, "Chunk blocks"): a chunk
-- table costs about 50 kB whatever it holds (its free-space map, visibility map, index and
-- last page), most of the disk of a metric with few series. A time chunk starts with no table
-- (`chunk.table_name` NULL): compaction appends rows of `_prom_catalog.chunk_block`, each
-- holding whole runs of consecutive series in the block format of head rows, until the chunk
-- holds 1 MiB; then it gets a table of series chunks as before. Sealing rewrites a small
-- chunk into packed blocks (dropping its table if it had one), a large one into a fresh table.

ALTER TABLE _prom_catalog.chunk ALTER COLUMN table_name DROP NOT NULL;

CREATE TABLE _prom_catalog.chunk_block (
    id           bigint      GENERATED ALWAYS AS IDENTITY,  -- order of writing: the first wins
    chunk_id     int         NOT NULL,
    first_series bigint      NOT NULL,   -- the lowest series id of the row's runs
    last_series  bigint      NOT NULL,   -- the highest
    start_time   timestamptz NOT NULL,   -- time of the row's first sample
    end_time     timestamptz NOT NULL,   -- time of its last sample
    samples      int         NOT NULL,
    data         bytea       NOT NULL,
    exceptions   double precision[]
);
-- Rows are kept within a page by the compactor, as series chunks are.
ALTER TABLE _prom_catalog.chunk_block ALTER COLUMN data SET STORAGE PLAIN, ALTER COLUMN exceptions SET STORAGE PLAIN;
-- Sealing deletes the blocks compactions appended to a chunk and writes packed ones: vacuum
-- soon (after 1% of the rows, not PostgreSQL's 20%), so that later blocks reuse the space.
ALTER TABLE _prom_catalog.chunk_block SET (autovacuum_vacuum_scale_factor = 0.01, autovacuum_vacuum_threshold = 1000);
-- Reads: a chunk's rows that may hold series at or above the lowest one wanted.
CREATE INDEX chunk_block_chunk_series ON _prom_catalog.chunk_block (chunk_id, last_series);

-- The metric's views: chunk blocks in the order written first, then series chunks, then head
-- rows in the order written; on equal times the sample stored first is the one kept, as reads
-- and compaction keep it.
CREATE OR REPLACE FUNCTION _prom_catalog.refresh_metric_view(p_metric_id int) RETURNS void
LANGUAGE plpgsql AS $fn$
DECLARE
    v_table name;
    v_columns text;
BEGIN
    SELECT table_name INTO STRICT v_table FROM _prom_catalog.metric WHERE id = p_metric_id;
    EXECUTE format(
        'CREATE OR REPLACE VIEW prom_data.%I AS '
        'SELECT DISTINCT ON (s.series_id, s.sample_time) s.sample_time AS time, s.sample_value AS value, s.series_id '
        'FROM (SELECT c.series_id, x.sample_time, x.sample_value, 0::bigint AS written '
        '        FROM _prom_compressed.%I c, LATERAL _prom_catalog.decode_block(c.data, c.exceptions) x '
        '      UNION ALL '
        '      SELECT x.series_id, x.sample_time, x.sample_value, b.id - (1::bigint << 62) '
        '        FROM _prom_catalog.chunk_block b, LATERAL _prom_catalog.decode_block(b.data, b.exceptions) x '
        '       WHERE b.chunk_id IN (SELECT ch.id FROM _prom_catalog.chunk ch WHERE ch.metric_id = %s) '
        '      UNION ALL '
        '      SELECT x.series_id, x.sample_time, x.sample_value, h.id '
        '        FROM _prom_catalog.head h, LATERAL _prom_catalog.head_samples(h.data, h.exceptions, '
        '             h.plain_series_ids, h.plain_times, h.plain_values) x WHERE h.metric_id = %s) s '
        'ORDER BY s.series_id, s.sample_time, s.written',
        v_table, v_table, p_metric_id, p_metric_id);
    SELECT coalesce(string_agg(
               format(', (SELECT l.value FROM _prom_catalog.label l WHERE l.id = s.labels[%s]) AS %I',
                      p.pos, k.value_column_name), '' ORDER BY p.pos), '')
      INTO v_columns
      FROM _prom_catalog.label_key_position p
      JOIN _prom_catalog.label_key k ON k.key = p.key
     WHERE p.metric_id = p_metric_id AND p.key <> '__name__';
    EXECUTE format(
        'CREATE OR REPLACE VIEW prom_metric.%I AS '
        'SELECT d.time, d.value, d.series_id, s.labels%s '
        'FROM prom_data.%I d JOIN _prom_catalog.series s ON s.id = d.series_id',
        v_table, v_columns, v_table);
END
$fn$;

DO $do$
DECLARE
    v_id int;
BEGIN
    FOR v_id IN SELECT id FROM _prom_catalog.metric ORDER BY id LOOP
        PERFORM _prom_catalog.refresh_metric_view(v_id);
    END LOOP;
END
$do$;

CREATE OR REPLACE VIEW _prom_catalog.samples AS
SELECT DISTINCT ON (s.series_id, s.sample_time) s.sample_time AS time, s.sample_value AS value, s.series_id
  FROM (SELECT c.series_id, x.sample_time, x.sample_value, 0::bigint AS written
          FROM _prom_catalog.series_chunk c, LATERAL _prom_catalog.decode_block(c.data, c.exceptions) x
        UNION ALL
        SELECT x.series_id, x.sample_time, x.sample_value, b.id - (1::bigint << 62)
          FROM _prom_catalog.chunk_block b, LATERAL _prom_catalog.decode_block(b.data, b.exceptions) x
        UNION ALL
        SELECT x.series_id, x.sample_time, x.sample_value, h.id
          FROM _prom_catalog.head h, LATERAL _prom_catalog.head_samples(h.data, h.exceptions,
               h.plain_series_ids, h.plain_times, h.plain_values) x) s
 ORDER BY s.series_id, s.sample_time, s.written;

-- The chunk's table, created (and attached to the metric's parent) when the chunk has none:
-- once its blocks hold 1 MiB, compaction writes series chunks there. The caller holds the
-- metric's chunk lock.
CREATE FUNCTION _prom_catalog.chunk_table(p_chunk_id int) RETURNS name
LANGUAGE plpgsql AS $fn$
DECLARE
    v_chunk _prom_catalog.chunk;
    v_parent name;
    v_table name;
BEGIN
    SELECT * INTO STRICT v_chunk FROM _prom_catalog.chunk WHERE id = p_chunk_id;
    IF v_chunk.table_name IS NOT NULL THEN
        RETURN v_chunk.table_name;
    END IF;
    SELECT m.table_name INTO STRICT v_parent FROM _prom_catalog.metric m WHERE m.id = v_chunk.metric_id;
    v_table := _prom_catalog.new_chunk_table(v_chunk.metric_id, p_chunk_id::text);
    EXECUTE format('ALTER TABLE _prom_compressed.%I ATTACH PARTITION _prom_chunks.%I FOR VALUES FROM (%L) TO (%L)',
                   v_parent, v_table, v_chunk.start_time, v_chunk.end_time);
    UPDATE _prom_catalog.chunk SET table_name = v_table WHERE id = p_chunk_id;
    RETURN v_table;
END
$fn$;

-- Drops the chunk's table once its samples are in blocks. The caller holds the metric's
-- chunk lock.
CREATE FUNCTION _prom_catalog.drop_chunk_table(p_chunk_id int) RETURNS void
LANGUAGE plpgsql AS $fn$
DECLARE
    v_table name;
BEGIN
    SELECT table_name INTO STRICT v_table FROM _prom_catalog.chunk WHERE id = p_chunk_id;
    IF v_table IS NOT NULL THEN
        EXECUTE format('DROP TABLE IF EXISTS _prom_chunks.%I', v_table);
        UPDATE _prom_catalog.chunk SET table_name = NULL, rewritten = false WHERE id = p_chunk_id;
    END IF;
END
$fn$;

-- Retention: a chunk goes with its table and its blocks.
CREATE OR REPLACE FUNCTION _prom_catalog.drop_chunk(p_chunk _prom_catalog.chunk) RETURNS void
LANGUAGE plpgsql AS $fn$
BEGIN
    IF p_chunk.table_name IS NOT NULL THEN
        EXECUTE format('DROP TABLE IF EXISTS _prom_chunks.%I', p_chunk.table_name);
    END IF;
    DELETE FROM _prom_catalog.chunk_block WHERE chunk_id = p_chunk.id;
    DELETE FROM _prom_catalog.chunk WHERE id = p_chunk.id;
END
$fn$;

-- Sizes for prom_info.metric: chunk tables and the metric's share of the blocks table.
CREATE OR REPLACE FUNCTION _prom_catalog.chunk_stats(p_metric_id int,
    OUT total_chunks bigint, OUT sealed_chunks bigint, OUT chunk_bytes bigint, OUT head_bytes bigint,
    OUT oldest_chunk_start timestamptz, OUT newest_chunk_end timestamptz)
LANGUAGE sql STABLE AS $fn$
    SELECT count(*),
           count(*) FILTER (WHERE ch.sealed),
           (coalesce(sum(pg_total_relation_size(to_regclass('_prom_chunks.' || quote_ident(ch.table_name)))), 0)
            + (SELECT coalesce(sum(pg_column_size(b.*)), 0) FROM _prom_catalog.chunk_block b
                WHERE b.chunk_id IN (SELECT c2.id FROM _prom_catalog.chunk c2 WHERE c2.metric_id = p_metric_id)))::bigint,
           (SELECT coalesce(sum(pg_column_size(h.*)), 0)::bigint FROM _prom_catalog.head h WHERE h.metric_id = p_metric_id),
           min(ch.start_time),
           max(ch.end_time)
      FROM _prom_catalog.chunk ch WHERE ch.metric_id = p_metric_id
$fn$;

-- The chunk of metric p_metric_id that holds p_time, created if needed, with no table (see
-- chunk_table); NULL when that chunk would lie entirely beyond the metric's retention period
-- (its samples are not kept). Chunks are aligned to the Unix epoch and shortened where a
-- neighbour created under another interval is in the way.
CREATE OR REPLACE FUNCTION _prom_catalog.get_or_create_chunk(p_metric_id int, p_time timestamptz)
RETURNS _prom_catalog.chunk
LANGUAGE plpgsql AS $fn$
DECLARE
    v_chunk _prom_catalog.chunk;
    v_interval interval;
    v_seconds numeric;
    v_start timestamptz;
    v_end timestamptz;
BEGIN
    SELECT * INTO v_chunk FROM _prom_catalog.chunk c
     WHERE c.metric_id = p_metric_id AND c.start_time <= p_time AND c.end_time > p_time;
    IF FOUND THEN
        RETURN v_chunk;
    END IF;
    -- One creator per metric at a time; maintenance takes the same lock.
    PERFORM pg_advisory_xact_lock(7355609, p_metric_id);
    SELECT * INTO v_chunk FROM _prom_catalog.chunk c
     WHERE c.metric_id = p_metric_id AND c.start_time <= p_time AND c.end_time > p_time;
    IF FOUND THEN
        RETURN v_chunk;
    END IF;

    v_interval := _prom_catalog.metric_chunk_interval(p_metric_id);
    v_seconds := extract(epoch FROM v_interval);
    v_start := to_timestamp((floor(extract(epoch FROM p_time) / v_seconds) * v_seconds)::float8);
    v_end := v_start + v_interval;
    -- greatest and least ignore the NULL of an empty max or min.
    SELECT greatest(v_start, max(c.end_time)) INTO v_start FROM _prom_catalog.chunk c
     WHERE c.metric_id = p_metric_id AND c.end_time <= p_time;
    SELECT least(v_end, min(c.start_time)) INTO v_end FROM _prom_catalog.chunk c
     WHERE c.metric_id = p_metric_id AND c.start_time > p_time;
    IF v_end <= now() - _prom_catalog.metric_retention_period(p_metric_id) THEN
        RETURN NULL;
    END IF;

    INSERT INTO _prom_catalog.chunk (metric_id, start_time, end_time, table_name, sealed, rewritten)
    VALUES (p_metric_id, v_start, v_end, NULL, false, false)
    RETURNING * INTO v_chunk;
    RETURN v_chunk;
END
$fn$;
