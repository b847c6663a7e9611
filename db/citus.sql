-- The Citus layout (`collector migrate --citus`, or COLLECTOR_CITUS=true): run after the migrations, on a Citus
-- coordinator with workers, in one transaction; idempotent. README.md, "Scale-out with Citus", explains it.
--
-- * comm_logs is hash-distributed on ts: the only column every event has (Citus refuses a NULL distribution
--   value, and src_ip, service or host may be missing). Events with the same ts are on one shard, so the
--   explorer's keyset (ts, ctid) stays unique. Daily partitions are distributed as they are created.
-- * The rollups the writers keep per flush are distributed on bucket (every unique key starts with (res, bucket),
--   so each upsert goes to one shard), co-located with each other: a bucket's rollup rows and its deltas share a
--   shard, so the compactor's move from one to the other is seen whole by any read.
-- * The source rollup stays on the coordinator with its top lists: a top list ranks one bucket's rows against
--   each other (a correlated subquery per bucket), which Citus runs only on co-located tables joined on their
--   distribution column. So do the sealed rollups (pairs, sources by port): an answer adds the raw events from
--   the seal's bound on, and the bound, the sealed rows and their deltas must be read in one snapshot, which
--   only the coordinator's own tables share (a Citus statement has no snapshot common to its workers). They
--   hold one row per source, pair or source and port, and bucket: far fewer than the events.
-- * The small tables (the seal's bound, keys, alerts, ledgers, dead letters) stay on the coordinator as plain
--   tables: a statement on distributed tables reads them first (Citus plans such a subquery apart), and a
--   statement on them never reaches a worker. (As reference tables they would send a statement that also names
--   a coordinator table, such as the seal's cleanup of the pair deltas, to a worker that lacks it.)

SET LOCAL citus.multi_shard_modify_mode TO 'sequential';

DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'citus') THEN
        RAISE EXCEPTION 'the Citus layout needs the citus extension in this database (CREATE EXTENSION citus)';
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_dist_node WHERE noderole = 'primary' AND groupid <> 0) THEN
        RAISE EXCEPTION 'the Citus layout needs worker nodes (SELECT citus_add_node(host, port))';
    END IF;
END
$$;

-- A day's partition, created as a partition of the distributed table (Citus distributes it): the rows of that
-- day in the default partition are set aside first and put back after, as ATTACH of a local table holding rows
-- is not possible on a distributed table.
CREATE OR REPLACE FUNCTION comm_logs_ensure_partition(day date) RETURNS boolean
LANGUAGE plpgsql AS $$
DECLARE
    part text := format('comm_logs_p%s', to_char(day, 'YYYYMMDD'));
    lo timestamptz := day::timestamp AT TIME ZONE 'UTC';
    hi timestamptz := (day + 1)::timestamp AT TIME ZONE 'UTC';
    held bigint;
BEGIN
    IF to_regclass(part) IS NOT NULL THEN
        RETURN false;
    END IF;
    PERFORM pg_advisory_xact_lock(hashtext('comm_logs_ensure_partition'), (day - date '2000-01-01'));
    IF to_regclass(part) IS NOT NULL THEN
        RETURN false;
    END IF;
    SET LOCAL citus.multi_shard_modify_mode TO 'sequential';
    CREATE TEMP TABLE comm_logs_held ON COMMIT DROP AS
        SELECT * FROM comm_logs_default WHERE ts >= lo AND ts < hi;
    GET DIAGNOSTICS held = ROW_COUNT;
    IF held > 0 THEN
        DELETE FROM comm_logs_default WHERE ts >= lo AND ts < hi;
    END IF;
    EXECUTE format('CREATE TABLE %I PARTITION OF comm_logs FOR VALUES FROM (%L) TO (%L)', part, lo, hi);
    IF held > 0 THEN
        INSERT INTO comm_logs SELECT * FROM comm_logs_held;
    END IF;
    DROP TABLE comm_logs_held;
    RETURN true;
END
$$;

-- BRIN ranges of the days' partitions summarized on every shard (see 0008): the index on the coordinator's
-- parent table is empty.
CREATE OR REPLACE FUNCTION comm_logs_summarize(from_ts timestamptz, to_ts timestamptz) RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
    n bigint := 0;
    day date;
    part regclass;
    r record;
BEGIN
    FOR day IN SELECT generate_series((from_ts AT TIME ZONE 'UTC')::date, (to_ts AT TIME ZONE 'UTC')::date,
                                      interval '1 day')::date LOOP
        part := to_regclass(format('comm_logs_p%s', to_char(day, 'YYYYMMDD')));
        CONTINUE WHEN part IS NULL;
        FOR r IN
            SELECT result FROM run_command_on_placements(part,
                $c$SELECT coalesce(sum(brin_summarize_new_values(x.indexrelid)), 0)
                   FROM pg_index AS x JOIN pg_class AS c ON c.oid = x.indexrelid JOIN pg_am AS a ON a.oid = c.relam
                   WHERE x.indrelid = '%s'::regclass AND a.amname = 'brin'$c$)
            WHERE success
        LOOP
            n := n + r.result::bigint;
        END LOOP;
    END LOOP;
    RETURN n;
END
$$;

-- The pair rebuild without the SQL function comm_pair_events, which Citus cannot run with parameters.
CREATE OR REPLACE FUNCTION comm_rollup_pair_rebuild(from_ts timestamptz, to_ts timestamptz) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    upto timestamptz := least(to_ts, (SELECT sealed_to FROM comm_pair_seal));
BEGIN
    DELETE FROM comm_rollup_pair WHERE bucket >= from_ts AND bucket < to_ts;
    DELETE FROM comm_rollup_pair_delta WHERE bucket >= from_ts AND bucket < to_ts;
    INSERT INTO comm_rollup_pair
    SELECT t.res, date_bin(t.res * interval '1 second', l.ts, to_timestamp(0)), l.src_ip, l.dst_ip, count(*),
           coalesce(sum(l.bytes_in), 0)::int8, coalesce(sum(l.bytes_out), 0)::int8,
           count(*) FILTER (WHERE l.status >= 500), count(*) FILTER (WHERE l.status BETWEEN 400 AND 499)
    FROM comm_logs AS l, (VALUES (300), (3600)) AS t(res)
    WHERE l.ts >= from_ts AND l.ts < upto
    GROUP BY 1, 2, 3, 4;
END
$$;

DO $$
DECLARE
    t text;
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_dist_partition WHERE logicalrelid = 'comm_logs'::regclass) THEN
        PERFORM create_distributed_table('comm_logs', 'ts');
    END IF;
    FOREACH t IN ARRAY ARRAY[
        'comm_rollup', 'comm_rollup_delta',
        'comm_rollup_host', 'comm_rollup_host_delta',
        'comm_rollup_service', 'comm_rollup_service_delta',
        'comm_rollup_src_net', 'comm_rollup_src_net_delta',
        'comm_rollup_dst', 'comm_rollup_dst_delta',
        'comm_rollup_geo', 'comm_rollup_geo_delta'
    ] LOOP
        IF NOT EXISTS (SELECT 1 FROM pg_dist_partition WHERE logicalrelid = t::regclass) THEN
            PERFORM create_distributed_table(t, 'bucket', colocate_with => 'comm_logs');
        END IF;
    END LOOP;
END
$$;
