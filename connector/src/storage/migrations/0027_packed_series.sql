-- Schema version 27: series that stopped receiving samples are packed into batches, a row
-- holding about 1,000 series of a metric (docs/series-catalog.md).
--
-- A series costs about 220 bytes as a row of the catalog (heap, primary key, labels hash
-- exclusion constraint, GIN): series that live 30 minutes then cost 1.9 bytes a sample in the
-- catalog alone, beside 1.5 in chunks. Kubernetes churns series (pods replaced every few
-- hours), so most of a metric's series are such dead ones. Packed, a series costs about 20
-- bytes (an array of (id, labels) compressed by TOAST, a GIN entry per distinct label and
-- batch). Live series stay rows, where the request path looks them up in microseconds.
--
-- The table of rows becomes _prom_catalog.series_row (still the parent of series_fresh), and
-- _prom_catalog.series becomes a view over rows and batches, so that every SQL reader sees
-- every series. The views that named the table are rebuilt on the view; the functions that
-- write rows or look series up by labels are restated below. Series ids, and with them
-- chunks, head rows, exemplars and histograms, do not change.
--
-- A series not found among the rows is looked for in the batches only when none of its
-- labels is newer than every label of a batch (packed_label_high): the series of a new pod
-- or instance hold new label ids, so a rollout never probes the batches. A packed series that
-- writes again is found in its batch and keeps its id (it stays packed).

ALTER TABLE _prom_catalog.series RENAME TO series_row;

-- One series of a batch.
CREATE TYPE _prom_catalog.series_entry AS (id bigint, labels int[]);

CREATE TABLE _prom_catalog.series_batch (
    metric_id int NOT NULL,
    -- The batch's lowest and highest series ids.
    first_id  bigint NOT NULL,
    last_id   bigint NOT NULL,
    -- In id order.
    series    _prom_catalog.series_entry[] NOT NULL,
    -- The distinct label ids of the batch's series, sorted (0, a key a series lacks, included).
    label_ids int[] NOT NULL,
    PRIMARY KEY (metric_id, first_id)
);
-- TOAST compresses a batch once its row passes 2 kB (about 25 series; an entry takes about 80
-- bytes raw, 12 to 18 compressed). A metric's smaller batches stay raw until later packings
-- merge them into one that passes it.
-- Batches are written whole and rarely: no pending list, whose entries would stay until a
-- vacuum and cost a scan of the list on every lookup.
CREATE INDEX series_batch_labels ON _prom_catalog.series_batch USING gin (label_ids) WITH (fastupdate = off);

-- The highest label id held by any batch; 0 while there is none. Only raised, in the
-- transaction that packs.
CREATE TABLE _prom_catalog.packed_label_high (label_id int NOT NULL);
INSERT INTO _prom_catalog.packed_label_high VALUES (0);

CREATE VIEW _prom_catalog.series AS
SELECT r.id, r.metric_id, r.labels FROM _prom_catalog.series_row r
UNION ALL
SELECT e.id, b.metric_id, e.labels
  FROM _prom_catalog.series_batch b CROSS JOIN LATERAL unnest(b.series) AS e;

-- The id of the packed series of exactly these labels, NULL if none. Through GIN, which
-- only bitmap scans read: the series functions that call it turn bitmap scans off.
CREATE FUNCTION _prom_catalog.packed_series_id(p_labels int[]) RETURNS bigint
LANGUAGE sql STABLE STRICT AS $fn$
    SELECT e.id
      FROM _prom_catalog.series_batch b CROSS JOIN LATERAL unnest(b.series) AS e
     WHERE b.label_ids @> p_labels AND e.labels = p_labels
     LIMIT 1
$fn$;
ALTER FUNCTION _prom_catalog.packed_series_id(int[]) SET enable_bitmapscan = on SET enable_seqscan = off SET jit = off;

