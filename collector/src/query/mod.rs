//! The read side, with its own SQL: [`filters`] (parameters → typed filters) → [`plan`] (which table answers,
//! over which tiers, with which WHERE clause) → one family of answers: [`series`] (counts and latency per time
//! bucket), [`top_talkers`], [`logs`] (raw events, paged by [`cursor`]) → [`answers`] (the JSON answers of
//! `/metrics/*`). [`api::execute`] runs every read, HTTP or CLI, in one snapshot with one timeout.

pub mod answers;
pub mod api;
pub mod cursor;
pub mod filters;
pub mod live;
pub mod logs;
pub mod plan;
pub mod series;
pub mod top_talkers;
pub mod watch;
