-- Schema version 22: a series that has a label created by its own transaction is written
-- without a lookup and without the catalog's indexes, and indexed later by the merge pass.
--
-- Creating a series cost a lookup (the labels hash index) and an insertion into the heap and
-- three indexes (primary key, labels hash exclusion constraint, GIN), 14 to 25 µs of database
-- time a series: a round of new series (a rollout: new pod or instance labels) ran at 0.34 to
-- 0.41 times Prometheus' receiver. Such a series cannot exist yet: one of its label ids was
-- drawn by the transaction creating it, and no other transaction can see that label, let
-- alone a series holding it, until this one commits. A writer that sees the label afterwards
-- looks the series up before creating it, and finds it. So create_series writes these series
-- into _prom_catalog.series_fresh, a child table of _prom_catalog.series (inheritance) with a
-- single hash index on labels for lookups: every query of _prom_catalog.series (PromQL's
-- selection, the views, deletion, retention, the label APIs) reads the child too, and the
-- uniqueness of labels still holds, since nothing else can hold such labels. The merge pass
-- moves them into _prom_catalog.series, with its indexes, off the request path
-- (_prom_catalog.index_fresh_series).

CREATE TABLE _prom_catalog.series_fresh () INHERITS (_prom_catalog.series);
CREATE INDEX series_fresh_labels ON _prom_catalog.series_fresh USING hash (labels);

