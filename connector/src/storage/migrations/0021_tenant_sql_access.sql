-- Schema version 21: SQL users confined to tenants (docs/multi-tenancy.md, "SQL").
--
-- prom_api.grant_tenant_access(role, tenants) binds a PostgreSQL role to one or more tenants
-- (the values of the `__tenant__` label) and grants it what reading the user views needs;
-- prom_api.revoke_tenant_access(role) removes the binding and those rights. Bindings live in
-- _prom_catalog.tenant_access, by role oid (a renamed role stays bound).
--
-- A role is *confined* when it, or any role it is a member of (directly or not, whatever
-- INHERIT says), is bound; its tenants are the union of those bindings. Every user-facing
-- view shows a confined role only the series of its tenants: prom_data.<metric>,
-- prom_metric.<metric>, prom_info.metric (metrics its tenants have series of), label,
-- label_cardinality, metric_cardinality, tenant, tenant_label_cardinality, exemplar,
-- native_histogram, ha_lease (leases of its tenants), deletion_request (its own requests)
-- and tenant_access (its own bindings); prom_api.native_histograms likewise. Roles that are
-- not confined (the connector's, admins', existing readers') see what they saw before.
--
-- PostgreSQL 14 has no security_invoker views and a view reads its tables with its owner's
-- rights, so row-level security on the tables would not apply: the views filter themselves,
-- with `current_user`, which in a view's body is the role running the query. The scope is
-- computed once per query, in an InitPlan (`(SELECT _prom_catalog.tenant_scope(current_user))`,
-- NULL for a role that is not confined); per row, a role that is not confined pays one test
-- of that parameter. The views that filter are security barriers (or read one), so that a
-- condition of the reader's (a function that raises an error, say) never sees another
-- tenant's rows before the filter does.
--
-- A confined role needs USAGE on _prom_catalog (the views call its decoding functions, whose
-- bodies name it) and must have no right on its tables, nor on _prom_compressed and
-- _prom_chunks, nor SET ROLE to a role that is not confined: those read around the views.
-- grant_tenant_access refuses a role with such rights, a superuser, and the owner of the
-- catalog (the connector's role).

CREATE TABLE _prom_catalog.tenant_access (
    role_oid   oid PRIMARY KEY,
    tenants    text[] NOT NULL CHECK (cardinality(tenants) > 0),
    granted_at timestamptz NOT NULL DEFAULT now(),
    granted_by name NOT NULL DEFAULT current_user
);

-- The label ids of the tenants of a confined role, NULL for a role that is not confined
-- (or does not exist). Reads the bindings with its owner's rights: readers have none on
-- them. The views call it with current_user.
CREATE FUNCTION _prom_catalog.tenant_scope(p_role name) RETURNS int[]
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $fn$
    WITH RECURSIVE member_of(oid) AS (
        SELECT r.oid FROM pg_catalog.pg_roles r WHERE r.rolname = p_role
        UNION
        SELECT m.roleid FROM pg_catalog.pg_auth_members m JOIN member_of o ON m.member = o.oid
    ), bound AS (
        SELECT a.tenants FROM _prom_catalog.tenant_access a JOIN member_of o ON o.oid = a.role_oid
    )
    SELECT CASE WHEN NOT EXISTS (SELECT 1 FROM bound) THEN NULL
                ELSE ARRAY(SELECT l.id FROM _prom_catalog.label l
                            WHERE l.key = '__tenant__'
                              AND _prom_catalog.label_value_key(l.value) IN
                                  (SELECT _prom_catalog.label_value_key(t) FROM bound b, unnest(b.tenants) t)
                            ORDER BY l.id)
           END
$fn$;

-- The role of the session as its user set it (SET ROLE, else the login role): the caller of
-- a SECURITY DEFINER function, whose current_user is the function's owner.
CREATE FUNCTION _prom_catalog.session_role() RETURNS name
LANGUAGE sql STABLE AS $fn$
    SELECT CASE WHEN current_setting('role') = 'none' THEN session_user
                ELSE current_setting('role')::name END
$fn$;

-- Series a confined role may see (every series for other roles). A security barrier: a
-- reader's conditions on these rows run after the filter.
CREATE VIEW _prom_catalog.visible_series WITH (security_barrier) AS
SELECT s.id, s.metric_id, s.labels
  FROM _prom_catalog.series s
 WHERE (SELECT _prom_catalog.tenant_scope(current_user)) IS NULL
    OR s.labels && (SELECT _prom_catalog.tenant_scope(current_user));

-- Binding ----------------------------------------------------------------------------------

CREATE FUNCTION _prom_catalog.check_tenant_name(p_tenant text) RETURNS void
LANGUAGE plpgsql IMMUTABLE AS $fn$
BEGIN
    -- As connector/src/tenancy.rs: Mimir's rule.
    IF p_tenant IS NULL OR p_tenant !~ '^[A-Za-z0-9!_.*''()-]{1,150}$' OR p_tenant IN ('.', '..') THEN
        RAISE EXCEPTION 'invalid tenant name %: a tenant is 1 to 150 characters of letters, digits and !-_.*''(), not "." nor ".."',
            coalesce(quote_literal(p_tenant), 'NULL')
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
END
$fn$;

-- The role's oid; an error that says what to do when there is no such role.
CREATE FUNCTION _prom_catalog.existing_role(p_role name, p_caller text) RETURNS oid
LANGUAGE plpgsql STABLE AS $fn$
DECLARE
    v_oid oid;
BEGIN
    SELECT r.oid INTO v_oid FROM pg_catalog.pg_roles r WHERE r.rolname = p_role;
    IF v_oid IS NULL THEN
        RAISE EXCEPTION '%: role % does not exist; create it first (CREATE ROLE % LOGIN ...)',
            p_caller, coalesce(quote_ident(p_role), 'NULL'), coalesce(quote_ident(p_role), '...')
            USING ERRCODE = 'undefined_object';
    END IF;
    RETURN v_oid;
END
$fn$;

-- The schemas of the user views, and what a confined role is granted on them.
CREATE FUNCTION _prom_catalog.set_tenant_reader_rights(p_role name, p_grant boolean) RETURNS void
LANGUAGE plpgsql AS $fn$
DECLARE
    v_schema text;
BEGIN
    IF p_grant THEN
        FOREACH v_schema IN ARRAY ARRAY['prom_metric', 'prom_data', 'prom_info', 'prom_api', '_prom_catalog'] LOOP
            EXECUTE format('GRANT USAGE ON SCHEMA %I TO %I', v_schema, p_role);
        END LOOP;
        FOREACH v_schema IN ARRAY ARRAY['prom_metric', 'prom_data', 'prom_info'] LOOP
            EXECUTE format('GRANT SELECT ON ALL TABLES IN SCHEMA %I TO %I', v_schema, p_role);
        END LOOP;
    ELSE
        FOREACH v_schema IN ARRAY ARRAY['prom_metric', 'prom_data', 'prom_info'] LOOP
            EXECUTE format('REVOKE SELECT ON ALL TABLES IN SCHEMA %I FROM %I', v_schema, p_role);
        END LOOP;
        FOREACH v_schema IN ARRAY ARRAY['prom_metric', 'prom_data', 'prom_info', 'prom_api', '_prom_catalog'] LOOP
            EXECUTE format('REVOKE USAGE ON SCHEMA %I FROM %I', v_schema, p_role);
        END LOOP;
    END IF;
END
$fn$;

-- Binds role_name to tenants (replacing an earlier binding) and grants it USAGE on the view
-- schemas (and _prom_catalog, whose functions the views call) and SELECT on the views.
-- Returns the tenants bound, sorted.
CREATE FUNCTION prom_api.grant_tenant_access(role_name name, tenants text[]) RETURNS text[]
LANGUAGE plpgsql AS $fn$
DECLARE
    v_oid oid;
    v_tenant text;
    v_tenants text[];
    v_table text;
BEGIN
    v_oid := _prom_catalog.existing_role(role_name, 'prom_api.grant_tenant_access');
    IF tenants IS NULL OR cardinality(tenants) = 0 THEN
        RAISE EXCEPTION 'prom_api.grant_tenant_access: name at least one tenant, e.g. prom_api.grant_tenant_access(%, ARRAY[''team-a''])',
            quote_literal(role_name) USING ERRCODE = 'invalid_parameter_value';
    END IF;
    FOREACH v_tenant IN ARRAY tenants LOOP
        PERFORM _prom_catalog.check_tenant_name(v_tenant);
    END LOOP;
    IF (SELECT r.rolsuper FROM pg_catalog.pg_roles r WHERE r.oid = v_oid) THEN
        RAISE EXCEPTION 'prom_api.grant_tenant_access: role % is a superuser and reads every table; confine a role that is not one',
            quote_ident(role_name) USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF pg_catalog.pg_has_role(v_oid, (SELECT c.relowner FROM pg_catalog.pg_class c
                                       WHERE c.oid = '_prom_catalog.series'::regclass), 'MEMBER') THEN
        RAISE EXCEPTION 'prom_api.grant_tenant_access: role % owns the catalog (it is the connector''s role, or a member of it); confine a role that only reads',
            quote_ident(role_name) USING ERRCODE = 'invalid_parameter_value';
    END IF;
    SELECT format('%I.%I', n.nspname, c.relname) INTO v_table
      FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
     WHERE n.nspname IN ('_prom_catalog', '_prom_compressed', '_prom_chunks')
       AND c.relkind IN ('r', 'p', 'v', 'm', 'f')
       AND c.relname <> 'visible_series'
       AND pg_catalog.has_table_privilege(v_oid, c.oid, 'SELECT, INSERT, UPDATE, DELETE, TRUNCATE')
     LIMIT 1;
    IF v_table IS NOT NULL THEN
        RAISE EXCEPTION 'prom_api.grant_tenant_access: role % has rights on % (and maybe other tables of the catalog), which read around the views',
            quote_ident(role_name), v_table
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = format('REVOKE ALL ON ALL TABLES IN SCHEMA _prom_catalog, _prom_compressed, _prom_chunks FROM %I (and from the roles it is a member of), then bind it again', role_name);
    END IF;
    SELECT array_agg(DISTINCT t ORDER BY t) INTO v_tenants FROM unnest(tenants) t;
    -- Bindings of dropped roles go: a new role may get their oid.
    DELETE FROM _prom_catalog.tenant_access a
     WHERE NOT EXISTS (SELECT 1 FROM pg_catalog.pg_roles r WHERE r.oid = a.role_oid);
    INSERT INTO _prom_catalog.tenant_access (role_oid, tenants) VALUES (v_oid, v_tenants)
    ON CONFLICT (role_oid) DO UPDATE SET tenants = EXCLUDED.tenants, granted_at = now(), granted_by = current_user;
    PERFORM _prom_catalog.set_tenant_reader_rights(role_name, true);
    RETURN v_tenants;
END
$fn$;

-- Removes the binding of role_name and the rights grant_tenant_access gave it: the role
-- then reads nothing here (rather than everything). Returns whether it was bound.
CREATE FUNCTION prom_api.revoke_tenant_access(role_name name) RETURNS boolean
LANGUAGE plpgsql AS $fn$
DECLARE
    v_oid oid;
    v_found boolean;
BEGIN
    v_oid := _prom_catalog.existing_role(role_name, 'prom_api.revoke_tenant_access');
    DELETE FROM _prom_catalog.tenant_access a
     WHERE NOT EXISTS (SELECT 1 FROM pg_catalog.pg_roles r WHERE r.oid = a.role_oid);
    DELETE FROM _prom_catalog.tenant_access WHERE role_oid = v_oid;
    v_found := FOUND;
    IF v_found THEN
        PERFORM _prom_catalog.set_tenant_reader_rights(role_name, false);
    END IF;
    RETURN v_found;
END
$fn$;

-- Bindings: all of them for a role that is not confined, its own for a confined one.
CREATE VIEW prom_info.tenant_access WITH (security_barrier) AS
SELECT r.rolname AS role_name, a.tenants, a.granted_at, a.granted_by
  FROM _prom_catalog.tenant_access a
  JOIN pg_catalog.pg_roles r ON r.oid = a.role_oid
 WHERE (SELECT _prom_catalog.tenant_scope(current_user)) IS NULL
    OR pg_catalog.pg_has_role(current_user, a.role_oid, 'MEMBER');

-- Per-metric views --------------------------------------------------------------------------

-- As version 8's, with the filter: prom_data.<metric> keeps the samples of the series a
-- confined role may see (a hashed set of them, built only for such a role), and
-- prom_metric.<metric> joins the visible series of the metric's id range. Views of new
-- metrics are granted to the bound roles.
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
        '                       WHERE v.id >= %s::int8 AND v.id < %s::int8) '
        'ORDER BY s.series_id, s.sample_time, s.written',
        v_table, v_table, p_metric_id, p_metric_id,
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
        'FROM prom_data.%I d JOIN _prom_catalog.series s ON s.id = d.series_id '
        'WHERE (SELECT _prom_catalog.tenant_scope(current_user)) IS NULL '
        '   OR s.labels && (SELECT _prom_catalog.tenant_scope(current_user))',
        v_table, v_columns, v_table);
    FOR v_role IN
        SELECT r.rolname FROM _prom_catalog.tenant_access a JOIN pg_catalog.pg_roles r ON r.oid = a.role_oid
    LOOP
        EXECUTE format('GRANT SELECT ON prom_data.%I, prom_metric.%I TO %I', v_table, v_table, v_role);
    END LOOP;
END
$fn$;

DO $do$
DECLARE
    v_id int;
BEGIN
    FOR v_id IN SELECT id FROM _prom_catalog.metric ORDER BY id LOOP
        PERFORM _prom_catalog.refresh_metric_view(v_id);
    END LOOP;
END
$do$;

-- prom_info views ---------------------------------------------------------------------------

-- As version 5's, without the functions that read the catalog with the reader's rights (a
-- confined role has none on its tables), and for a confined role only the metrics its
-- tenants have series of. Sizes are the metric's, every tenant's samples together.
CREATE OR REPLACE VIEW prom_info.metric WITH (security_barrier) AS
SELECT m.id,
       m.metric_name,
       m.table_name,
       ARRAY(SELECT p.key FROM _prom_catalog.label_key_position p WHERE p.metric_id = m.id ORDER BY p.pos) AS label_keys,
       coalesce(m.retention_period, (SELECT d.value::interval FROM _prom_catalog.default_setting d WHERE d.key = 'retention_period')) AS retention_period,
       coalesce(m.chunk_interval, (SELECT d.value::interval FROM _prom_catalog.default_setting d WHERE d.key = 'chunk_interval')) AS chunk_interval,
       coalesce(m.compression, (SELECT d.value::boolean FROM _prom_catalog.default_setting d WHERE d.key = 'compression')) AS compression,
       c.total_chunks,
       c.sealed_chunks,
       c.chunk_bytes + c.head_bytes AS size_bytes,
       pg_size_pretty(c.chunk_bytes + c.head_bytes) AS size,
       c.head_bytes,
       c.oldest_chunk_start,
       c.newest_chunk_end
  FROM _prom_catalog.metric m
  CROSS JOIN LATERAL (
    SELECT count(*) AS total_chunks,
           count(*) FILTER (WHERE ch.sealed) AS sealed_chunks,
           (coalesce(sum((SELECT pg_total_relation_size(t.oid) FROM pg_catalog.pg_class t
                           WHERE t.relnamespace = '_prom_chunks'::regnamespace AND t.relname = ch.table_name)), 0)
            + (SELECT coalesce(sum(pg_column_size(b.*)), 0) FROM _prom_catalog.chunk_block b
                WHERE b.chunk_id IN (SELECT c2.id FROM _prom_catalog.chunk c2 WHERE c2.metric_id = m.id)))::bigint AS chunk_bytes,
           (SELECT coalesce(sum(pg_column_size(h.*)), 0)::bigint FROM _prom_catalog.head h WHERE h.metric_id = m.id) AS head_bytes,
           min(ch.start_time) AS oldest_chunk_start,
           max(ch.end_time) AS newest_chunk_end
      FROM _prom_catalog.chunk ch WHERE ch.metric_id = m.id) c
 WHERE (SELECT _prom_catalog.tenant_scope(current_user)) IS NULL
    OR EXISTS (SELECT 1 FROM _prom_catalog.series s
                WHERE s.id >= (m.id::int8 << 40) AND s.id < ((m.id::int8 + 1) << 40)
                  AND s.labels && (SELECT _prom_catalog.tenant_scope(current_user)));

-- Label keys and values: every one for a role that is not confined, those its tenants'
-- series carry for a confined one.
CREATE OR REPLACE VIEW prom_info.label WITH (security_barrier) AS
SELECT k.key,
       k.value_column_name,
       ARRAY(SELECT l.value FROM _prom_catalog.label l WHERE l.key = k.key ORDER BY l.value) AS values,
       (SELECT count(*) FROM _prom_catalog.label l WHERE l.key = k.key) AS num_values
  FROM _prom_catalog.label_key k
 WHERE (SELECT _prom_catalog.tenant_scope(current_user)) IS NULL
UNION ALL
SELECT k.key, k.value_column_name, array_agg(l.value ORDER BY l.value), count(*)
  FROM (SELECT DISTINCT u.id
          FROM _prom_catalog.series s CROSS JOIN LATERAL unnest(s.labels) AS u(id)
         WHERE s.labels && (SELECT _prom_catalog.tenant_scope(current_user)) AND u.id <> 0) used
  JOIN _prom_catalog.label l ON l.id = used.id
  JOIN _prom_catalog.label_key k ON k.key = l.key
 WHERE (SELECT _prom_catalog.tenant_scope(current_user)) IS NOT NULL
 GROUP BY k.key, k.value_column_name;

-- As version 16's, counting a confined role's series only.
CREATE OR REPLACE VIEW prom_info.label_cardinality WITH (security_barrier) AS
SELECT l.key, l.value, c.series
  FROM (SELECT u.id, count(*) AS series
          FROM _prom_catalog.visible_series s
         CROSS JOIN LATERAL unnest(s.labels) AS u(id)
         WHERE u.id <> 0
         GROUP BY u.id) c
  JOIN _prom_catalog.label l ON l.id = c.id;

CREATE OR REPLACE VIEW prom_info.metric_cardinality WITH (security_barrier) AS
SELECT m.metric_name,
       (SELECT count(*) FROM _prom_catalog.series s
         WHERE s.id >= _prom_catalog.first_series_id(m.id)
           AND s.id < _prom_catalog.first_series_id(m.id + 1)) AS series
  FROM _prom_catalog.metric m
 WHERE (SELECT _prom_catalog.tenant_scope(current_user)) IS NULL
UNION ALL
SELECT m.metric_name, c.series
  FROM (SELECT (s.id >> 40)::int4 AS metric_id, count(*) AS series
          FROM _prom_catalog.series s
         WHERE s.labels && (SELECT _prom_catalog.tenant_scope(current_user))
         GROUP BY 1) c
  JOIN _prom_catalog.metric m ON m.id = c.metric_id
 WHERE (SELECT _prom_catalog.tenant_scope(current_user)) IS NOT NULL;

-- As version 18's, for a confined role its tenants' rows only.
CREATE OR REPLACE VIEW prom_info.tenant_label_cardinality WITH (security_barrier) AS
WITH tenant AS (SELECT id, value FROM _prom_catalog.label
                 WHERE key = '__tenant__'
                   AND ((SELECT _prom_catalog.tenant_scope(current_user)) IS NULL
                        OR ARRAY[id] && (SELECT _prom_catalog.tenant_scope(current_user))))
SELECT t.value AS tenant, l.key, l.value, c.series
  FROM (SELECT t.id AS tenant_id, u.id, count(*) AS series
          FROM tenant t
          JOIN _prom_catalog.series s ON s.labels @> ARRAY[t.id]
         CROSS JOIN LATERAL unnest(s.labels) AS u(id)
         WHERE u.id <> 0
         GROUP BY t.id, u.id) c
  JOIN tenant t ON t.id = c.tenant_id
  JOIN _prom_catalog.label l ON l.id = c.id;

-- As version 18's, for a confined role its tenants' rows only. The share of a metric's size
-- is taken of all its series (not of those prom_info.metric_cardinality shows a confined
-- role).
CREATE OR REPLACE VIEW prom_info.tenant WITH (security_barrier) AS
WITH tenant AS (SELECT id, value FROM _prom_catalog.label
                 WHERE key = '__tenant__'
                   AND ((SELECT _prom_catalog.tenant_scope(current_user)) IS NULL
                        OR ARRAY[id] && (SELECT _prom_catalog.tenant_scope(current_user)))),
per_metric AS (
    SELECT t.value AS tenant, (s.id >> 40)::int4 AS metric_id, count(*) AS series
      FROM tenant t
      JOIN _prom_catalog.series s ON s.labels @> ARRAY[t.id]
     GROUP BY t.value, (s.id >> 40)::int4),
metric AS (
    SELECT m.id,
           (SELECT count(*) FROM _prom_catalog.series s
             WHERE s.id >= (m.id::int8 << 40) AND s.id < ((m.id::int8 + 1) << 40)) AS series,
           (coalesce((SELECT sum((SELECT pg_total_relation_size(t.oid) FROM pg_catalog.pg_class t
                                   WHERE t.relnamespace = '_prom_chunks'::regnamespace AND t.relname = ch.table_name))
                        FROM _prom_catalog.chunk ch WHERE ch.metric_id = m.id), 0)
            + (SELECT coalesce(sum(pg_column_size(b.*)), 0) FROM _prom_catalog.chunk_block b
                WHERE b.chunk_id IN (SELECT c2.id FROM _prom_catalog.chunk c2 WHERE c2.metric_id = m.id))
            + (SELECT coalesce(sum(pg_column_size(h.*)), 0) FROM _prom_catalog.head h WHERE h.metric_id = m.id))::int8 AS size_bytes
      FROM _prom_catalog.metric m
     WHERE m.id IN (SELECT p.metric_id FROM per_metric p))
SELECT p.tenant,
       sum(p.series)::int8 AS series,
       count(*)::int8 AS metrics,
       sum(m.size_bytes::numeric * p.series / greatest(m.series, 1))::int8 AS estimated_size_bytes,
       pg_size_pretty(sum(m.size_bytes::numeric * p.series / greatest(m.series, 1))) AS estimated_size
  FROM per_metric p
  JOIN metric m ON m.id = p.metric_id
 GROUP BY p.tenant;

-- As version 10's, the visible series' exemplars.
CREATE OR REPLACE VIEW prom_info.exemplar WITH (security_barrier) AS
SELECT m.metric_name,
       e.series_id,
       (SELECT jsonb_object_agg(l.key, l.value)
          FROM unnest(s.labels) AS lid JOIN _prom_catalog.label l ON l.id = lid) AS series_labels,
       e.time,
       e.value,
       e.labels AS exemplar_labels
  FROM _prom_catalog.exemplar e
  JOIN _prom_catalog.visible_series s ON s.id = e.series_id
  JOIN _prom_catalog.metric m ON m.id = s.metric_id;

-- As version 15's, the visible series' histograms.
CREATE OR REPLACE VIEW prom_info.native_histogram WITH (security_barrier) AS
SELECT m.metric_name,
       h.series_id,
       (SELECT jsonb_object_agg(l.key, l.value)
          FROM unnest(s.labels) AS lid JOIN _prom_catalog.label l ON l.id = lid) AS series_labels,
       h.time,
       h.count,
       h.sum,
       h.schema,
       h.zero_threshold,
       h.zero_count,
       h.positive_spans,
       h.positive_buckets,
       h.negative_spans,
       h.negative_buckets,
       h.custom_values,
       h.integer,
       h.reset_hint
  FROM (SELECT r.series_id, r.time, r.count, r.sum, r.schema, r.zero_threshold, r.zero_count,
               r.positive_spans, r.positive_buckets, r.negative_spans, r.negative_buckets,
               r.custom_values, r.integer, r.reset_hint
          FROM _prom_catalog.histogram r
         WHERE NOT EXISTS (SELECT 1 FROM _prom_catalog.histogram_chunk c
                            CROSS JOIN LATERAL _prom_catalog.decode_histogram_chunk(c.data, c.floats) d
                            WHERE c.series_id = r.series_id AND c.end_time >= r.time
                              AND c.start_time <= r.time AND d.time = r.time)
        UNION ALL
        SELECT c.series_id, d.time, d.count, d.sum, d.schema, d.zero_threshold, d.zero_count,
               d.positive_spans, d.positive_buckets, d.negative_spans, d.negative_buckets,
               d.custom_values, d.integer, d.reset_hint
          FROM _prom_catalog.histogram_chunk c
         CROSS JOIN LATERAL _prom_catalog.decode_histogram_chunk(c.data, c.floats) d) h
  JOIN _prom_catalog.visible_series s ON s.id = h.series_id
  JOIN _prom_catalog.metric m ON m.id = s.metric_id;

-- As version 17's; a confined role sees the leases of its tenants (`tenant|cluster`).
CREATE OR REPLACE VIEW prom_info.ha_lease WITH (security_barrier) AS
SELECT cluster, leader, leader_since, committed_time AS leader_newest_sample, lease_until
  FROM _prom_catalog.ha_lease
 WHERE (SELECT _prom_catalog.tenant_scope(current_user)) IS NULL
    OR split_part(cluster, '|', 1) IN (SELECT l.value FROM _prom_catalog.label l
                                        WHERE ARRAY[l.id] && (SELECT _prom_catalog.tenant_scope(current_user)))
       AND strpos(cluster, '|') > 0;

-- As version 19's; a confined role sees its own requests (it cannot make any: it has no
-- right on the queue).
CREATE OR REPLACE VIEW prom_info.deletion_request WITH (security_barrier) AS
SELECT id, selector, start_time, end_time, requested_at, requested_by,
       CASE WHEN finished_at IS NULL THEN 'pending' WHEN error IS NULL THEN 'done' ELSE 'failed' END AS status,
       finished_at, series, samples, histograms, exemplars, error
  FROM _prom_catalog.deletion_request
 WHERE (SELECT _prom_catalog.tenant_scope(current_user)) IS NULL
    OR requested_by = current_user;

