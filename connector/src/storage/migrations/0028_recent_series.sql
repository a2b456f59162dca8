-- Schema version 28: the series of new labels are created without lookups, by every writer
-- at once (docs/series-catalog.md, "Recent series").
--
-- In a rollout, a new pod's labels are wanted by every remote-write shard at once. Up to
-- version 27 one shard's transaction created them and the others waited for that whole
-- transaction (its series and samples too) at the labels' unique index; they then created
-- their series as series of known labels: looked up in the indexed catalog and among the
-- fresh series, and checked against the indexed catalog again after the insert. The
-- connector now creates labels in a transaction of their own, which commits at once, and a
-- series holding a label above recent_label_floor by one insert into series_fresh, with no
-- lookup and no check:
--
-- - index_fresh_series moves into the indexed catalog only series none of whose labels is
--   above the floor; raise_recent_label_floor raises it, before the move and in a
--   transaction of its own, only while no writer is creating series of recent labels
--   (they hold the floor's advisory lock (7355608, 5) shared, it takes it exclusive);
-- - so a series holding a label above the floor can be nowhere but in series_fresh, whose
--   labels exclusion constraint makes two writers creating it at once meet: the second
--   waits for the first and answers with its id.
--
-- A writer at a stricter isolation level than READ COMMITTED writes new series into the
-- indexed catalog directly: it is refused series of recent labels.

-- Labels above it are recent: no series holding one is in the indexed catalog or a batch.
-- Only raised, by raise_recent_label_floor (before each move into the indexed catalog).
CREATE TABLE _prom_catalog.recent_label_floor (label_id int NOT NULL);

-- Connectors of version 27 move every fresh series into the indexed catalog (their merge pass
-- and maintenance), and a move that began before this migration commits runs version 27's
-- code: it could move a series of a label above the floor. Their locks (MAINTENANCE_LOCK and
-- MERGE_LOCK, held for a merge pass or a maintenance run) are waited for, at most 5 s each
-- (the migration is retried later), and held to the commit, after which moves run this
-- version's code.
SET LOCAL lock_timeout = '5s';
SELECT pg_advisory_xact_lock(7355608, 3);
SELECT pg_advisory_xact_lock(7355608, 4);
SET LOCAL lock_timeout = DEFAULT;
INSERT INTO _prom_catalog.recent_label_floor SELECT coalesce(max(l.id), 0) FROM _prom_catalog.label l;

-- Creates series holding a recent label: arguments as create_series', plus for each series
-- one of its label ids that the caller takes for recent (its highest). Answers with one row:
-- the series' ids in the order given, NULL for a series whose label is not recent after all
-- (the floor rose since the caller read it) or not among its labels, which the caller
-- creates through create_series; and the floor, for the caller to tell recent labels by next
-- time. A series given twice gets one id.
CREATE FUNCTION _prom_catalog.create_recent_series(p_metric_ids int[], p_label_counts int[], p_labels int[],
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
    EXCEPTION WHEN exclusion_violation OR deadlock_detected THEN
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
                              THEN (SELECT f.id FROM ONLY _prom_catalog.series_fresh f WHERE f.labels = s.labels) END
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
    SET plan_cache_mode = force_custom_plan SET enable_bitmapscan = off SET enable_seqscan = off SET jit = off;

-- Raises the floor to the newest label, once no writer is creating series of recent labels:
-- it waits up to 200 ms for those writers' transactions to end (writers that come meanwhile
-- wait behind it), or leaves the floor as it is. Answers the floor and whether it had the
-- lock. Called in a transaction of its own before index_fresh_series, which moves the series
-- of the labels at or below it: the lock is held only while raising.
CREATE FUNCTION _prom_catalog.raise_recent_label_floor(OUT label_floor int, OUT locked boolean)
LANGUAGE plpgsql AS $fn$
DECLARE
    v_lock_timeout text := current_setting('lock_timeout');
BEGIN
    locked := true;
    PERFORM set_config('lock_timeout', '200ms', true);
    BEGIN
        PERFORM pg_advisory_xact_lock(7355608, 5);
        UPDATE _prom_catalog.recent_label_floor f SET label_id = h.high
          FROM (SELECT max(l.id) AS high FROM _prom_catalog.label l) h
         WHERE h.high > f.label_id;
    EXCEPTION WHEN lock_not_available THEN
        locked := false;
    END;
    PERFORM set_config('lock_timeout', v_lock_timeout, true);
    SELECT f.label_id INTO STRICT label_floor FROM _prom_catalog.recent_label_floor f;
END
$fn$;

-- As migration 27's, moving only the series none of whose labels is above the floor: the
-- others stay in series_fresh, where every writer finds them, until a later
-- raise_recent_label_floor.
CREATE OR REPLACE FUNCTION _prom_catalog.index_fresh_series() RETURNS bigint
LANGUAGE plpgsql AS $fn$
DECLARE
    v_floor int;
    v_moved bigint;
    v_left bigint;
BEGIN
    SELECT f.label_id INTO STRICT v_floor FROM _prom_catalog.recent_label_floor f;
    BEGIN
        WITH moved AS (
            INSERT INTO _prom_catalog.series_row (id, metric_id, labels)
            SELECT f.id, f.metric_id, f.labels FROM ONLY _prom_catalog.series_fresh f
             WHERE (SELECT max(x.id) FROM unnest(f.labels) AS x(id)) <= v_floor
             ORDER BY f.id
            RETURNING series_row.id
        )
        DELETE FROM ONLY _prom_catalog.series_fresh f USING moved m WHERE f.id = m.id;
        GET DIAGNOSTICS v_moved = ROW_COUNT;
        RETURN v_moved;
    EXCEPTION WHEN exclusion_violation OR unique_violation OR deadlock_detected THEN
        NULL;
    END;
    WITH moved AS (
        INSERT INTO _prom_catalog.series_row (id, metric_id, labels)
        SELECT f.id, f.metric_id, f.labels FROM ONLY _prom_catalog.series_fresh f
         WHERE (SELECT max(x.id) FROM unnest(f.labels) AS x(id)) <= v_floor
         ORDER BY f.id
        ON CONFLICT DO NOTHING
        RETURNING series_row.id
    )
    DELETE FROM ONLY _prom_catalog.series_fresh f USING moved m WHERE f.id = m.id;
    GET DIAGNOSTICS v_moved = ROW_COUNT;
    SELECT count(*) INTO v_left
      FROM ONLY _prom_catalog.series_fresh f
     WHERE EXISTS (SELECT 1 FROM ONLY _prom_catalog.series_row s WHERE s.labels = f.labels AND s.id <> f.id);
    IF v_left > 0 THEN
        RAISE WARNING '% fresh series have labels already indexed under another id; they stay in _prom_catalog.series_fresh', v_left;
    END IF;
    RETURN v_moved;
END
$fn$;
ALTER FUNCTION _prom_catalog.index_fresh_series() SET enable_bitmapscan = off;

-- As migration 22's, raising the floor first, in a transaction of its own.
CREATE OR REPLACE PROCEDURE prom_api.execute_maintenance()
LANGUAGE plpgsql AS $fn$
DECLARE
    v_metric_id int;
BEGIN
    PERFORM _prom_catalog.raise_recent_label_floor();
    COMMIT;
    PERFORM _prom_catalog.index_fresh_series();
    COMMIT;
    FOR v_metric_id IN SELECT id FROM _prom_catalog.metric ORDER BY id LOOP
        PERFORM _prom_catalog.maintain_metric(v_metric_id);
        COMMIT;
    END LOOP;
END
$fn$;

-- At a level stricter than READ COMMITTED, create_series_resolving_conflicts (version 27's,
-- now create_series_resolving_conflicts_27) writes new series into the indexed catalog
-- directly, where a series of a recent label must never be (and its snapshot could miss a
-- copy another writer has just created among the fresh series). Such a call is refused with
-- a serialization failure, to be retried at READ COMMITTED (as the connector's sessions run)
-- or after the next merge pass, once the floor has risen past its labels. Series of older
-- labels are created as before.
ALTER FUNCTION _prom_catalog.create_series_resolving_conflicts(int[], int[], int[])
    RENAME TO create_series_resolving_conflicts_27;

CREATE FUNCTION _prom_catalog.create_series_resolving_conflicts(p_metric_ids int[], p_label_counts int[], p_labels int[])
RETURNS TABLE (idx int, series_id bigint)
LANGUAGE plpgsql AS $fn$
BEGIN
    IF current_setting('transaction_isolation') <> 'read committed' THEN
        -- Held to the end of the transaction, as by the writers of recent series: the floor
        -- does not rise meanwhile.
        PERFORM pg_advisory_xact_lock_shared(7355608, 5);
        IF EXISTS (SELECT 1 FROM unnest(p_labels) AS x(id), _prom_catalog.recent_label_floor f
                    WHERE x.id > f.label_id) THEN
            RAISE EXCEPTION 'series of labels created since the last merge pass cannot be created at isolation level %', current_setting('transaction_isolation')
                USING ERRCODE = 'serialization_failure',
                      HINT = 'Create them at READ COMMITTED, or retry after the next merge pass.';
        END IF;
    END IF;
    RETURN QUERY SELECT * FROM _prom_catalog.create_series_resolving_conflicts_27(p_metric_ids, p_label_counts, p_labels);
END
$fn$;
