-- Schema version 26: create_series tells the series holding a label of its transaction by
-- a hash join, where version 25 tested each series' labels for overlap with those labels.
--
-- An overlap test (int[] && int[]) compares every pair of elements: for a request of 2,000
-- series of 5 labels in a transaction that created 1,100 labels, 11 million comparisons,
-- about 40 ms of a call that takes 15 ms without them (timed alone, one session). That is
-- the request of a rollout whose series are not all fresh: a new pod's series arrive in
-- every remote-write shard's request at once, so a request creates some labels and finds
-- the others created by another shard (docs/storage.md, "Series creation"). In the
-- remote-write bench's rounds of new series most requests are of that kind. The set of series
-- holding such a label is now built once, by joining the series' labels with the created
-- labels, and looked up by hash; nothing else changes (same arguments, results and rows).

-- As migration 25's, with the series holding a label of this transaction found by a join.
CREATE OR REPLACE FUNCTION _prom_catalog.create_series(p_metric_ids int[], p_label_counts int[], p_labels int[])
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
        ), fresh AS MATERIALIZED (
            -- The series holding a label this transaction created: the series' labels
            -- joined once with those labels, by hash (migration 26).
            SELECT DISTINCT r.i
              FROM req r
             CROSS JOIN LATERAL unnest(r.labels) AS x(id)
             WHERE cardinality(v_created_labels) > 0
               AND x.id IN (SELECT unnest(v_created_labels))
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
                                   r.i IN (SELECT fresh.i FROM fresh) AS fresh
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

