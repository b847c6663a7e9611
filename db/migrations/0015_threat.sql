-- Threat feeds (COLLECTOR_THREAT_LISTS; collector/src/enrich/threat.rs): the name of the first configured list
-- holding the event's source address, else its destination's; which side matched is in `tags`
-- (`threat_src`, `threat_dst`). Written from when a list is configured; earlier rows keep nulls.
ALTER TABLE comm_logs ADD COLUMN threat text;

-- Matches are rare: a partial index finds them without reading the partitions' other rows.
CREATE INDEX comm_logs_threat_ts ON comm_logs (ts, threat) WHERE threat IS NOT NULL;
