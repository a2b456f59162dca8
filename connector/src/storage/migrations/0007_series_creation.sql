-- Schema version 7: series created from label ids the connector resolved.
--
-- get_or_create_series_ids (versions 1 to 6) looked every label of every new series up in
-- SQL, with joins, sorts and aggregates per label: about 60 µs per new series, which made a
-- round of new series (a Deployment rollout) five times slower than Prometheus. Metric ids,
-- label ids and label positions never change once created, so the connector now caches
-- them and asks PostgreSQL only for what it has not seen yet, in three steps that each take
-- arrays: get_or_create_label_positions (metrics and their label keys),
-- get_or_create_label_ids (label pairs), and create_series (the dense label arrays the
-- connector built; the same arrays as before, so existing series keep their ids).
-- get_or_create_series_ids is dropped: a connector of an earlier version still running
-- during a rolling upgrade answers 503 to a request with new series, and Prometheus sends
-- it again (to a new connector, eventually).

-- The metric id and column position of each (metric name, label key) pair, creating the
-- metrics, label keys and positions that do not exist yet. Pair i (counting from 0) is
-- p_metrics[i + 1], p_keys[i + 1].
CREATE FUNCTION _prom_catalog.get_or_create_label_positions(p_metrics text[], p_keys text[])
RETURNS TABLE (idx int, metric_id int, pos int)
LANGUAGE plpgsql AS $fn$
#variable_conflict use_column
DECLARE
    v_name text;
    v_key text;
    v_metric_id int;
    v_metric_ids int[];
    v_new_metric_ids int[];
    v_new_keys text[];
BEGIN
    FOR v_name IN SELECT DISTINCT n FROM unnest(p_metrics) n ORDER BY n LOOP
        PERFORM _prom_catalog.get_or_create_metric(v_name);
    END LOOP;
    SELECT array_agg(m.id ORDER BY u.ord) INTO v_metric_ids
      FROM unnest(p_metrics) WITH ORDINALITY AS u(name, ord)
      JOIN _prom_catalog.metric m ON m.metric_name = u.name;

    -- As in get_or_create_series_ids: label keys first, then each metric under its row lock,
    -- which orders concurrent position assignment and view changes.
    SELECT array_agg(n.m ORDER BY n.m, n.k), array_agg(n.k ORDER BY n.m, n.k)
      INTO v_new_metric_ids, v_new_keys
      FROM (SELECT DISTINCT t.m, t.k FROM unnest(v_metric_ids, p_keys) AS t(m, k)
             WHERE NOT EXISTS (SELECT 1 FROM _prom_catalog.label_key_position p
                                WHERE p.metric_id = t.m AND p.key = t.k)) n;
    IF v_new_keys IS NOT NULL THEN
        FOR v_key IN SELECT DISTINCT k FROM unnest(v_new_keys) k ORDER BY 1 LOOP
            PERFORM _prom_catalog.get_or_create_label_key(v_key);
        END LOOP;
        FOR v_metric_id IN SELECT DISTINCT m FROM unnest(v_new_metric_ids) m ORDER BY 1 LOOP
            PERFORM 1 FROM _prom_catalog.metric WHERE id = v_metric_id FOR NO KEY UPDATE;
            FOR v_key IN SELECT n.k FROM unnest(v_new_metric_ids, v_new_keys) AS n(m, k) WHERE n.m = v_metric_id ORDER BY 1 LOOP
                INSERT INTO _prom_catalog.label_key_position (metric_id, key, pos)
                SELECT v_metric_id, v_key, coalesce(max(p.pos), 0) + 1
                  FROM _prom_catalog.label_key_position p WHERE p.metric_id = v_metric_id
                ON CONFLICT (metric_id, key) DO NOTHING;
            END LOOP;
            PERFORM _prom_catalog.refresh_metric_view(v_metric_id);
        END LOOP;
    END IF;

    RETURN QUERY
    SELECT (t.ord - 1)::int, t.m, p.pos
      FROM unnest(v_metric_ids, p_keys) WITH ORDINALITY AS t(m, k, ord)
      JOIN _prom_catalog.label_key_position p ON p.metric_id = t.m AND p.key = t.k;
END
$fn$;

