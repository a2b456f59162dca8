-- Schema version 11: native histograms.
--
-- A native histogram sample is one row, keyed by series and time, in the readable form of
-- Prometheus' wire message: a histogram sent again (a retried request) is stored once, the
-- first one kept. Bucket counts are absolute, also for integer histograms (which Prometheus
-- sends as deltas): exact up to 2^53 observations a bucket. Spans are (offset, length) pairs
-- flattened into one array, as in Prometheus: the first offset is the index of the first
-- bucket, each next one the gap after the previous span.
CREATE TABLE _prom_catalog.histogram (
    series_id        bigint      NOT NULL,
    time             timestamptz NOT NULL,
    -- An integer histogram (counts sent as integers) or a float one.
    integer          boolean     NOT NULL,
    -- 0 unknown, 1 a counter reset happened, 2 none did, 3 a gauge histogram.
    reset_hint       smallint    NOT NULL,
    -- -4 to 8: exponential buckets of growth factor 2^(2^-schema); -53: custom buckets.
    schema           int         NOT NULL,
    count            float8      NOT NULL,
    sum              float8      NOT NULL,
    zero_threshold   float8      NOT NULL,
    zero_count       float8      NOT NULL,
    positive_spans   int[]       NOT NULL,
    positive_buckets float8[]    NOT NULL,
    negative_spans   int[]       NOT NULL,
    negative_buckets float8[]    NOT NULL,
    -- The upper bounds of custom buckets (schema -53); the last bucket reaches +Inf.
    custom_values    float8[]    NOT NULL,
    PRIMARY KEY (series_id, time)
);

-- Every native histogram sample with its metric and its series' labels, for SQL users.
CREATE VIEW prom_info.native_histogram AS
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
  FROM _prom_catalog.histogram h
  JOIN _prom_catalog.series s ON s.id = h.series_id
  JOIN _prom_catalog.metric m ON m.id = s.metric_id;

-- Retention covers native histograms: as version 5's, plus the metric's histogram rows
-- (its series ids are the range of its metric id in their high bits).
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
END
$fn$;
