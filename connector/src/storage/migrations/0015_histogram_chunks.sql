-- Schema version 15: native histograms compacted into chunks.
--
-- Native histograms arrive as rows of _prom_catalog.histogram (migration 11) and stay there
-- while recent. Maintenance moves those older than the head age into chunks: one row per
-- series and stretch of time, its histograms encoded (connector/src/storage/histogram_codec.rs,
-- docs/storage.md) in `data`, every float of them in `floats`, so that bits are kept. The
-- chunks of a series never overlap in time, so (series_id, end_time) keys them; on equal
-- times a chunk's histogram (stored first) wins over a row's.

CREATE TABLE _prom_catalog.histogram_chunk (
    series_id  bigint      NOT NULL,
    start_time timestamptz NOT NULL,
    end_time   timestamptz NOT NULL,
    samples    int         NOT NULL,
    data       bytea       NOT NULL,
    floats     float8[]    NOT NULL,
    PRIMARY KEY (series_id, end_time)
);

-- The histograms of a chunk, in the columns of _prom_catalog.histogram. Every field of the
-- format is a varint (the flags byte too: it is below 128), so the chunk is read into an
-- array of integers in one pass, then walked.
CREATE FUNCTION _prom_catalog.decode_histogram_chunk(p_data bytea, p_floats float8[])
RETURNS TABLE ("time" timestamptz, "integer" boolean, reset_hint smallint, "schema" int, count float8,
               sum float8, zero_threshold float8, zero_count float8, positive_spans int[],
               positive_buckets float8[], negative_spans int[], negative_buckets float8[],
               custom_values float8[])
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE AS $fn$
DECLARE
    v_len int := length(p_data);
    v_pos int := 0;
    v_byte int;
    v_shift int;
    v_x bigint;
    v_vals bigint[] := '{}';
    v_nvals int;
    v_at int := 2;
    v_f int := 1;
    v_n bigint;
    v_i bigint;
    v_j bigint;
    v_flags int;
    v_t bigint := 0;
    v_delta bigint := 0;
    v_pairs bigint;
    v_npos bigint := 0;
    v_nneg bigint := 0;
    v_custom bigint;
    v_counts bigint[];
    v_prev bigint[];
    v_floats int := coalesce(cardinality(p_floats), 0);
