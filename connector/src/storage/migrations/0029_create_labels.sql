-- Schema version 29: labels are created by a leaner function, and the two functions of a
-- round of new series keep their plans (docs/storage.md, "Series creation").
--
-- Since version 28 the connector creates labels in a transaction of their own, and every
-- remote-write shard wants a new pod's labels at once: the shards wait for the one that
-- creates them, so the call's time is idle time of the others. get_or_create_label_ids (a
-- SQL function, planned again at every call since it is not inlined) wrapped
-- get_or_create_label_ids_created, which plans its statements at every call, collects the
-- ids it created and records them in a setting for create_fresh_series, which connectors
-- of version 28 no longer call. Timed alone (100 new labels a call, one session), 1.3 to
-- 1.6 ms a call became 0.8 to 1.0; 100 labels found, 0.5 to 0.6 ms became 0.3 to 0.4.
--
-- Plans made once and kept (force_generic_plan) are what migration 5 warns about: made while
-- a table is small, a plan can scan it whole once it has grown. Here no plan depends on a
-- table's size: the labels are looked up by a LATERAL subquery (which makes the arrays the
-- outer side of the join, OFFSET 0 keeping the subquery from being merged into the join),
-- and scans other than by index are off, so each label is one probe of the labels' unique
-- index whatever the catalog holds; create_recent_series reads no table but by index
-- (series_fresh's, in its conflict fallback) or its one-row floor.

-- Creates the labels among (p_keys[i], p_values[i]) that do not exist yet, and answers each
-- pair's label id with its place among those given (from 0). Labels found draw no id from
-- the (int4) label sequence: existing pairs are filtered out before the insert, and a pair
-- another writer is creating at the same moment waits for it (ON CONFLICT) and is read by
-- the next statement, whose snapshot sees it.
CREATE FUNCTION _prom_catalog.create_labels(p_keys text[], p_values text[])
RETURNS TABLE (idx int, label_id int)
LANGUAGE plpgsql AS $fn$
BEGIN
    IF cardinality(p_keys) IS DISTINCT FROM cardinality(p_values)
       OR array_position(p_keys, NULL) IS NOT NULL
       OR array_position(p_values, NULL) IS NOT NULL THEN
        RAISE EXCEPTION 'create_labels takes one value per key, and no NULL';
    END IF;
    INSERT INTO _prom_catalog.label (key, value)
    SELECT DISTINCT t.k, t.v
      FROM unnest(p_keys, p_values) AS t(k, v)
      LEFT JOIN LATERAL (SELECT l.id FROM _prom_catalog.label l
                          WHERE l.key = t.k
                            AND _prom_catalog.label_value_key(l.value) = _prom_catalog.label_value_key(t.v)
                            AND l.value = t.v
                         OFFSET 0) f ON true
     WHERE f.id IS NULL
     -- In one order, so that writers creating the same labels wait on each other in one order.
     ORDER BY 1, 2
    ON CONFLICT (key, _prom_catalog.label_value_key(value)) DO NOTHING;
    RETURN QUERY
    SELECT (t.ord - 1)::int, f.id
      FROM unnest(p_keys, p_values) WITH ORDINALITY AS t(k, v, ord)
     CROSS JOIN LATERAL (SELECT l.id FROM _prom_catalog.label l
                          WHERE l.key = t.k
                            AND _prom_catalog.label_value_key(l.value) = _prom_catalog.label_value_key(t.v)
                            AND l.value = t.v
                         OFFSET 0) f;
END
$fn$;
ALTER FUNCTION _prom_catalog.create_labels(text[], text[])
    SET plan_cache_mode = force_generic_plan SET enable_seqscan = off SET enable_bitmapscan = off SET jit = off;

ALTER FUNCTION _prom_catalog.create_recent_series(int[], int[], int[], int[])
    SET plan_cache_mode = force_generic_plan;
