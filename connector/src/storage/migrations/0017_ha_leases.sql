-- Schema version 17: deduplication of Prometheus HA pairs (--metrics.high-availability;
-- docs/high-availability.md).
--
-- Prometheus servers of one HA pair send the same series with the same cluster label and
-- different replica labels. One replica per cluster is the leader, through a lease every
-- connector shares here; only the leader's samples are stored. The lease is kept in sample
-- time: it lasts until the leader's newest sample plus the lease timeout, and a replica that
-- sends samples later than that takes over. The samples a standby sent since the leader's
-- newest are kept aside (ha_standby) and written once it takes over, so a failover leaves
-- no gap; samples at or before the previous leader's newest (the fence) are never taken
-- from the new one, so none is stored twice.

CREATE TABLE _prom_catalog.ha_lease (
    cluster        text        PRIMARY KEY,
    leader         text        NOT NULL,
    -- The leader's samples at or before this time are not stored (the previous leader's
    -- newest committed sample when this one took over; -infinity for the first leader).
    fence          timestamptz NOT NULL,
    -- The newest sample time the leader has sent, and the newest of its committed writes.
    max_time       timestamptz NOT NULL,
    committed_time timestamptz NOT NULL,
    -- Another replica takes over once it sends a sample later than this.
    lease_until    timestamptz NOT NULL,
    leader_since   timestamptz NOT NULL DEFAULT now()
);

-- Requests of standbys newer than the leader's newest committed sample, kept for a takeover:
-- each a remote-write 1.0 request (snappy-compressed protobuf) of the standby's series.
-- Deleted once the leader's commits pass them, or when another replica takes over.
CREATE TABLE _prom_catalog.ha_standby (
    id          bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    cluster     text        NOT NULL,
    replica     text        NOT NULL,
    min_time    timestamptz NOT NULL,
    max_time    timestamptz NOT NULL,
    received_at timestamptz NOT NULL DEFAULT now(),
    body        bytea       NOT NULL
);
CREATE INDEX ha_standby_replica ON _prom_catalog.ha_standby (cluster, replica, id);
CREATE INDEX ha_standby_time ON _prom_catalog.ha_standby (cluster, max_time);

-- Decides what a replica's request with samples in [p_min_time, p_max_time] is: the leader's
-- (is_leader: store its samples later than fence; pending: whether it has kept standby
-- requests to write, after a takeover) or a standby's (store nothing; keep the request if it
-- has samples later than fence, the leader's newest committed one). Takes the lease when
-- there is none, renews it for the leader, hands it over when the leader has sent nothing
-- newer for the timeout. Times later than the database's clock and ten seconds count as
-- that for the lease, so that one sample from the future does not hold it, or take it.
CREATE FUNCTION _prom_catalog.ha_decide(p_cluster text, p_replica text, p_min_time timestamptz,
                                        p_max_time timestamptz, p_timeout interval)
RETURNS TABLE (is_leader boolean, fence timestamptz, took_over boolean, pending boolean)
LANGUAGE plpgsql AS $fn$
DECLARE
    v _prom_catalog.ha_lease;
    v_lease_time timestamptz := least(p_max_time, now() + interval '10 seconds');
BEGIN
    -- A standby that cannot take over is answered without the row's lock: half of a pair's
    -- requests are a standby's.
    SELECT * INTO v FROM _prom_catalog.ha_lease l WHERE l.cluster = p_cluster;
    IF FOUND AND v.leader <> p_replica AND v_lease_time <= v.lease_until THEN
        DELETE FROM _prom_catalog.ha_standby s
         WHERE s.cluster = p_cluster AND s.replica = p_replica AND s.max_time <= v.committed_time;
        RETURN QUERY SELECT false, v.committed_time, false, false;
        RETURN;
    END IF;
    SELECT * INTO v FROM _prom_catalog.ha_lease l WHERE l.cluster = p_cluster FOR UPDATE;
    IF NOT FOUND THEN
        INSERT INTO _prom_catalog.ha_lease AS l (cluster, leader, fence, max_time, committed_time, lease_until)
        VALUES (p_cluster, p_replica, '-infinity', p_max_time, '-infinity', v_lease_time + p_timeout)
        ON CONFLICT (cluster) DO NOTHING;
        IF FOUND THEN
            RETURN QUERY SELECT true, '-infinity'::timestamptz, true, false;
            RETURN;
        END IF;
        -- Another connector took it at the same moment.
        SELECT * INTO v FROM _prom_catalog.ha_lease l WHERE l.cluster = p_cluster FOR UPDATE;
    END IF;
    IF v.leader = p_replica THEN
        IF p_max_time > v.max_time OR v_lease_time + p_timeout > v.lease_until THEN
            UPDATE _prom_catalog.ha_lease l
               SET max_time = greatest(l.max_time, p_max_time),
                   lease_until = greatest(l.lease_until, v_lease_time + p_timeout)
             WHERE l.cluster = p_cluster;
        END IF;
        RETURN QUERY SELECT true, v.fence, false,
            EXISTS (SELECT 1 FROM _prom_catalog.ha_standby s WHERE s.cluster = p_cluster AND s.replica = p_replica);
        RETURN;
    END IF;
    IF v_lease_time > v.lease_until THEN
        UPDATE _prom_catalog.ha_lease l
           SET leader = p_replica, fence = v.committed_time, max_time = greatest(v.committed_time, p_max_time),
               lease_until = v_lease_time + p_timeout, leader_since = now()
         WHERE l.cluster = p_cluster;
        -- What other standbys kept is of no use now.
        DELETE FROM _prom_catalog.ha_standby s WHERE s.cluster = p_cluster AND s.replica <> p_replica;
        RETURN QUERY SELECT true, v.committed_time, true,
            EXISTS (SELECT 1 FROM _prom_catalog.ha_standby s WHERE s.cluster = p_cluster AND s.replica = p_replica);
        RETURN;
    END IF;
    DELETE FROM _prom_catalog.ha_standby s
     WHERE s.cluster = p_cluster AND s.replica = p_replica AND s.max_time <= v.committed_time;
    RETURN QUERY SELECT false, v.committed_time, false, false;
END
$fn$;

-- The leader's write of samples up to p_max_time has committed: standbys' kept requests it
-- has caught up with are of no use (those of standbys that stopped sending too). While the
-- leader's own kept requests (from before its takeover) are not all written, its stored
-- samples are whole only up to the oldest of them: the committed time stays below it, so
-- that a takeover meanwhile keeps what they hold.
CREATE FUNCTION _prom_catalog.ha_committed(p_cluster text, p_replica text, p_max_time timestamptz)
RETURNS void
LANGUAGE plpgsql AS $fn$
DECLARE
    v_time timestamptz := least(p_max_time,
        (SELECT min(s.min_time) - interval '1 millisecond' FROM _prom_catalog.ha_standby s
          WHERE s.cluster = p_cluster AND s.replica = p_replica));
BEGIN
    UPDATE _prom_catalog.ha_lease l SET committed_time = v_time
     WHERE l.cluster = p_cluster AND l.leader = p_replica AND l.committed_time < v_time;
    IF FOUND THEN
        DELETE FROM _prom_catalog.ha_standby s
         WHERE s.cluster = p_cluster AND s.replica <> p_replica AND s.max_time <= v_time;
    END IF;
END
$fn$;

-- The leader of each HA cluster, for SQL users and dashboards.
CREATE VIEW prom_info.ha_lease AS
SELECT cluster, leader, leader_since, committed_time AS leader_newest_sample, lease_until
  FROM _prom_catalog.ha_lease;
