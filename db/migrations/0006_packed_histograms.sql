-- Latency histograms as one number per non-empty bucket: bucket × 2^48 + count.
--
-- Stored as flat pairs [bucket, count, bucket, count, ...] (0003), a histogram of the benchmark's traffic is ~280
-- numbers, and PostgreSQL sends every array element with a length word of its own: a 24-hour latency answer reads
-- ~1,440 histograms, and sending their 400k numbers took ~15 ms of it. One number per bucket halves that and the
-- row. A bucket is an i16 (query/latency.rs), the top 16 bits; a count gets the low 48 bits (2.8e14 events of one
-- latency bucket in one rollup row). Numbers sort by bucket.

CREATE FUNCTION latency_hist_pack(bucket int8, n int8) RETURNS int8
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE AS $$
    SELECT bucket * 281474976710656 + n
$$;

-- Adds two histograms bucket by bucket.
CREATE OR REPLACE FUNCTION latency_hist_merge(a int8[], b int8[]) RETURNS int8[]
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT coalesce(array_agg(latency_hist_pack(k, n) ORDER BY k), '{}')
    FROM (SELECT x >> 48 AS k, sum(x & 281474976710655)::int8 AS n FROM unnest(a || b) AS x GROUP BY 1) AS s
$$;

-- A function of this migration's own, dropped at its end (not in pg_temp: on a Citus coordinator a new function
-- is created on the workers too, which have no pg_temp schema).
CREATE FUNCTION comm_migration_0006_packed(pairs int8[]) RETURNS int8[]
LANGUAGE sql IMMUTABLE AS $$
    SELECT coalesce(array_agg(latency_hist_pack(pairs[i], pairs[i + 1]) ORDER BY i), '{}')
    FROM generate_series(1, coalesce(array_length(pairs, 1), 0), 2) AS i
$$;

UPDATE comm_rollup SET latency_hist = comm_migration_0006_packed(latency_hist);
UPDATE comm_rollup_delta SET latency_hist = comm_migration_0006_packed(latency_hist);
UPDATE comm_rollup_service SET latency_hist = comm_migration_0006_packed(latency_hist);
UPDATE comm_rollup_service_delta SET latency_hist = comm_migration_0006_packed(latency_hist);

