-- Schema version 25: create_series looks up, draws ids for and inserts a request's new series
-- in one statement, the merge pass moves fresh series with a plain insert, and the lookup of
-- the series limits (existing_series) no longer takes time quadratic in its size.
--
-- Timed alone (one session, a catalog of 60,000 series of 5 labels, 2,000 series a call),
-- version 24's create_series took 13 to 16 ms for 2,000 known series and 23 to 25 ms for
-- 2,000 new ones (now 8.3 to 8.6 and about 17): beside the index probes and inserts, it built arrays of composite rows and
-- unnested them again, joined every series' labels against the labels its transaction
-- created even when there were none, checked for duplicates with a grouping, and sliced each
-- series' labels out of a plpgsql array variable (kept expanded, and flattened again for each
-- slice). The statement below does the lookups, the ids and the insert at once; a duplicate
-- of a series not stored yet, or a series another writer is creating at the same moment,
-- surfaces as a conflict of the
-- exclusion constraint, and only then does version 24's function (renamed) run, which sorts
-- those cases out as before. In a transaction stricter than READ COMMITTED that function
-- runs from the start (its series go into the indexed catalog there).

ALTER FUNCTION _prom_catalog.create_series(int[], int[], int[]) RENAME TO create_series_resolving_conflicts;
COMMENT ON FUNCTION _prom_catalog.create_series_resolving_conflicts(int[], int[], int[]) IS
    'create_series as of version 24: called by create_series when another writer creates some of the same series at the same moment, when a series is given twice, and in transactions stricter than READ COMMITTED';

CREATE FUNCTION _prom_catalog.create_series(p_metric_ids int[], p_label_counts int[], p_labels int[])
RETURNS TABLE (idx int, series_id bigint)
LANGUAGE plpgsql AS $fn$
DECLARE
    v_created_labels int[];
    v_wrote_fresh boolean;
    v_i int[];
    v_id bigint[];
    v_inserted boolean;
    -- The series inserted that hold no label of this transaction, to check after the insert.
    v_check_i int[];
    v_check_id bigint[];
    v_check_stop bigint[];
    v_check_n int[];
    v_moved_i int[];
    v_moved_id bigint[];
