-- Per-minute rollup of comm_logs, written in the same transaction as each COPY (see pipeline/rollup.rs), so
-- its counts and bytes equal the same aggregate over the raw table exactly, whatever fails and is retried.
--
-- Keyed by the low-cardinality dimensions the /metrics endpoints filter and group on. Source and destination
-- IPs are not dimensions here: with them the rollup would have nearly as many rows as comm_logs. Queries that
-- filter or group on IPs read comm_logs (BRIN on ts, btree on src_ip).
--
-- Latency: a mergeable log-bucket histogram, {"<index>": count, ...}, where index i holds values in
-- (1.02^(i-1), 1.02^i] ms and "z" holds zeros. Any percentile read from it is within 1% (0.9901%) of the exact value
-- of the event at that rank.
--
-- Distribution (Citus): the unique key contains `service` (or `bucket`) as a candidate distribution column.
CREATE TABLE comm_rollup_1m (
    bucket      timestamptz NOT NULL,
    producer    text        NOT NULL,
    service     text,
    protocol    text,
    host        text,
    dst_port    integer,
    status      integer,
    events      bigint      NOT NULL,
    bytes_in    bigint      NOT NULL,
    bytes_out   bigint      NOT NULL,
    latency_n   bigint      NOT NULL,
    latency_sum double precision NOT NULL,
    latency_max double precision,
    latency_hist jsonb      NOT NULL,
    CONSTRAINT comm_rollup_1m_key UNIQUE NULLS NOT DISTINCT
        (bucket, producer, service, protocol, host, dst_port, status)
);

-- Adds two histograms bucket by bucket.
CREATE FUNCTION latency_hist_merge(a jsonb, b jsonb) RETURNS jsonb
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT coalesce(jsonb_object_agg(k, n), '{}'::jsonb)
    FROM (SELECT k, sum(v::bigint) AS n
          FROM (SELECT * FROM jsonb_each_text(a) UNION ALL SELECT * FROM jsonb_each_text(b)) AS e(k, v)
          GROUP BY k) AS s
$$;