BEGIN
    WHILE v_pos < v_len LOOP
        v_x := 0;
        v_shift := 0;
        LOOP
            IF v_pos >= v_len OR v_shift > 56 THEN
                RAISE EXCEPTION 'corrupt histogram chunk: truncated varint at byte %', v_pos USING ERRCODE = 'data_corrupted';
            END IF;
            v_byte := get_byte(p_data, v_pos);
            v_pos := v_pos + 1;
            v_x := v_x | ((v_byte & 127)::bigint << v_shift);
            EXIT WHEN v_byte < 128;
            v_shift := v_shift + 7;
        END LOOP;
        v_vals := v_vals || v_x;
    END LOOP;
    v_nvals := coalesce(cardinality(v_vals), 0);
    IF v_nvals = 0 THEN
        RAISE EXCEPTION 'corrupt histogram chunk: truncated' USING ERRCODE = 'data_corrupted';
    END IF;
    v_n := v_vals[1];
    IF v_n > v_len THEN
        RAISE EXCEPTION 'corrupt histogram chunk: count out of range' USING ERRCODE = 'data_corrupted';
    END IF;
    FOR v_i IN 1 .. v_n LOOP
        -- Flags, the time and (with a layout) at least six more values.
        IF v_at + 1 > v_nvals THEN
            RAISE EXCEPTION 'corrupt histogram chunk: truncated' USING ERRCODE = 'data_corrupted';
        END IF;
        v_flags := v_vals[v_at];
        IF v_flags >= 32 OR (v_i = 1 AND v_flags & 8 = 0) THEN
            RAISE EXCEPTION 'corrupt histogram chunk: bad flags' USING ERRCODE = 'data_corrupted';
        END IF;
        v_x := (v_vals[v_at + 1] >> 1) # -(v_vals[v_at + 1] & 1);
        v_at := v_at + 2;
        IF v_i = 1 THEN
            v_t := v_x;
        ELSIF v_i = 2 THEN
            v_delta := v_x;
            v_t := v_t + v_delta;
        ELSE
            v_delta := v_delta + v_x;
            v_t := v_t + v_delta;
        END IF;
        "time" := ('epoch'::timestamptz + make_interval(hours => (v_t / 7200000)::int) + make_interval(hours => (v_t / 7200000)::int) + make_interval(hours => ((v_t % 7200000) / 3600000)::int)) + (v_t % 3600000) * interval '1 millisecond';
        "integer" := v_flags & 1 = 1;
        reset_hint := ((v_flags >> 1) & 3)::smallint;
        IF v_flags & 8 = 8 THEN
            IF v_at + 1 > v_nvals THEN
                RAISE EXCEPTION 'corrupt histogram chunk: truncated' USING ERRCODE = 'data_corrupted';
            END IF;
            "schema" := ((v_vals[v_at] >> 1) # -(v_vals[v_at] & 1))::int;
            zero_threshold := p_floats[v_f];
            v_f := v_f + 1;
            v_pairs := v_vals[v_at + 1];
            v_at := v_at + 2;
            -- The positive spans, the count of positive buckets, the count of negative pairs.
            IF v_at + 2 * v_pairs + 1 > v_nvals THEN
                RAISE EXCEPTION 'corrupt histogram chunk: truncated' USING ERRCODE = 'data_corrupted';
            END IF;
            positive_spans := '{}';
            FOR v_j IN 0 .. 2 * v_pairs - 1 LOOP
                positive_spans := positive_spans || ((v_vals[v_at + v_j] >> 1) # -(v_vals[v_at + v_j] & 1))::int;
            END LOOP;
            v_at := v_at + 2 * v_pairs;
            v_npos := v_vals[v_at];
            v_pairs := v_vals[v_at + 1];
            v_at := v_at + 2;
            -- The negative spans, the count of negative buckets, the count of custom bounds.
            IF v_at + 2 * v_pairs + 1 > v_nvals THEN
                RAISE EXCEPTION 'corrupt histogram chunk: truncated' USING ERRCODE = 'data_corrupted';
            END IF;
            negative_spans := '{}';
            FOR v_j IN 0 .. 2 * v_pairs - 1 LOOP
                negative_spans := negative_spans || ((v_vals[v_at + v_j] >> 1) # -(v_vals[v_at + v_j] & 1))::int;
            END LOOP;
            v_at := v_at + 2 * v_pairs;
            v_nneg := v_vals[v_at];
            v_custom := v_vals[v_at + 1];
            v_at := v_at + 2;
            IF v_npos + v_nneg + v_custom > v_floats + v_len THEN
                RAISE EXCEPTION 'corrupt histogram chunk: length out of range' USING ERRCODE = 'data_corrupted';
            END IF;
            custom_values := coalesce(p_floats[v_f : v_f + v_custom - 1], '{}');
            v_f := v_f + v_custom;
            v_prev := NULL;
        END IF;
        sum := p_floats[v_f];
        v_f := v_f + 1;
        IF v_flags & 16 = 16 THEN
            count := p_floats[v_f];
            zero_count := p_floats[v_f + 1];
            positive_buckets := coalesce(p_floats[v_f + 2 : v_f + 1 + v_npos], '{}');
            negative_buckets := coalesce(p_floats[v_f + 2 + v_npos : v_f + 1 + v_npos + v_nneg], '{}');
            v_f := v_f + 2 + v_npos + v_nneg;
            v_prev := NULL;
        ELSE
            IF v_at + 1 + v_npos + v_nneg > v_nvals THEN
                RAISE EXCEPTION 'corrupt histogram chunk: truncated' USING ERRCODE = 'data_corrupted';
            END IF;
            v_counts := '{}';
            FOR v_j IN 0 .. 1 + v_npos + v_nneg LOOP
                v_counts := v_counts || (coalesce(v_prev[v_j + 1], 0) + ((v_vals[v_at + v_j] >> 1) # -(v_vals[v_at + v_j] & 1)));
            END LOOP;
            v_at := v_at + 2 + v_npos + v_nneg;
            count := v_counts[1];
            zero_count := v_counts[2];
            positive_buckets := coalesce(v_counts[3 : 2 + v_npos]::float8[], '{}');
            negative_buckets := coalesce(v_counts[3 + v_npos : 2 + v_npos + v_nneg]::float8[], '{}');
            v_prev := v_counts;
        END IF;
        IF v_f - 1 > v_floats THEN
            RAISE EXCEPTION 'corrupt histogram chunk: too few floats' USING ERRCODE = 'data_corrupted';
        END IF;
        RETURN NEXT;
    END LOOP;
    IF v_at <> v_nvals + 1 OR v_f - 1 <> v_floats THEN
        RAISE EXCEPTION 'corrupt histogram chunk: trailing data' USING ERRCODE = 'data_corrupted';
    END IF;
END
$fn$;

-- Every native histogram sample, recent (rows) and compacted (chunks), with its metric and
-- its series' labels, for SQL users; the same columns as version 11's. A row whose series
-- and time a chunk holds too (sent again after compaction) is left out: the chunk's came first.
CREATE OR REPLACE VIEW prom_info.native_histogram AS
SELECT m.metric_name,
       h.series_id,
       (SELECT jsonb_object_agg(l.key, l.value)
          FROM unnest(s.labels) AS lid JOIN _prom_catalog.label l ON l.id = lid) AS series_labels,
       h.time,
       h.count,
       h.sum,
       h.schema,
       h.zero_threshold,
       h.zero_count,
       h.positive_spans,
       h.positive_buckets,
       h.negative_spans,
       h.negative_buckets,
       h.custom_values,
       h.integer,
       h.reset_hint
  FROM (SELECT r.series_id, r.time, r.count, r.sum, r.schema, r.zero_threshold, r.zero_count,
               r.positive_spans, r.positive_buckets, r.negative_spans, r.negative_buckets,
               r.custom_values, r.integer, r.reset_hint
          FROM _prom_catalog.histogram r
         WHERE NOT EXISTS (SELECT 1 FROM _prom_catalog.histogram_chunk c
                            CROSS JOIN LATERAL _prom_catalog.decode_histogram_chunk(c.data, c.floats) d
                            WHERE c.series_id = r.series_id AND c.end_time >= r.time
                              AND c.start_time <= r.time AND d.time = r.time)
        UNION ALL
        SELECT c.series_id, d.time, d.count, d.sum, d.schema, d.zero_threshold, d.zero_count,
               d.positive_spans, d.positive_buckets, d.negative_spans, d.negative_buckets,
               d.custom_values, d.integer, d.reset_hint
          FROM _prom_catalog.histogram_chunk c
         CROSS JOIN LATERAL _prom_catalog.decode_histogram_chunk(c.data, c.floats) d) h
  JOIN _prom_catalog.series s ON s.id = h.series_id
  JOIN _prom_catalog.metric m ON m.id = s.metric_id;

-- The native histograms of one metric in [start_time, end_time], by series and time: like
-- prom_info.native_histogram, but only the chunks that overlap the range are decoded (the
-- view decodes every chunk of the series it reads, whatever the filter on time).
CREATE FUNCTION prom_api.native_histograms(metric_name text, start_time timestamptz, end_time timestamptz)
RETURNS TABLE (series_id bigint, series_labels jsonb, "time" timestamptz, count float8, sum float8,
               "schema" int, zero_threshold float8, zero_count float8, positive_spans int[],
               positive_buckets float8[], negative_spans int[], negative_buckets float8[],
               custom_values float8[], "integer" boolean, reset_hint smallint)
LANGUAGE sql STABLE AS $fn$
    WITH m AS (
        SELECT (m.id::int8 << 40) AS first_series, ((m.id::int8 + 1) << 40) AS next_series
          FROM _prom_catalog.metric m WHERE m.metric_name = native_histograms.metric_name
    ), h AS (
        SELECT r.series_id, r.time, r.count, r.sum, r.schema, r.zero_threshold, r.zero_count,
               r.positive_spans, r.positive_buckets, r.negative_spans, r.negative_buckets,
               r.custom_values, r.integer, r.reset_hint
          FROM m JOIN _prom_catalog.histogram r
            ON r.series_id >= m.first_series AND r.series_id < m.next_series
         WHERE r.time >= native_histograms.start_time AND r.time <= native_histograms.end_time
           AND NOT EXISTS (SELECT 1 FROM _prom_catalog.histogram_chunk c
                            CROSS JOIN LATERAL _prom_catalog.decode_histogram_chunk(c.data, c.floats) d
                            WHERE c.series_id = r.series_id AND c.end_time >= r.time
                              AND c.start_time <= r.time AND d.time = r.time)
        UNION ALL
        SELECT c.series_id, d.time, d.count, d.sum, d.schema, d.zero_threshold, d.zero_count,
               d.positive_spans, d.positive_buckets, d.negative_spans, d.negative_buckets,
               d.custom_values, d.integer, d.reset_hint
          FROM m JOIN _prom_catalog.histogram_chunk c
            ON c.series_id >= m.first_series AND c.series_id < m.next_series
         CROSS JOIN LATERAL _prom_catalog.decode_histogram_chunk(c.data, c.floats) d
         WHERE c.end_time >= native_histograms.start_time AND c.start_time <= native_histograms.end_time
           AND d.time >= native_histograms.start_time AND d.time <= native_histograms.end_time
    )
    SELECT h.series_id,
           (SELECT jsonb_object_agg(l.key, l.value)
              FROM unnest(s.labels) AS lid JOIN _prom_catalog.label l ON l.id = lid),
           h.time, h.count, h.sum, h.schema, h.zero_threshold, h.zero_count, h.positive_spans,
           h.positive_buckets, h.negative_spans, h.negative_buckets, h.custom_values, h.integer,
           h.reset_hint
      FROM h JOIN _prom_catalog.series s ON s.id = h.series_id
     ORDER BY h.series_id, h.time
$fn$;

-- Retention covers histogram chunks: as version 11's, plus the metric's chunks that end
-- before the cutoff.
CREATE OR REPLACE FUNCTION _prom_catalog.maintain_metric(p_metric_id int) RETURNS void
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
    DELETE FROM _prom_catalog.histogram h
     WHERE h.series_id >= (p_metric_id::int8 << 40) AND h.series_id < ((p_metric_id::int8 + 1) << 40)
       AND h.time < v_cutoff;
    DELETE FROM _prom_catalog.histogram_chunk c
     WHERE c.series_id >= (p_metric_id::int8 << 40) AND c.series_id < ((p_metric_id::int8 + 1) << 40)
       AND c.end_time < v_cutoff;
END
$fn$;
