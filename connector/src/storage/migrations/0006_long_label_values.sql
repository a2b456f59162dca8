-- Schema version 6: label values of any length.
--
-- A btree index entry holds at most about 2.7 kB, so the unique index on label (key, value)
-- refused longer values (Prometheus accepts them), and with them the whole write request.
-- The index now holds a key derived from the value: the value itself up to 1000 bytes, else
-- the hex SHA-256 of its bytes padded to 1001 bytes (with a label name of up to 1024 bytes,
-- the connector's limit, an entry stays well within a btree page). The length tells the two
-- forms apart,
-- so a digest never equals a short value, and SHA-256 puts two long values with one key out
-- of reach. Lookups by value compare this key (served by the index), then the value itself.
-- The function is built from immutable functions only (decode(..., 'escape') of the text with
-- its backslashes, chr(92), doubled gives its bytes), so PostgreSQL inlines it: no call per
-- row. No string literal holds a backslash: the body reads the same whatever the session's
-- standard_conforming_strings.

CREATE OR REPLACE FUNCTION _prom_catalog.label_value_key(p_value text) RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT CASE WHEN octet_length(p_value) <= 1000 THEN p_value
                ELSE rpad(encode(sha256(decode(replace(p_value, chr(92), chr(92) || chr(92)), 'escape')), 'hex'), 1001, '#') END
$$;

ALTER TABLE _prom_catalog.label DROP CONSTRAINT label_key_value_id_key;
CREATE UNIQUE INDEX label_key_value_key ON _prom_catalog.label (key, _prom_catalog.label_value_key(value)) INCLUDE (id);

-- Series resolution, as in version 5 but for the new index; and costs that make the planner
-- look series and labels up by index once the catalog has grown, instead of hashing the
-- whole catalog for every batch (it did so up to hundreds of thousands of series: tens of
-- milliseconds per write request, growing with the catalog). Bitmap scans are off so that the
-- GIN index on series labels (for label matchers) is never used for array equality, which it
-- answers about a thousand times slower than the btree index, at a cost the planner
-- underestimates.
CREATE OR REPLACE FUNCTION _prom_catalog.get_or_create_series_ids(
    p_metrics text[], p_series_idx int[], p_keys text[], p_values text[])
RETURNS TABLE (idx int, series_id bigint)
LANGUAGE plpgsql AS $fn$
DECLARE
    v_name text;
    v_key text;
    v_metric_ids int[];
    v_metric_id int;
    v_new_metric_ids int[];
    v_new_keys text[];
    v_wanted _prom_catalog.series_labels[];
BEGIN
    FOR v_name IN SELECT DISTINCT n FROM unnest(p_metrics) n ORDER BY n LOOP
        PERFORM _prom_catalog.get_or_create_metric(v_name);
    END LOOP;
    SELECT array_agg(m.id ORDER BY u.ord) INTO v_metric_ids
      FROM unnest(p_metrics) WITH ORDINALITY AS u(name, ord)
      JOIN _prom_catalog.metric m ON m.metric_name = u.name;

    -- Label keys the metrics have never had: give each a column name, then a position.
    SELECT array_agg(n.metric_id ORDER BY n.metric_id, n.key), array_agg(n.key ORDER BY n.metric_id, n.key)
      INTO v_new_metric_ids, v_new_keys
      FROM (SELECT DISTINCT v_metric_ids[t.i + 1] AS metric_id, t.k AS key
              FROM unnest(p_series_idx, p_keys) AS t(i, k)
             WHERE NOT EXISTS (SELECT 1 FROM _prom_catalog.label_key_position p
                                WHERE p.metric_id = v_metric_ids[t.i + 1] AND p.key = t.k)) n;
    IF v_new_keys IS NOT NULL THEN
        FOR v_key IN SELECT DISTINCT k FROM unnest(v_new_keys) k ORDER BY 1 LOOP
            PERFORM _prom_catalog.get_or_create_label_key(v_key);
        END LOOP;
        FOR v_metric_id IN SELECT DISTINCT m FROM unnest(v_new_metric_ids) m ORDER BY 1 LOOP
            -- The metric row lock orders concurrent position assignment and view changes.
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

    INSERT INTO _prom_catalog.label (key, value)
    SELECT DISTINCT k, v FROM unnest(p_keys, p_values) AS t(k, v)
    ORDER BY 1, 2
    ON CONFLICT (key, _prom_catalog.label_value_key(value)) DO NOTHING;

    -- Each series' dense labels array, 0 where it lacks a key. Most series have every key
    -- up to their last one: their ids in position order are the array; only the others go
    -- through pos -> id maps. Linear in the batch size either way.
    WITH entries AS (
        SELECT t.i, p.pos, l.id
          FROM unnest(p_series_idx, p_keys, p_values) AS t(i, k, v)
          JOIN _prom_catalog.label l ON l.key = t.k AND _prom_catalog.label_value_key(l.value) = _prom_catalog.label_value_key(t.v)
                                     AND l.value = t.v
          JOIN _prom_catalog.label_key_position p ON p.metric_id = v_metric_ids[t.i + 1] AND p.key = t.k
    ), per_series AS (
        SELECT e.i, max(e.pos) AS last_pos, count(*) AS n, array_agg(e.id ORDER BY e.pos) AS ids,
               array_agg(e.pos ORDER BY e.pos) AS positions
          FROM entries e GROUP BY e.i
    )
    SELECT array_agg(ROW(ps.i, v_metric_ids[ps.i + 1],
               CASE WHEN ps.n = ps.last_pos THEN ps.ids
                    ELSE ARRAY(SELECT coalesce(ps.ids[array_position(ps.positions, g.pos)], 0)
                                 FROM generate_series(1, ps.last_pos) g(pos) ORDER BY g.pos)
               END)::_prom_catalog.series_labels)
      INTO v_wanted
      FROM per_series ps;

    INSERT INTO _prom_catalog.series (id, metric_id, labels)
    SELECT _prom_catalog.first_series_id(w.metric_id) + nextval('_prom_catalog.series_number'), w.metric_id, w.labels
      FROM unnest(v_wanted) w
     WHERE NOT EXISTS (SELECT 1 FROM _prom_catalog.series s WHERE s.labels = w.labels)
     ORDER BY w.labels
    ON CONFLICT (labels) DO NOTHING;

    RETURN QUERY
    SELECT w.i, s.id FROM unnest(v_wanted) w JOIN _prom_catalog.series s ON s.labels = w.labels;
END
$fn$;

ALTER FUNCTION _prom_catalog.get_or_create_series_ids(text[], int[], text[], text[])
    SET plan_cache_mode = force_custom_plan SET random_page_cost = 1.1 SET enable_bitmapscan = off;