BEGIN
    IF p_metric_ids IS NULL OR p_label_counts IS NULL OR p_labels IS NULL
       OR cardinality(p_metric_ids) IS DISTINCT FROM cardinality(p_label_counts)
       OR array_position(p_metric_ids, NULL) IS NOT NULL
       OR array_position(p_label_counts, NULL) IS NOT NULL
       OR array_position(p_labels, NULL) IS NOT NULL THEN
        RAISE EXCEPTION 'create_series takes one metric id and one label count per series and no NULL';
    END IF;
    -- The check after the insert (below) needs a snapshot newer than the insert's, which
    -- only READ COMMITTED gives a statement.
    IF current_setting('transaction_isolation') <> 'read committed' THEN
        RETURN QUERY SELECT * FROM _prom_catalog.create_series_resolving_conflicts(p_metric_ids, p_label_counts, p_labels);
        RETURN;
    END IF;
    v_created_labels := _prom_catalog.labels_created_here();
    v_wrote_fresh := coalesce(current_setting('promscale.fresh_series_written', true), '') = 'on';
    BEGIN
        -- p_labels is a plpgsql variable, held expanded: a slice of it would flatten the
        -- whole array again for each series. The CTE keeps one flat copy.
        WITH flat AS MATERIALIZED (
            SELECT p_labels AS a
        ), req AS MATERIALIZED (
            SELECT (t.ord - 1)::int AS i, t.metric_id, t.n, t.stop, flat.a[t.stop - t.n + 1 : t.stop] AS labels
              FROM flat
             CROSS JOIN (SELECT u.metric_id, u.n, u.ord, sum(u.n) OVER (ORDER BY u.ord) AS stop
                           FROM unnest(p_metric_ids, p_label_counts) WITH ORDINALITY AS u(metric_id, n, ord)) t
        ), f AS MATERIALIZED (
            -- Series found keep their id; the others draw one, in the order of the arguments
            -- (rows reach nextval in that order).
            SELECT h.i, h.metric_id, h.n, h.stop, h.labels, h.fresh, h.found,
                   COALESCE(h.found, _prom_catalog.first_series_id(h.metric_id) + nextval('_prom_catalog.series_number')) AS id
              FROM (SELECT g.i, g.metric_id, g.n, g.stop, g.labels, g.fresh,
                           -- A series holding a label this transaction created cannot exist
                           -- elsewhere (migration 22): at most among this transaction's own
                           -- fresh series. Any other is looked up in the indexed catalog
                           -- first, where most series are, then among the fresh ones (one
                           -- statement, one snapshot: a series moving between the two is seen
                           -- in one).
                           CASE WHEN NOT g.fresh
                                THEN COALESCE((SELECT s.id FROM ONLY _prom_catalog.series s WHERE s.labels = g.labels),
                                              (SELECT s.id FROM ONLY _prom_catalog.series_fresh s WHERE s.labels = g.labels))
                                WHEN v_wrote_fresh
                                THEN (SELECT s.id FROM ONLY _prom_catalog.series_fresh s WHERE s.labels = g.labels)
                           END AS found
                      FROM (SELECT r.i, r.metric_id, r.n, r.stop, r.labels,
                                   coalesce(cardinality(v_created_labels) > 0 AND r.labels && v_created_labels, false) AS fresh
                              FROM req r) g
                     ORDER BY g.i
                    OFFSET 0) h
        ), inserted AS (
            -- Unindexed, under series_fresh's labels exclusion constraint (migration 24), in
            -- one order, so that writers wait on each other in one order: by the hash of the
            -- labels first, since comparing arrays copies them.
            INSERT INTO _prom_catalog.series_fresh (id, metric_id, labels)
            SELECT f.id, f.metric_id, f.labels FROM f WHERE f.found IS NULL
             ORDER BY hash_array(f.labels), f.labels
        )
        SELECT array_agg(f.i), array_agg(f.id), bool_or(f.found IS NULL),
               array_agg(f.i) FILTER (WHERE f.found IS NULL AND NOT f.fresh),
               array_agg(f.id) FILTER (WHERE f.found IS NULL AND NOT f.fresh),
               array_agg(f.stop) FILTER (WHERE f.found IS NULL AND NOT f.fresh),
               array_agg(f.n) FILTER (WHERE f.found IS NULL AND NOT f.fresh)
          INTO v_i, v_id, v_inserted, v_check_i, v_check_id, v_check_stop, v_check_n
          FROM f;
    EXCEPTION WHEN exclusion_violation OR deadlock_detected THEN
        -- Another writer created some of them at the same moment, or a series was given
        -- twice: this call's work is undone (the ids it drew are not reused), and version
        -- 24's function inserts what is still missing, answers the rest with the other
        -- writer's ids, and refuses duplicates.
        RETURN QUERY SELECT * FROM _prom_catalog.create_series_resolving_conflicts(p_metric_ids, p_label_counts, p_labels);
        RETURN;
    END;
    IF v_inserted THEN
        -- Later calls in this transaction look among the fresh series for fresh ones too.
        PERFORM set_config('promscale.fresh_series_written', 'on', true);
    END IF;
    IF v_check_i IS NOT NULL THEN
        -- The exclusion constraint covers series_fresh only. A series another writer created
        -- after this call's lookup may have been moved into the indexed catalog by the merge
        -- pass before this insert: then this call's copy is the second one. This statement's
        -- snapshot is newer than both, so it sees such a series in the indexed catalog: the
        -- copy goes, and the other writer's id is the answer (as in migration 24).
        WITH flat AS MATERIALIZED (
            SELECT p_labels AS a
        )
        SELECT array_agg(c.i), array_agg(s.id) INTO v_moved_i, v_moved_id
          FROM flat
         CROSS JOIN unnest(v_check_i, v_check_stop, v_check_n) AS c(i, stop, n)
          JOIN ONLY _prom_catalog.series s ON s.labels = flat.a[c.stop - c.n + 1 : c.stop];
        IF v_moved_i IS NOT NULL THEN
            WITH flat AS MATERIALIZED (
                SELECT p_labels AS a
            )
            DELETE FROM ONLY _prom_catalog.series_fresh f
             USING flat, unnest(v_check_i, v_check_id, v_check_stop, v_check_n) AS c(i, id, stop, n)
             WHERE c.i = ANY (v_moved_i)
               AND f.labels = flat.a[c.stop - c.n + 1 : c.stop] AND f.id = c.id;
        END IF;
    END IF;
    RETURN QUERY
    SELECT r.i, COALESCE(m.id, r.id)
      FROM unnest(v_i, v_id) AS r(i, id)
      LEFT JOIN unnest(v_moved_i, v_moved_id) AS m(i, id) ON m.i = r.i;
END
$fn$;
ALTER FUNCTION _prom_catalog.create_series(int[], int[], int[])
    SET plan_cache_mode = force_custom_plan SET random_page_cost = 1.1 SET enable_bitmapscan = off
    SET enable_seqscan = off SET jit = off;