-- Same arguments and results as migration 14's create_series. A series holding a label whose
-- row this transaction inserted (its xmin is this transaction's id: get_or_create_label_ids
-- inserts in the transaction itself, never in a subtransaction) is looked up among the fresh
-- series only (a series of the same call twice is refused by callers, but an earlier call in
-- the same transaction could hold it) and inserted into series_fresh; the others as before.
-- Ids are drawn in the order of the arguments, for both kinds.
CREATE OR REPLACE FUNCTION _prom_catalog.create_series(p_metric_ids int[], p_label_counts int[], p_labels int[])
RETURNS TABLE (idx int, series_id bigint)
LANGUAGE plpgsql AS $fn$
DECLARE
    v_wanted _prom_catalog.new_series[];
    v_fresh _prom_catalog.new_series[];
    v_rest _prom_catalog.new_series[];
    v_xid xid;
    v_mine int[] := '{}';
    v_places int[];
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
    -- The labels this transaction created (none when it has no id yet).
    v_xid := (txid_current_if_assigned() % 4294967296)::text::xid;
    IF v_xid IS NOT NULL THEN
        v_mine := ARRAY(SELECT l.id FROM _prom_catalog.label l
                         WHERE l.id = ANY(ARRAY(SELECT DISTINCT x FROM unnest(p_labels) x WHERE x <> 0))
                           AND l.xmin = v_xid);
    END IF;
    -- Series found keep their id (labels NULL: nothing to insert); the others draw one.
    SELECT array_agg(ROW(f.i,
                         COALESCE(f.found, _prom_catalog.first_series_id(f.metric_id) + nextval('_prom_catalog.series_number')),
                         f.metric_id, CASE WHEN f.found IS NULL THEN f.labels END)::_prom_catalog.new_series ORDER BY f.i),
           array_agg(f.i) FILTER (WHERE f.fresh AND f.found IS NULL)
      INTO v_wanted, v_places
      FROM (SELECT u.i, u.metric_id, u.labels, u.fresh,
                   CASE WHEN u.fresh
                        THEN (SELECT s.id FROM ONLY _prom_catalog.series_fresh s WHERE s.labels = u.labels)
                        ELSE (SELECT s.id FROM _prom_catalog.series s WHERE s.labels = u.labels)
                   END AS found
              FROM (SELECT v.i, v.metric_id, p_labels[v.stop - v.n + 1 : v.stop] AS labels,
                           p_labels[v.stop - v.n + 1 : v.stop] && v_mine AS fresh
                      FROM (SELECT (t.ord - 1)::int AS i, t.metric_id, t.n, sum(t.n) OVER (ORDER BY t.ord) AS stop
                              FROM unnest(p_metric_ids, p_label_counts) WITH ORDINALITY AS t(metric_id, n, ord)) v) u
            OFFSET 0) f;
    v_places := coalesce(v_places, '{}');
    v_fresh := ARRAY(SELECT w FROM unnest(v_wanted) w WHERE w.labels IS NOT NULL AND w.i = ANY(v_places));
    v_rest := ARRAY(SELECT w FROM unnest(v_wanted) w WHERE w.labels IS NOT NULL AND NOT (w.i = ANY(v_places)));

    RETURN QUERY SELECT w.i, w.id FROM unnest(v_wanted) w WHERE w.labels IS NULL;
    IF cardinality(v_fresh) > 0 THEN
        INSERT INTO _prom_catalog.series_fresh (id, metric_id, labels)
        SELECT w.id, w.metric_id, w.labels FROM unnest(v_fresh) w;
        RETURN QUERY SELECT w.i, w.id FROM unnest(v_fresh) w;
    END IF;
    IF cardinality(v_rest) = 0 THEN
        RETURN;
    END IF;

    BEGIN
        INSERT INTO _prom_catalog.series (id, metric_id, labels)
        SELECT w.id, w.metric_id, w.labels FROM unnest(v_rest) w ORDER BY w.labels;
        RETURN QUERY SELECT w.i, w.id FROM unnest(v_rest) w;
        RETURN;
    EXCEPTION WHEN exclusion_violation OR deadlock_detected THEN
        -- Another writer created some of them at the same moment: insert what is still
        -- missing, and answer the rest with the other writer's ids.
        RETURN QUERY
        WITH created AS (
            INSERT INTO _prom_catalog.series (id, metric_id, labels)
            SELECT w.id, w.metric_id, w.labels FROM unnest(v_rest) w ORDER BY w.labels
            ON CONFLICT DO NOTHING
            RETURNING series.id
        )
        SELECT w.i, w.id FROM unnest(v_rest) w WHERE w.id IN (SELECT c.id FROM created c);
        GET DIAGNOSTICS v_created = ROW_COUNT;
    END;

    IF v_created < cardinality(v_rest) THEN
        RETURN QUERY
        SELECT o.i, o.found
          FROM (SELECT w.i, w.id AS drawn, (SELECT s.id FROM _prom_catalog.series s WHERE s.labels = w.labels) AS found
                  FROM unnest(v_rest) w OFFSET 0) o
         WHERE o.found IS NOT NULL AND o.found <> o.drawn;
    END IF;
END
$fn$;
-- CREATE OR REPLACE resets the function's settings: as in migration 7.
ALTER FUNCTION _prom_catalog.create_series(int[], int[], int[])
    SET plan_cache_mode = force_custom_plan SET random_page_cost = 1.1 SET enable_bitmapscan = off
    SET enable_seqscan = off SET jit = off;

-- Moves the fresh series into _prom_catalog.series and its indexes, in labels order (the
-- order create_series inserts in, so that the two wait on each other in one order); returns
-- how many. A lookup sees each series in one of the two tables: the move deletes and inserts
-- in one transaction, and a lookup is one statement. Run by the merge pass and maintenance.
CREATE FUNCTION _prom_catalog.index_fresh_series() RETURNS bigint
LANGUAGE plpgsql AS $fn$
DECLARE
    v_moved bigint;
BEGIN
    WITH moved AS (
        DELETE FROM ONLY _prom_catalog.series_fresh RETURNING id, metric_id, labels
    )
    INSERT INTO _prom_catalog.series (id, metric_id, labels)
    SELECT m.id, m.metric_id, m.labels FROM moved m ORDER BY m.labels;
    GET DIAGNOSTICS v_moved = ROW_COUNT;
    RETURN v_moved;
END
$fn$;
