-- Schema version 31: series_fresh keeps each series once by a unique btree over the 64-bit
-- hash of its labels, instead of a hash exclusion constraint over the labels
-- (docs/series-catalog.md, "A unique hash for the fresh series").
--
-- Every new series is one entry of that index, written on the request path. A hash index
-- inserts under an exclusive lock of its metapage, and an exclusion constraint then scans for
-- the entry it has just inserted, creating a tuple slot for every row: in rounds of new
-- series of the remote-write bench, the two took a quarter of PostgreSQL's time. A unique
-- btree checks while it inserts and locks one leaf page at a time, and an entry of a 64-bit
-- key is 16 bytes, where one holding the labels too would be 60 or more (and a btree entry
-- holds at most about 2.7 kB once compressed: the longest labels arrays, of metrics with
-- hundreds of label names, could fail to fit).
--
-- The hash is hash_array_extended(labels, 0), which hash partitioning relies on too. A series
-- is still identified by its labels: every lookup compares them after the hash. Two series of
-- different labels and one hash cannot both be fresh: the second is refused (its request is
-- answered 503, to retry) until the merge pass has moved the first into series_row, whose
-- exclusion constraint compares labels, or, once its labels are at or below the recent label
-- floor, create_series_resolving_conflicts_27 writes it into series_row itself (both may be
-- in one request, whose transaction never commits the first). series_fresh holds the series
-- created since the last merge pass (a minute by default) and those of labels above the
-- floor: with a million of them, a new series meets one of its hash about once in 18 million
-- million.
--
-- The index serves a lookup only through its expression, so every function that looks a
-- series up among the fresh ones does so by hash and labels, and those that named series_row
-- with series_fresh included look up each table on its own. A conflict is now a
-- unique_violation: the functions catch it beside exclusion_violation (series_row keeps its
-- exclusion constraint).

-- The index is built and the constraint dropped under the table's exclusive lock, taken first
-- (not a share lock raised later, which could deadlock with a writer): writers of new series
-- and readers of series wait for the migration, and it waits at most 5 s for them (it is
-- retried later).
SET LOCAL lock_timeout = '5s';
LOCK TABLE _prom_catalog.series_fresh IN ACCESS EXCLUSIVE MODE;
SET LOCAL lock_timeout = DEFAULT;
DO $do$
BEGIN
    CREATE UNIQUE INDEX series_fresh_labels_hash ON _prom_catalog.series_fresh ((hash_array_extended(labels, 0)));
EXCEPTION WHEN unique_violation THEN
    RAISE EXCEPTION 'two series in _prom_catalog.series_fresh have labels of one 64-bit hash'
        USING HINT = 'Stop the connectors, run CALL prom_api.execute_maintenance(); (it moves the fresh series into _prom_catalog.series_row), then start them again.';
END
$do$;
ALTER TABLE _prom_catalog.series_fresh DROP CONSTRAINT series_fresh_labels;
ALTER INDEX _prom_catalog.series_fresh_labels_hash RENAME TO series_fresh_labels;

