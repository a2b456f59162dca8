-- Schema version 24: every new series is written unindexed into _prom_catalog.series_fresh,
-- not only those holding a label of their own transaction (migration 22), and that table's
-- labels hash index becomes an exclusion constraint, which keeps each series once.
--
-- Prometheus gives a series to a remote-write shard by its reference modulo the shard count,
-- so the series of a new target (a rollout's new pod or instance) reach the connector in
-- every shard's request at once. The first transaction to create the target's labels makes
-- its own series fresh; the others wait for it to commit (the label's unique index), find the
-- labels, and so created their series in the indexed catalog: a lookup, the heap and three
-- indexes (primary key, labels hash exclusion constraint, GIN), 15 to 25 µs a series, on
-- the request path. With the remote-write bench's senders sharding as Prometheus does, three
-- quarters of a rollout's series went that way, and a round of new series ran at 0.38 to 0.51
-- times Prometheus' receiver (2026-12-02). Now such a series, once looked up and not found,
-- costs a heap tuple, one index entry and a probe of the indexed catalog after the insert;
-- the merge pass indexes it with the others. Two writers creating the same series at the same
-- moment (another connector, a resharded Prometheus) meet at the exclusion constraint, as
-- they met at the indexed catalog's, and the loser answers with the winner's id; the probe
-- after the insert catches the copy the merge pass moved out of its reach (READ COMMITTED
-- only: at stricter levels these series go to the indexed catalog as before).

ALTER INDEX _prom_catalog.series_fresh_labels RENAME TO series_fresh_labels_index;
ALTER TABLE _prom_catalog.series_fresh
    ADD CONSTRAINT series_fresh_labels EXCLUDE USING hash (labels WITH =);
DROP INDEX _prom_catalog.series_fresh_labels_index;

-- As migration 22's, but the series that are not fresh are written into series_fresh too.
CREATE OR REPLACE FUNCTION _prom_catalog.create_series(p_metric_ids int[], p_label_counts int[], p_labels int[])
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
            INSERT INTO _prom_catalog.series (id, metric_id, labels)
            SELECT w.id, w.metric_id, w.labels FROM unnest(v_rest) w ORDER BY hash_array(w.labels), w.labels;
            RETURN QUERY SELECT w.i, w.id FROM unnest(v_rest) w;
        EXCEPTION WHEN exclusion_violation OR deadlock_detected THEN
            RETURN QUERY
            WITH created AS (
                INSERT INTO _prom_catalog.series (id, metric_id, labels)
                SELECT w.id, w.metric_id, w.labels FROM unnest(v_rest) w ORDER BY hash_array(w.labels), w.labels
                ON CONFLICT DO NOTHING
                RETURNING series.id
            )
            SELECT o.i, o.id
              FROM (SELECT w.i, COALESCE(c.id, (SELECT s.id FROM _prom_catalog.series s WHERE s.labels = w.labels)) AS id
                      FROM unnest(v_rest) w LEFT JOIN created c ON c.id = w.id OFFSET 0) o
             -- A series of a writer this snapshot does not see is not answered: the caller
             -- fails the request, and its retry finds it.
             WHERE o.id IS NOT NULL;
        END;
        RETURN;
    END IF;

    -- The others are unindexed too (migration 24), under series_fresh's labels exclusion
    -- constraint: two writers creating the same series at once meet there, as they met at
    -- the indexed catalog's, and the second answers with the first's id. Inserted in one
    -- order, so that writers wait on each other in one order: by the hash of the labels
    -- first, since comparing arrays copies them (in migration 22, sorting by labels alone
    -- took 14% of the database's time in a rollout).
    PERFORM set_config('promscale.fresh_series_written', 'on', true);
    BEGIN
        INSERT INTO _prom_catalog.series_fresh (id, metric_id, labels)
        SELECT w.id, w.metric_id, w.labels FROM unnest(v_rest) w ORDER BY hash_array(w.labels), w.labels;
        v_inserted := v_rest;
    EXCEPTION WHEN exclusion_violation OR deadlock_detected THEN
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
          FROM (SELECT w.i, (SELECT s.id FROM _prom_catalog.series s WHERE s.labels = w.labels) AS found
                  FROM unnest(v_rest) w
                 WHERE w.id NOT IN (SELECT x.id FROM unnest(v_inserted) x) OFFSET 0) o
         WHERE o.found IS NOT NULL;
    END;
    -- The exclusion constraint covers series_fresh only. A series another writer created
    -- after this call's lookup may have been moved into the indexed catalog by the merge pass
    -- before this insert: then this call's copy is the second one. This statement's snapshot
    -- is newer than both (each statement of this function takes its own), so it sees such a
    -- series in the indexed catalog: the copy goes, and the other writer's id is the answer.
    -- A move that had not committed when the insert ran made the insert wait for it (the
    -- exclusion constraint waits for the deletion of the row it would conflict with).
    WITH moved AS MATERIALIZED (
        SELECT w.i, w.id AS ours, s.id AS theirs
          FROM unnest(v_inserted) w JOIN ONLY _prom_catalog.series s ON s.labels = w.labels
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
-- CREATE OR REPLACE resets the function's settings: as in migration 22.
ALTER FUNCTION _prom_catalog.create_series(int[], int[], int[])
    SET plan_cache_mode = force_custom_plan SET random_page_cost = 1.1 SET enable_bitmapscan = off
    SET enable_seqscan = off SET jit = off;

-- Moves the fresh series into _prom_catalog.series and its indexes, in id order (since
-- migration 24 nothing else inserts there, and two moves at once, from two connectors or
-- prom_api.execute_maintenance, wait on each other in that order; ids are a cheaper sort key
-- than labels); returns how many. A lookup sees each series in one of the two tables: the
-- move inserts and deletes in one statement, and a lookup is one statement. A series that cannot move (its labels
-- already indexed under another id, which the way fresh series are made rules out) stays
-- fresh, with a warning, and the others move.
CREATE OR REPLACE FUNCTION _prom_catalog.index_fresh_series() RETURNS bigint
LANGUAGE plpgsql AS $fn$
DECLARE
    v_moved bigint;
    v_left bigint;
BEGIN
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
-- CREATE OR REPLACE resets the function's settings: as in migration 22.
ALTER FUNCTION _prom_catalog.index_fresh_series() SET enable_bitmapscan = off;