-- Limits (migration 20): a confined role sees its tenants' rows only.
CREATE OR REPLACE VIEW prom_info.tenant_limits WITH (security_barrier) AS
SELECT coalesce(l.tenant, a.tenant) AS tenant,
       l.max_active_series,
       l.max_new_series_per_minute,
       coalesce(a.active_series, 0)::int8 AS active_series,
       coalesce(n.created, 0)::int8 AS new_series_this_minute,
       l.ingestion_rate,
       l.ingestion_burst,
       l.max_labels_per_series,
       l.max_label_name_length,
       l.max_label_value_length
  FROM _prom_catalog.tenant_limits l
  FULL JOIN (SELECT s.tenant, count(*) AS active_series FROM _prom_catalog.active_series s
              WHERE s.seen >= _prom_catalog.active_series_since(now()) GROUP BY s.tenant) a
    ON a.tenant = l.tenant
  LEFT JOIN _prom_catalog.new_series_count n
    ON n.tenant = coalesce(l.tenant, a.tenant) AND n.minute = floor(extract(epoch FROM now()) / 60)::int8
 WHERE (SELECT _prom_catalog.tenant_scope(current_user)) IS NULL
    OR coalesce(l.tenant, a.tenant) IN (SELECT lb.value FROM _prom_catalog.label lb
                                         WHERE ARRAY[lb.id] <@ (SELECT _prom_catalog.tenant_scope(current_user)));

