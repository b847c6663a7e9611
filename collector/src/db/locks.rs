//! Advisory-lock keys, in one place so no two uses can collide.

/// Held (transaction-level) while migrations run: two collectors starting at once migrate one after the other.
pub const MIGRATIONS: i64 = 7_261_001;

/// Held by a compaction, and by a pair seal for its whole length: one compactor at a time, however many
/// collectors share the database (a top list made while another compactor merges into its bucket would miss
/// that merge).
pub const COMPACTOR: i64 = 0x0063_6f6d_7061_6374;

/// Held shared by every writer transaction from reading the pair seal's bound to its commit, and exclusively by
/// a seal while it moves the bound and takes its snapshot (db/migrations/0008_pairs.sql).
pub const SEAL_WRITERS: i64 = 0x7061_6972_5f77_7269;

/// Held (transaction-level) while a stored API key is made: a name belongs to one tenant.
pub const API_KEYS: i64 = 0x6170_695f_6b65_7973;

/// Held (session-level) while retention runs: several collectors on one database apply it one at a time, and
/// the others pass their turn.
pub const RETENTION: i64 = 0x7265_7465_6e74_696f;

/// Held (transaction-level, by a transaction open for the cycle) for an alert evaluation cycle: several
/// collectors on one database evaluate once.
pub const ALERTS: i64 = 0x616c_6572_7473_0001;
