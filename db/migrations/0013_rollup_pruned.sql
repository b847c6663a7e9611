-- How far back each rollup tier has been pruned (COLLECTOR_ROLLUP_MINUTE_DAYS, _5MIN_DAYS, _HOUR_DAYS): rows of
-- tier `res` with buckets before `before` are gone from every rollup table. Written before the rows are
-- deleted; the read planner answers a window reaching before it from a coarser tier, widening the window to
-- that tier's buckets, so no answer counts a half-pruned bucket. A few rows: under Citus, a reference table.
CREATE TABLE rollup_pruned (
    res integer PRIMARY KEY,
    before timestamptz NOT NULL
);