CREATE OR REPLACE VIEW prom_info.metric_limits WITH (security_barrier) AS
SELECT m.metric_name,
       m.max_active_series,
       a.tenant,
       coalesce(a.active_series, 0)::int8 AS active_series
  FROM _prom_catalog.metric m
  LEFT JOIN (SELECT s.tenant, (s.series_id >> 40)::int4 AS metric_id, count(*) AS active_series
               FROM _prom_catalog.active_series s
              WHERE s.seen >= _prom_catalog.active_series_since(now())
                AND ((SELECT _prom_catalog.tenant_scope(current_user)) IS NULL
                     OR s.tenant IN (SELECT lb.value FROM _prom_catalog.label lb
                                      WHERE ARRAY[lb.id] <@ (SELECT _prom_catalog.tenant_scope(current_user))))
              GROUP BY 1, 2) a ON a.metric_id = m.id
 WHERE m.max_active_series IS NOT NULL
   AND ((SELECT _prom_catalog.tenant_scope(current_user)) IS NULL
        OR EXISTS (SELECT 1 FROM _prom_catalog.series s
                    WHERE s.id >= (m.id::int8 << 40) AND s.id < ((m.id::int8 + 1) << 40)
                      AND s.labels && (SELECT _prom_catalog.tenant_scope(current_user))));

