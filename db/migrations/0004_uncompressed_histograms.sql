-- Keep latency histograms uncompressed in the row.
--
-- A histogram of the bench's traffic is ~140 (bucket, count) pairs, 2.2 kB as int8[]: just over PostgreSQL's
-- 2 kB threshold, so every rollup row carrying one was pglz-compressed when written and decompressed when read.
-- Measured during `collector bench --suite ingest`: pglz_compress alone was 2.4% of all CPU samples (PostgreSQL,
-- collector and clients together), and a 24-hour latency answer spent ~3 ms decompressing. Compression only
-- starts once a row passes toast_tuple_target, so raise it to the largest allowed: rows up to ~8 kB stay plain.
-- The cost is disk: these rows are ~4× larger, still well under 1% of comm_logs for the same events.
ALTER TABLE comm_rollup SET (toast_tuple_target = 8160);
ALTER TABLE comm_rollup_delta SET (toast_tuple_target = 8160);
ALTER TABLE comm_rollup_service SET (toast_tuple_target = 8160);
ALTER TABLE comm_rollup_service_delta SET (toast_tuple_target = 8160);
