-- Identities of accepted batches: a digest of the body as received (or of the client's Idempotency-Key), per
-- producer, recorded in the transaction that commits the batch. A client that did not hear our 202 (timeout,
-- reset, our restart) sends the same bytes again; the collector recognises them within
-- COLLECTOR_DEDUP_WINDOW_SECS, answers 202 with "duplicate": true, and stores the batch once. Rows older than the
-- window are pruned hourly. The key holds `producer`, a possible distribution column.
CREATE TABLE ingest_batches (
    producer text NOT NULL,
    digest bytea NOT NULL,
    accepted_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (producer, digest)
);

CREATE INDEX ingest_batches_accepted_at ON ingest_batches (accepted_at);