-- The id of each label (p_keys[i + 1], p_values[i + 1]), creating those that do not exist.
CREATE FUNCTION _prom_catalog.get_or_create_label_ids(p_keys text[], p_values text[])
RETURNS TABLE (idx int, label_id int)
LANGUAGE plpgsql AS $fn$
BEGIN
    -- Existing labels are filtered out first: a conflicting row would still draw an id from
    -- the (int4) label sequence.
    INSERT INTO _prom_catalog.label (key, value)
    SELECT DISTINCT k, v FROM unnest(p_keys, p_values) AS t(k, v)
     WHERE NOT EXISTS (SELECT 1 FROM _prom_catalog.label l
                        WHERE l.key = t.k AND _prom_catalog.label_value_key(l.value) = _prom_catalog.label_value_key(t.v)
                          AND l.value = t.v)
    ORDER BY 1, 2
    ON CONFLICT (key, _prom_catalog.label_value_key(value)) DO NOTHING;

    RETURN QUERY
    SELECT (t.ord - 1)::int, l.id
      FROM unnest(p_keys, p_values) WITH ORDINALITY AS t(k, v, ord)
      JOIN _prom_catalog.label l ON l.key = t.k
                                AND _prom_catalog.label_value_key(l.value) = _prom_catalog.label_value_key(t.v)
                                AND l.value = t.v;
END
$fn$;

-- Series are unique by their labels array through a hash index (an exclusion constraint)
-- instead of a btree: a quarter of the size (about 37 bytes per series instead of 134), and
-- cheaper to insert into and to check, since a btree compares arrays element by element
-- at each of its levels. ON CONFLICT then takes no conflict target (it cannot name an
-- exclusion constraint).
ALTER TABLE _prom_catalog.series ADD CONSTRAINT series_labels_unique EXCLUDE USING hash (labels WITH =);
ALTER TABLE _prom_catalog.series DROP CONSTRAINT series_labels_id_key;
DROP FUNCTION _prom_catalog.get_or_create_series_ids(text[], int[], text[], text[]);

CREATE TYPE _prom_catalog.new_series AS (i int, id bigint, metric_id int, labels int[]);

-- The id of each series, creating those that do not exist. Series i (counting from 0) is
-- of metric p_metric_ids[i + 1] and its labels array (label ids by position, 0 for a key
-- it lacks, up to its last key) is the next p_label_counts[i + 1] entries of p_labels.
-- Callers send each series once, in labels order, so that concurrent creators of
-- overlapping batches wait on each other in one order. An id is drawn for each series not
-- found (the sequence has room for 2^40 series in all: a lookup must not use one up), so that
-- what the insert returns is told apart by id alone. A series that existed, or that another
-- writer created first (its drawn id is then lost), is looked up by a second statement,
-- which sees what committed since the first.
CREATE FUNCTION _prom_catalog.create_series(p_metric_ids int[], p_label_counts int[], p_labels int[])
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

    RETURN QUERY
    WITH created AS (
        INSERT INTO _prom_catalog.series (id, metric_id, labels)
        SELECT w.id, w.metric_id, w.labels FROM unnest(v_wanted) w WHERE w.id IS NOT NULL ORDER BY w.i
        ON CONFLICT DO NOTHING
        RETURNING series.id
    )
    SELECT w.i, w.id FROM unnest(v_wanted) w WHERE w.id IN (SELECT c.id FROM created c);
    GET DIAGNOSTICS v_created = ROW_COUNT;

    IF v_created < cardinality(v_wanted) THEN
        RETURN QUERY
        SELECT w.i, s.id FROM unnest(v_wanted) w JOIN _prom_catalog.series s ON s.labels = w.labels
         WHERE s.id IS DISTINCT FROM w.id;
    END IF;
END
$fn$;

-- As for get_or_create_series_ids (migration 6): look series up by their labels' index,
-- never through the GIN index, whatever the statistics say.
ALTER FUNCTION _prom_catalog.create_series(int[], int[], int[])
    SET plan_cache_mode = force_custom_plan SET random_page_cost = 1.1 SET enable_bitmapscan = off;
ALTER FUNCTION _prom_catalog.get_or_create_label_ids(text[], text[])
    SET plan_cache_mode = force_custom_plan SET random_page_cost = 1.1 SET enable_bitmapscan = off;
ALTER FUNCTION _prom_catalog.get_or_create_label_positions(text[], text[])
    SET plan_cache_mode = force_custom_plan SET random_page_cost = 1.1;

-- The GIN index of series labels takes new entries into its pending list (fast update) and
-- merges them into its tree when the list passes gin_pending_list_limit (4 MB by default).
-- The list's pages are freed but stay in the index: 4 MB is about 170 bytes per series for
-- a catalog of 24,000 series where the merged entries take 66. A 256 kB list bounds that,
-- and the merges it triggers stay short (a few milliseconds for the request that does one).
ALTER INDEX _prom_catalog.series_labels_gin SET (gin_pending_list_limit = 256);
