-- Rollups in three resolutions and four shapes, replacing comm_rollup_1m.
--
-- A /metrics answer costs what it reads. One per-minute table over 24 hours is 1440 × (dimension combinations)
-- rows, and IP questions had to read comm_logs. So every rollup is kept at `res` = 60, 300 and 3600 seconds, and
-- a query reads whole hours from the hourly rows, whole 5-minute spans from the 5-minute rows and only the
-- remaining edge minutes from the per-minute rows (query side: db/queries.rs, `segments`). And there are four
-- shapes, each query reading the narrowest one that holds every dimension it filters or groups on:
--
--   comm_rollup          producer, service, protocol, host, dst_port, status   (counts, latency)
--   comm_rollup_service  service                                               (counts, latency)
--   comm_rollup_src      src_ip                                                (counts)
--   comm_rollup_dst      dst_ip                                                (counts)
--
-- The IP shapes have no minute rows (300 and 3600 only): with many distinct addresses a minute barely aggregates,
-- and every tier costs about one upserted row per distinct address in a flush. Answers from them are in whole
-- 5 minutes. Source × destination pairs are not rolled up: their number grows with the traffic's fan-out, close
-- to the number of events; by=pair reads comm_logs.
--
-- All are computed by the writer from the rows it copies (pipeline/rollup.rs) and written in the same transaction
-- as the COPY (as deltas, see below), so counts and bytes equal the raw aggregate exactly. `errors` counts status >= 500 and `client_errors` status 400-499.
-- Latency is the mergeable histogram described in 0002_rollups.sql (≤ 1% relative error), now stored as int8[]
-- pairs {bucket, count, bucket, count, ...} in ascending bucket order, zero latencies under bucket -32768: an
-- answer over 24 hours merges thousands of them, and arrays cross the wire in binary where jsonb is printed as
-- text number by number.
--
-- Cost at ingest: each flush appends one delta row per (finest bucket, key) it touches. The IP shapes dominate
-- (a flush touching N distinct sources appends about N rows); BENCHMARKS.md has the measured rates.
--
-- Rows are updated in place by every compaction that touches them; free space on each page (fillfactor) lets
-- those updates stay on the page (HOT) instead of touching the index.
--
-- Distribution (Citus): each unique key holds a candidate hash column: service, src_ip, dst_ip (comm_rollup:
-- service).

CREATE TABLE comm_rollup (
    res           integer     NOT NULL,
    bucket        timestamptz NOT NULL,
    producer      text        NOT NULL,
    service       text,
    protocol      text,
    host          text,
    dst_port      integer,
    status        integer,
    events        bigint      NOT NULL,
    bytes_in      bigint      NOT NULL,
    bytes_out     bigint      NOT NULL,
    errors        bigint      NOT NULL,
    client_errors bigint      NOT NULL,
    latency_n     bigint      NOT NULL,
    latency_sum   double precision NOT NULL,
    latency_max   double precision,
    latency_hist  int8[]      NOT NULL,
    CONSTRAINT comm_rollup_key UNIQUE NULLS NOT DISTINCT
        (res, bucket, producer, service, protocol, host, dst_port, status)
) WITH (fillfactor = 70);

CREATE TABLE comm_rollup_service (
    res           integer     NOT NULL,
    bucket        timestamptz NOT NULL,
    service       text,
    events        bigint      NOT NULL,
    bytes_in      bigint      NOT NULL,
    bytes_out     bigint      NOT NULL,
    errors        bigint      NOT NULL,
    client_errors bigint      NOT NULL,
    latency_n     bigint      NOT NULL,
    latency_sum   double precision NOT NULL,
    latency_max   double precision,
    latency_hist  int8[]      NOT NULL,
    CONSTRAINT comm_rollup_service_key UNIQUE NULLS NOT DISTINCT (res, bucket, service)
) WITH (fillfactor = 70);

CREATE TABLE comm_rollup_src (
    res           integer     NOT NULL,
    bucket        timestamptz NOT NULL,
    src_ip        inet,
    events        bigint      NOT NULL,
    bytes_in      bigint      NOT NULL,
    bytes_out     bigint      NOT NULL,
    errors        bigint      NOT NULL,
    client_errors bigint      NOT NULL,
    CONSTRAINT comm_rollup_src_key UNIQUE NULLS NOT DISTINCT (res, bucket, src_ip)
) WITH (fillfactor = 70);

