-- Schema version 14: series ids follow the order series arrive in, as Prometheus' series
-- references follow the order its head creates them.
--
-- Which of several series with equal values topk, bottomk and limitk keep depends on the order
-- the series are read in; Prometheus reads the series of its head in the order they were
-- created. Connectors sent the series of a request to create_series sorted by labels, so that
-- writers creating the same series at the same moment lock them in one order, and ids were
-- drawn in that order. Now connectors send them in the order of the request, ids are drawn in
-- that order, and create_series itself inserts them sorted by labels: the same lock order for
-- every writer, connectors of version 13 included (they still send labels order, which this
-- function keeps). Existing series keep their ids.

-- Same arguments and results as migration 13's create_series; ids are drawn in the order of
-- the arguments, rows inserted in labels order.
CREATE OR REPLACE FUNCTION _prom_catalog.create_series(p_metric_ids int[], p_label_counts int[], p_labels int[])
RETURNS TABLE (idx int, series_id bigint)
LANGUAGE plpgsql AS $fn$
DECLARE
    v_wanted _prom_catalog.new_series[];
    v_created bigint;
BEGIN
    -- A found series is marked by NULL labels below: input that would make labels NULL is
    -- refused rather than answered with an id never inserted.
    IF p_metric_ids IS NULL OR p_label_counts IS NULL OR p_labels IS NULL
       OR cardinality(p_metric_ids) IS DISTINCT FROM cardinality(p_label_counts)
       OR array_position(p_metric_ids, NULL) IS NOT NULL
       OR array_position(p_label_counts, NULL) IS NOT NULL
       OR array_position(p_labels, NULL) IS NOT NULL THEN
        RAISE EXCEPTION 'create_series takes one metric id and one label count per series and no NULL';
    END IF;
    -- Series found keep their id (labels NULL: nothing to insert); the others draw one.
    SELECT array_agg(ROW(f.i,
                         COALESCE(f.found, _prom_catalog.first_series_id(f.metric_id) + nextval('_prom_catalog.series_number')),
                         f.metric_id, CASE WHEN f.found IS NULL THEN f.labels END)::_prom_catalog.new_series ORDER BY f.i)
      INTO v_wanted
      FROM (SELECT u.i, u.metric_id, u.labels,
                   (SELECT s.id FROM _prom_catalog.series s WHERE s.labels = u.labels) AS found
              FROM (SELECT v.i, v.metric_id, p_labels[v.stop - v.n + 1 : v.stop] AS labels
                      FROM (SELECT (t.ord - 1)::int AS i, t.metric_id, t.n, sum(t.n) OVER (ORDER BY t.ord) AS stop
                              FROM unnest(p_metric_ids, p_label_counts) WITH ORDINALITY AS t(metric_id, n, ord)) v) u
            OFFSET 0) f;

    RETURN QUERY SELECT w.i, w.id FROM unnest(v_wanted) w WHERE w.labels IS NULL;
    IF NOT EXISTS (SELECT 1 FROM unnest(v_wanted) w WHERE w.labels IS NOT NULL) THEN
        RETURN;
    END IF;

    BEGIN
        INSERT INTO _prom_catalog.series (id, metric_id, labels)
        SELECT w.id, w.metric_id, w.labels FROM unnest(v_wanted) w WHERE w.labels IS NOT NULL ORDER BY w.labels;
        RETURN QUERY SELECT w.i, w.id FROM unnest(v_wanted) w WHERE w.labels IS NOT NULL;
        RETURN;
    EXCEPTION WHEN exclusion_violation OR deadlock_detected THEN
        -- Another writer created some of them at the same moment: insert what is still
        -- missing, and answer the rest with the other writer's ids.
        RETURN QUERY
        WITH created AS (
            INSERT INTO _prom_catalog.series (id, metric_id, labels)
            SELECT w.id, w.metric_id, w.labels FROM unnest(v_wanted) w WHERE w.labels IS NOT NULL ORDER BY w.labels
            ON CONFLICT DO NOTHING
            RETURNING series.id
        )
        SELECT w.i, w.id FROM unnest(v_wanted) w WHERE w.labels IS NOT NULL AND w.id IN (SELECT c.id FROM created c);
        GET DIAGNOSTICS v_created = ROW_COUNT;
    END;

    IF v_created < (SELECT count(*) FROM unnest(v_wanted) w WHERE w.labels IS NOT NULL) THEN
        RETURN QUERY
        SELECT o.i, o.found
          FROM (SELECT w.i, w.id AS drawn, (SELECT s.id FROM _prom_catalog.series s WHERE s.labels = w.labels) AS found
                  FROM unnest(v_wanted) w WHERE w.labels IS NOT NULL OFFSET 0) o
         WHERE o.found IS NOT NULL AND o.found <> o.drawn;
    END IF;
END
$fn$;
-- CREATE OR REPLACE resets the function's settings: as in migration 7.
ALTER FUNCTION _prom_catalog.create_series(int[], int[], int[])
    SET plan_cache_mode = force_custom_plan SET random_page_cost = 1.1 SET enable_bitmapscan = off
    SET enable_seqscan = off SET jit = off;
