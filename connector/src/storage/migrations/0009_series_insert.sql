-- Schema version 9: new series are inserted with a plain INSERT.
--
-- create_series (migration 7) inserted new series with INSERT ... ON CONFLICT DO NOTHING.
-- Against the series' exclusion constraint that is a speculative insertion: each row is
-- inserted, checked, then confirmed by a second WAL record, about a fifth of the cost of
-- creating a series. The series were looked up just before, so a conflict only happens when
-- another writer creates one of them at the same moment: the plain INSERT then fails with
-- exclusion_violation (the other committed first) or, when both inserted their index entries
-- at once and each waits for the other, with deadlock_detected after deadlock_timeout
-- (PostgreSQL aborts one of them; ON CONFLICT's waits avoid that). Either way its
-- subtransaction rolls back and the batch is inserted again as before, with ON CONFLICT DO
-- NOTHING. Rows are returned only once the insert succeeded (a
-- RETURN QUERY inside the block would stay in the result when the block rolls back).

-- Same arguments, ids drawn and results as migration 7's create_series.
CREATE OR REPLACE FUNCTION _prom_catalog.create_series(p_metric_ids int[], p_label_counts int[], p_labels int[])
RETURNS TABLE (idx int, series_id bigint)
LANGUAGE plpgsql AS $fn$
DECLARE
    v_wanted _prom_catalog.new_series[];
    v_created bigint;
BEGIN
    SELECT array_agg(ROW(u.i,
                         CASE WHEN NOT EXISTS (SELECT 1 FROM _prom_catalog.series s WHERE s.labels = u.labels)
                              THEN _prom_catalog.first_series_id(u.metric_id) + nextval('_prom_catalog.series_number') END,
                         u.metric_id, u.labels)::_prom_catalog.new_series ORDER BY u.i)
      INTO v_wanted
      FROM (SELECT v.i, v.metric_id, p_labels[v.stop - v.n + 1 : v.stop] AS labels
              FROM (SELECT (t.ord - 1)::int AS i, t.metric_id, t.n, sum(t.n) OVER (ORDER BY t.ord) AS stop
                      FROM unnest(p_metric_ids, p_label_counts) WITH ORDINALITY AS t(metric_id, n, ord)) v) u;

    BEGIN
        INSERT INTO _prom_catalog.series (id, metric_id, labels)
        SELECT w.id, w.metric_id, w.labels FROM unnest(v_wanted) w WHERE w.id IS NOT NULL ORDER BY w.i;
        RETURN QUERY SELECT w.i, w.id FROM unnest(v_wanted) w WHERE w.id IS NOT NULL;
        GET DIAGNOSTICS v_created = ROW_COUNT;
    EXCEPTION WHEN exclusion_violation OR deadlock_detected THEN
        RETURN QUERY
        WITH created AS (
            INSERT INTO _prom_catalog.series (id, metric_id, labels)
            SELECT w.id, w.metric_id, w.labels FROM unnest(v_wanted) w WHERE w.id IS NOT NULL ORDER BY w.i
            ON CONFLICT DO NOTHING
            RETURNING series.id
        )
        SELECT w.i, w.id FROM unnest(v_wanted) w WHERE w.id IN (SELECT c.id FROM created c);
        GET DIAGNOSTICS v_created = ROW_COUNT;
    END;

    IF v_created < cardinality(v_wanted) THEN
        RETURN QUERY
        SELECT w.i, s.id FROM unnest(v_wanted) w JOIN _prom_catalog.series s ON s.labels = w.labels
         WHERE s.id IS DISTINCT FROM w.id;
    END IF;
END
$fn$;
-- CREATE OR REPLACE resets the function's settings: as in migration 7.
ALTER FUNCTION _prom_catalog.create_series(int[], int[], int[])
    SET plan_cache_mode = force_custom_plan SET random_page_cost = 1.1 SET enable_bitmapscan = off;
