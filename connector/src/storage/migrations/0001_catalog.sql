-- The normalized Promscale schema: a catalog of metrics, labels and series, one samples
-- table per metric, and the views SQL users query.
--
-- Schemas:
--   _prom_catalog  internal catalog and the functions the connector calls
--   prom_data      one samples table per metric: (time, value, series_id), each a
--                  partition of _prom_catalog.samples, itself partitioned by time
--   _prom_chunks   the time chunks of the metric tables
--   prom_metric    one view per metric, with a text column per label key
--   prom_info      overview views: metric, label

CREATE SCHEMA IF NOT EXISTS prom_data;
CREATE SCHEMA IF NOT EXISTS prom_metric;
CREATE SCHEMA IF NOT EXISTS prom_info;
CREATE SCHEMA IF NOT EXISTS _prom_chunks;

CREATE TABLE _prom_catalog.metric (
    id          serial PRIMARY KEY,
    metric_name text NOT NULL UNIQUE,
    -- Name of the table in prom_data and of the view in prom_metric: the metric name when it
    -- is a valid PostgreSQL identifier (at most 63 bytes), otherwise a shortened unique form.
    table_name  name NOT NULL UNIQUE,
    created_at  timestamptz NOT NULL DEFAULT now(),
    -- Per-metric overrides of the defaults in _prom_catalog.default_setting; NULL: default.
    retention_period interval,
    chunk_interval   interval
);

-- Defaults for every metric without an override (set through prom_api).
CREATE TABLE _prom_catalog.default_setting (
    key   text PRIMARY KEY,
    value text NOT NULL
);
INSERT INTO _prom_catalog.default_setting (key, value) VALUES
    ('chunk_interval', '8 hours'),
    ('retention_period', '90 days');

CREATE FUNCTION _prom_catalog.metric_chunk_interval(p_metric_id int) RETURNS interval
LANGUAGE sql STABLE AS $fn$
    SELECT coalesce(m.chunk_interval, (SELECT value::interval FROM _prom_catalog.default_setting WHERE key = 'chunk_interval'))
      FROM _prom_catalog.metric m WHERE m.id = p_metric_id
$fn$;

CREATE FUNCTION _prom_catalog.metric_retention_period(p_metric_id int) RETURNS interval
LANGUAGE sql STABLE AS $fn$
    SELECT coalesce(m.retention_period, (SELECT value::interval FROM _prom_catalog.default_setting WHERE key = 'retention_period'))
      FROM _prom_catalog.metric m WHERE m.id = p_metric_id
$fn$;

CREATE TABLE _prom_catalog.label (
    id    serial PRIMARY KEY,
    key   text NOT NULL,
    value text NOT NULL,
    UNIQUE (key, value) INCLUDE (id)
);

-- Column name each label key gets in the prom_metric views.
CREATE TABLE _prom_catalog.label_key (
    id                serial PRIMARY KEY,
    key               text NOT NULL UNIQUE,
    value_column_name name NOT NULL UNIQUE
);

-- Where each label key of a metric sits in its series' labels array. Positions are only ever
-- appended, so a label set always has exactly one array form and views only gain columns.
CREATE TABLE _prom_catalog.label_key_position (
    metric_id int  NOT NULL REFERENCES _prom_catalog.metric (id),
    key       text NOT NULL,
    pos       int  NOT NULL,
    PRIMARY KEY (metric_id, key),
    UNIQUE (metric_id, pos)
);

-- A series is its label set: labels[pos] is the id of its label for the key at pos, 0 where
-- the series has no such label. labels[1] is always the __name__ label.
-- Series ids carry their metric: id = metric_id << 40 | n. Each metric's samples table is
-- the partition of _prom_catalog.samples for its id range, so samples of any number of
-- metrics are written by one INSERT into the parent, which PostgreSQL routes.
CREATE SEQUENCE _prom_catalog.series_number MAXVALUE 1099511627775 NO CYCLE;
CREATE TABLE _prom_catalog.series (
    id        bigint PRIMARY KEY,
    metric_id int   NOT NULL REFERENCES _prom_catalog.metric (id),
    labels    int[] NOT NULL,
    UNIQUE (labels) INCLUDE (id)
);
CREATE INDEX series_labels_gin ON _prom_catalog.series USING GIN (labels);
CREATE INDEX series_metric_id ON _prom_catalog.series (metric_id);

