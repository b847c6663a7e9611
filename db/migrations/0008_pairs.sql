-- Rollup of source × destination pairs, for top talkers by pair and for queries filtering on both addresses.
--
-- Pairs are many: at the benchmark a flush of 20,000 events touches ~13,000 of them, so per-flush deltas (as the
-- other shapes have, see 0003) would add most of a second COPY to every flush and ~60,000 upserts a second to the
-- compactor. They barely aggregate within a flush, but they do within minutes (the benchmark's 95,000 pairs at
-- most per bucket, whatever the rate). So pairs are sealed from comm_logs instead, behind the writers:
--
-- * comm_pair_seal.sealed_to (S): every event with ts < S is in comm_rollup_pair or its delta, and no event with
--   ts >= S is. Queries read the rollup and add the raw events from S on (the tail, a few seconds of rows).
-- * The compactor advances S every few seconds, to a little before now, by aggregating [S, S') of comm_logs
--   (pipeline/compact.rs, `seal_pairs`).
-- * An event arriving with ts < S (late, or a backfill) is rolled up by its writer as a delta in its COPY's
--   transaction, like the other shapes. Writers read the bounds under a shared advisory lock; a seal first sets
--   sealing_to = S' under the exclusive lock, then aggregates in a snapshot taken before it lets writers go on.
--   So each event is in exactly one of: the seal's snapshot (writers that used the old bounds), a delta (writers
--   that used the new ones, for ts < S'), or a later seal (ts >= S').
-- * While a seal runs, sealed_to = S < sealing_to = S': a writer's deltas for events in [S, S') carry gen = S', and
--   count (for queries and the compactor) only once gen <= sealed_to, when the seal has committed. Until then the
--   tail reads those events raw. A seal that failed leaves such deltas behind: the next one deletes them before
--   taking its snapshot, which then holds their events.
--
-- Kept at 5 minutes and 1 hour like the other address shapes, with top lists like comm_rollup_src (0007). A seal
-- lists again every bucket it changed, in its transaction, the open ones included: the latest hour of a "last
-- 24 hours" window is always open, and reading its ~95,000 pairs whole would cost most of the answer's time.
-- Distribution (Citus): the key holds src_ip.

CREATE TABLE comm_rollup_pair (
    res           integer     NOT NULL,
    bucket        timestamptz NOT NULL,
    src_ip        inet,
    dst_ip        inet,
    events        bigint      NOT NULL,
    bytes_in      bigint      NOT NULL,
    bytes_out     bigint      NOT NULL,
    errors        bigint      NOT NULL,
    client_errors bigint      NOT NULL,
    CONSTRAINT comm_rollup_pair_key UNIQUE NULLS NOT DISTINCT (res, bucket, src_ip, dst_ip)
) WITH (fillfactor = 70);

-- Ranking pairs sums a few candidate pairs over many buckets: each pair's rows are one range here. Updates leave
-- the key alone, so they stay HOT.
CREATE INDEX comm_rollup_pair_by_pair ON comm_rollup_pair (src_ip, dst_ip, res, bucket);

CREATE TABLE comm_rollup_pair_delta (LIKE comm_rollup_pair INCLUDING DEFAULTS, gen timestamptz);

CREATE TABLE comm_pair_seal (
    one           boolean     PRIMARY KEY DEFAULT true CHECK (one),
    sealing_to    timestamptz NOT NULL,
    sealed_to     timestamptz NOT NULL
);

-- The events of [from_ts, to_ts) rolled up as comm_rollup_pair holds them: what a seal adds, what a rebuild
-- writes, and, from sealed_to on, the tail queries read. A function, so that its statement is planned knowing
-- the bounds: given only "ts >= (subquery)", the planner expects a third of comm_logs and starts parallel
-- workers, ~10 ms, to read the few seconds of events of the tail.
CREATE FUNCTION comm_pair_events(from_ts timestamptz, to_ts timestamptz)
RETURNS TABLE (res integer, bucket timestamptz, src_ip inet, dst_ip inet, events bigint, bytes_in bigint,
               bytes_out bigint, errors bigint, client_errors bigint)
LANGUAGE plpgsql STABLE ROWS 1000 AS $$
#variable_conflict use_column
BEGIN
    RETURN QUERY
    SELECT t.res, date_bin(t.res * interval '1 second', l.ts, to_timestamp(0)), l.src_ip, l.dst_ip, count(*),
           coalesce(sum(l.bytes_in), 0)::int8, coalesce(sum(l.bytes_out), 0)::int8,
           count(*) FILTER (WHERE l.status >= 500), count(*) FILTER (WHERE l.status BETWEEN 400 AND 499)
    FROM comm_logs AS l, (VALUES (300), (3600)) AS t(res)
    WHERE l.ts >= from_ts AND l.ts < to_ts
    GROUP BY 1, 2, 3, 4;
END
$$;

-- BRIN ranges are summarized only by VACUUM unless asked: between autovacuums (every 20% of growth) the newest
-- events of a day, millions at 100M a day, would all be read by every scan for the last seconds. The seal asks,
-- for the days it reads, before it reads them: each call summarizes about a second of new pages.
CREATE FUNCTION comm_logs_summarize(from_ts timestamptz, to_ts timestamptz) RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
    n bigint := 0;
    day date;
    idx regclass;
BEGIN
    FOR day IN SELECT generate_series((from_ts AT TIME ZONE 'UTC')::date, (to_ts AT TIME ZONE 'UTC')::date,
                                      interval '1 day')::date LOOP
        SELECT i.inhrelid::regclass INTO idx
        FROM pg_inherits AS i JOIN pg_index AS x ON x.indexrelid = i.inhrelid
        WHERE i.inhparent = 'comm_logs_ts_brin'::regclass
          AND x.indrelid = to_regclass(format('comm_logs_p%s', to_char(day, 'YYYYMMDD')));
        IF idx IS NOT NULL THEN
            n := n + brin_summarize_new_values(idx);
        END IF;
    END LOOP;
    RETURN n;
END
$$;

-- Top lists, as for sources (0007): closed buckets are those ending at or before sealed_to.
CREATE TABLE comm_rollup_pair_top (
    res           integer     NOT NULL,
    bucket        timestamptz NOT NULL,
    src_ip        inet,
    dst_ip        inet,
    events        bigint      NOT NULL,
    bytes         bigint      NOT NULL,
    CONSTRAINT comm_rollup_pair_top_key UNIQUE NULLS NOT DISTINCT (res, bucket, src_ip, dst_ip)
);

CREATE TABLE comm_rollup_pair_top_floor (
    res           integer     NOT NULL,
    bucket        timestamptz NOT NULL,
    events        bigint      NOT NULL,
    bytes         bigint      NOT NULL,
    PRIMARY KEY (res, bucket)
);

CREATE TABLE comm_rollup_pair_top_pending (
    res           integer     NOT NULL,
    bucket        timestamptz NOT NULL,
    PRIMARY KEY (res, bucket)
);

-- Pairs of [from_ts, to_ts) (whole hours) recomputed from comm_logs, up to the seal.
CREATE FUNCTION comm_rollup_pair_rebuild(from_ts timestamptz, to_ts timestamptz) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    upto timestamptz := least(to_ts, (SELECT sealed_to FROM comm_pair_seal));
BEGIN
    DELETE FROM comm_rollup_pair WHERE bucket >= from_ts AND bucket < to_ts;
    DELETE FROM comm_rollup_pair_delta WHERE bucket >= from_ts AND bucket < to_ts;
    INSERT INTO comm_rollup_pair SELECT * FROM comm_pair_events(from_ts, upto);
END
$$;

-- The operators' rebuild (0003, 0005, 0006) covers pairs too.
ALTER FUNCTION comm_rollup_rebuild(timestamptz, timestamptz) RENAME TO comm_rollup_rebuild_shapes;
CREATE FUNCTION comm_rollup_rebuild(from_ts timestamptz, to_ts timestamptz) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM comm_rollup_rebuild_shapes(from_ts, to_ts);
    PERFORM comm_rollup_pair_rebuild(from_ts, to_ts);
    -- The top lists of the rebuilt buckets no longer hold: without their floors they are not used, and the
    -- compactor makes them again.
    DELETE FROM comm_rollup_src_top_floor WHERE bucket >= from_ts AND bucket < to_ts;
    DELETE FROM comm_rollup_pair_top_floor WHERE bucket >= from_ts AND bucket < to_ts;
    INSERT INTO comm_rollup_src_top_pending
    SELECT DISTINCT res, bucket FROM comm_rollup_src WHERE bucket >= from_ts AND bucket < to_ts
    ON CONFLICT DO NOTHING;
    INSERT INTO comm_rollup_pair_top_pending
    SELECT DISTINCT res, bucket FROM comm_rollup_pair WHERE bucket >= from_ts AND bucket < to_ts
    ON CONFLICT DO NOTHING;
END
$$;

-- Existing events are carried over up to the minute the migration runs.
INSERT INTO comm_pair_seal VALUES (true, date_trunc('minute', now()), date_trunc('minute', now()));
DO $$
DECLARE
    lo timestamptz;
BEGIN
    SELECT date_trunc('hour', min(ts)) INTO lo FROM comm_logs;
    IF lo IS NOT NULL THEN
        PERFORM comm_rollup_pair_rebuild(lo, date_trunc('hour', now()) + interval '1 hour');
    END IF;
END
$$;
