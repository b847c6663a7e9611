-- Rollup by where traffic comes from and goes to (enrichment: 0014, 0015): each side's country (or range label)
-- and AS number, and the threat list matched. It answers `group_by`/`by=` and the filters on those columns
-- without reading comm_logs.
--
-- One shape for both sides rather than one per side: a collector's traffic has one side that barely varies (its
-- own networks, mostly labelled `private`), so the rows per bucket are about the other side's distinct AS
-- numbers (countries follow from them, and `threat` is null on nearly every event). At the enrichment benchmark
-- (BENCHMARKS.md, "Enrichment"), 513 AS numbers, that is a few hundred rows a bucket; real traffic meets a few
-- thousand AS numbers an hour. Kept at the minute too (the services' tiers): unlike addresses, its rows do
-- aggregate within a minute. Distribution (Citus): the key holds src_asn.
CREATE TABLE comm_rollup_geo (
    res           integer     NOT NULL,
    bucket        timestamptz NOT NULL,
    src_country   text,
    src_asn       bigint,
    dst_country   text,
    dst_asn       bigint,
    threat        text,
    events        bigint      NOT NULL,
    bytes_in      bigint      NOT NULL,
    bytes_out     bigint      NOT NULL,
    errors        bigint      NOT NULL,
    client_errors bigint      NOT NULL,
    CONSTRAINT comm_rollup_geo_key
        UNIQUE NULLS NOT DISTINCT (res, bucket, src_country, src_asn, dst_country, dst_asn, threat)
) WITH (fillfactor = 70);

CREATE TABLE comm_rollup_geo_delta (LIKE comm_rollup_geo INCLUDING DEFAULTS);

-- The geo rollup of whole hours [from_ts, to_ts), from comm_logs.
CREATE FUNCTION comm_rollup_geo_rebuild(from_ts timestamptz, to_ts timestamptz) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    r integer;
BEGIN
    DELETE FROM comm_rollup_geo WHERE bucket >= from_ts AND bucket < to_ts;
    DELETE FROM comm_rollup_geo_delta WHERE bucket >= from_ts AND bucket < to_ts;
    FOREACH r IN ARRAY ARRAY[60, 300, 3600] LOOP
        INSERT INTO comm_rollup_geo
        SELECT r, date_bin(r * interval '1 second', ts, to_timestamp(0)), src_country, src_asn, dst_country,
               dst_asn, threat, count(*), coalesce(sum(bytes_in), 0), coalesce(sum(bytes_out), 0),
               count(*) FILTER (WHERE status >= 500), count(*) FILTER (WHERE status BETWEEN 400 AND 499)
        FROM comm_logs WHERE ts >= from_ts AND ts < to_ts GROUP BY 2, 3, 4, 5, 6, 7;
    END LOOP;
END
$$;

ALTER FUNCTION comm_rollup_rebuild(timestamptz, timestamptz) RENAME TO comm_rollup_rebuild_before_geo;
CREATE FUNCTION comm_rollup_rebuild(from_ts timestamptz, to_ts timestamptz) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM comm_rollup_rebuild_before_geo(from_ts, to_ts);
    PERFORM comm_rollup_geo_rebuild(from_ts, to_ts);
END
$$;

-- Rows written before this migration are rolled up once, so that answers read from here include them.
SELECT comm_rollup_geo_rebuild(date_trunc('hour', min(ts)), date_trunc('hour', max(ts)) + interval '1 hour')
FROM comm_logs HAVING count(*) > 0;