-- Packs the series of p_metric_id that hold no sample after p_cutoff into batches of
-- p_batch_size, with the metric's batches smaller than that; returns how many series it
-- packed. Run by maintenance after it seals a chunk of the metric, which passes the series
-- its head rows hold (p_head_series: the head's blocks are decoded in Rust).
--
-- A series counts as inactive when it is not in p_head_series, when no series chunk, chunk
-- block (by its series range) or native histogram of it ends after the cutoff, and when its
-- id is at most the highest series id holding a compacted sample in the metric's last
-- chunks (a series newer than those, created since the head was read, is left alone).
-- Packing a series that is still alive (one silent since the cutoff) loses nothing:
-- writers that cached its id go on writing under it, and the others find it in its batch.
-- Rows and batches change in one transaction, so that a lookup (one statement) sees each
-- series in one place.
CREATE FUNCTION _prom_catalog.pack_inactive_series(p_metric_id int, p_cutoff timestamptz, p_batch_size int,
                                                   p_head_series bigint[])
RETURNS bigint
LANGUAGE plpgsql AS $fn$
DECLARE
    v_first bigint := _prom_catalog.first_series_id(p_metric_id);
    v_next bigint := _prom_catalog.first_series_id(p_metric_id + 1);
    v_bound bigint;
    v_active int8multirange := '{}';
    v_chunk record;
    v_ranges int8multirange;
    v_max bigint;
    v_histograms boolean;
    v_entries _prom_catalog.series_entry[];
    v_high int;
    v_packed bigint;
BEGIN
    IF p_metric_id IS NULL OR p_cutoff IS NULL OR p_batch_size IS NULL OR p_batch_size < 1 OR p_head_series IS NULL THEN
        RAISE EXCEPTION 'pack_inactive_series takes a metric id, a cutoff, a batch size of at least 1 and the series of the head';
    END IF;
    -- The metric's chunks that end after the cutoff, and its last one.
    FOR v_chunk IN
        SELECT c.id, c.table_name FROM _prom_catalog.chunk c
         WHERE c.metric_id = p_metric_id
           AND (c.end_time > p_cutoff
                OR c.start_time = (SELECT max(l.start_time) FROM _prom_catalog.chunk l WHERE l.metric_id = p_metric_id))
    LOOP
        SELECT coalesce(range_agg(int8range(b.first_series, b.last_series, '[]')) FILTER (WHERE b.end_time > p_cutoff), '{}'),
               max(b.last_series)
          INTO v_ranges, v_max
          FROM _prom_catalog.chunk_block b WHERE b.chunk_id = v_chunk.id;
        v_active := v_active + v_ranges;
        v_bound := greatest(v_bound, v_max);
        IF v_chunk.table_name IS NOT NULL THEN
            EXECUTE format(
                'SELECT coalesce(range_agg(int8range(c.series_id, c.series_id, ''[]'')) FILTER (WHERE c.end_time > $1), ''{}''), '
                '       max(c.series_id) FROM _prom_chunks.%I c', v_chunk.table_name)
               INTO v_ranges, v_max USING p_cutoff;
            v_active := v_active + v_ranges;
            v_bound := greatest(v_bound, v_max);
        END IF;
    END LOOP;
    IF v_bound IS NULL THEN
        RETURN 0;
    END IF;
    -- The head's series, as ranges too: one binary search a row, however many there are.
    v_active := v_active + (SELECT coalesce(range_agg(int8range(h.id, h.id, '[]')), '{}')
                              FROM unnest(p_head_series) AS h(id));
    v_histograms := EXISTS (SELECT 1 FROM _prom_catalog.histogram h WHERE h.series_id >= v_first AND h.series_id < v_next)
                 OR EXISTS (SELECT 1 FROM _prom_catalog.histogram_chunk h WHERE h.series_id >= v_first AND h.series_id < v_next);
    WITH moved AS (
        DELETE FROM ONLY _prom_catalog.series_row r
         WHERE r.id >= v_first AND r.id <= v_bound
           AND NOT (r.id <@ v_active)
           AND NOT (v_histograms
                    AND (EXISTS (SELECT 1 FROM _prom_catalog.histogram h WHERE h.series_id = r.id AND h.time > p_cutoff)
                         OR EXISTS (SELECT 1 FROM _prom_catalog.histogram_chunk h
                                     WHERE h.series_id = r.id AND h.end_time > p_cutoff)))
        RETURNING r.id, r.labels
    )
    SELECT array_agg(ROW(m.id, m.labels)::_prom_catalog.series_entry) INTO v_entries FROM moved m;
    IF v_entries IS NULL THEN
        RETURN 0;
    END IF;
    v_packed := cardinality(v_entries);
    -- With the metric's small batches, into batches of p_batch_size in id order.
    WITH old AS (
        DELETE FROM _prom_catalog.series_batch b
         WHERE b.metric_id = p_metric_id AND cardinality(b.series) < p_batch_size
        RETURNING b.series
    )
    SELECT v_entries || coalesce(array_agg(e ORDER BY e.id), '{}') INTO v_entries
      FROM old CROSS JOIN LATERAL unnest(old.series) AS e;
    WITH numbered AS (
        SELECT e.id, e.labels, (row_number() OVER (ORDER BY e.id) - 1) / p_batch_size AS g
          FROM unnest(v_entries) AS e
    ), batch AS (
        SELECT n.g, min(n.id) AS first_id, max(n.id) AS last_id,
               array_agg(ROW(n.id, n.labels)::_prom_catalog.series_entry ORDER BY n.id) AS series
          FROM numbered n GROUP BY n.g
    ), labels AS (
        SELECT n.g, array_agg(DISTINCT x.id ORDER BY x.id) AS label_ids
          FROM numbered n CROSS JOIN LATERAL unnest(n.labels) AS x(id) GROUP BY n.g
    )
    INSERT INTO _prom_catalog.series_batch (metric_id, first_id, last_id, series, label_ids)
    SELECT p_metric_id, b.first_id, b.last_id, b.series, l.label_ids
      FROM batch b JOIN labels l ON l.g = b.g
     ORDER BY b.first_id;
    SELECT max(x.id) INTO v_high FROM unnest(v_entries) AS e CROSS JOIN LATERAL unnest(e.labels) AS x(id);
    UPDATE _prom_catalog.packed_label_high SET label_id = v_high WHERE label_id < v_high;
    RETURN v_packed;
END
$fn$;

-- The functions that write rows or look series up by labels, restated on series_row and the
-- batches. As migration 26's, with packed series looked up after the rows.
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
                                              (SELECT s.id FROM ONLY _prom_catalog.series_fresh s WHERE s.labels = g.labels),
                                              -- Packed (migration 27): only a series none of
                                              -- whose labels is newer than every packed one.
                                              CASE WHEN (SELECT h.label_id FROM _prom_catalog.packed_label_high h) > 0
                                                   AND (SELECT max(x.id) FROM unnest(g.labels) AS x(id)) <= (SELECT h.label_id FROM _prom_catalog.packed_label_high h)
                                                  THEN _prom_catalog.packed_series_id(g.labels) END)
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


