-- Schema version 23: the series of a request that hold a label its own transaction created
-- (fresh series, migration 22) are created by one statement, without create_series' work.
--
-- create_series sorts out, row by row, which series are fresh, looks the others up, gathers
-- both kinds into arrays of rows and unnests them again: for a request of 2,000 new series
-- (a rollout) that set handling cost more than writing the rows. The connector knows which
-- labels it created (get_or_create_label_ids_created says so), hence which series are fresh,
-- and hands those to create_fresh_series: one INSERT, ids drawn in the order given. The
-- others still go through create_series, as do all the series of a request that mixes both
-- kinds (so that ids keep the order of the request). create_series stays as it was, and
-- get_or_create_label_ids answers as it did, now from the new function (a connector of the
-- previous version during a rolling upgrade calls both).

-- As get_or_create_label_ids, and whether this call created each label.
CREATE FUNCTION _prom_catalog.get_or_create_label_ids_created(p_keys text[], p_values text[])
RETURNS TABLE (idx int, label_id int, created boolean)
LANGUAGE plpgsql AS $fn$
DECLARE
    v_created int[];
BEGIN
    -- Existing labels are filtered out first: a conflicting row would still draw an id from
    -- the (int4) label sequence.
    WITH created AS (
        INSERT INTO _prom_catalog.label (key, value)
        SELECT DISTINCT k, v FROM unnest(p_keys, p_values) AS t(k, v)
         WHERE NOT EXISTS (SELECT 1 FROM _prom_catalog.label l
                            WHERE l.key = t.k AND _prom_catalog.label_value_key(l.value) = _prom_catalog.label_value_key(t.v)
                              AND l.value = t.v)
        ORDER BY 1, 2
        ON CONFLICT (key, _prom_catalog.label_value_key(value)) DO NOTHING
        RETURNING id
    )
    SELECT array_agg(c.id) INTO v_created FROM created c;
    IF v_created IS NOT NULL THEN
        PERFORM set_config('promscale.labels_created',
                           concat_ws(',', nullif(current_setting('promscale.labels_created', true), ''),
                                     array_to_string(v_created, ',')),
                           true);
    END IF;

    RETURN QUERY
    SELECT (t.ord - 1)::int, l.id, c.id IS NOT NULL
      FROM unnest(p_keys, p_values) WITH ORDINALITY AS t(k, v, ord)
      JOIN _prom_catalog.label l ON l.key = t.k
                                AND _prom_catalog.label_value_key(l.value) = _prom_catalog.label_value_key(t.v)
                                AND l.value = t.v
      LEFT JOIN unnest(v_created) AS c(id) ON c.id = l.id;
END
$fn$;
ALTER FUNCTION _prom_catalog.get_or_create_label_ids_created(text[], text[])
    SET plan_cache_mode = force_custom_plan SET random_page_cost = 1.1 SET enable_bitmapscan = off;

-- Same arguments and results as migration 22's: one implementation for both.
CREATE OR REPLACE FUNCTION _prom_catalog.get_or_create_label_ids(p_keys text[], p_values text[])
RETURNS TABLE (idx int, label_id int)
LANGUAGE sql AS $fn$
    SELECT l.idx, l.label_id FROM _prom_catalog.get_or_create_label_ids_created(p_keys, p_values) l
$fn$;

-- Creates series that are fresh: each holds a label the calling transaction created (through
-- get_or_create_label_ids or get_or_create_label_ids_created), so that none can exist yet,
-- and each is given once. Arguments as create_series'; ids are drawn in their order. Series
-- that are not fresh, or given twice, would be stored twice: they go to create_series, which
-- tells them apart and refuses the same series twice.
CREATE FUNCTION _prom_catalog.create_fresh_series(p_metric_ids int[], p_label_counts int[], p_labels int[])
RETURNS TABLE (idx int, series_id bigint)
LANGUAGE plpgsql AS $fn$
BEGIN
    IF p_metric_ids IS NULL OR p_label_counts IS NULL OR p_labels IS NULL
       OR cardinality(p_metric_ids) IS DISTINCT FROM cardinality(p_label_counts)
       OR array_position(p_metric_ids, NULL) IS NOT NULL
       OR array_position(p_label_counts, NULL) IS NOT NULL
       OR array_position(p_labels, NULL) IS NOT NULL
       OR 0 > ANY (p_label_counts)
       OR (SELECT coalesce(sum(n), 0) FROM unnest(p_label_counts) AS c(n)) <> cardinality(p_labels) THEN
        RAISE EXCEPTION 'create_fresh_series takes one metric id and one label count per series, labels as many as counted, and no NULL';
    END IF;
    -- Later calls of create_series in this transaction look among the fresh series too.
    PERFORM set_config('promscale.fresh_series_written', 'on', true);
    RETURN QUERY
    WITH req AS MATERIALIZED (
        SELECT (t.ord - 1)::int AS i, t.metric_id, p_labels[t.stop - t.n + 1 : t.stop] AS labels,
               _prom_catalog.first_series_id(t.metric_id) + nextval('_prom_catalog.series_number') AS id
          FROM (SELECT u.metric_id, u.n, u.ord, sum(u.n) OVER (ORDER BY u.ord) AS stop
                  FROM unnest(p_metric_ids, p_label_counts) WITH ORDINALITY AS u(metric_id, n, ord)) t
         -- nextval, volatile, is evaluated after the sort: in this order.
         ORDER BY t.ord
    ), inserted AS (
        INSERT INTO _prom_catalog.series_fresh (id, metric_id, labels)
        SELECT r.id, r.metric_id, r.labels FROM req r
    )
    SELECT r.i, r.id FROM req r;
END
$fn$;
ALTER FUNCTION _prom_catalog.create_fresh_series(int[], int[], int[]) SET jit = off;
