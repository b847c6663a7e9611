-- Core schema: the event table, the dead-letter table and the writer's flush ledger.
--
-- Distribution (Citus): no table here has a foreign key, and every primary key contains a column that can be
-- its hash distribution column (comm_logs has no key and distributes on src_ip; ingest_rejects on id;
-- ingest_flushes on flush_id).

CREATE TABLE comm_logs (
    ts          timestamptz NOT NULL,
    received_at timestamptz NOT NULL,
    producer    text        NOT NULL,
    src_ip      inet,
    src_port    integer,
    dst_ip      inet,
    dst_port    integer,
    protocol    text,
    service     text,
    status      integer,
    bytes_in    bigint,
    bytes_out   bigint,
    latency_ms  double precision,
    host        text,
    message     text,
    tags        jsonb
) PARTITION BY RANGE (ts);

-- Events whose day has no partition yet (late or far-future) land here; comm_logs_ensure_partition() moves
-- them into their own partition when that day is created, so no event is ever rejected for its date.
CREATE TABLE comm_logs_default PARTITION OF comm_logs DEFAULT;

-- Index choice: indexes dominate ingest cost. Measured on a 2-core machine, PostgreSQL 15, COPY BINARY of
-- 1M time-ordered rows into a daily-partitioned table: ~300k rows/s with BRIN(ts) only, ~125k rows/s adding one
-- btree (src_ip, ts), ~57k rows/s with four btrees. BRIN on ts costs almost nothing because rows arrive in time
-- order, and it serves every time-window scan. The one btree serves drill-down by source IP / CIDR, the most
-- common raw query. Aggregate queries (volume, error rate, top talkers, latency) are meant to read rollups,
-- not raw rows, so they need no index here. BENCHMARKS.md has the ingest figures for this exact schema.
CREATE INDEX comm_logs_ts_brin ON comm_logs USING brin (ts) WITH (pages_per_range = 32);
CREATE INDEX comm_logs_src_ip_ts ON comm_logs (src_ip, ts);

-- Creates the daily partition holding `day` if it does not exist, moving any rows of that day out of the
-- default partition first (ATTACH would otherwise fail on them). Idempotent and safe to call concurrently.
CREATE FUNCTION comm_logs_ensure_partition(day date) RETURNS boolean
LANGUAGE plpgsql AS $$
DECLARE
    part text := format('comm_logs_p%s', to_char(day, 'YYYYMMDD'));
    lo timestamptz := day::timestamp AT TIME ZONE 'UTC';
    hi timestamptz := (day + 1)::timestamp AT TIME ZONE 'UTC';
BEGIN
    IF to_regclass(part) IS NOT NULL THEN
        RETURN false;
    END IF;
    -- Serialises concurrent creators of the same day.
    PERFORM pg_advisory_xact_lock(hashtext('comm_logs_ensure_partition'), (day - date '2000-01-01'));
    IF to_regclass(part) IS NOT NULL THEN
        RETURN false;
    END IF;
    EXECUTE format('CREATE TABLE %I (LIKE comm_logs INCLUDING DEFAULTS INCLUDING CONSTRAINTS)', part);
    EXECUTE format(
        'WITH moved AS (DELETE FROM comm_logs_default WHERE ts >= %L AND ts < %L RETURNING *) '
        'INSERT INTO %I SELECT * FROM moved', lo, hi, part);
    EXECUTE format('ALTER TABLE comm_logs ATTACH PARTITION %I FOR VALUES FROM (%L) TO (%L)', part, lo, hi);
    RETURN true;
END
$$;

-- Dead letters: anything we acknowledged or answered 400 but cannot store in comm_logs, kept raw with the
-- reason, so nothing is lost silently. `event_index` is the event's position in its batch (NULL when the
-- whole body was undecodable).
CREATE TABLE ingest_rejects (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    received_at timestamptz NOT NULL,
    producer    text        NOT NULL,
    event_index integer,
    reason      text        NOT NULL,
    raw         bytea       NOT NULL,
    raw_truncated boolean   NOT NULL DEFAULT false
);
CREATE INDEX ingest_rejects_received_at ON ingest_rejects USING brin (received_at);

-- One row per committed writer flush, written in the same transaction as its COPY. After an ambiguous
-- failure (connection lost around COMMIT) the writer looks its flush up here before retrying, so a retry
-- neither loses nor duplicates rows.
CREATE TABLE ingest_flushes (
    flush_id    uuid        PRIMARY KEY,
    committed_at timestamptz NOT NULL DEFAULT now(),
    rows        integer     NOT NULL,
    rejects     integer     NOT NULL
);
