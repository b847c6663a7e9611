-- Rollup of sources × destination ports: how many distinct ports a source reaches in a window (the `scan`
-- alerts, collector/src/alerts), and answers filtering on both a source and a port.
--
-- Like the pairs (0008), and for the same reason, it is sealed from comm_logs behind the writers rather than
-- rolled up per flush: most sources reach one or two ports, so a flush touches nearly one row per event, and the
-- rows only aggregate over minutes. The seal that advances comm_pair_seal.sealed_to rolls up both sealed shapes
-- in one transaction, so the bound and its protocol (writers' late deltas, `gen`) are shared: an event is in
-- exactly one of the seal's snapshot, a delta or a later seal, for both. Before this table, a scan rule counted
-- distinct ports over the window's raw events: 18 s a cycle at 10M events in the window (BENCHMARKS.md).
-- Distribution (Citus): the key holds src_ip.

CREATE TABLE comm_rollup_src_port (
    res           integer     NOT NULL,
    bucket        timestamptz NOT NULL,
    src_ip        inet,
    dst_port      integer,
    events        bigint      NOT NULL,
    bytes_in      bigint      NOT NULL,
    bytes_out     bigint      NOT NULL,
    errors        bigint      NOT NULL,
    client_errors bigint      NOT NULL,
    CONSTRAINT comm_rollup_src_port_key UNIQUE NULLS NOT DISTINCT (res, bucket, src_ip, dst_port)
) WITH (fillfactor = 70);

CREATE TABLE comm_rollup_src_port_delta (LIKE comm_rollup_src_port INCLUDING DEFAULTS, gen timestamptz);

-- Sources × ports of [from_ts, to_ts) (whole hours) recomputed from comm_logs, up to the seal.
CREATE FUNCTION comm_rollup_src_port_rebuild(from_ts timestamptz, to_ts timestamptz) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    upto timestamptz := least(to_ts, (SELECT sealed_to FROM comm_pair_seal));
BEGIN
    DELETE FROM comm_rollup_src_port WHERE bucket >= from_ts AND bucket < to_ts;
    DELETE FROM comm_rollup_src_port_delta WHERE bucket >= from_ts AND bucket < to_ts;
    INSERT INTO comm_rollup_src_port
    SELECT t.res, date_bin(t.res * interval '1 second', l.ts, to_timestamp(0)), l.src_ip, l.dst_port, count(*),
           coalesce(sum(l.bytes_in), 0)::int8, coalesce(sum(l.bytes_out), 0)::int8,
           count(*) FILTER (WHERE l.status >= 500), count(*) FILTER (WHERE l.status BETWEEN 400 AND 499)
    FROM comm_logs AS l, (VALUES (300), (3600)) AS t(res)
    WHERE l.ts >= from_ts AND l.ts < upto
    GROUP BY 1, 2, 3, 4;
END
$$;

ALTER FUNCTION comm_rollup_rebuild(timestamptz, timestamptz) RENAME TO comm_rollup_rebuild_before_src_port;
CREATE FUNCTION comm_rollup_rebuild(from_ts timestamptz, to_ts timestamptz) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM comm_rollup_rebuild_before_src_port(from_ts, to_ts);
    PERFORM comm_rollup_src_port_rebuild(from_ts, to_ts);
END
$$;

-- Events already sealed are rolled up once; later ones are the seal's.
SELECT comm_rollup_src_port_rebuild(date_trunc('hour', min(ts)), date_trunc('hour', max(ts)) + interval '1 hour')
FROM comm_logs HAVING count(*) > 0;
