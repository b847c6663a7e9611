//! Enrichment at ingest, between validation and encoding: where each address is and who owns its network,
//! stored in typed columns beside the addresses (`src_country`, `src_city`, `src_asn`, `src_as_org`, and the
//! same for `dst_`), so that every question can group or filter by them. Existing rows are not rewritten:
//! enrichment applies from when it is turned on.

pub mod geo;

pub use geo::{Geo, GeoFiles, Place};
