-- Schema version 16: cardinality, as Prometheus' /api/v1/status/tsdb reports it from its
-- postings, for SQL users and for that endpoint of the connector (query/api.rs).
--
-- Series are counted from the catalog: every series stored (series are not deleted, so one
-- whose samples retention has dropped still counts). Labels no series uses (none today) are
-- not listed.

-- Every label pair in use and how many series carry it (the "__name__" pairs: series per
-- metric).
CREATE VIEW prom_info.label_cardinality AS
SELECT l.key, l.value, c.series
  FROM (SELECT u.id, count(*) AS series
          FROM _prom_catalog.series s
         CROSS JOIN LATERAL unnest(s.labels) AS u(id)
         WHERE u.id <> 0
         GROUP BY u.id) c
  JOIN _prom_catalog.label l ON l.id = c.id;

-- Series per metric, counted in the metric's range of series ids (a series id carries its
-- metric id in its high bits) through the primary key.
CREATE VIEW prom_info.metric_cardinality AS
SELECT m.metric_name,
       (SELECT count(*) FROM _prom_catalog.series s
         WHERE s.id >= _prom_catalog.first_series_id(m.id)
           AND s.id < _prom_catalog.first_series_id(m.id + 1)) AS series
  FROM _prom_catalog.metric m;
