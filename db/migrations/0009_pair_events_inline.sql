-- comm_pair_events (0008) as a SQL function, which the planner inlines into the statement that calls it.
-- Queries name the tail's bound as a literal (db/queries.rs reads sealed_to first in their snapshot), so the
-- inlined scan is planned knowing it, as the PL/pgSQL body was; and a query's filters on src_ip and dst_ip now
-- reach comm_logs's btree (src_ip, ts). Before, every statement of an answer read the whole BRIN index of the
-- day for the tail: ~5 ms a statement at 90M events in the day, four statements in a top-talkers answer.
CREATE OR REPLACE FUNCTION comm_pair_events(from_ts timestamptz, to_ts timestamptz)
RETURNS TABLE (res integer, bucket timestamptz, src_ip inet, dst_ip inet, events bigint, bytes_in bigint,
               bytes_out bigint, errors bigint, client_errors bigint)
LANGUAGE sql STABLE AS $$
    SELECT t.res, date_bin(t.res * interval '1 second', l.ts, to_timestamp(0)), l.src_ip, l.dst_ip, count(*),
           coalesce(sum(l.bytes_in), 0)::int8, coalesce(sum(l.bytes_out), 0)::int8,
           count(*) FILTER (WHERE l.status >= 500), count(*) FILTER (WHERE l.status BETWEEN 400 AND 499)
    FROM comm_logs AS l, (VALUES (300), (3600)) AS t(res)
    WHERE l.ts >= from_ts AND l.ts < to_ts
    GROUP BY 1, 2, 3, 4
$$;