-- The tenants prom_api.native_histograms (SECURITY DEFINER) shows its caller: those of the
-- login role when it is confined (a SET ROLE does not escape them), else those of the role
-- set; NULL (every tenant) only for a caller that could read the histograms itself.
CREATE FUNCTION _prom_catalog.histogram_reader_scope() RETURNS int[]
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $fn$
DECLARE
    v_role name := _prom_catalog.session_role();
    v_scope int[];
BEGIN
    v_scope := coalesce(_prom_catalog.tenant_scope(session_user), _prom_catalog.tenant_scope(v_role));
    IF v_scope IS NULL AND NOT (pg_catalog.has_table_privilege(v_role, '_prom_catalog.histogram', 'SELECT')
                                AND pg_catalog.has_table_privilege(v_role, '_prom_catalog.histogram_chunk', 'SELECT')) THEN
        RAISE EXCEPTION 'permission denied for prom_api.native_histograms: role % reads no histograms', quote_ident(v_role)
            USING ERRCODE = 'insufficient_privilege',
                  HINT = 'bind the role to its tenants (prom_api.grant_tenant_access) or grant it SELECT on the catalog';
    END IF;
    RETURN v_scope;
END
$fn$;

-- prom_api.native_histograms, as version 15's for the visible series. It reads the tables
-- with its owner's rights (a confined role has none on them), so the scope is that of the
-- session's role: SET ROLE, else the login role.
CREATE OR REPLACE FUNCTION prom_api.native_histograms(metric_name text, start_time timestamptz, end_time timestamptz)
RETURNS TABLE (series_id bigint, series_labels jsonb, "time" timestamptz, count float8, sum float8,
               "schema" int, zero_threshold float8, zero_count float8, positive_spans int[],
               positive_buckets float8[], negative_spans int[], negative_buckets float8[],
               custom_values float8[], "integer" boolean, reset_hint smallint)
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $fn$
    WITH scope AS (
        SELECT _prom_catalog.histogram_reader_scope() AS tenant_ids
    ), m AS (
        SELECT (m.id::int8 << 40) AS first_series, ((m.id::int8 + 1) << 40) AS next_series
          FROM _prom_catalog.metric m WHERE m.metric_name = native_histograms.metric_name
    ), h AS (
        SELECT r.series_id, r.time, r.count, r.sum, r.schema, r.zero_threshold, r.zero_count,
               r.positive_spans, r.positive_buckets, r.negative_spans, r.negative_buckets,
               r.custom_values, r.integer, r.reset_hint
          FROM m JOIN _prom_catalog.histogram r
            ON r.series_id >= m.first_series AND r.series_id < m.next_series
         WHERE r.time >= native_histograms.start_time AND r.time <= native_histograms.end_time
           AND NOT EXISTS (SELECT 1 FROM _prom_catalog.histogram_chunk c
                            CROSS JOIN LATERAL _prom_catalog.decode_histogram_chunk(c.data, c.floats) d
                            WHERE c.series_id = r.series_id AND c.end_time >= r.time
                              AND c.start_time <= r.time AND d.time = r.time)
        UNION ALL
        SELECT c.series_id, d.time, d.count, d.sum, d.schema, d.zero_threshold, d.zero_count,
               d.positive_spans, d.positive_buckets, d.negative_spans, d.negative_buckets,
               d.custom_values, d.integer, d.reset_hint
          FROM m JOIN _prom_catalog.histogram_chunk c
            ON c.series_id >= m.first_series AND c.series_id < m.next_series
         CROSS JOIN LATERAL _prom_catalog.decode_histogram_chunk(c.data, c.floats) d
         WHERE c.end_time >= native_histograms.start_time AND c.start_time <= native_histograms.end_time
           AND d.time >= native_histograms.start_time AND d.time <= native_histograms.end_time
    )
    SELECT h.series_id,
           (SELECT jsonb_object_agg(l.key, l.value)
              FROM unnest(s.labels) AS lid JOIN _prom_catalog.label l ON l.id = lid),
           h.time, h.count, h.sum, h.schema, h.zero_threshold, h.zero_count, h.positive_spans,
           h.positive_buckets, h.negative_spans, h.negative_buckets, h.custom_values, h.integer,
           h.reset_hint
      FROM h JOIN _prom_catalog.series s ON s.id = h.series_id
     WHERE (SELECT tenant_ids FROM scope) IS NULL OR s.labels && (SELECT tenant_ids FROM scope)
     ORDER BY h.series_id, h.time
$fn$;