-- As migration 27's, looking series up among the fresh ones through the new index.
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
                                THEN COALESCE((SELECT s.id FROM ONLY _prom_catalog.series_row s WHERE s.labels = g.labels),
                                              (SELECT s.id FROM ONLY _prom_catalog.series_fresh s WHERE hash_array_extended(s.labels, 0) = hash_array_extended(g.labels, 0) AND s.labels = g.labels),
                                              -- Packed (migration 27): only a series none of
                                              -- whose labels is newer than every packed one.
                                              CASE WHEN (SELECT h.label_id FROM _prom_catalog.packed_label_high h) > 0
                                                   AND (SELECT max(x.id) FROM unnest(g.labels) AS x(id)) <= (SELECT h.label_id FROM _prom_catalog.packed_label_high h)
                                                  THEN _prom_catalog.packed_series_id(g.labels) END)
                                WHEN v_wrote_fresh
                                THEN (SELECT s.id FROM ONLY _prom_catalog.series_fresh s WHERE hash_array_extended(s.labels, 0) = hash_array_extended(g.labels, 0) AND s.labels = g.labels)
                           END AS found
                      FROM (SELECT r.i, r.metric_id, r.n, r.stop, r.labels,
                                   r.i IN (SELECT fresh.i FROM fresh) AS fresh
                              FROM req r) g
                     ORDER BY g.i
                    OFFSET 0) h
        ), inserted AS (
            -- Unindexed, under series_fresh's unique hash index (migration 31), in
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
    EXCEPTION WHEN unique_violation OR exclusion_violation OR deadlock_detected THEN
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
        -- The unique hash index covers series_fresh only. A series another writer created
        -- after this call's lookup may have been moved into the indexed catalog by the merge
        -- pass before this insert: then this call's copy is the second one. This statement's
        -- snapshot is newer than both, so it sees such a series in the indexed catalog: the
        -- copy goes, and the other writer's id is the answer (as in migration 24).
        WITH flat AS MATERIALIZED (
            SELECT p_labels AS a
        )
        SELECT array_agg(o.i), array_agg(o.id) INTO v_moved_i, v_moved_id
          FROM (SELECT c.i, COALESCE((SELECT s.id FROM ONLY _prom_catalog.series_row s WHERE s.labels = w.labels),
                                     CASE WHEN (SELECT h.label_id FROM _prom_catalog.packed_label_high h) > 0
                                       AND (SELECT max(x.id) FROM unnest(w.labels) AS x(id)) <= (SELECT h.label_id FROM _prom_catalog.packed_label_high h)
                                      THEN _prom_catalog.packed_series_id(w.labels) END) AS id
                  FROM flat
                 CROSS JOIN unnest(v_check_i, v_check_stop, v_check_n) AS c(i, stop, n)
                 CROSS JOIN LATERAL (SELECT flat.a[c.stop - c.n + 1 : c.stop] AS labels) w
                OFFSET 0) o
         WHERE o.id IS NOT NULL;
        IF v_moved_i IS NOT NULL THEN
            WITH flat AS MATERIALIZED (
                SELECT p_labels AS a
            )
            DELETE FROM ONLY _prom_catalog.series_fresh f
             USING flat, unnest(v_check_i, v_check_id, v_check_stop, v_check_n) AS c(i, id, stop, n)
             WHERE c.i = ANY (v_moved_i)
               AND hash_array_extended(f.labels, 0) = hash_array_extended(flat.a[c.stop - c.n + 1 : c.stop], 0)
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

-- As migration 27's (renamed by migration 28), looking series up among the fresh ones through
-- the new index, the lookups that named series_row with its child included split in two.
CREATE OR REPLACE FUNCTION _prom_catalog.create_series_resolving_conflicts_27(p_metric_ids int[], p_label_counts int[], p_labels int[])
RETURNS TABLE (idx int, series_id bigint)
LANGUAGE plpgsql AS $fn$
DECLARE
    v_created_labels int[];
    v_wrote_fresh boolean;
    v_found _prom_catalog.new_series[];
    v_fresh _prom_catalog.new_series[];
    v_rest _prom_catalog.new_series[];
    v_inserted _prom_catalog.new_series[];
    v_moved_i int[];
    v_moved_id bigint[];
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
                            THEN COALESCE((SELECT s.id FROM ONLY _prom_catalog.series_row s WHERE s.labels = r.labels),
                                          (SELECT s.id FROM ONLY _prom_catalog.series_fresh s WHERE hash_array_extended(s.labels, 0) = hash_array_extended(r.labels, 0) AND s.labels = r.labels),
                                          CASE WHEN (SELECT h.label_id FROM _prom_catalog.packed_label_high h) > 0
                                                   AND (SELECT max(x.id) FROM unnest(r.labels) AS x(id)) <= (SELECT h.label_id FROM _prom_catalog.packed_label_high h)
                                                  THEN _prom_catalog.packed_series_id(r.labels) END)
                            WHEN v_wrote_fresh
                            THEN (SELECT s.id FROM ONLY _prom_catalog.series_fresh s WHERE hash_array_extended(s.labels, 0) = hash_array_extended(r.labels, 0) AND s.labels = r.labels)
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
    -- Each series once here too: the check after the insert (below) could otherwise find one
    -- copy moved and answer the other with an id it deletes.
    IF EXISTS (SELECT 1 FROM unnest(v_rest) w GROUP BY w.labels HAVING count(*) > 1) THEN
        RAISE EXCEPTION 'create_series takes each series once';
    END IF;

    -- That check needs a snapshot newer than the insert, which only READ COMMITTED gives a
    -- statement. In a transaction of a stricter level the others go into the indexed catalog,
    -- whose constraint sees every copy, as before migration 24.
    IF current_setting('transaction_isolation') <> 'read committed' THEN
        BEGIN
            INSERT INTO _prom_catalog.series_row (id, metric_id, labels)
            SELECT w.id, w.metric_id, w.labels FROM unnest(v_rest) w ORDER BY hash_array(w.labels), w.labels;
            RETURN QUERY SELECT w.i, w.id FROM unnest(v_rest) w;
        EXCEPTION WHEN unique_violation OR exclusion_violation OR deadlock_detected THEN
            RETURN QUERY
            WITH created AS (
                INSERT INTO _prom_catalog.series_row (id, metric_id, labels)
                SELECT w.id, w.metric_id, w.labels FROM unnest(v_rest) w ORDER BY hash_array(w.labels), w.labels
                ON CONFLICT DO NOTHING
                RETURNING series_row.id
            )
            SELECT o.i, o.id
              FROM (SELECT w.i, COALESCE(c.id, (SELECT s.id FROM ONLY _prom_catalog.series_row s WHERE s.labels = w.labels),
                                     (SELECT s.id FROM ONLY _prom_catalog.series_fresh s
                                       WHERE hash_array_extended(s.labels, 0) = hash_array_extended(w.labels, 0) AND s.labels = w.labels),
                                     CASE WHEN (SELECT h.label_id FROM _prom_catalog.packed_label_high h) > 0
                                                   AND (SELECT max(x.id) FROM unnest(w.labels) AS x(id)) <= (SELECT h.label_id FROM _prom_catalog.packed_label_high h)
                                                  THEN _prom_catalog.packed_series_id(w.labels) END) AS id
                      FROM unnest(v_rest) w LEFT JOIN created c ON c.id = w.id OFFSET 0) o
             -- A series of a writer this snapshot does not see is not answered: the caller
             -- fails the request, and its retry finds it.
             WHERE o.id IS NOT NULL;
        END;
        RETURN;
    END IF;

    -- The others are unindexed too (migration 24), under series_fresh's unique hash
    -- index: two writers creating the same series at once meet there, as they met at
    -- the indexed catalog's, and the second answers with the first's id. Inserted in one
    -- order, so that writers wait on each other in one order: by the hash of the labels
    -- first, since comparing arrays copies them (in migration 22, sorting by labels alone
    -- took 14% of the database's time in a rollout).
    PERFORM set_config('promscale.fresh_series_written', 'on', true);
    BEGIN
        INSERT INTO _prom_catalog.series_fresh (id, metric_id, labels)
        SELECT w.id, w.metric_id, w.labels FROM unnest(v_rest) w ORDER BY hash_array(w.labels), w.labels;
        v_inserted := v_rest;
    EXCEPTION WHEN unique_violation OR exclusion_violation OR deadlock_detected THEN
        -- Another writer created some of them at the same moment: insert what is still
        -- missing, and answer the rest with the other writer's ids.
        WITH created AS (
            INSERT INTO _prom_catalog.series_fresh (id, metric_id, labels)
            SELECT w.id, w.metric_id, w.labels FROM unnest(v_rest) w ORDER BY hash_array(w.labels), w.labels
            ON CONFLICT DO NOTHING
            RETURNING series_fresh.id
        )
        SELECT array_agg(w) INTO v_inserted FROM unnest(v_rest) w WHERE w.id IN (SELECT c.id FROM created c);
        RETURN QUERY
        SELECT o.i, o.found
          FROM (SELECT w.i, COALESCE((SELECT s.id FROM ONLY _prom_catalog.series_row s WHERE s.labels = w.labels),
                                  (SELECT s.id FROM ONLY _prom_catalog.series_fresh s
                                    WHERE hash_array_extended(s.labels, 0) = hash_array_extended(w.labels, 0) AND s.labels = w.labels),
                                  CASE WHEN (SELECT h.label_id FROM _prom_catalog.packed_label_high h) > 0
                                                   AND (SELECT max(x.id) FROM unnest(w.labels) AS x(id)) <= (SELECT h.label_id FROM _prom_catalog.packed_label_high h)
                                                  THEN _prom_catalog.packed_series_id(w.labels) END) AS found
                  FROM unnest(v_rest) w
                 WHERE w.id NOT IN (SELECT x.id FROM unnest(v_inserted) x) OFFSET 0) o
         WHERE o.found IS NOT NULL;
        -- A series neither inserted nor found holds the hash of a fresh series of other labels
        -- (migration 31), perhaps one of this very call. If none of its labels is above the
        -- recent label floor, it goes into series_row, whose exclusion constraint compares
        -- labels: a series of such labels may be there (the floor only rises). A recent one is
        -- left unanswered (the request is retried) until the floor has passed it.
        RETURN QUERY
        WITH left_out AS MATERIALIZED (
            SELECT w.i, w.id, w.metric_id, w.labels
              FROM unnest(v_rest) w
             WHERE w.id NOT IN (SELECT x.id FROM unnest(v_inserted) x)
               AND (SELECT max(x.id) FROM unnest(w.labels) AS x(id)) <= (SELECT f.label_id FROM _prom_catalog.recent_label_floor f)
               AND COALESCE((SELECT s.id FROM ONLY _prom_catalog.series_row s WHERE s.labels = w.labels),
                            (SELECT s.id FROM ONLY _prom_catalog.series_fresh s
                              WHERE hash_array_extended(s.labels, 0) = hash_array_extended(w.labels, 0) AND s.labels = w.labels),
                            CASE WHEN (SELECT h.label_id FROM _prom_catalog.packed_label_high h) > 0
                                      AND (SELECT max(x.id) FROM unnest(w.labels) AS x(id)) <= (SELECT h.label_id FROM _prom_catalog.packed_label_high h)
                                 THEN _prom_catalog.packed_series_id(w.labels) END) IS NULL
        ), created AS (
            INSERT INTO _prom_catalog.series_row (id, metric_id, labels)
            SELECT l.id, l.metric_id, l.labels FROM left_out l ORDER BY hash_array(l.labels), l.labels
            ON CONFLICT DO NOTHING
            RETURNING series_row.id
        )
        SELECT l.i, l.id FROM left_out l WHERE l.id IN (SELECT c.id FROM created c);
    END;
    -- The unique hash index covers series_fresh only. A series another writer created
    -- after this call's lookup may have been moved into the indexed catalog by the merge pass
    -- before this insert: then this call's copy is the second one. This statement's snapshot
    -- is newer than both (each statement of this function takes its own), so it sees such a
    -- series in the indexed catalog: the copy goes, and the other writer's id is the answer.
    -- A move that had not committed when the insert ran made the insert wait for it (the
    -- unique index waits for the deletion of the row it would conflict with).
    WITH moved AS MATERIALIZED (
        SELECT o.i, o.ours, o.theirs
          FROM (SELECT w.i, w.id AS ours,
                       COALESCE((SELECT s.id FROM ONLY _prom_catalog.series_row s WHERE s.labels = w.labels),
                                CASE WHEN (SELECT h.label_id FROM _prom_catalog.packed_label_high h) > 0
                                                   AND (SELECT max(x.id) FROM unnest(w.labels) AS x(id)) <= (SELECT h.label_id FROM _prom_catalog.packed_label_high h)
                                                  THEN _prom_catalog.packed_series_id(w.labels) END) AS theirs
                  FROM unnest(v_inserted) w OFFSET 0) o
         WHERE o.theirs IS NOT NULL
    ), dropped AS (
        DELETE FROM ONLY _prom_catalog.series_fresh f USING moved m WHERE f.id = m.ours
    )
    SELECT array_agg(m.i), array_agg(m.theirs) INTO v_moved_i, v_moved_id FROM moved m;
    RETURN QUERY
    SELECT w.i, COALESCE(m.id, w.id)
      FROM unnest(v_inserted) w
      LEFT JOIN unnest(v_moved_i, v_moved_id) AS m(i, id) ON m.i = w.i;
END
$fn$;
ALTER FUNCTION _prom_catalog.create_series_resolving_conflicts_27(int[], int[], int[])
    SET plan_cache_mode = force_custom_plan SET random_page_cost = 1.1 SET enable_bitmapscan = off
    SET enable_seqscan = off SET jit = off;

-- As migration 27's, the lookup that named series_row with its child included split in two.
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
           COALESCE((SELECT se.id FROM ONLY _prom_catalog.series_row se WHERE se.labels = a.labels),
                    (SELECT se.id FROM ONLY _prom_catalog.series_fresh se
                      WHERE hash_array_extended(se.labels, 0) = hash_array_extended(a.labels, 0) AND se.labels = a.labels),
                    CASE WHEN (SELECT h.label_id FROM _prom_catalog.packed_label_high h) > 0
                                                   AND (SELECT max(x.id) FROM unnest(a.labels) AS x(id)) <= (SELECT h.label_id FROM _prom_catalog.packed_label_high h)
                                                  THEN _prom_catalog.packed_series_id(a.labels) END)
      FROM sm LEFT JOIN arrays a ON a.i = sm.i
     ORDER BY sm.i
$fn$;
ALTER FUNCTION _prom_catalog.existing_series(text[], int[], text[], text[])
    SET plan_cache_mode = force_custom_plan SET random_page_cost = 1.1 SET enable_bitmapscan = off
    SET enable_seqscan = off SET jit = off;

-- As migration 28's (with migration 29's generic plan), looking series up among the fresh
-- ones through the new index.
CREATE OR REPLACE FUNCTION _prom_catalog.create_recent_series(p_metric_ids int[], p_label_counts int[], p_labels int[],
                                                   p_recent int[])
RETURNS TABLE (series_ids bigint[], label_floor int)
LANGUAGE plpgsql AS $fn$
DECLARE
    v_floor int;
    v_ids bigint[];
    v_conflict boolean := false;
BEGIN
    IF p_metric_ids IS NULL OR p_label_counts IS NULL OR p_labels IS NULL OR p_recent IS NULL
       OR cardinality(p_metric_ids) IS DISTINCT FROM cardinality(p_label_counts)
       OR cardinality(p_metric_ids) IS DISTINCT FROM cardinality(p_recent)
       OR array_position(p_metric_ids, NULL) IS NOT NULL
       OR array_position(p_label_counts, NULL) IS NOT NULL
       OR array_position(p_labels, NULL) IS NOT NULL
       OR array_position(p_recent, NULL) IS NOT NULL
       OR 0 > ANY (p_label_counts)
       OR (SELECT coalesce(sum(n), 0) FROM unnest(p_label_counts) AS c(n)) <> cardinality(p_labels) THEN
        RAISE EXCEPTION 'create_recent_series takes one metric id, one label count and one recent label per series, labels as many as counted, and no NULL';
    END IF;
    -- A series another writer created at the same moment is read back by a later statement,
    -- which sees it only at READ COMMITTED: at a stricter level every series is left to
    -- create_series.
    IF current_setting('transaction_isolation') <> 'read committed' THEN
        RETURN QUERY SELECT array_fill(NULL::bigint, ARRAY[cardinality(p_metric_ids)]), NULL::int;
        RETURN;
    END IF;
    -- Held to the end of the transaction: the floor cannot rise, so no series of a label above
    -- it can be moved into the indexed catalog, before this transaction's series are there
    -- for every other writer to meet.
    PERFORM pg_advisory_xact_lock_shared(7355608, 5);
    SELECT f.label_id INTO STRICT v_floor FROM _prom_catalog.recent_label_floor f;

    BEGIN
        -- p_labels is a plpgsql variable, held expanded: a slice of it would flatten the
        -- whole array again for each series. The CTE keeps one flat copy. Ids are drawn in
        -- the order of the arguments (rows reach nextval in that order).
        WITH flat AS MATERIALIZED (
            SELECT p_labels AS a
        ), r AS MATERIALIZED (
            SELECT t.ord, t.metric_id, s.labels,
                   CASE WHEN t.recent > v_floor AND t.recent = ANY (s.labels)
                        THEN _prom_catalog.first_series_id(t.metric_id) + nextval('_prom_catalog.series_number') END AS id
              FROM flat
             CROSS JOIN (SELECT u.metric_id, u.n, u.recent, u.ord, sum(u.n) OVER (ORDER BY u.ord) AS stop
                           FROM unnest(p_metric_ids, p_label_counts, p_recent) WITH ORDINALITY AS u(metric_id, n, recent, ord)) t
             CROSS JOIN LATERAL (SELECT flat.a[t.stop - t.n + 1 : t.stop] AS labels) s
        ), inserted AS (
            -- In one order, so that writers wait on each other in one order (as create_series).
            INSERT INTO _prom_catalog.series_fresh (id, metric_id, labels)
            SELECT r.id, r.metric_id, r.labels FROM r WHERE r.id IS NOT NULL ORDER BY hash_array(r.labels)
        )
        SELECT array_agg(r.id ORDER BY r.ord) INTO v_ids FROM r;
    EXCEPTION WHEN unique_violation OR exclusion_violation OR deadlock_detected THEN
        -- Another writer created some of them at the same moment, or a series was given
        -- twice: this insert is undone (the ids it drew are not reused), and the one below
        -- inserts what is still missing.
        v_conflict := true;
    END;
    IF v_conflict THEN
        WITH flat AS MATERIALIZED (
            SELECT p_labels AS a
        ), r AS MATERIALIZED (
            SELECT t.ord, t.metric_id, s.labels,
                   CASE WHEN t.recent > v_floor AND t.recent = ANY (s.labels)
                        THEN _prom_catalog.first_series_id(t.metric_id) + nextval('_prom_catalog.series_number') END AS id
              FROM flat
             CROSS JOIN (SELECT u.metric_id, u.n, u.recent, u.ord, sum(u.n) OVER (ORDER BY u.ord) AS stop
                           FROM unnest(p_metric_ids, p_label_counts, p_recent) WITH ORDINALITY AS u(metric_id, n, recent, ord)) t
             CROSS JOIN LATERAL (SELECT flat.a[t.stop - t.n + 1 : t.stop] AS labels) s
        )
        INSERT INTO _prom_catalog.series_fresh (id, metric_id, labels)
        SELECT r.id, r.metric_id, r.labels FROM r WHERE r.id IS NOT NULL ORDER BY hash_array(r.labels)
        ON CONFLICT DO NOTHING;
        -- Every recent one is in series_fresh now, this call's copy or the other writer's
        -- (the insert waited for it to commit): a new statement's snapshot sees which.
        WITH flat AS MATERIALIZED (
            SELECT p_labels AS a
        )
        SELECT array_agg(CASE WHEN t.recent > v_floor AND t.recent = ANY (s.labels)
                              THEN (SELECT f.id FROM ONLY _prom_catalog.series_fresh f WHERE hash_array_extended(f.labels, 0) = hash_array_extended(s.labels, 0) AND f.labels = s.labels) END
                         ORDER BY t.ord)
          INTO v_ids
          FROM flat
         CROSS JOIN (SELECT u.n, u.recent, u.ord, sum(u.n) OVER (ORDER BY u.ord) AS stop
                       FROM unnest(p_label_counts, p_recent) WITH ORDINALITY AS u(n, recent, ord)) t
         CROSS JOIN LATERAL (SELECT flat.a[t.stop - t.n + 1 : t.stop] AS labels) s;
    END IF;
    RETURN QUERY SELECT coalesce(v_ids, '{}'), v_floor;
END
$fn$;
ALTER FUNCTION _prom_catalog.create_recent_series(int[], int[], int[], int[])
    SET plan_cache_mode = force_generic_plan SET enable_bitmapscan = off SET enable_seqscan = off SET jit = off;
