-- Schema version 18: tenants.
--
-- Multi-tenancy (`--metrics.multi-tenancy`): a tenant is the value of the `__tenant__` label
-- its series carry; nothing else in the layout changes. These views tell tenants apart for
-- SQL users and operators; the connector counts a tenant's cardinality for
-- /api/v1/status/tsdb with the same joins.

-- Series per label pair, per tenant (prom_info.label_cardinality split by tenant). A
-- tenant's series are found through the GIN index on the labels.
CREATE VIEW prom_info.tenant_label_cardinality AS
WITH tenant AS (SELECT id, value FROM _prom_catalog.label WHERE key = '__tenant__')
SELECT t.value AS tenant, l.key, l.value, c.series
  FROM (SELECT t.id AS tenant_id, u.id, count(*) AS series
          FROM tenant t
          JOIN _prom_catalog.series s ON s.labels @> ARRAY[t.id]
         CROSS JOIN LATERAL unnest(s.labels) AS u(id)
         WHERE u.id <> 0
         GROUP BY t.id, u.id) c
  JOIN tenant t ON t.id = c.tenant_id
  JOIN _prom_catalog.label l ON l.id = c.id;

-- Each tenant: its series, its metrics, and its disk use, estimated as its share of the
-- series of each metric times that metric's size (prom_info.metric.size_bytes): samples of
-- several tenants share the head rows and chunk blocks of a metric.
CREATE VIEW prom_info.tenant AS
WITH tenant AS (SELECT id, value FROM _prom_catalog.label WHERE key = '__tenant__'),
per_metric AS (
    SELECT t.value AS tenant, (s.id >> 40)::int4 AS metric_id, count(*) AS series
      FROM tenant t
      JOIN _prom_catalog.series s ON s.labels @> ARRAY[t.id]
     GROUP BY t.value, (s.id >> 40)::int4)
SELECT p.tenant,
       sum(p.series)::int8 AS series,
       count(*)::int8 AS metrics,
       sum(m.size_bytes::numeric * p.series / greatest(c.series, 1))::int8 AS estimated_size_bytes,
       pg_size_pretty(sum(m.size_bytes::numeric * p.series / greatest(c.series, 1))) AS estimated_size
  FROM per_metric p
  JOIN prom_info.metric m ON m.id = p.metric_id
  JOIN prom_info.metric_cardinality c ON c.metric_name = m.metric_name
 GROUP BY p.tenant;


-- Metadata is kept per tenant: a tenant sees the TYPE, HELP and UNIT it sent, never what
-- another sent for a metric of the same name. Metadata sent without tenancy stays in
-- _prom_catalog.metadata, whose unique index connectors of version 17 still write through
-- while a rolling upgrade replaces them.
CREATE TABLE _prom_catalog.tenant_metadata (
    tenant        text NOT NULL,
    metric_family text NOT NULL,
    type          text NOT NULL,
    unit          text NOT NULL,
    help          text NOT NULL,
    last_seen     timestamptz NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX tenant_metadata_identity ON _prom_catalog.tenant_metadata (tenant, metric_family, type, unit, md5(help));
