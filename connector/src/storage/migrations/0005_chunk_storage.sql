-- The chunk storage engine (docs/storage.md): recent samples as encoded blocks in
-- _prom_catalog.head, one row per write batch and metric; compacted samples as per-series
-- chunks (encoded blocks) in time-partitioned tables. Replaces the row-per-sample tables
-- and the array compression of migrations 1 and 3, and retires the TimescaleDB path of
-- migration 4. Samples already stored move into the head (in a plain, array form) and are
-- compacted by the connectors' next maintenance.

-- Decoding ---------------------------------------------------------------------------------------

CREATE OR REPLACE FUNCTION _prom_catalog.power_of_ten(k int) RETURNS float8
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE AS $fn$
    SELECT ('{1,10,100,1000,1e4,1e5,1e6,1e7,1e8,1e9,1e10,1e11,1e12,1e13,1e14,1e15}'::float8[])[k + 1]
$fn$;

-- Every sample of an encoded block (the format of connector/src/storage/codec.rs and
-- docs/storage.md), in block order. Exceptional values come from p_exceptions, bit for bit.
-- Written out flat (varints read inline, no calls): PL/pgSQL evaluates such statements
-- without the executor, several times faster than calling helpers.
CREATE FUNCTION _prom_catalog.decode_block(p_data bytea, p_exceptions float8[])
RETURNS TABLE (series_id bigint, sample_time timestamptz, sample_value double precision)
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE AS $fn$
DECLARE
    v_len int := length(p_data);
    v_pos int := 0;
    v_byte int;
    v_shift int;
    v_base bigint;
    v_runs bigint;
    v_series bigint := 0;
    v_n bigint;
    v_x bigint;
    v_t bigint;
    v_times timestamptz[];
    v_count int;
    v_delta bigint;
    v_run bigint;
    v_scale int;
    v_power float8;
    v_m bigint;
    v_exception int := 1;
    v_i int;
    v_k int;