-- As migration 24's, on series_row, with packed series looked up after the rows.
CREATE OR REPLACE FUNCTION _prom_catalog.create_series_resolving_conflicts(p_metric_ids int[], p_label_counts int[], p_labels int[])
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
                                          (SELECT s.id FROM ONLY _prom_catalog.series_fresh s WHERE s.labels = r.labels),
                                          CASE WHEN (SELECT h.label_id FROM _prom_catalog.packed_label_high h) > 0
                                                   AND (SELECT max(x.id) FROM unnest(r.labels) AS x(id)) <= (SELECT h.label_id FROM _prom_catalog.packed_label_high h)
                                                  THEN _prom_catalog.packed_series_id(r.labels) END)
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
            INSERT INTO _prom_catalog.series_row (id, metric_id, labels)
            SELECT w.id, w.metric_id, w.labels FROM unnest(v_rest) w ORDER BY hash_array(w.labels), w.labels;
            RETURN QUERY SELECT w.i, w.id FROM unnest(v_rest) w;
        EXCEPTION WHEN exclusion_violation OR deadlock_detected THEN
            RETURN QUERY
            WITH created AS (
                INSERT INTO _prom_catalog.series_row (id, metric_id, labels)
                SELECT w.id, w.metric_id, w.labels FROM unnest(v_rest) w ORDER BY hash_array(w.labels), w.labels
                ON CONFLICT DO NOTHING
                RETURNING series_row.id
            )
            SELECT o.i, o.id
              FROM (SELECT w.i, COALESCE(c.id, (SELECT s.id FROM _prom_catalog.series_row s WHERE s.labels = w.labels),
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
          FROM (SELECT w.i, COALESCE((SELECT s.id FROM _prom_catalog.series_row s WHERE s.labels = w.labels),
                                  CASE WHEN (SELECT h.label_id FROM _prom_catalog.packed_label_high h) > 0
                                                   AND (SELECT max(x.id) FROM unnest(w.labels) AS x(id)) <= (SELECT h.label_id FROM _prom_catalog.packed_label_high h)
                                                  THEN _prom_catalog.packed_series_id(w.labels) END) AS found
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
ALTER FUNCTION _prom_catalog.create_series_resolving_conflicts(int[], int[], int[])
    SET plan_cache_mode = force_custom_plan SET random_page_cost = 1.1 SET enable_bitmapscan = off
    SET enable_seqscan = off SET jit = off;

-- As migration 20's, with packed series looked up after the rows.
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
           COALESCE((SELECT se.id FROM _prom_catalog.series_row se WHERE se.labels = a.labels),
                    CASE WHEN (SELECT h.label_id FROM _prom_catalog.packed_label_high h) > 0
                                                   AND (SELECT max(x.id) FROM unnest(a.labels) AS x(id)) <= (SELECT h.label_id FROM _prom_catalog.packed_label_high h)
                                                  THEN _prom_catalog.packed_series_id(a.labels) END)
      FROM sm LEFT JOIN arrays a ON a.i = sm.i
     ORDER BY sm.i
$fn$;
ALTER FUNCTION _prom_catalog.existing_series(text[], int[], text[], text[])
    SET plan_cache_mode = force_custom_plan SET random_page_cost = 1.1 SET enable_bitmapscan = off
    SET enable_seqscan = off SET jit = off;

-- As migration 24's, into series_row.
CREATE OR REPLACE FUNCTION _prom_catalog.index_fresh_series() RETURNS bigint
LANGUAGE plpgsql AS $fn$
DECLARE
    v_moved bigint;
    v_left bigint;
BEGIN
    BEGIN
        WITH moved AS (
            INSERT INTO _prom_catalog.series_row (id, metric_id, labels)
            SELECT f.id, f.metric_id, f.labels FROM ONLY _prom_catalog.series_fresh f ORDER BY f.id
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
        SELECT f.id, f.metric_id, f.labels FROM ONLY _prom_catalog.series_fresh f ORDER BY f.id
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

-- As migration 21's, with the metric's series found by metric and id range in the view over
-- rows and batches (the batches by their primary key, the rows by theirs).
CREATE OR REPLACE FUNCTION _prom_catalog.refresh_metric_view(p_metric_id int) RETURNS void
LANGUAGE plpgsql AS $fn$
DECLARE
    v_table name;
    v_columns text;
    v_role name;
BEGIN
    SELECT table_name INTO STRICT v_table FROM _prom_catalog.metric WHERE id = p_metric_id;
    EXECUTE format(
        'CREATE OR REPLACE VIEW prom_data.%I WITH (security_barrier) AS '
        'SELECT DISTINCT ON (s.series_id, s.sample_time) s.sample_time AS time, s.sample_value AS value, s.series_id '
        'FROM (SELECT c.series_id, x.sample_time, x.sample_value, 0::bigint AS written '
        '        FROM _prom_compressed.%I c, LATERAL _prom_catalog.decode_block(c.data, c.exceptions) x '
        '      UNION ALL '
        '      SELECT x.series_id, x.sample_time, x.sample_value, b.id - (1::bigint << 62) '
        '        FROM _prom_catalog.chunk_block b, LATERAL _prom_catalog.decode_block(b.data, b.exceptions) x '
        '       WHERE b.chunk_id IN (SELECT ch.id FROM _prom_catalog.chunk ch WHERE ch.metric_id = %s) '
        '      UNION ALL '
        '      SELECT x.series_id, x.sample_time, x.sample_value, h.id '
        '        FROM _prom_catalog.head h, LATERAL _prom_catalog.head_samples(h.data, h.exceptions, '
        '             h.plain_series_ids, h.plain_times, h.plain_values) x WHERE h.metric_id = %s) s '
        'WHERE (SELECT _prom_catalog.tenant_scope(current_user)) IS NULL '
        '   OR s.series_id IN (SELECT v.id FROM _prom_catalog.visible_series v '
        '                       WHERE v.metric_id = %s AND v.id >= %s::int8 AND v.id < %s::int8) '
        'ORDER BY s.series_id, s.sample_time, s.written',
        v_table, v_table, p_metric_id, p_metric_id, p_metric_id,
        p_metric_id::int8 << 40, (p_metric_id::int8 + 1) << 40);
    SELECT coalesce(string_agg(
               format(', (SELECT l.value FROM _prom_catalog.label l WHERE l.id = s.labels[%s]) AS %I',
                      p.pos, k.value_column_name), '' ORDER BY p.pos), '')
      INTO v_columns
      FROM _prom_catalog.label_key_position p
      JOIN _prom_catalog.label_key k ON k.key = p.key
     WHERE p.metric_id = p_metric_id AND p.key <> '__name__';
    -- The series filter is written out here rather than read from visible_series: joined
    -- to that barrier view, the planner estimated one visible series and decoded the
    -- metric's samples again for each series a label filter kept (13 to 17 times slower
    -- for roles that are not confined). A barrier itself, so that a reader's conditions on
    -- label columns run after the filter.
    EXECUTE format(
        'CREATE OR REPLACE VIEW prom_metric.%I WITH (security_barrier) AS '
        'SELECT d.time, d.value, d.series_id, s.labels%s '
        'FROM prom_data.%I d JOIN _prom_catalog.series s '
        '  ON s.id = d.series_id AND s.metric_id = %s AND s.id >= %s::int8 AND s.id < %s::int8 '
        'WHERE (SELECT _prom_catalog.tenant_scope(current_user)) IS NULL '
        '   OR s.labels && (SELECT _prom_catalog.tenant_scope(current_user))',
        v_table, v_columns, v_table, p_metric_id, p_metric_id::int8 << 40, (p_metric_id::int8 + 1) << 40);
    FOR v_role IN
        SELECT r.rolname FROM _prom_catalog.tenant_access a JOIN pg_catalog.pg_roles r ON r.oid = a.role_oid
    LOOP
        EXECUTE format('GRANT SELECT ON prom_data.%I, prom_metric.%I TO %I', v_table, v_table, v_role);
    END LOOP;
END
$fn$;

-- The views that named the table now name the view (a view refers to a table by its oid, so
-- they followed the rename): each of ours is replaced by its own definition on the view,
-- keeping its options (security_barrier), its subqueries counting a metric's series by id
-- range told the metric too (the view's batches are found by metric, not by series id). The
-- metric views are rebuilt by refresh_metric_view. A view of someone else's is left reading
-- the rows, with a warning: it misses the packed series until it is rebuilt on the view.
-- Roles that could read the table can read the view.
DO $do$
DECLARE
    v_view record;
    v_def text;
    v_path text := current_setting('search_path');
    v_grantee text;
BEGIN
    -- Every name qualified in the definitions.
    PERFORM set_config('search_path', 'pg_catalog, pg_temp', true);
    FOR v_view IN
        SELECT DISTINCT c.oid::regclass AS name, c.reloptions, n.nspname, c.relkind
          FROM pg_catalog.pg_depend d
          JOIN pg_catalog.pg_rewrite w ON w.oid = d.objid
          JOIN pg_catalog.pg_class c ON c.oid = w.ev_class
          JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
         WHERE d.classid = 'pg_catalog.pg_rewrite'::regclass
           AND d.refobjid = '_prom_catalog.series_row'::regclass
           AND c.oid <> '_prom_catalog.series'::regclass
    LOOP
        IF v_view.nspname = 'prom_metric' AND v_view.relkind = 'v' THEN
            CONTINUE;
        END IF;
        IF v_view.nspname NOT IN ('prom_info', '_prom_catalog') OR v_view.relkind <> 'v' THEN
            RAISE WARNING '% reads _prom_catalog.series_row (the former table _prom_catalog.series), which holds the live series only since schema version 27: rebuild it on the view _prom_catalog.series to see every series', v_view.name;
            CONTINUE;
        END IF;
        v_def := replace(pg_catalog.pg_get_viewdef(v_view.name), '_prom_catalog.series_row', '_prom_catalog.series');
        v_def := regexp_replace(v_def, '\(s\.id >= _prom_catalog\.first_series_id\((\w+)\.id\)\)',
                                '(s.metric_id = \1.id) AND (s.id >= _prom_catalog.first_series_id(\1.id))', 'g');
        v_def := regexp_replace(v_def, '\(s\.id >= \(\((\w+)\.id\)::bigint << 40\)\)',
                                '(s.metric_id = \1.id) AND (s.id >= ((\1.id)::bigint << 40))', 'g');
        EXECUTE format('CREATE OR REPLACE VIEW %s AS %s', v_view.name, v_def);
        IF v_view.reloptions IS NOT NULL THEN
            EXECUTE format('ALTER VIEW %s SET (%s)', v_view.name, array_to_string(v_view.reloptions, ', '));
        END IF;
    END LOOP;
    FOR v_grantee IN
        SELECT DISTINCT CASE WHEN a.grantee = 0 THEN 'PUBLIC' ELSE quote_ident(r.rolname) END
          FROM pg_catalog.pg_class c
         CROSS JOIN LATERAL pg_catalog.aclexplode(c.relacl) a
          LEFT JOIN pg_catalog.pg_roles r ON r.oid = a.grantee
         WHERE c.oid = '_prom_catalog.series_row'::regclass AND a.grantee <> c.relowner AND a.privilege_type = 'SELECT'
    LOOP
        EXECUTE format('GRANT SELECT ON _prom_catalog.series TO %s', v_grantee);
    END LOOP;
    PERFORM set_config('search_path', v_path, true);
    PERFORM _prom_catalog.refresh_metric_view(m.id) FROM _prom_catalog.metric m ORDER BY m.id;
END
$do$;