CREATE TABLE comm_rollup_dst (
    res           integer     NOT NULL,
    bucket        timestamptz NOT NULL,
    dst_ip        inet,
    events        bigint      NOT NULL,
    bytes_in      bigint      NOT NULL,
    bytes_out     bigint      NOT NULL,
    errors        bigint      NOT NULL,
    client_errors bigint      NOT NULL,
    CONSTRAINT comm_rollup_dst_key UNIQUE NULLS NOT DISTINCT (res, bucket, dst_ip)
) WITH (fillfactor = 70);

-- Writers do not update these tables. Each flush appends its contributions, at the shape's finest tier only, to
-- a `_delta` twin in the COPY's transaction (a plain insert: no conflicts, no row locks, no histogram merge), and
-- one compactor moves the deltas into the keyed rows of every tier every second or so, deleting them in the same
-- transaction (pipeline/compact.rs). Queries read a table together with its delta (presented at every tier), so
-- either copy of a contribution is seen, never both. Merging
-- at ingest instead cost 4 writers a histogram merge and a row lock per key per flush, and halved the rate.
CREATE TABLE comm_rollup_delta (LIKE comm_rollup INCLUDING DEFAULTS);
CREATE TABLE comm_rollup_service_delta (LIKE comm_rollup_service INCLUDING DEFAULTS);
CREATE TABLE comm_rollup_src_delta (LIKE comm_rollup_src INCLUDING DEFAULTS);
CREATE TABLE comm_rollup_dst_delta (LIKE comm_rollup_dst INCLUDING DEFAULTS);

-- `src`/`dst` filters (`<<=` a network) read a range of this index instead of every address of every bucket.
-- Updates leave key columns alone, so they stay HOT all the same.
CREATE INDEX comm_rollup_src_by_ip ON comm_rollup_src (src_ip, res, bucket);
CREATE INDEX comm_rollup_dst_by_ip ON comm_rollup_dst (dst_ip, res, bucket);

-- The histogram bucket of a latency, as query/latency.rs computes it.
CREATE FUNCTION latency_bucket(ms double precision) RETURNS int8
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT CASE WHEN ms <= 0 THEN -32768 ELSE ceil(ln(ms) / ln(1.02))::int8 END
$$;

-- {{bucket, count}, ...} (from array_agg(ARRAY[bucket, count] ORDER BY bucket)) as the stored flat pairs.
CREATE FUNCTION latency_hist_flatten(pairs int8[]) RETURNS int8[]
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT coalesce(array_agg(x ORDER BY o), '{}') FROM unnest(pairs) WITH ORDINALITY AS u(x, o)
$$;

-- Adds two histograms bucket by bucket.
DROP FUNCTION latency_hist_merge(jsonb, jsonb);
CREATE FUNCTION latency_hist_merge(a int8[], b int8[]) RETURNS int8[]
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT latency_hist_flatten(array_agg(ARRAY[k, n] ORDER BY k))
    FROM (SELECT h[i] AS k, sum(h[i + 1])::int8 AS n
          FROM (VALUES (a), (b)) AS x(h), generate_series(1, coalesce(array_length(h, 1), 0), 2) AS i
          GROUP BY 1) AS s
$$;

-- Recomputes every rollup row of [from_ts, to_ts) (whole hours) from comm_logs, exactly as the writer would have
-- written it. Used below to carry existing data over, and by operators after editing comm_logs by hand: for hours
-- that no longer receive events, or with ingest paused (a flush committing while it runs may be counted twice).
CREATE FUNCTION comm_rollup_rebuild(from_ts timestamptz, to_ts timestamptz) RETURNS void
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
    DELETE FROM comm_rollup_delta WHERE bucket >= from_ts AND bucket < to_ts;
    DELETE FROM comm_rollup_service_delta WHERE bucket >= from_ts AND bucket < to_ts;
    DELETE FROM comm_rollup_src_delta WHERE bucket >= from_ts AND bucket < to_ts;
    DELETE FROM comm_rollup_dst_delta WHERE bucket >= from_ts AND bucket < to_ts;
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
    END LOOP;
END
$$;

-- Carry existing events over, then retire the single-resolution table.
DO $$
DECLARE
    lo timestamptz;
    hi timestamptz;
BEGIN
    SELECT date_trunc('hour', min(ts)), date_trunc('hour', max(ts)) + interval '1 hour' INTO lo, hi FROM comm_logs;
    IF lo IS NOT NULL THEN
        PERFORM comm_rollup_rebuild(lo, hi);
    END IF;
END
$$;

DROP TABLE comm_rollup_1m;
