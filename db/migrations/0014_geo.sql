-- Enrichment at ingest (COLLECTOR_GEOIP_CITY_DB, COLLECTOR_GEOIP_ASN_DB; collector/src/enrich/): where each
-- address is and which network owns it. `*_country` holds an ISO 3166 code, or the label of a range no database
-- describes (private, loopback, link-local, documentation, shared, multicast, unspecified, reserved); `*_city`
-- only with COLLECTOR_GEOIP_CITY=true. Written from when enrichment is on; earlier rows keep nulls. Nullable
-- columns at the end: adding them rewrites nothing.
ALTER TABLE comm_logs
    ADD COLUMN src_country text,
    ADD COLUMN src_city text,
    ADD COLUMN src_asn bigint,
    ADD COLUMN src_as_org text,
    ADD COLUMN dst_country text,
    ADD COLUMN dst_city text,
    ADD COLUMN dst_asn bigint,
    ADD COLUMN dst_as_org text;
