-- Schema version 10: exemplars.
--
-- Exemplars arrive with samples (remote write 1.0 and 2.0): a value and a time of one
-- observation, with labels of their own (typically a trace_id). One row per exemplar, keyed
-- by series and time: an exemplar sent again (a retried request) is stored once, the first
-- one kept. How many are kept per series is bounded by the connector
-- (`--exemplars.max-per-series`): its maintenance deletes the oldest beyond that, and those
-- older than the metric's retention period.
CREATE TABLE _prom_catalog.exemplar (
    series_id bigint      NOT NULL,
    time      timestamptz NOT NULL,
    value     float8      NOT NULL,
    labels    jsonb       NOT NULL,
    PRIMARY KEY (series_id, time)
);

-- Every exemplar with its metric and its series' labels, for SQL users.
CREATE VIEW prom_info.exemplar AS
SELECT m.metric_name,
       e.series_id,
       (SELECT jsonb_object_agg(l.key, l.value)
          FROM unnest(s.labels) AS lid JOIN _prom_catalog.label l ON l.id = lid) AS series_labels,
       e.time,
       e.value,
       e.labels AS exemplar_labels
  FROM _prom_catalog.exemplar e
  JOIN _prom_catalog.series s ON s.id = e.series_id
  JOIN _prom_catalog.metric m ON m.id = s.metric_id;
