-- Rollup by source network: a /24 for IPv4, a /64 for IPv6.
--
-- A `src` filter naming a network read every address in it from comm_rollup_src: 10.0.1.0/24 over 24 hours in
-- 5-minute buckets is 288 × 256 rows, 41 ms at the 10M-row benchmark. Any network of prefix /24 (/64) or shorter
-- holds an address exactly when it holds the address's /24 (/64), so those filters read this table instead: one
-- row per network and bucket. Longer prefixes and single addresses still read comm_rollup_src.
-- Kept like comm_rollup_src (5-minute and hourly rows, a delta twin; see 0003), keyed by the network's address.

CREATE FUNCTION src_network(ip inet) RETURNS inet
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE AS $$
    SELECT set_masklen(network(set_masklen(ip, CASE family(ip) WHEN 4 THEN 24 ELSE 64 END)),
                       CASE family(ip) WHEN 4 THEN 32 ELSE 128 END)
$$;

CREATE TABLE comm_rollup_src_net (
    res           integer     NOT NULL,
    bucket        timestamptz NOT NULL,
    src_net       inet,
    events        bigint      NOT NULL,
    bytes_in      bigint      NOT NULL,
    bytes_out     bigint      NOT NULL,
    errors        bigint      NOT NULL,
    client_errors bigint      NOT NULL,
    CONSTRAINT comm_rollup_src_net_key UNIQUE NULLS NOT DISTINCT (res, bucket, src_net)
) WITH (fillfactor = 70);

CREATE TABLE comm_rollup_src_net_delta (LIKE comm_rollup_src_net INCLUDING DEFAULTS);

CREATE INDEX comm_rollup_src_net_by_net ON comm_rollup_src_net (src_net, res, bucket);

-- Everything counted so far, compacted or not, from the per-address rollup.
INSERT INTO comm_rollup_src_net
SELECT res, bucket, src_network(src_ip), sum(events), sum(bytes_in), sum(bytes_out), sum(errors), sum(client_errors)
FROM comm_rollup_src GROUP BY 1, 2, 3;

INSERT INTO comm_rollup_src_net_delta
SELECT res, bucket, src_network(src_ip), events, bytes_in, bytes_out, errors, client_errors
FROM comm_rollup_src_delta;

-- The rebuild (see 0003) covers the new table too.
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
               latency_hist_flatten(array_agg(ARRAY[k, ln] ORDER BY k) FILTER (WHERE k IS NOT NULL))
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
               latency_hist_flatten(array_agg(ARRAY[k, ln] ORDER BY k) FILTER (WHERE k IS NOT NULL))
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