-- The rebuild (see 0003 and 0005) writes the new form.
CREATE OR REPLACE FUNCTION comm_rollup_rebuild(from_ts timestamptz, to_ts timestamptz) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    r integer;
BEGIN
    IF date_trunc('hour', from_ts) <> from_ts OR date_trunc('hour', to_ts) <> to_ts THEN
        RAISE EXCEPTION 'comm_rollup_rebuild: % and % must be whole hours', from_ts, to_ts;
    END IF;
    DELETE FROM comm_rollup WHERE bucket >= from_ts AND bucket < to_ts;
    DELETE FROM comm_rollup_service WHERE bucket >= from_ts AND bucket < to_ts;
    DELETE FROM comm_rollup_src WHERE bucket >= from_ts AND bucket < to_ts;
    DELETE FROM comm_rollup_dst WHERE bucket >= from_ts AND bucket < to_ts;
    DELETE FROM comm_rollup_src_net WHERE bucket >= from_ts AND bucket < to_ts;
    DELETE FROM comm_rollup_delta WHERE bucket >= from_ts AND bucket < to_ts;
    DELETE FROM comm_rollup_service_delta WHERE bucket >= from_ts AND bucket < to_ts;
    DELETE FROM comm_rollup_src_delta WHERE bucket >= from_ts AND bucket < to_ts;
    DELETE FROM comm_rollup_dst_delta WHERE bucket >= from_ts AND bucket < to_ts;
    DELETE FROM comm_rollup_src_net_delta WHERE bucket >= from_ts AND bucket < to_ts;
    FOREACH r IN ARRAY ARRAY[60, 300, 3600] LOOP
        INSERT INTO comm_rollup
        SELECT r, b, producer, service, protocol, host, dst_port, status, sum(n), sum(bi), sum(bo), sum(e), sum(ce),
               sum(ln), sum(ls), max(lm),
               coalesce(array_agg(latency_hist_pack(k, ln) ORDER BY k) FILTER (WHERE k IS NOT NULL), '{}')
        FROM (SELECT date_bin(r * interval '1 second', ts, to_timestamp(0)) AS b, producer, service, protocol, host,
                     dst_port, status, latency_bucket(latency_ms) AS k, count(*) AS n,
                     coalesce(sum(bytes_in), 0) AS bi, coalesce(sum(bytes_out), 0) AS bo,
                     count(*) FILTER (WHERE status >= 500) AS e,
                     count(*) FILTER (WHERE status BETWEEN 400 AND 499) AS ce,
                     count(latency_ms) AS ln, coalesce(sum(latency_ms), 0) AS ls, max(latency_ms) AS lm
              FROM comm_logs WHERE ts >= from_ts AND ts < to_ts
              GROUP BY 1, 2, 3, 4, 5, 6, 7, 8) AS per_latency_bucket
        GROUP BY b, producer, service, protocol, host, dst_port, status;

        INSERT INTO comm_rollup_service
        SELECT r, b, service, sum(n), sum(bi), sum(bo), sum(e), sum(ce), sum(ln), sum(ls), max(lm),
               coalesce(array_agg(latency_hist_pack(k, ln) ORDER BY k) FILTER (WHERE k IS NOT NULL), '{}')
        FROM (SELECT date_bin(r * interval '1 second', ts, to_timestamp(0)) AS b, service,
                     latency_bucket(latency_ms) AS k, count(*) AS n,
                     coalesce(sum(bytes_in), 0) AS bi, coalesce(sum(bytes_out), 0) AS bo,
                     count(*) FILTER (WHERE status >= 500) AS e,
                     count(*) FILTER (WHERE status BETWEEN 400 AND 499) AS ce,
                     count(latency_ms) AS ln, coalesce(sum(latency_ms), 0) AS ls, max(latency_ms) AS lm
              FROM comm_logs WHERE ts >= from_ts AND ts < to_ts
              GROUP BY 1, 2, 3) AS per_latency_bucket
        GROUP BY b, service;

        CONTINUE WHEN r = 60;  -- the IP shapes keep no minute rows

        INSERT INTO comm_rollup_src
        SELECT r, date_bin(r * interval '1 second', ts, to_timestamp(0)), src_ip, count(*),
               coalesce(sum(bytes_in), 0), coalesce(sum(bytes_out), 0),
               count(*) FILTER (WHERE status >= 500), count(*) FILTER (WHERE status BETWEEN 400 AND 499)
        FROM comm_logs WHERE ts >= from_ts AND ts < to_ts GROUP BY 2, 3;

        INSERT INTO comm_rollup_dst
        SELECT r, date_bin(r * interval '1 second', ts, to_timestamp(0)), dst_ip, count(*),
               coalesce(sum(bytes_in), 0), coalesce(sum(bytes_out), 0),
               count(*) FILTER (WHERE status >= 500), count(*) FILTER (WHERE status BETWEEN 400 AND 499)
        FROM comm_logs WHERE ts >= from_ts AND ts < to_ts GROUP BY 2, 3;

        INSERT INTO comm_rollup_src_net
        SELECT r, date_bin(r * interval '1 second', ts, to_timestamp(0)), src_network(src_ip), count(*),
               coalesce(sum(bytes_in), 0), coalesce(sum(bytes_out), 0),
               count(*) FILTER (WHERE status >= 500), count(*) FILTER (WHERE status BETWEEN 400 AND 499)
        FROM comm_logs WHERE ts >= from_ts AND ts < to_ts GROUP BY 2, 3;
    END LOOP;
END
$$;

DROP FUNCTION latency_hist_flatten(int8[]);
DROP FUNCTION comm_migration_0006_packed(int8[]);
