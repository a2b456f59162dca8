-- Reading samples back for queries and remote read.

-- The samples of the given series of one metric with times in [p_start, p_end], both forms
-- (uncompressed rows and compressed chunks) merged, ordered by series and time. Where a late
-- sample waits uncompressed beside a compressed one at the same time, the compressed (earlier
-- written) value wins, as compression will decide. Times are Unix milliseconds.
CREATE FUNCTION _prom_catalog.read_samples(p_metric_id int, p_series_ids bigint[], p_start timestamptz, p_end timestamptz)
RETURNS TABLE (series_id bigint, time_ms bigint, value double precision)
LANGUAGE plpgsql STABLE AS $fn$
DECLARE
    v_table name;
BEGIN
    SELECT m.table_name INTO STRICT v_table FROM _prom_catalog.metric m WHERE m.id = p_metric_id;
    IF to_regclass(format('_prom_compressed.%I', v_table)) IS NULL THEN
        RETURN QUERY EXECUTE format(
            'SELECT d.series_id, (extract(epoch FROM d.time) * 1000)::int8, d.value FROM prom_data.%I d'
            ' WHERE d.series_id = ANY($1) AND d.time >= $2 AND d.time <= $3 ORDER BY d.series_id, d.time', v_table)
          USING p_series_ids, p_start, p_end;
    ELSE
        RETURN QUERY EXECUTE format(
            'SELECT DISTINCT ON (s.series_id, s.time) s.series_id, (extract(epoch FROM s.time) * 1000)::int8, s.value'
            '  FROM (SELECT c.series_id, x.sample_time AS time, x.sample_value AS value, 0 AS priority'
            '          FROM _prom_compressed.%1$I c,'
            '       LATERAL _prom_catalog.decompress(c.start_time, c.time_deltas, c.value_scale, c.value_deltas,'
            '                                        c.raw_values, c.exception_positions, c.exception_values) x'
            '         WHERE c.series_id = ANY($1) AND c.end_time >= $2 AND c.start_time <= $3'
            '        UNION ALL'
            '        SELECT d.series_id, d.time, d.value, 1 FROM prom_data.%1$I d'
            '         WHERE d.series_id = ANY($1) AND d.time >= $2 AND d.time <= $3) s'
            ' WHERE s.time >= $2 AND s.time <= $3'
            ' ORDER BY s.series_id, s.time, s.priority', v_table)
          USING p_series_ids, p_start, p_end;
    END IF;
END
$fn$;
