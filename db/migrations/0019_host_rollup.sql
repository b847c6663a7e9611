-- Rollup by producer, service, protocol, host and status: comm_rollup without the destination port.
--
-- The port is what makes comm_rollup large: a port scan, or clients on ephemeral ports, adds a row per port per
-- bucket, so a minute of busy traffic holds tens of thousands of rows while its hosts and statuses hold a few
-- hundred. Answers grouped or filtered by host, producer, protocol or status (the dashboards' per-host panels,
-- the alert rules watching each host and producer) read this table instead: at 10M events in 5 minutes
-- (BENCHMARKS.md, "Alerts"), an hour of volume by host read 146,000 comm_rollup rows in 300–600 ms.
-- Rolled up per flush like comm_rollup (a flush adds a few hundred rows), with its latency histograms.
-- Distribution (Citus): on bucket, like comm_rollup.
CREATE TABLE comm_rollup_host (
    res           integer     NOT NULL,
    bucket        timestamptz NOT NULL,
    producer      text        NOT NULL,
    service       text,
    protocol      text,
    host          text,
    status        integer,
    events        bigint      NOT NULL,
    bytes_in      bigint      NOT NULL,
    bytes_out     bigint      NOT NULL,
    errors        bigint      NOT NULL,
    client_errors bigint      NOT NULL,
    latency_n     bigint      NOT NULL,
    latency_sum   double precision NOT NULL,
    latency_max   double precision,
    latency_hist  bigint[]    NOT NULL,
    CONSTRAINT comm_rollup_host_key UNIQUE NULLS NOT DISTINCT (res, bucket, producer, service, protocol, host, status)
) WITH (fillfactor = 70, toast_tuple_target = 8160);

CREATE TABLE comm_rollup_host_delta (LIKE comm_rollup_host INCLUDING DEFAULTS);

-- The host rollup of whole hours [from_ts, to_ts), from comm_logs.
CREATE FUNCTION comm_rollup_host_rebuild(from_ts timestamptz, to_ts timestamptz) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    r integer;
BEGIN
    DELETE FROM comm_rollup_host WHERE bucket >= from_ts AND bucket < to_ts;
    DELETE FROM comm_rollup_host_delta WHERE bucket >= from_ts AND bucket < to_ts;
    FOREACH r IN ARRAY ARRAY[60, 300, 3600] LOOP
        INSERT INTO comm_rollup_host
        SELECT r, b, producer, service, protocol, host, status, sum(n), sum(bi), sum(bo), sum(e), sum(ce),
               sum(ln), sum(ls), max(lm),
               coalesce(array_agg(latency_hist_pack(k, ln) ORDER BY k) FILTER (WHERE k IS NOT NULL), '{}')
        FROM (SELECT date_bin(r * interval '1 second', ts, to_timestamp(0)) AS b, producer, service, protocol, host,
                     status, latency_bucket(latency_ms) AS k, count(*) AS n,
                     coalesce(sum(bytes_in), 0) AS bi, coalesce(sum(bytes_out), 0) AS bo,
                     count(*) FILTER (WHERE status >= 500) AS e,
                     count(*) FILTER (WHERE status BETWEEN 400 AND 499) AS ce,
                     count(latency_ms) AS ln, coalesce(sum(latency_ms), 0) AS ls, max(latency_ms) AS lm
              FROM comm_logs WHERE ts >= from_ts AND ts < to_ts
              GROUP BY 1, 2, 3, 4, 5, 6, 7) AS per_latency_bucket
        GROUP BY b, producer, service, protocol, host, status;
    END LOOP;
END
$$;

ALTER FUNCTION comm_rollup_rebuild(timestamptz, timestamptz) RENAME TO comm_rollup_rebuild_before_host;
CREATE FUNCTION comm_rollup_rebuild(from_ts timestamptz, to_ts timestamptz) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM comm_rollup_rebuild_before_host(from_ts, to_ts);
    PERFORM comm_rollup_host_rebuild(from_ts, to_ts);
END
$$;

-- Rows written before this migration are rolled up once, so that answers read from here include them.
SELECT comm_rollup_host_rebuild(date_trunc('hour', min(ts)), date_trunc('hour', max(ts)) + interval '1 hour')
FROM comm_logs HAVING count(*) > 0;