BEGIN
    v_x := 0;
    v_shift := 0;
    LOOP
        IF v_pos >= v_len OR v_shift > 56 THEN
            RAISE EXCEPTION 'corrupt sample block: truncated varint at byte %', v_pos USING ERRCODE = 'data_corrupted';
        END IF;
        v_byte := get_byte(p_data, v_pos);
        v_pos := v_pos + 1;
        v_x := v_x | ((v_byte & 127)::bigint << v_shift);
        EXIT WHEN v_byte < 128;
        v_shift := v_shift + 7;
    END LOOP;
    v_base := (v_x >> 1) # -(v_x & 1);
    v_runs := 0;
    v_shift := 0;
    LOOP
        IF v_pos >= v_len OR v_shift > 56 THEN
            RAISE EXCEPTION 'corrupt sample block: truncated varint at byte %', v_pos USING ERRCODE = 'data_corrupted';
        END IF;
        v_byte := get_byte(p_data, v_pos);
        v_pos := v_pos + 1;
        v_runs := v_runs | ((v_byte & 127)::bigint << v_shift);
        EXIT WHEN v_byte < 128;
        v_shift := v_shift + 7;
    END LOOP;
    FOR v_r IN 1 .. v_runs LOOP
        v_x := 0;
        v_shift := 0;
        LOOP
            IF v_pos >= v_len OR v_shift > 56 THEN
                RAISE EXCEPTION 'corrupt sample block: truncated varint at byte %', v_pos USING ERRCODE = 'data_corrupted';
            END IF;
            v_byte := get_byte(p_data, v_pos);
            v_pos := v_pos + 1;
            v_x := v_x | ((v_byte & 127)::bigint << v_shift);
            EXIT WHEN v_byte < 128;
            v_shift := v_shift + 7;
        END LOOP;
        v_series := v_series + v_x;
        v_n := 0;
        v_shift := 0;
        LOOP
            IF v_pos >= v_len OR v_shift > 56 THEN
                RAISE EXCEPTION 'corrupt sample block: truncated varint at byte %', v_pos USING ERRCODE = 'data_corrupted';
            END IF;
            v_byte := get_byte(p_data, v_pos);
            v_pos := v_pos + 1;
            v_n := v_n | ((v_byte & 127)::bigint << v_shift);
            EXIT WHEN v_byte < 128;
            v_shift := v_shift + 7;
        END LOOP;
        IF v_n < 1 OR v_n > 16777216 THEN
            RAISE EXCEPTION 'corrupt sample block: bad run length' USING ERRCODE = 'data_corrupted';
        END IF;
        v_x := 0;
        v_shift := 0;
        LOOP
            IF v_pos >= v_len OR v_shift > 56 THEN
                RAISE EXCEPTION 'corrupt sample block: truncated varint at byte %', v_pos USING ERRCODE = 'data_corrupted';
            END IF;
            v_byte := get_byte(p_data, v_pos);
            v_pos := v_pos + 1;
            v_x := v_x | ((v_byte & 127)::bigint << v_shift);
            EXIT WHEN v_byte < 128;
            v_shift := v_shift + 7;
        END LOOP;
        v_t := v_base + ((v_x >> 1) # -(v_x & 1));
        v_times := ARRAY[(('epoch'::timestamptz + make_interval(hours => (v_t / 7200000)::int) + make_interval(hours => (v_t / 7200000)::int) + make_interval(hours => ((v_t % 7200000) / 3600000)::int)) + (v_t % 3600000) * interval '1 millisecond')];
        v_count := 1;
        v_delta := 0;
        -- times: tokens over the deltas between neighbours
        WHILE v_count < v_n LOOP
            v_x := 0;
            v_shift := 0;
            LOOP
                IF v_pos >= v_len OR v_shift > 56 THEN
                    RAISE EXCEPTION 'corrupt sample block: truncated varint at byte %', v_pos USING ERRCODE = 'data_corrupted';
                END IF;
                v_byte := get_byte(p_data, v_pos);
                v_pos := v_pos + 1;
                v_x := v_x | ((v_byte & 127)::bigint << v_shift);
                EXIT WHEN v_byte < 128;
                v_shift := v_shift + 7;
            END LOOP;
            IF v_x = 0 THEN
                RAISE EXCEPTION 'corrupt sample block: exception token among times' USING ERRCODE = 'data_corrupted';
            ELSIF v_x <= 2 THEN
                v_run := 1;
                IF v_x = 2 THEN
                    v_run := 0;
                    v_shift := 0;
                    LOOP
                        IF v_pos >= v_len OR v_shift > 56 THEN
                            RAISE EXCEPTION 'corrupt sample block: truncated varint at byte %', v_pos USING ERRCODE = 'data_corrupted';
                        END IF;
                        v_byte := get_byte(p_data, v_pos);
                        v_pos := v_pos + 1;
                        v_run := v_run | ((v_byte & 127)::bigint << v_shift);
                        EXIT WHEN v_byte < 128;
                        v_shift := v_shift + 7;
                    END LOOP;
                END IF;
                IF v_run < 1 OR v_count + v_run > v_n THEN
                    RAISE EXCEPTION 'corrupt sample block: bad run of time deltas' USING ERRCODE = 'data_corrupted';
                END IF;
                FOR v_k IN 1 .. v_run LOOP
                    v_t := v_t + v_delta;
                    v_times := v_times || (('epoch'::timestamptz + make_interval(hours => (v_t / 7200000)::int) + make_interval(hours => (v_t / 7200000)::int) + make_interval(hours => ((v_t % 7200000) / 3600000)::int)) + (v_t % 3600000) * interval '1 millisecond');
                END LOOP;
                v_count := v_count + v_run::int;
            ELSE
                v_x := v_x - 2;
                v_delta := v_delta + ((v_x >> 1) # -(v_x & 1));
                v_t := v_t + v_delta;
                v_times := v_times || (('epoch'::timestamptz + make_interval(hours => (v_t / 7200000)::int) + make_interval(hours => (v_t / 7200000)::int) + make_interval(hours => ((v_t % 7200000) / 3600000)::int)) + (v_t % 3600000) * interval '1 millisecond');
                v_count := v_count + 1;
            END IF;
        END LOOP;
        IF v_pos >= v_len THEN
            RAISE EXCEPTION 'corrupt sample block: truncated before the scale' USING ERRCODE = 'data_corrupted';
        END IF;
        v_scale := get_byte(p_data, v_pos);
        v_pos := v_pos + 1;
        series_id := v_series;
        IF v_scale = 255 THEN
            FOR v_i IN 1 .. v_n LOOP
                sample_time := v_times[v_i];
                sample_value := p_exceptions[v_exception];
                v_exception := v_exception + 1;
                RETURN NEXT;
            END LOOP;
            CONTINUE;
        END IF;
        IF v_scale > 15 THEN
            RAISE EXCEPTION 'corrupt sample block: bad scale %', v_scale USING ERRCODE = 'data_corrupted';
        END IF;
        v_power := ('{1,10,100,1000,1e4,1e5,1e6,1e7,1e8,1e9,1e10,1e11,1e12,1e13,1e14,1e15}'::float8[])[v_scale + 1];
        v_m := 0;
        v_i := 1;
        -- values: tokens over the scaled integers, 0 taking the next exception
        WHILE v_i <= v_n LOOP
            v_x := 0;
            v_shift := 0;
            LOOP
                IF v_pos >= v_len OR v_shift > 56 THEN
                    RAISE EXCEPTION 'corrupt sample block: truncated varint at byte %', v_pos USING ERRCODE = 'data_corrupted';
                END IF;
                v_byte := get_byte(p_data, v_pos);
                v_pos := v_pos + 1;
                v_x := v_x | ((v_byte & 127)::bigint << v_shift);
                EXIT WHEN v_byte < 128;
                v_shift := v_shift + 7;
            END LOOP;
            IF v_x = 0 THEN
                sample_time := v_times[v_i];
                sample_value := p_exceptions[v_exception];
                v_exception := v_exception + 1;
                v_i := v_i + 1;
                RETURN NEXT;
            ELSIF v_x <= 2 THEN
                v_run := 1;
                IF v_x = 2 THEN
                    v_run := 0;
                    v_shift := 0;
                    LOOP
                        IF v_pos >= v_len OR v_shift > 56 THEN
                            RAISE EXCEPTION 'corrupt sample block: truncated varint at byte %', v_pos USING ERRCODE = 'data_corrupted';
                        END IF;
                        v_byte := get_byte(p_data, v_pos);
                        v_pos := v_pos + 1;
                        v_run := v_run | ((v_byte & 127)::bigint << v_shift);
                        EXIT WHEN v_byte < 128;
                        v_shift := v_shift + 7;
                    END LOOP;
                END IF;
                IF v_run < 1 OR v_i + v_run - 1 > v_n THEN
                    RAISE EXCEPTION 'corrupt sample block: bad run of values' USING ERRCODE = 'data_corrupted';
                END IF;
                FOR v_k IN 1 .. v_run LOOP
                    sample_time := v_times[v_i];
                    sample_value := v_m::float8 / v_power;
                    v_i := v_i + 1;
                    RETURN NEXT;
                END LOOP;
            ELSE
                v_x := v_x - 2;
                v_m := v_m + ((v_x >> 1) # -(v_x & 1));
                sample_time := v_times[v_i];
                sample_value := v_m::float8 / v_power;
                v_i := v_i + 1;
                RETURN NEXT;
            END IF;
        END LOOP;
    END LOOP;
    IF v_pos <> v_len THEN
        RAISE EXCEPTION 'corrupt sample block: trailing bytes' USING ERRCODE = 'data_corrupted';
    END IF;
    IF v_exception - 1 > coalesce(cardinality(p_exceptions), 0) THEN
        RAISE EXCEPTION 'corrupt sample block: too few exceptions' USING ERRCODE = 'data_corrupted';
    END IF;
END
$fn$;

-- The head ----------------------------------------------------------------------------------------

-- Samples not yet compacted: one row per committed write batch and metric. `data` and
-- `exceptions` hold an encoded block; rows written by SQL (the upgrade from version 4) hold
-- plain arrays instead.
CREATE TABLE _prom_catalog.head (
    id           bigint GENERATED ALWAYS AS IDENTITY,
    metric_id    int         NOT NULL,
    min_time     timestamptz NOT NULL,
    max_time     timestamptz NOT NULL,
    samples      int         NOT NULL,
    written_at   timestamptz NOT NULL DEFAULT now(),
    data         bytea,
    exceptions   double precision[],
    plain_series_ids bigint[],
    plain_times  timestamptz[],
    plain_values double precision[],
    CHECK ((data IS NULL) <> (plain_times IS NULL))
) WITH (toast_tuple_target = 8160);
ALTER TABLE _prom_catalog.head ALTER COLUMN data SET STORAGE EXTERNAL;
-- One index serves reads (a metric's rows that end after the start of the range),
-- compaction (a metric's rows, sorted by id in memory) and retention: a row costs one index
-- entry, not two.
CREATE INDEX head_metric_time ON _prom_catalog.head (metric_id, max_time);

CREATE FUNCTION _prom_catalog.head_samples(p_data bytea, p_exceptions float8[], p_series_ids bigint[],
                                           p_times timestamptz[], p_values float8[])
RETURNS TABLE (series_id bigint, sample_time timestamptz, sample_value double precision)
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $fn$
    SELECT * FROM _prom_catalog.decode_block(p_data, p_exceptions) WHERE p_data IS NOT NULL
    UNION ALL
    SELECT * FROM unnest(p_series_ids, p_times, p_values) WHERE p_data IS NULL
$fn$;

-- Series chunks -------------------------------------------------------------------------------

-- Parent of every metric's series chunks (partitioned by series id, one partition per
-- metric, itself partitioned by time into the chunk tables).
-- Rows are kept within a page (the compactor splits longer series chunks), so the columns
-- are PLAIN: chunk tables get no TOAST table, and a small metric's chunk table costs one page.
CREATE TABLE _prom_catalog.series_chunk (
    series_id  bigint      NOT NULL,
    start_time timestamptz NOT NULL,   -- time of the chunk's first sample
    end_time   timestamptz NOT NULL,   -- time of its last sample
    samples    int         NOT NULL,
    data       bytea       NOT NULL,
    exceptions double precision[]
) PARTITION BY RANGE (series_id);
ALTER TABLE _prom_catalog.series_chunk ALTER COLUMN data SET STORAGE PLAIN, ALTER COLUMN exceptions SET STORAGE PLAIN;

-- Move what version 4 stored into the head, then drop the old tables ------------------------

DO $do$
DECLARE
    v_metric record;
    v_source text;
    v_table record;
BEGIN
    -- Connectors of version 4 still running (a rolling upgrade) wait here instead of
    -- writing rows that the DROPs below would take with them after they were acknowledged;
    -- they fail once their tables are gone, unacknowledged, and Prometheus sends again.
    LOCK TABLE _prom_catalog.samples, _prom_catalog.compressed_samples IN EXCLUSIVE MODE;
    FOR v_table IN SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                    WHERE n.nspname = 'prom_data' AND c.relkind = 'r' AND NOT c.relispartition LOOP
        EXECUTE format('LOCK TABLE prom_data.%I IN EXCLUSIVE MODE', v_table.relname);
    END LOOP;
    FOR v_metric IN SELECT id, table_name FROM _prom_catalog.metric ORDER BY id LOOP
        IF to_regclass(format('prom_data.%I', v_metric.table_name)) IS NULL THEN
            CONTINUE;
        END IF;
        v_source := format('SELECT series_id, time, value, 1 AS priority FROM prom_data.%I', v_metric.table_name);
        IF to_regclass(format('_prom_compressed.%I', v_metric.table_name)) IS NOT NULL THEN
            v_source := v_source || format(
                ' UNION ALL SELECT c.series_id, x.sample_time, x.sample_value, 0 FROM _prom_compressed.%I c,'
                ' LATERAL _prom_catalog.decompress(c.start_time, c.time_deltas, c.value_scale, c.value_deltas,'
                ' c.raw_values, c.exception_positions, c.exception_values) x', v_metric.table_name);
        END IF;
        EXECUTE format($q$
            INSERT INTO _prom_catalog.head (metric_id, min_time, max_time, samples, written_at,
                                            plain_series_ids, plain_times, plain_values)
            SELECT %s, min(time), max(time), count(*), '-infinity',
                   array_agg(series_id ORDER BY time), array_agg(time ORDER BY time), array_agg(value ORDER BY time)
              FROM (SELECT DISTINCT ON (series_id, time) series_id, time, value FROM (%s) s
                     ORDER BY series_id, time, priority) d
             GROUP BY series_id, date_trunc('day', time)
            $q$, v_metric.id, v_source);
    END LOOP;
    -- Version 4's metric views read the tables about to go.
    FOR v_table IN SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                    WHERE n.nspname = 'prom_metric' AND c.relkind = 'v' LOOP
        EXECUTE format('DROP VIEW prom_metric.%I', v_table.relname);
    END LOOP;
    -- Hypertables (the TimescaleDB path) are not partitions of _prom_catalog.samples.
    FOR v_table IN SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                    WHERE n.nspname = 'prom_data' AND c.relkind IN ('r', 'p') AND NOT c.relispartition LOOP
        EXECUTE format('DROP TABLE prom_data.%I CASCADE', v_table.relname);
    END LOOP;
END
$do$;

DROP TABLE _prom_catalog.samples CASCADE;
DROP TABLE _prom_catalog.compressed_samples CASCADE;
DO $do$
DECLARE
    v_table record;
BEGIN
    FOR v_table IN SELECT n.nspname, c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                    WHERE n.nspname IN ('_prom_chunks', '_prom_compressed', 'prom_data') AND c.relkind IN ('r', 'p') AND NOT c.relispartition LOOP
        EXECUTE format('DROP TABLE IF EXISTS %I.%I CASCADE', v_table.nspname, v_table.relname);
    END LOOP;
END
$do$;
DROP VIEW prom_info.metric;
DELETE FROM _prom_catalog.chunk;
ALTER TABLE _prom_catalog.chunk DROP COLUMN compressed_table_name, DROP COLUMN uncompressed_bytes,
    ADD COLUMN sealed boolean NOT NULL DEFAULT false,
    -- Whether compaction replaced rows of the chunk's table (which left dead rows behind).
    ADD COLUMN rewritten boolean NOT NULL DEFAULT false;
ALTER TABLE _prom_catalog.chunk ALTER COLUMN table_name SET NOT NULL;

DROP PROCEDURE prom_api.execute_maintenance();
DROP FUNCTION _prom_catalog.insert_samples(timestamptz[], float8[], int8[], boolean);
DROP FUNCTION _prom_catalog.compress_chunk(int);
DROP FUNCTION _prom_catalog.compressed_parent(int);
DROP FUNCTION _prom_catalog.create_chunk_table(_prom_catalog.chunk);
DROP FUNCTION _prom_catalog.get_or_create_chunk(int, timestamptz);
DROP FUNCTION _prom_catalog.maintain_metric(int);
DROP FUNCTION _prom_catalog.drop_chunk(_prom_catalog.chunk);
DROP FUNCTION _prom_catalog.chunk_stats(int);
DROP FUNCTION _prom_catalog.decompress(timestamptz, bigint[], smallint, bigint[], float8[], int[], float8[]);
DROP FUNCTION _prom_catalog.scales_exactly(float8, int);
DROP FUNCTION _prom_catalog.decimal_places(float8);
DROP FUNCTION _prom_catalog.compress_after();
DROP FUNCTION _prom_catalog.get_or_create_metric(text);
DROP FUNCTION _prom_catalog.get_or_create_native_metric(text);
DROP SCHEMA _prom_timescaledb CASCADE;
DROP FUNCTION _prom_catalog.uses_timescaledb();
DELETE FROM _prom_catalog.default_setting WHERE key = 'storage';

-- Metrics --------------------------------------------------------------------------------------

-- The views of one metric: prom_data.<table> (every sample, decoded) and prom_metric.<table>
-- (with a column per label key). Called when the metric is created and when it gains a key.
CREATE OR REPLACE FUNCTION _prom_catalog.refresh_metric_view(p_metric_id int) RETURNS void
LANGUAGE plpgsql AS $fn$
DECLARE
    v_table name;
    v_columns text;
BEGIN
    SELECT table_name INTO STRICT v_table FROM _prom_catalog.metric WHERE id = p_metric_id;
    -- Series chunks first, then head rows in the order written: on equal times, the sample
    -- stored first is the one kept, as reads and compaction keep it.
    EXECUTE format(
        'CREATE OR REPLACE VIEW prom_data.%I AS '
        'SELECT DISTINCT ON (s.series_id, s.sample_time) s.sample_time AS time, s.sample_value AS value, s.series_id '
        'FROM (SELECT c.series_id, x.sample_time, x.sample_value, 0::bigint AS written '
        '        FROM _prom_compressed.%I c, LATERAL _prom_catalog.decode_block(c.data, c.exceptions) x '
        '      UNION ALL '
        '      SELECT x.series_id, x.sample_time, x.sample_value, h.id '
        '        FROM _prom_catalog.head h, LATERAL _prom_catalog.head_samples(h.data, h.exceptions, '
        '             h.plain_series_ids, h.plain_times, h.plain_values) x WHERE h.metric_id = %s) s '
        'ORDER BY s.series_id, s.sample_time, s.written',
        v_table, v_table, p_metric_id);
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

-- The metric's parent of series chunks and its views.
CREATE FUNCTION _prom_catalog.create_metric_storage(p_metric_id int) RETURNS void
LANGUAGE plpgsql AS $fn$
DECLARE
    v_table name;
BEGIN
    SELECT table_name INTO STRICT v_table FROM _prom_catalog.metric WHERE id = p_metric_id;
    EXECUTE format('CREATE TABLE _prom_compressed.%I (LIKE _prom_catalog.series_chunk INCLUDING STORAGE) PARTITION BY RANGE (start_time)', v_table);
    -- ATTACH does not stall concurrent reads of the parent, as CREATE ... PARTITION OF would.
    EXECUTE format('ALTER TABLE _prom_catalog.series_chunk ATTACH PARTITION _prom_compressed.%I FOR VALUES FROM (%s) TO (%s)',
                   v_table, _prom_catalog.first_series_id(p_metric_id), _prom_catalog.first_series_id(p_metric_id + 1));
    PERFORM _prom_catalog.refresh_metric_view(p_metric_id);
END
$fn$;

DO $do$
DECLARE
    v_id int;
BEGIN
    FOR v_id IN SELECT id FROM _prom_catalog.metric ORDER BY id LOOP
        PERFORM _prom_catalog.create_metric_storage(v_id);
    END LOOP;
END
$do$;

-- The metric's id and table name, creating the metric (its storage and views) on first use.
CREATE FUNCTION _prom_catalog.get_or_create_metric(p_metric_name text, OUT id int, OUT table_name name)
LANGUAGE plpgsql AS $fn$
DECLARE
    v_candidate name;
BEGIN
    SELECT m.id, m.table_name INTO id, table_name FROM _prom_catalog.metric m WHERE m.metric_name = p_metric_name;
    IF FOUND THEN
        RETURN;
    END IF;
    -- Serialize metric creation across connectors; the lock ends with the transaction.
    PERFORM pg_advisory_xact_lock(7355608, 1);
    SELECT m.id, m.table_name INTO id, table_name FROM _prom_catalog.metric m WHERE m.metric_name = p_metric_name;
    IF FOUND THEN
        RETURN;
    END IF;
    v_candidate := _prom_catalog.identifier_for(p_metric_name);
    IF EXISTS (SELECT 1 FROM _prom_catalog.metric m WHERE m.table_name = v_candidate) THEN
        v_candidate := _prom_catalog.identifier_for(p_metric_name || '_' || nextval(pg_get_serial_sequence('_prom_catalog.metric', 'id')));
    END IF;
    INSERT INTO _prom_catalog.metric (metric_name, table_name) VALUES (p_metric_name, v_candidate)
    RETURNING metric.id, metric.table_name INTO id, table_name;
    INSERT INTO _prom_catalog.label_key_position (metric_id, key, pos) VALUES (id, '__name__', 1);
    PERFORM _prom_catalog.get_or_create_label_key('__name__');
    IF id >= (1 << 23) THEN
        RAISE EXCEPTION 'too many metrics: series ids have room for 8388607 metric ids';
    END IF;
    PERFORM _prom_catalog.create_metric_storage(id);
END
$fn$;

-- Every sample of every metric.
CREATE VIEW _prom_catalog.samples AS
SELECT DISTINCT ON (s.series_id, s.sample_time) s.sample_time AS time, s.sample_value AS value, s.series_id
  FROM (SELECT c.series_id, x.sample_time, x.sample_value, 0::bigint AS written
          FROM _prom_catalog.series_chunk c, LATERAL _prom_catalog.decode_block(c.data, c.exceptions) x
        UNION ALL
        SELECT x.series_id, x.sample_time, x.sample_value, h.id
          FROM _prom_catalog.head h, LATERAL _prom_catalog.head_samples(h.data, h.exceptions,
               h.plain_series_ids, h.plain_times, h.plain_values) x) s
 ORDER BY s.series_id, s.sample_time, s.written;

-- Time chunks -----------------------------------------------------------------------------------

-- A new, empty table for series chunks of the metric, named after it and p_suffix (made
-- unique); attached to nothing yet.
CREATE FUNCTION _prom_catalog.new_chunk_table(p_metric_id int, p_suffix text) RETURNS name
LANGUAGE plpgsql AS $fn$
DECLARE
    v_table name;
BEGIN
    SELECT _prom_catalog.identifier_for(m.table_name || '_' || p_suffix) INTO STRICT v_table
      FROM _prom_catalog.metric m WHERE m.id = p_metric_id;
    IF to_regclass(format('_prom_chunks.%I', v_table)) IS NOT NULL THEN
        v_table := _prom_catalog.identifier_for(v_table || '_' || txid_current());
    END IF;
    -- No index yet: a table of a few pages is read whole faster than through one, and an
    -- empty index costs two pages. index_chunk_table adds it once the table has grown.
    EXECUTE format('CREATE TABLE _prom_chunks.%I (LIKE _prom_catalog.series_chunk INCLUDING STORAGE)', v_table);
    RETURN v_table;
END
$fn$;

-- Indexes a chunk table on (series_id, start_time) once it is larger than four pages.
CREATE FUNCTION _prom_catalog.index_chunk_table(p_table name) RETURNS void
LANGUAGE plpgsql AS $fn$
BEGIN
    IF pg_relation_size(format('_prom_chunks.%I', p_table)::regclass) > 4 * 8192
       AND NOT EXISTS (SELECT 1 FROM pg_index i WHERE i.indrelid = format('_prom_chunks.%I', p_table)::regclass) THEN
        EXECUTE format('CREATE INDEX ON _prom_chunks.%I (series_id, start_time)', p_table);
    END IF;
END
$fn$;

-- Puts table p_new (made by new_chunk_table) in the place of the chunk's table, which is
-- dropped. The caller holds the metric's chunk lock.
CREATE FUNCTION _prom_catalog.replace_chunk_table(p_chunk_id int, p_new name) RETURNS void
LANGUAGE plpgsql AS $fn$
DECLARE
    v_chunk _prom_catalog.chunk;
    v_parent name;
BEGIN
    SELECT * INTO STRICT v_chunk FROM _prom_catalog.chunk WHERE id = p_chunk_id;
    SELECT m.table_name INTO STRICT v_parent FROM _prom_catalog.metric m WHERE m.id = v_chunk.metric_id;
    EXECUTE format('DROP TABLE _prom_chunks.%I', v_chunk.table_name);
    EXECUTE format('ALTER TABLE _prom_compressed.%I ATTACH PARTITION _prom_chunks.%I FOR VALUES FROM (%L) TO (%L)',
                   v_parent, p_new, v_chunk.start_time, v_chunk.end_time);
    UPDATE _prom_catalog.chunk SET table_name = p_new, rewritten = false WHERE id = p_chunk_id;
END
$fn$;

-- The chunk of metric p_metric_id that holds p_time, with its table, created if needed; NULL
-- when that chunk would lie entirely beyond the metric's retention period (its samples are
-- not kept). Chunks are aligned to the Unix epoch and shortened where a neighbour created
-- under another interval is in the way.
CREATE FUNCTION _prom_catalog.get_or_create_chunk(p_metric_id int, p_time timestamptz)
RETURNS _prom_catalog.chunk
LANGUAGE plpgsql AS $fn$
DECLARE
    v_chunk _prom_catalog.chunk;
    v_interval interval;
    v_seconds numeric;
    v_start timestamptz;
    v_end timestamptz;
    v_parent name;
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

    SELECT m.table_name INTO STRICT v_parent FROM _prom_catalog.metric m WHERE m.id = p_metric_id;
    v_chunk.id := nextval(pg_get_serial_sequence('_prom_catalog.chunk', 'id'));
    v_chunk.metric_id := p_metric_id;
    v_chunk.start_time := v_start;
    v_chunk.end_time := v_end;
    v_chunk.sealed := false;
    v_chunk.rewritten := false;
    v_chunk.table_name := _prom_catalog.new_chunk_table(p_metric_id, v_chunk.id::text);
    EXECUTE format('ALTER TABLE _prom_compressed.%I ATTACH PARTITION _prom_chunks.%I FOR VALUES FROM (%L) TO (%L)',
                   v_parent, v_chunk.table_name, v_start, v_end);
    INSERT INTO _prom_catalog.chunk (id, metric_id, start_time, end_time, table_name, sealed, rewritten)
    VALUES (v_chunk.id, v_chunk.metric_id, v_chunk.start_time, v_chunk.end_time, v_chunk.table_name, false, false);
    RETURN v_chunk;
END
$fn$;

-- Maintenance (the SQL part: retention) ----------------------------------------------------------

CREATE FUNCTION _prom_catalog.drop_chunk(p_chunk _prom_catalog.chunk) RETURNS void
LANGUAGE plpgsql AS $fn$
BEGIN
    EXECUTE format('DROP TABLE IF EXISTS _prom_chunks.%I', p_chunk.table_name);
    DELETE FROM _prom_catalog.chunk WHERE id = p_chunk.id;
END
$fn$;

-- Drops the metric's chunks that lie entirely beyond its retention period, and its head rows
-- that do.
CREATE FUNCTION _prom_catalog.maintain_metric(p_metric_id int) RETURNS void
LANGUAGE plpgsql AS $fn$
DECLARE
    v_chunk _prom_catalog.chunk;
    v_cutoff timestamptz := now() - _prom_catalog.metric_retention_period(p_metric_id);
BEGIN
    -- The lock chunk creation takes: chunks neither appear nor vanish under us.
    PERFORM pg_advisory_xact_lock(7355609, p_metric_id);
    FOR v_chunk IN SELECT * FROM _prom_catalog.chunk c
                    WHERE c.metric_id = p_metric_id AND c.end_time <= v_cutoff
                    ORDER BY c.start_time LOOP
        PERFORM _prom_catalog.drop_chunk(v_chunk);
    END LOOP;
    DELETE FROM _prom_catalog.head h WHERE h.metric_id = p_metric_id AND h.max_time < v_cutoff;
END
$fn$;

-- Applies retention, one metric per transaction. Compaction of the head into series chunks
-- is done by the connectors (in Rust) right after this, on the same schedule.
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

-- Overview ---------------------------------------------------------------------------------------

CREATE FUNCTION _prom_catalog.chunk_stats(p_metric_id int,
    OUT total_chunks bigint, OUT sealed_chunks bigint, OUT chunk_bytes bigint, OUT head_bytes bigint,
    OUT oldest_chunk_start timestamptz, OUT newest_chunk_end timestamptz)
LANGUAGE sql STABLE AS $fn$
    SELECT count(*),
           count(*) FILTER (WHERE ch.sealed),
           coalesce(sum(pg_total_relation_size(to_regclass('_prom_chunks.' || quote_ident(ch.table_name)))), 0)::bigint,
           (SELECT coalesce(sum(pg_column_size(h.*)), 0)::bigint FROM _prom_catalog.head h WHERE h.metric_id = p_metric_id),
           min(ch.start_time),
           max(ch.end_time)
      FROM _prom_catalog.chunk ch WHERE ch.metric_id = p_metric_id
$fn$;

CREATE VIEW prom_info.metric AS
SELECT m.id,
       m.metric_name,
       m.table_name,
       ARRAY(SELECT p.key FROM _prom_catalog.label_key_position p WHERE p.metric_id = m.id ORDER BY p.pos) AS label_keys,
       _prom_catalog.metric_retention_period(m.id) AS retention_period,
       _prom_catalog.metric_chunk_interval(m.id) AS chunk_interval,
       _prom_catalog.metric_compression(m.id) AS compression,
       c.total_chunks,
       c.sealed_chunks,
       c.chunk_bytes + c.head_bytes AS size_bytes,
       pg_size_pretty(c.chunk_bytes + c.head_bytes) AS size,
       c.head_bytes,
       c.oldest_chunk_start,
       c.newest_chunk_end
  FROM _prom_catalog.metric m
  CROSS JOIN LATERAL _prom_catalog.chunk_stats(m.id) c;

-- Series resolution ----------------------------------------------------------------------------

-- A series id carries its metric id (migration 1), so neither a foreign key (a trigger call
-- per new series, most of the cost of creating one) nor an index on metric_id is needed:
-- a metric's series are the id range [metric_id << 40, (metric_id + 1) << 40).
ALTER TABLE _prom_catalog.series DROP CONSTRAINT series_metric_id_fkey;
DROP INDEX _prom_catalog.series_metric_id;

CREATE OR REPLACE FUNCTION _prom_catalog.get_or_create_series_ids(
    p_metrics text[], p_series_idx int[], p_keys text[], p_values text[])
RETURNS TABLE (idx int, series_id bigint)
LANGUAGE plpgsql AS $fn$
DECLARE
    v_name text;
    v_key text;
    v_metric_ids int[];
    v_metric_id int;
    v_new_metric_ids int[];
    v_new_keys text[];
    v_wanted _prom_catalog.series_labels[];
BEGIN
    FOR v_name IN SELECT DISTINCT n FROM unnest(p_metrics) n ORDER BY n LOOP
        PERFORM _prom_catalog.get_or_create_metric(v_name);
    END LOOP;
    SELECT array_agg(m.id ORDER BY u.ord) INTO v_metric_ids
      FROM unnest(p_metrics) WITH ORDINALITY AS u(name, ord)
      JOIN _prom_catalog.metric m ON m.metric_name = u.name;

    -- Label keys the metrics have never had: give each a column name, then a position.
    SELECT array_agg(n.metric_id ORDER BY n.metric_id, n.key), array_agg(n.key ORDER BY n.metric_id, n.key)
      INTO v_new_metric_ids, v_new_keys
      FROM (SELECT DISTINCT v_metric_ids[t.i + 1] AS metric_id, t.k AS key
              FROM unnest(p_series_idx, p_keys) AS t(i, k)
             WHERE NOT EXISTS (SELECT 1 FROM _prom_catalog.label_key_position p
                                WHERE p.metric_id = v_metric_ids[t.i + 1] AND p.key = t.k)) n;
    IF v_new_keys IS NOT NULL THEN
        FOR v_key IN SELECT DISTINCT k FROM unnest(v_new_keys) k ORDER BY 1 LOOP
            PERFORM _prom_catalog.get_or_create_label_key(v_key);
        END LOOP;
        FOR v_metric_id IN SELECT DISTINCT m FROM unnest(v_new_metric_ids) m ORDER BY 1 LOOP
            -- The metric row lock orders concurrent position assignment and view changes.
            PERFORM 1 FROM _prom_catalog.metric WHERE id = v_metric_id FOR NO KEY UPDATE;
            FOR v_key IN SELECT n.k FROM unnest(v_new_metric_ids, v_new_keys) AS n(m, k) WHERE n.m = v_metric_id ORDER BY 1 LOOP
                INSERT INTO _prom_catalog.label_key_position (metric_id, key, pos)
                SELECT v_metric_id, v_key, coalesce(max(p.pos), 0) + 1
                  FROM _prom_catalog.label_key_position p WHERE p.metric_id = v_metric_id
                ON CONFLICT (metric_id, key) DO NOTHING;
            END LOOP;
            PERFORM _prom_catalog.refresh_metric_view(v_metric_id);
        END LOOP;
    END IF;

    INSERT INTO _prom_catalog.label (key, value)
    SELECT DISTINCT k, v FROM unnest(p_keys, p_values) AS t(k, v)
    ORDER BY 1, 2
    ON CONFLICT (key, value) DO NOTHING;

    -- Each series' dense labels array, 0 where it lacks a key. Most series have every key
    -- up to their last one: their ids in position order are the array; only the others go
    -- through pos -> id maps. Linear in the batch size either way.
    WITH entries AS (
        SELECT t.i, p.pos, l.id
          FROM unnest(p_series_idx, p_keys, p_values) AS t(i, k, v)
          JOIN _prom_catalog.label l ON l.key = t.k AND l.value = t.v
          JOIN _prom_catalog.label_key_position p ON p.metric_id = v_metric_ids[t.i + 1] AND p.key = t.k
    ), per_series AS (
        SELECT e.i, max(e.pos) AS last_pos, count(*) AS n, array_agg(e.id ORDER BY e.pos) AS ids,
               array_agg(e.pos ORDER BY e.pos) AS positions
          FROM entries e GROUP BY e.i
    )
    SELECT array_agg(ROW(ps.i, v_metric_ids[ps.i + 1],
               CASE WHEN ps.n = ps.last_pos THEN ps.ids
                    ELSE ARRAY(SELECT coalesce(ps.ids[array_position(ps.positions, g.pos)], 0)
                                 FROM generate_series(1, ps.last_pos) g(pos) ORDER BY g.pos)
               END)::_prom_catalog.series_labels)
      INTO v_wanted
      FROM per_series ps;

    INSERT INTO _prom_catalog.series (id, metric_id, labels)
    SELECT _prom_catalog.first_series_id(w.metric_id) + nextval('_prom_catalog.series_number'), w.metric_id, w.labels
      FROM unnest(v_wanted) w
     WHERE NOT EXISTS (SELECT 1 FROM _prom_catalog.series s WHERE s.labels = w.labels)
     ORDER BY w.labels
    ON CONFLICT (labels) DO NOTHING;

    RETURN QUERY
    SELECT w.i, s.id FROM unnest(v_wanted) w JOIN _prom_catalog.series s ON s.labels = w.labels;
END
$fn$;

-- PL/pgSQL caches a generic plan after five calls; made while the catalog was small, it can
-- scan tables that have since grown (a rollout's new series then took seconds each). Plans
-- made for each call follow the tables' current sizes.
ALTER FUNCTION _prom_catalog.get_or_create_series_ids(text[], int[], text[], text[]) SET plan_cache_mode = force_custom_plan;
