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
-- and maintenance move them into _prom_catalog.series, with its indexes, off the request path
-- (_prom_catalog.index_fresh_series).
--
-- Which labels a transaction created, get_or_create_label_ids records in a setting local to
-- the transaction (promscale.labels_created; a row's xmin would not do, since a frozen row
-- keeps its xmin and transaction ids wrap around), and whether it wrote fresh series,
-- create_series (promscale.fresh_series_written): only then can a fresh series already be
-- there, from an earlier call of the same transaction.

CREATE TABLE _prom_catalog.series_fresh () INHERITS (_prom_catalog.series);
CREATE INDEX series_fresh_labels ON _prom_catalog.series_fresh USING hash (labels);

-- The ids of the labels the current transaction created through get_or_create_label_ids.
CREATE FUNCTION _prom_catalog.labels_created_here() RETURNS int[]
LANGUAGE sql STABLE AS $fn$
    SELECT coalesce(string_to_array(nullif(current_setting('promscale.labels_created', true), ''), ',')::int[], '{}')
$fn$;

-- Same arguments and results as migration 7's; also records the ids of the labels it created
-- for the rest of the transaction (labels_created_here).
CREATE OR REPLACE FUNCTION _prom_catalog.get_or_create_label_ids(p_keys text[], p_values text[])
RETURNS TABLE (idx int, label_id int)
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
    SELECT (t.ord - 1)::int, l.id
      FROM unnest(p_keys, p_values) WITH ORDINALITY AS t(k, v, ord)
      JOIN _prom_catalog.label l ON l.key = t.k
                                AND _prom_catalog.label_value_key(l.value) = _prom_catalog.label_value_key(t.v)
                                AND l.value = t.v;
END
$fn$;
-- CREATE OR REPLACE resets the function's settings: as in migration 7.
ALTER FUNCTION _prom_catalog.get_or_create_label_ids(text[], text[])
    SET plan_cache_mode = force_custom_plan SET random_page_cost = 1.1 SET enable_bitmapscan = off;

-- Same arguments and results as migration 14's create_series. A series holding a label this
-- transaction created is inserted into series_fresh without a lookup (or, when this
-- transaction wrote fresh series before, a lookup among the fresh series only); the others
-- as before. Ids are drawn in the order of the arguments, for both kinds.
CREATE OR REPLACE FUNCTION _prom_catalog.create_series(p_metric_ids int[], p_label_counts int[], p_labels int[])
RETURNS TABLE (idx int, series_id bigint)
LANGUAGE plpgsql AS $fn$
DECLARE
    v_created_labels int[];
    v_wrote_fresh boolean;
    v_found _prom_catalog.new_series[];
    v_fresh _prom_catalog.new_series[];
    v_rest _prom_catalog.new_series[];
    v_created bigint;
