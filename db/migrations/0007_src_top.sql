-- The largest rows of each closed bucket of comm_rollup_src, for top talkers by source.
--
-- Ranking sources exactly (queries::top_by_threshold) needs every row of the window holding at least a threshold
-- T, and without an index on the counts that meant reading all of them: 5,000 sources × 25 hourly buckets at the
-- benchmark, ~20 ms. An index on events would cost every compaction update its HOT path. Instead, once a bucket
-- has closed, the compactor keeps its largest rows here, by events and by bytes, and the floor above which the
-- list is complete. A bucket whose floor is at most T is read from this list; any other bucket is read whole.
-- A merge into a bucket marks it pending again and deletes its floor, so its list is not used (the bucket is
-- read whole) until the compactor makes it again; a list never disagrees with comm_rollup_src. Deltas not yet
-- merged are read apart.

CREATE TABLE comm_rollup_src_top (
    res           integer     NOT NULL,
    bucket        timestamptz NOT NULL,
    src_ip        inet,
    events        bigint      NOT NULL,
    bytes         bigint      NOT NULL,  -- bytes_in + bytes_out
    CONSTRAINT comm_rollup_src_top_key UNIQUE NULLS NOT DISTINCT (res, bucket, src_ip)
);

-- Every row of the bucket with events ≥ `events`, or bytes ≥ `bytes`, is in comm_rollup_src_top.
CREATE TABLE comm_rollup_src_top_floor (
    res           integer     NOT NULL,
    bucket        timestamptz NOT NULL,
    events        bigint      NOT NULL,
    bytes         bigint      NOT NULL,
    PRIMARY KEY (res, bucket)
);

-- Buckets changed since their list was made (or never listed).
CREATE TABLE comm_rollup_src_top_pending (
    res           integer     NOT NULL,
    bucket        timestamptz NOT NULL,
    PRIMARY KEY (res, bucket)
);

INSERT INTO comm_rollup_src_top_pending SELECT DISTINCT res, bucket FROM comm_rollup_src;