-- As migration 24's, but with a plain INSERT: ON CONFLICT DO NOTHING against an exclusion
-- constraint is a speculative insertion (insert, check, confirm), about a fifth of the move's
-- time. A conflict (a series indexed under another id, which the way fresh series are made
-- rules out) undoes the plain insert, and the conflict-tolerant one runs instead, as before.
CREATE OR REPLACE FUNCTION _prom_catalog.index_fresh_series() RETURNS bigint
LANGUAGE plpgsql AS $fn$
DECLARE
    v_moved bigint;
    v_left bigint;
BEGIN
    BEGIN
        WITH moved AS (
            INSERT INTO _prom_catalog.series (id, metric_id, labels)
            SELECT f.id, f.metric_id, f.labels FROM ONLY _prom_catalog.series_fresh f ORDER BY f.id
            RETURNING series.id
        )
        DELETE FROM ONLY _prom_catalog.series_fresh f USING moved m WHERE f.id = m.id;
        GET DIAGNOSTICS v_moved = ROW_COUNT;
        RETURN v_moved;
    EXCEPTION WHEN exclusion_violation OR unique_violation OR deadlock_detected THEN
        NULL;
    END;
    WITH moved AS (
        INSERT INTO _prom_catalog.series (id, metric_id, labels)
        SELECT f.id, f.metric_id, f.labels FROM ONLY _prom_catalog.series_fresh f ORDER BY f.id
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

-- As migration 20's (the lookup of the series limits, by names), but each series' names and
-- values are no longer sliced out of the text arrays: a slice of an array of variable-length
-- elements walks it from its start, so that a call took time quadratic in its size (250 ms
-- for 2,000 series of 5 labels, 40 ms now). The label pairs are unnested once, each distinct
-- pair looked up once, and matched to their series by place.
CREATE OR REPLACE FUNCTION _prom_catalog.existing_series(p_metrics text[], p_counts int[], p_keys text[], p_values text[])
RETURNS TABLE (idx int, metric_id int, series_id bigint)
LANGUAGE sql STABLE AS $fn$
    WITH sm AS MATERIALIZED (
        SELECT s.i, s.n, s.stop, m.id AS metric_id
          FROM (SELECT (t.ord - 1)::int AS i, t.metric, t.n, sum(t.n) OVER (ORDER BY t.ord) AS stop
                  FROM unnest(p_metrics, p_counts) WITH ORDINALITY AS t(metric, n, ord)) s
          LEFT JOIN _prom_catalog.metric m ON m.metric_name = s.metric
    ), pair AS MATERIALIZED (
        SELECT d.key, d.value, l.id
          FROM (SELECT DISTINCT u.key, u.value FROM unnest(p_keys, p_values) AS u(key, value)) d
          LEFT JOIN _prom_catalog.label l
            ON l.key = d.key AND _prom_catalog.label_value_key(l.value) = _prom_catalog.label_value_key(d.value)
           AND l.value = d.value
    ), elem AS (
        SELECT sm.i, p.pos, pr.id AS label_id
          FROM sm
         CROSS JOIN LATERAL generate_series(sm.stop - sm.n + 1, sm.stop) AS o(ord)
          JOIN unnest(p_keys, p_values) WITH ORDINALITY AS k(key, value, ord) ON k.ord = o.ord
          LEFT JOIN pair pr ON pr.key = k.key AND pr.value = k.value
          LEFT JOIN _prom_catalog.label_key_position p ON p.metric_id = sm.metric_id AND p.key = k.key
    ), per_series AS (
        SELECT e.i, bool_and(e.pos IS NOT NULL AND e.label_id IS NOT NULL) AS complete, max(e.pos) AS width
          FROM elem e GROUP BY e.i
    ), arrays AS (
        -- The dense labels array of each series whose metric, positions and labels all exist:
        -- label ids by position, 0 for a key it lacks.
        SELECT ps.i, array_agg(coalesce(e.label_id, 0) ORDER BY g.g) AS labels
          FROM per_series ps
         CROSS JOIN LATERAL generate_series(1, ps.width) AS g(g)
          LEFT JOIN elem e ON e.i = ps.i AND e.pos = g.g
         WHERE ps.complete
         GROUP BY ps.i
    )
    SELECT sm.i, sm.metric_id,
           (SELECT se.id FROM _prom_catalog.series se WHERE se.labels = a.labels)
      FROM sm LEFT JOIN arrays a ON a.i = sm.i
     ORDER BY sm.i
$fn$;
-- CREATE OR REPLACE resets the function's settings: as in migration 20.
ALTER FUNCTION _prom_catalog.existing_series(text[], int[], text[], text[])
    SET plan_cache_mode = force_custom_plan SET random_page_cost = 1.1 SET enable_bitmapscan = off
    SET enable_seqscan = off SET jit = off;