BEGIN
    -- Input that would make labels NULL is refused rather than answered with an id never
    -- inserted.
    IF p_metric_ids IS NULL OR p_label_counts IS NULL OR p_labels IS NULL
       OR cardinality(p_metric_ids) IS DISTINCT FROM cardinality(p_label_counts)
       OR array_position(p_metric_ids, NULL) IS NOT NULL
       OR array_position(p_label_counts, NULL) IS NOT NULL
       OR array_position(p_labels, NULL) IS NOT NULL THEN
        RAISE EXCEPTION 'create_series takes one metric id and one label count per series and no NULL';
    END IF;
    v_created_labels := _prom_catalog.labels_created_here();
    v_wrote_fresh := coalesce(current_setting('promscale.fresh_series_written', true), '') = 'on';
    -- Series found keep their id; the others draw one, in the order of the arguments (rows
    -- reach nextval in that order).
    WITH req AS MATERIALIZED (
        SELECT v.i, v.metric_id, p_labels[v.stop - v.n + 1 : v.stop] AS labels
          FROM (SELECT (t.ord - 1)::int AS i, t.metric_id, t.n, sum(t.n) OVER (ORDER BY t.ord) AS stop
                  FROM unnest(p_metric_ids, p_label_counts) WITH ORDINALITY AS t(metric_id, n, ord)) v
    ), fresh AS MATERIALIZED (
        SELECT DISTINCT r.i
          FROM req r CROSS JOIN LATERAL unnest(r.labels) AS x(id)
          JOIN unnest(v_created_labels) AS c(id) ON c.id = x.id
    ), f AS MATERIALIZED (
        SELECT g.i, g.metric_id, g.labels, g.fresh, g.found,
               COALESCE(g.found, _prom_catalog.first_series_id(g.metric_id) + nextval('_prom_catalog.series_number')) AS id
          FROM (SELECT r.i, r.metric_id, r.labels, fr.i IS NOT NULL AS fresh,
                       -- The indexed catalog first, where most series are: a second probe
                       -- only for those not there (one statement, one snapshot: a series
                       -- moving between the two is seen in one).
                       CASE WHEN fr.i IS NULL
                            THEN COALESCE((SELECT s.id FROM ONLY _prom_catalog.series s WHERE s.labels = r.labels),
                                          (SELECT s.id FROM ONLY _prom_catalog.series_fresh s WHERE s.labels = r.labels))
                            WHEN v_wrote_fresh
                            THEN (SELECT s.id FROM ONLY _prom_catalog.series_fresh s WHERE s.labels = r.labels)
                       END AS found
                  FROM req r LEFT JOIN fresh fr ON fr.i = r.i
                 ORDER BY r.i
                OFFSET 0) g
    )
    SELECT array_agg(ROW(f.i, f.id, f.metric_id, NULL)::_prom_catalog.new_series) FILTER (WHERE f.found IS NOT NULL),
           array_agg(ROW(f.i, f.id, f.metric_id, f.labels)::_prom_catalog.new_series) FILTER (WHERE f.found IS NULL AND f.fresh),
           array_agg(ROW(f.i, f.id, f.metric_id, f.labels)::_prom_catalog.new_series) FILTER (WHERE f.found IS NULL AND NOT f.fresh)
      INTO v_found, v_fresh, v_rest
      FROM f;

    RETURN QUERY SELECT w.i, w.id FROM unnest(v_found) w;
    IF v_fresh IS NOT NULL THEN
        -- Each series once: a fresh series asked for twice would be created twice.
        IF EXISTS (SELECT 1 FROM unnest(v_fresh) w GROUP BY w.labels HAVING count(*) > 1) THEN
            RAISE EXCEPTION 'create_series takes each series once';
        END IF;
        INSERT INTO _prom_catalog.series_fresh (id, metric_id, labels)
        SELECT w.id, w.metric_id, w.labels FROM unnest(v_fresh) w;
        PERFORM set_config('promscale.fresh_series_written', 'on', true);
        RETURN QUERY SELECT w.i, w.id FROM unnest(v_fresh) w;
    END IF;
    IF v_rest IS NULL THEN
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
-- how many. A lookup sees each series in one of the two tables: the move inserts and deletes
-- in one statement, and a lookup is one statement. A series that cannot move (its labels
-- already indexed under another id, which the way fresh series are made rules out) stays
-- fresh, with a warning, and the others move.
CREATE FUNCTION _prom_catalog.index_fresh_series() RETURNS bigint
LANGUAGE plpgsql AS $fn$
DECLARE
    v_moved bigint;
    v_left bigint;
BEGIN
    WITH moved AS (
        INSERT INTO _prom_catalog.series (id, metric_id, labels)
        SELECT f.id, f.metric_id, f.labels FROM ONLY _prom_catalog.series_fresh f ORDER BY f.labels
        ON CONFLICT DO NOTHING
        RETURNING series.id
    )
    DELETE FROM ONLY _prom_catalog.series_fresh f USING moved m WHERE f.id = m.id;
    GET DIAGNOSTICS v_moved = ROW_COUNT;
    SELECT count(*) INTO v_left
      FROM ONLY _prom_catalog.series_fresh f
     WHERE EXISTS (SELECT 1 FROM ONLY _prom_catalog.series s WHERE s.labels = f.labels AND s.id <> f.id);
    IF v_left > 0 THEN
        RAISE WARNING '% fresh series have labels already indexed under another id; they stay in _prom_catalog.series_fresh', v_left;
    END IF;
    RETURN v_moved;
END
$fn$;
ALTER FUNCTION _prom_catalog.index_fresh_series() SET enable_bitmapscan = off;

-- Maintenance from SQL indexes the fresh series too (migration 5's procedure, with that first).
CREATE OR REPLACE PROCEDURE prom_api.execute_maintenance()
LANGUAGE plpgsql AS $fn$
DECLARE
    v_metric_id int;
BEGIN
    PERFORM _prom_catalog.index_fresh_series();
    COMMIT;
    FOR v_metric_id IN SELECT id FROM _prom_catalog.metric ORDER BY id LOOP
        PERFORM _prom_catalog.maintain_metric(v_metric_id);
        COMMIT;
    END LOOP;
END
$fn$;