CREATE TABLE _prom_catalog.samples (
    time      timestamptz      NOT NULL,
    value     double precision NOT NULL,
    series_id bigint           NOT NULL
) PARTITION BY RANGE (series_id);
-- Unique so that samples Prometheus sends again after a retry are stored once.
CREATE UNIQUE INDEX samples_series_id_time ON _prom_catalog.samples (series_id, time) INCLUDE (value);

CREATE FUNCTION _prom_catalog.first_series_id(p_metric_id int) RETURNS bigint
LANGUAGE sql IMMUTABLE STRICT AS $fn$ SELECT p_metric_id::bigint << 40 $fn$;

-- Metric metadata (TYPE, HELP, UNIT) as Prometheus sends it with remote write.
CREATE TABLE _prom_catalog.metadata (
    metric_family text NOT NULL,
    type          text NOT NULL,
    unit          text NOT NULL,
    help          text NOT NULL,
    last_seen     timestamptz NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX metadata_identity ON _prom_catalog.metadata (metric_family, type, unit, md5(help));

-- A PostgreSQL identifier for a user-supplied name: the name itself when it fits in 63 bytes,
-- otherwise a prefix and a hash. Callers make it unique against what already exists.
CREATE FUNCTION _prom_catalog.identifier_for(p_name text) RETURNS name
LANGUAGE plpgsql IMMUTABLE STRICT AS $fn$
DECLARE
    prefix text := p_name;
BEGIN
    IF octet_length(p_name) <= 63 THEN
        RETURN p_name::name;
    END IF;
    WHILE octet_length(prefix) > 50 LOOP
        prefix := left(prefix, -1);
    END LOOP;
    RETURN (prefix || '_' || left(md5(p_name), 12))::name;
END
$fn$;

-- Recreates the user view of one metric; called whenever the metric gains a label key.
CREATE FUNCTION _prom_catalog.refresh_metric_view(p_metric_id int) RETURNS void
LANGUAGE plpgsql AS $fn$
DECLARE
    v_table name;
    v_columns text;
BEGIN
    SELECT table_name INTO STRICT v_table FROM _prom_catalog.metric WHERE id = p_metric_id;
    SELECT coalesce(string_agg(
               format(', (SELECT l.value FROM _prom_catalog.label l WHERE l.id = s.labels[%s]) AS %I',
                      p.pos, k.value_column_name), '' ORDER BY p.pos), '')
      INTO v_columns
      FROM _prom_catalog.label_key_position p
      JOIN _prom_catalog.label_key k ON k.key = p.key
     WHERE p.metric_id = p_metric_id AND p.key <> '__name__';
    EXECUTE format(
        'CREATE OR REPLACE VIEW prom_metric.%I AS '
        'SELECT d.time, d.value, d.series_id, s.labels%s '
        'FROM prom_data.%I d JOIN _prom_catalog.series s ON s.id = d.series_id',
        v_table, v_columns, v_table);
END
$fn$;

-- The metric's id and samples table, creating both (and the view) on first use.
CREATE FUNCTION _prom_catalog.get_or_create_metric(p_metric_name text, OUT id int, OUT table_name name)
LANGUAGE plpgsql AS $fn$
DECLARE
    v_candidate name;
BEGIN
    SELECT m.id, m.table_name INTO id, table_name FROM _prom_catalog.metric m WHERE m.metric_name = p_metric_name;
    IF FOUND THEN
        RETURN;
    END IF;
    -- Serialize metric creation across connectors; the lock ends with the transaction.
    PERFORM pg_advisory_xact_lock(7355608, 1);
    SELECT m.id, m.table_name INTO id, table_name FROM _prom_catalog.metric m WHERE m.metric_name = p_metric_name;
    IF FOUND THEN
        RETURN;
    END IF;
    v_candidate := _prom_catalog.identifier_for(p_metric_name);
    IF EXISTS (SELECT 1 FROM _prom_catalog.metric m WHERE m.table_name = v_candidate) THEN
        v_candidate := _prom_catalog.identifier_for(p_metric_name || '_' || nextval(pg_get_serial_sequence('_prom_catalog.metric', 'id')));
    END IF;
    INSERT INTO _prom_catalog.metric (metric_name, table_name) VALUES (p_metric_name, v_candidate)
    RETURNING metric.id, metric.table_name INTO id, table_name;
    INSERT INTO _prom_catalog.label_key_position (metric_id, key, pos) VALUES (id, '__name__', 1);
    PERFORM _prom_catalog.get_or_create_label_key('__name__');
    IF id >= (1 << 23) THEN
        RAISE EXCEPTION 'too many metrics: series ids have room for 8388607 metric ids';
    END IF;
    -- Created apart and then attached: ATTACH takes a lock that does not stall concurrent
    -- inserts into _prom_catalog.samples, where CREATE TABLE ... PARTITION OF would.
    EXECUTE format('CREATE TABLE prom_data.%I (LIKE _prom_catalog.samples) PARTITION BY RANGE (time)', table_name);
    EXECUTE format('CREATE UNIQUE INDEX %I ON prom_data.%I (series_id, time) INCLUDE (value)',
                   _prom_catalog.identifier_for(table_name || '_series_id_time'), table_name);
    EXECUTE format('ALTER TABLE _prom_catalog.samples ATTACH PARTITION prom_data.%I FOR VALUES FROM (%s) TO (%s)',
                   table_name, _prom_catalog.first_series_id(id), _prom_catalog.first_series_id(id + 1));
    PERFORM _prom_catalog.refresh_metric_view(id);
END
$fn$;

-- Time chunks of a metric, one per chunk interval (aligned to the Unix epoch, shortened
-- where a neighbour created under another interval is in the way). A chunk's samples live in
-- an uncompressed part (table_name: a partition of the metric table), a compressed part
-- (compressed_table_name), or both while late samples for a compressed chunk wait for the
-- next maintenance to merge them.
CREATE TABLE _prom_catalog.chunk (
    id                    serial PRIMARY KEY,
    metric_id             int NOT NULL REFERENCES _prom_catalog.metric (id),
    start_time            timestamptz NOT NULL,
    end_time              timestamptz NOT NULL CHECK (end_time > start_time),
    table_name            name UNIQUE,
    compressed_table_name name UNIQUE,
    -- On-disk size of the uncompressed part when it was last compressed.
    uncompressed_bytes    bigint,
    UNIQUE (metric_id, start_time)
);
CREATE INDEX chunk_metric_end ON _prom_catalog.chunk (metric_id, end_time);

-- Creates the uncompressed part of a chunk: a partition of the metric table for its range.
CREATE FUNCTION _prom_catalog.create_chunk_table(p_chunk _prom_catalog.chunk) RETURNS name
LANGUAGE plpgsql AS $fn$
DECLARE
    v_metric_table name;
    v_table name;
BEGIN
    SELECT m.table_name INTO STRICT v_metric_table FROM _prom_catalog.metric m WHERE m.id = p_chunk.metric_id;
    v_table := _prom_catalog.identifier_for(v_metric_table || '_' || p_chunk.id);
    EXECUTE format('CREATE TABLE _prom_chunks.%I (LIKE _prom_catalog.samples)', v_table);
    EXECUTE format('CREATE UNIQUE INDEX ON _prom_chunks.%I (series_id, time) INCLUDE (value)', v_table);
    EXECUTE format('ALTER TABLE prom_data.%I ATTACH PARTITION _prom_chunks.%I FOR VALUES FROM (%L) TO (%L)',
                   v_metric_table, v_table, p_chunk.start_time, p_chunk.end_time);
    RETURN v_table;
END
$fn$;

-- The chunk of metric p_metric_id that holds p_time, with an uncompressed part to insert
-- into, created if needed; NULL when that chunk would lie entirely beyond the metric's
-- retention period (its samples are not kept).
CREATE FUNCTION _prom_catalog.get_or_create_chunk(p_metric_id int, p_time timestamptz)
RETURNS _prom_catalog.chunk
LANGUAGE plpgsql AS $fn$
DECLARE
    v_chunk _prom_catalog.chunk;
    v_interval interval;
    v_seconds numeric;
    v_start timestamptz;
    v_end timestamptz;
BEGIN
    SELECT * INTO v_chunk FROM _prom_catalog.chunk c
     WHERE c.metric_id = p_metric_id AND c.start_time <= p_time AND c.end_time > p_time;
    IF FOUND AND v_chunk.table_name IS NOT NULL THEN
        RETURN v_chunk;
    END IF;
    -- One creator per metric at a time; maintenance takes the same lock.
    PERFORM pg_advisory_xact_lock(7355609, p_metric_id);
    SELECT * INTO v_chunk FROM _prom_catalog.chunk c
     WHERE c.metric_id = p_metric_id AND c.start_time <= p_time AND c.end_time > p_time;
    IF FOUND THEN
        IF v_chunk.table_name IS NULL THEN
            -- Late samples for a compressed chunk: they wait here for the next maintenance.
            v_chunk.table_name := _prom_catalog.create_chunk_table(v_chunk);
            UPDATE _prom_catalog.chunk SET table_name = v_chunk.table_name WHERE id = v_chunk.id;
        END IF;
        RETURN v_chunk;
    END IF;

    v_interval := _prom_catalog.metric_chunk_interval(p_metric_id);
    v_seconds := extract(epoch FROM v_interval);
    v_start := to_timestamp((floor(extract(epoch FROM p_time) / v_seconds) * v_seconds)::float8);
    v_end := v_start + v_interval;
    -- greatest and least ignore the NULL of an empty max or min.
    SELECT greatest(v_start, max(c.end_time)) INTO v_start FROM _prom_catalog.chunk c
     WHERE c.metric_id = p_metric_id AND c.end_time <= p_time;
    SELECT least(v_end, min(c.start_time)) INTO v_end FROM _prom_catalog.chunk c
     WHERE c.metric_id = p_metric_id AND c.start_time > p_time;
    IF v_end <= now() - _prom_catalog.metric_retention_period(p_metric_id) THEN
        RETURN NULL;
    END IF;

    v_chunk.id := nextval(pg_get_serial_sequence('_prom_catalog.chunk', 'id'));
    v_chunk.metric_id := p_metric_id;
    v_chunk.start_time := v_start;
    v_chunk.end_time := v_end;
    v_chunk.table_name := _prom_catalog.create_chunk_table(v_chunk);
    INSERT INTO _prom_catalog.chunk VALUES (v_chunk.*);
    RETURN v_chunk;
END
$fn$;

-- Stores samples of any number of metrics in one call: makes sure their chunks exist, then
-- inserts them all through _prom_catalog.samples, which routes each row to its metric's
-- chunk. Samples whose chunk lies beyond their metric's retention are not stored; their
-- number is returned. With p_skip_duplicates, samples already stored are skipped;
-- without, they may raise unique_violation (the cheaper path when there are none).
CREATE FUNCTION _prom_catalog.insert_samples(
    p_times timestamptz[], p_values float8[], p_series_ids int8[], p_skip_duplicates boolean)
RETURNS bigint
LANGUAGE plpgsql AS $fn$
DECLARE
    r record;
    v_time timestamptz;
    v_chunk _prom_catalog.chunk;
    v_expired_metrics int[] := '{}';
    v_expired_times timestamptz[] := '{}';
    v_count bigint;
BEGIN
    -- Usually one existing chunk covers all of a metric's samples in the batch: one index
    -- probe per metric. Otherwise every distinct time not yet covered gets its chunk.
    FOR r IN SELECT (u.s >> 40)::int AS metric_id, min(u.t) AS lo, max(u.t) AS hi
               FROM unnest(p_series_ids, p_times) AS u(s, t) GROUP BY 1 ORDER BY 1 LOOP
        CONTINUE WHEN EXISTS (SELECT 1 FROM _prom_catalog.chunk c
                               WHERE c.metric_id = r.metric_id AND c.start_time <= r.lo AND c.end_time > r.hi
                                 AND c.table_name IS NOT NULL);
        v_chunk := NULL;
        FOR v_time IN SELECT DISTINCT u.t FROM unnest(p_series_ids, p_times) AS u(s, t)
                       WHERE (u.s >> 40)::int = r.metric_id ORDER BY 1 LOOP
            CONTINUE WHEN v_chunk.id IS NOT NULL AND v_time >= v_chunk.start_time AND v_time < v_chunk.end_time;
            v_chunk := _prom_catalog.get_or_create_chunk(r.metric_id, v_time);
            IF v_chunk.id IS NULL THEN
                v_expired_metrics := v_expired_metrics || r.metric_id;
                v_expired_times := v_expired_times || v_time;
            END IF;
        END LOOP;
    END LOOP;

    IF cardinality(v_expired_times) = 0 THEN
        IF p_skip_duplicates THEN
            INSERT INTO _prom_catalog.samples (time, value, series_id)
            SELECT * FROM unnest(p_times, p_values, p_series_ids) ON CONFLICT DO NOTHING;
        ELSE
            INSERT INTO _prom_catalog.samples (time, value, series_id)
            SELECT * FROM unnest(p_times, p_values, p_series_ids);
        END IF;
        RETURN 0;
    END IF;

    INSERT INTO _prom_catalog.samples (time, value, series_id)
    SELECT u.t, u.v, u.s FROM unnest(p_times, p_values, p_series_ids) AS u(t, v, s)
     WHERE NOT EXISTS (SELECT 1 FROM unnest(v_expired_metrics, v_expired_times) AS x(m, t)
                        WHERE x.m = (u.s >> 40)::int AND x.t = u.t)
    ON CONFLICT DO NOTHING;
    SELECT count(*) INTO v_count FROM unnest(p_times, p_series_ids) AS u(t, s)
      JOIN unnest(v_expired_metrics, v_expired_times) AS x(m, t) ON x.m = (u.s >> 40)::int AND x.t = u.t;
    RETURN v_count;
END
$fn$;

CREATE FUNCTION _prom_catalog.get_or_create_label_key(p_key text) RETURNS name
LANGUAGE plpgsql AS $fn$
DECLARE
    v_column name;
BEGIN
    SELECT value_column_name INTO v_column FROM _prom_catalog.label_key WHERE key = p_key;
    IF FOUND THEN
        RETURN v_column;
    END IF;
    PERFORM pg_advisory_xact_lock(7355608, 2);
    SELECT value_column_name INTO v_column FROM _prom_catalog.label_key WHERE key = p_key;
    IF FOUND THEN
        RETURN v_column;
    END IF;
    v_column := _prom_catalog.identifier_for(p_key);
    -- The views' own columns keep their names; a label called "time" becomes "time_label".
    IF v_column IN ('time', 'value', 'series_id', 'labels')
       OR EXISTS (SELECT 1 FROM _prom_catalog.label_key WHERE value_column_name = v_column) THEN
        v_column := _prom_catalog.identifier_for(p_key || '_label');
    END IF;
    IF EXISTS (SELECT 1 FROM _prom_catalog.label_key WHERE value_column_name = v_column) THEN
        v_column := _prom_catalog.identifier_for(p_key || '_label_' || nextval(pg_get_serial_sequence('_prom_catalog.label_key', 'id')));
    END IF;
    INSERT INTO _prom_catalog.label_key (key, value_column_name) VALUES (p_key, v_column);
    RETURN v_column;
END
$fn$;

CREATE TYPE _prom_catalog.series_labels AS (i int, metric_id int, labels int[]);

-- Resolves many series, of any metrics, at once. Series i of the batch (counting from 0)
-- belongs to metric p_metrics[i + 1] and has the labels given by the entries of
-- p_keys/p_values whose p_series_idx is i, its __name__ entry included. Returns the id of
-- every series, creating metrics, label keys, positions, labels and series as needed.
--
-- Each step is its own statement so that it sees what concurrent connectors committed
-- meanwhile (READ COMMITTED takes a new snapshot per statement). Locks are always taken in
-- the same order (metric-creation lock, label-key lock, metric rows by id, labels, series)
-- so that concurrent calls cannot deadlock.
CREATE FUNCTION _prom_catalog.get_or_create_series_ids(
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
            -- The metric row lock orders concurrent position assignment and view changes. NO
            -- KEY UPDATE does not wait for the key-share locks that series inserts take.
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
    ON CONFLICT (key, value) DO NOTHING;

    -- Each series' dense labels array, 0 where it lacks a key. Aggregating pos -> id once per
    -- series keeps this linear in the batch size.
    WITH entries AS (
        SELECT t.i, p.pos, l.id
          FROM unnest(p_series_idx, p_keys, p_values) AS t(i, k, v)
          JOIN _prom_catalog.label l ON l.key = t.k AND l.value = t.v
          JOIN _prom_catalog.label_key_position p ON p.metric_id = v_metric_ids[t.i + 1] AND p.key = t.k
    ), per_series AS (
        SELECT e.i, max(e.pos) AS last_pos, jsonb_object_agg(e.pos, e.id) AS ids FROM entries e GROUP BY e.i
    )
    SELECT array_agg(ROW(ps.i, v_metric_ids[ps.i + 1], ARRAY(
               SELECT coalesce((ps.ids ->> g.pos::text)::int, 0) FROM generate_series(1, ps.last_pos) g(pos) ORDER BY g.pos
           ))::_prom_catalog.series_labels)
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

CREATE VIEW prom_info.metric AS
SELECT m.id,
       m.metric_name,
       m.table_name,
       ARRAY(SELECT p.key FROM _prom_catalog.label_key_position p WHERE p.metric_id = m.id ORDER BY p.pos) AS label_keys,
       pg_size_pretty(pg_total_relation_size(format('prom_data.%I', m.table_name)::regclass)) AS size
  FROM _prom_catalog.metric m;

CREATE VIEW prom_info.label AS
SELECT k.key,
       k.value_column_name,
       ARRAY(SELECT l.value FROM _prom_catalog.label l WHERE l.key = k.key ORDER BY l.value) AS values,
       (SELECT count(*) FROM _prom_catalog.label l WHERE l.key = k.key) AS num_values
  FROM _prom_catalog.label_key k;
