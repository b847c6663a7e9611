//! The evaluation cycle: every `COLLECTOR_ALERT_EVAL_MS`, one collector (an advisory lock: the others pass their
//! turn) reads each enabled rule's answer through the read API (so from the rollups, exactly), decides each
//! group's step, and records it in one transaction per rule: state, transition, incident and its timeline, and
//! the notifications to send (the outbox). It runs on the read pool and its own tasks: ingest never waits on it.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use deadpool_postgres::Pool;
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

use super::rules::{self, Rule, RuleKind, RuleSpec};
use super::state::{self, State, Step};
use super::AlertStats;
use crate::auth::KeyRing;
use crate::db::{locks, DbError};
use crate::query::api::{self, Kind as QueryKind, QueryError};

/// What the cycle needs.
#[derive(Clone)]
pub struct Evaluator {
    pub pool: Pool,
    pub read_pool: Pool,
    pub keys: Arc<KeyRing>,
    pub stats: Arc<AlertStats>,
    /// Prefix of the links in notifications (`COLLECTOR_PUBLIC_URL`); relative links without it.
    pub public_url: String,
    /// When each rule is due again: a rule whose reads took `t` waits [`PACING`] × `t` before the next
    /// evaluation (the cycle's interval at least).
    pub due: Arc<std::sync::Mutex<HashMap<String, Instant>>>,
    /// The answers read in the current cycle, by their read (query, parameters, window, tenant): rules watching
    /// the same read (thresholds at several levels, say) share one query.
    pub answers: Arc<std::sync::Mutex<HashMap<String, Value>>>,
}

/// How many times its own evaluation time a rule waits before it is evaluated again. A rule's reads share the
/// database's cores with ingest: at 20, one rule keeps a core busy at most about 5% of the time, whatever it
/// reads, and a costly rule (a port scan over a busy window) is evaluated less often rather than slowing ingest.
/// The rules together cost the sum of their reads each interval (BENCHMARKS.md, "Alerts", measures it).
pub const PACING: u32 = 20;

/// Groups of one rule whose firing in one cycle carries their top talkers in its evidence.
pub const EVIDENCE_READS: usize = 10;

#[derive(Debug, thiserror::Error)]
pub enum AlertError {
    #[error(transparent)]
    Db(#[from] DbError),
    #[error("reading the rule's answer: {0}")]
    Query(#[from] QueryError),
    #[error(transparent)]
    Rule(#[from] rules::RuleError),
}

impl From<tokio_postgres::Error> for AlertError {
    fn from(e: tokio_postgres::Error) -> Self {
        AlertError::Db(e.into())
    }
}

impl From<deadpool_postgres::PoolError> for AlertError {
    fn from(e: deadpool_postgres::PoolError) -> Self {
        AlertError::Db(e.into())
    }
}

/// One group's figure at this evaluation.
#[derive(Debug, Clone, PartialEq)]
pub struct Observation {
    pub group: String,
    /// The figure compared (for `change`, the ratio); `None` when the answer has none (no latency).
    pub value: Option<f64>,
    pub events: i64,
    pub holds: bool,
}

/// The key of an ungrouped answer.
pub const OVERALL: &str = "*";
/// The key of the group of events without the grouped value.
pub const NONE: &str = "(none)";

impl Evaluator {
    /// Evaluates every `every` until cancelled.
    pub async fn run(self, every: Duration, shutdown: CancellationToken) {
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(every) => {}
            }
            // Its own task: a panic in one cycle is logged, and the next cycle runs.
            let this = self.clone();
            match tokio::spawn(async move { this.cycle().await }).await {
                Ok(Ok(_)) => {}
                Ok(Err(e)) => {
                    tracing::warn!(error = %e, "Alert evaluation failed; retried next cycle")
                }
                Err(e) => {
                    tracing::error!(error = %e, "Alert evaluation failed; retried next cycle")
                }
            }
        }
    }

    /// One cycle, if no other collector is running one. Returns the rules evaluated (`None`: another had the
    /// turn).
    pub async fn cycle(&self) -> Result<Option<usize>, AlertError> {
        let started = Instant::now();
        // A transaction-level lock, held by a transaction left open for the cycle: however the cycle ends (an
        // error, a panic, the collector's death), the transaction ends and the lock with it.
        let mut lock = self.pool.get().await?;
        let turn = lock.transaction().await?;
        let got: bool = turn
            .query_one("SELECT pg_try_advisory_xact_lock($1)", &[&locks::ALERTS])
            .await?
            .get(0);
        if !got {
            return Ok(None);
        }
        let result = self.evaluate_all().await;
        let _ = turn.rollback().await;
        self.stats.cycle(started.elapsed());
        result.map(Some)
    }

    async fn evaluate_all(&self) -> Result<usize, AlertError> {
        let rules = rules::list(&self.pool.get().await?, None).await?;
        let now = Utc::now();
        self.answers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
        let mut n = 0;
        for rule in rules.iter().filter(|r| r.spec.enabled) {
            let started = Instant::now();
            let due = self
                .due
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .get(&rule.id)
                .copied();
            if due.is_some_and(|d| started < d) {
                continue;
            }
            let outcome = match self.observe(rule, now).await {
                Ok(obs) => self.apply(rule, &obs, now).await,
                Err(e) => Err(e),
            };
            let took = started.elapsed();
            self.stats.rule(took);
            self.due
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(rule.id.clone(), started + took * PACING);
            if let Err(e) = outcome {
                tracing::warn!(rule = %rule.id, name = %rule.spec.name, error = %e, "Alert rule not evaluated");
            }
            n += 1;
        }
        Ok(n)
    }

    /// The rule's answer over `[from, to)`.
    async fn answer(
        &self,
        rule: &Rule,
        query: QueryKind,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
        params: &BTreeMap<String, String>,
    ) -> Result<Value, AlertError> {
        let mut params: HashMap<String, String> = params.clone().into_iter().collect();
        params.insert("from".into(), from.to_rfc3339());
        params.insert("to".into(), to.to_rfc3339());
        let visible = rule
            .tenant
            .as_deref()
            .map(|t| self.keys.tenant_producers(t));
        let mut sorted: Vec<(&String, &String)> = params.iter().collect();
        sorted.sort();
        let key = format!("{query:?} {sorted:?} {:?}", rule.tenant);
        let cached = self
            .answers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&key)
            .cloned();
        if let Some(answer) = cached {
            return Ok(answer);
        }
        let mut client = self.read_pool.get().await?;
        let answer =
            api::execute(query, &params, &mut client, None, None, visible.as_deref()).await?;
        self.answers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(key, answer.clone());
        Ok(answer)
    }

    /// Each group's figure and whether the condition holds.
    pub async fn observe(
        &self,
        rule: &Rule,
        now: DateTime<Utc>,
    ) -> Result<Vec<Observation>, AlertError> {
        let spec = &rule.spec;
        let query = spec.query_kind().unwrap_or(QueryKind::Volume);
        let window = chrono::Duration::seconds(spec.window_secs as i64);
        let field = spec.field();
        let current = figures(
            &self
                .answer(rule, query, now - window, now, &spec.params)
                .await?,
            spec.group_by(),
            field,
        );
        let (op, threshold) = (spec.op.unwrap_or(rules::Op::Gt), spec.value.unwrap_or(0.0));
        let judged = |events: i64| spec.min_events.is_none_or(|m| events >= m);
        Ok(match spec.kind {
            RuleKind::Threshold => current
                .into_iter()
                .map(|(group, (value, events))| Observation {
                    holds: judged(events) && value.is_some_and(|v| op.holds(v, threshold)),
                    group,
                    value,
                    events,
                })
                .collect(),
            RuleKind::Change => {
                let offset = chrono::Duration::seconds(spec.offset_secs.unwrap_or(86_400) as i64);
                let before = figures(
                    &self
                        .answer(
                            rule,
                            query,
                            now - offset - window,
                            now - offset,
                            &spec.params,
                        )
                        .await?,
                    spec.group_by(),
                    field,
                );
                let mut groups: Vec<String> =
                    current.keys().chain(before.keys()).cloned().collect();
                groups.sort();
                groups.dedup();
                groups
                    .into_iter()
                    .map(|group| {
                        let (now_v, events) =
                            current.get(&group).copied().unwrap_or((Some(0.0), 0));
                        let then_v = before.get(&group).and_then(|(v, _)| *v).unwrap_or(0.0);
                        let ratio = now_v.map(|n| match (n, then_v) {
                            (n, t) if t > 0.0 => n / t,
                            (n, _) if n > 0.0 => f64::INFINITY,
                            _ => 1.0,
                        });
                        Observation {
                            holds: judged(events) && ratio.is_some_and(|r| op.holds(r, threshold)),
                            value: ratio.filter(|r| r.is_finite()),
                            group,
                            events,
                        }
                    })
                    .collect()
            }
            RuleKind::Scan => {
                let by_ports = field == "dst_ports";
                self.fan_out(rule, now - window, now, by_ports)
                    .await?
                    .into_iter()
                    .map(|f| {
                        let value = if by_ports {
                            f.dst_ports
                        } else {
                            f.dst_addresses
                        } as f64;
                        Observation {
                            holds: judged(f.events) && op.holds(value, threshold),
                            group: f.src_ip,
                            value: Some(value),
                            events: f.events,
                        }
                    })
                    .collect()
            }
            RuleKind::NewTalker => self.new_talkers(rule, now, window).await?,
            RuleKind::Anomaly => self.anomalies(rule, query, now).await?,
            RuleKind::NoData => {
                let lookback = chrono::Duration::seconds(spec.lookback_secs.unwrap_or(3600) as i64);
                let expected = figures(
                    &self
                        .answer(
                            rule,
                            query,
                            now - window - lookback,
                            now - window,
                            &spec.params,
                        )
                        .await?,
                    spec.group_by(),
                    "events",
                );
                let mut out: Vec<Observation> = expected
                    .into_iter()
                    .filter(|(_, (_, events))| *events > 0)
                    .map(|(group, _)| {
                        let events = current.get(&group).map_or(0, |(_, e)| *e);
                        Observation {
                            holds: events == 0,
                            value: Some(events as f64),
                            group,
                            events,
                        }
                    })
                    .collect();
                for (group, (_, events)) in current {
                    if !out.iter().any(|o| o.group == group) {
                        out.push(Observation {
                            group,
                            value: Some(events as f64),
                            events,
                            holds: false,
                        });
                    }
                }
                out
            }
        })
    }

    /// Each group's score: its last complete bucket against the buckets before it, or against the same bucket of
    /// the days or weeks before (`seasonality`).
    async fn anomalies(
        &self,
        rule: &Rule,
        query: QueryKind,
        now: DateTime<Utc>,
    ) -> Result<Vec<Observation>, AlertError> {
        let spec = &rule.spec;
        let w = spec.window_secs as i64;
        let bucket = match w {
            60 => "1m",
            300 => "5m",
            _ => "1h",
        };
        let end = DateTime::from_timestamp(now.timestamp().div_euclid(w) * w, 0).unwrap_or(now);
        let mut params = spec.params.clone();
        params.insert("bucket".into(), bucket.into());
        let field = spec.field();
        let series = match spec.seasonality {
            None => {
                let k = i64::from(spec.baseline_buckets.unwrap_or(24));
                let answer = self
                    .answer(
                        rule,
                        query,
                        end - chrono::Duration::seconds((k + 1) * w),
                        end,
                        &params,
                    )
                    .await?;
                recent_series(&answer, spec.group_by(), field)
            }
            Some(season) => {
                // The same bucket of each past period, oldest first, then the last one: one read each (a read
                // of every bucket between would be the periods' whole length).
                let k = i64::from(spec.baseline_buckets.unwrap_or(8));
                let mut series: BTreeMap<String, Vec<Figure>> = BTreeMap::new();
                for back in (0..=k).rev() {
                    let to = end - chrono::Duration::seconds(back * season.secs());
                    let answer = self
                        .answer(rule, query, to - chrono::Duration::seconds(w), to, &params)
                        .await?;
                    let at = (k - back) as usize;
                    for (group, figure) in figures(&answer, spec.group_by(), field) {
                        let points = series.entry(group).or_default();
                        // A group absent from a period's answer sent nothing then.
                        points.resize(at, (absent(field), 0));
                        points.push(figure);
                    }
                }
                let len = k as usize + 1;
                series
                    .into_iter()
                    .map(|(group, mut points)| {
                        points.resize(len, (absent(field), 0));
                        (group, points)
                    })
                    .collect()
            }
        };
        let (op, threshold) = (spec.op.unwrap_or(rules::Op::Gt), spec.value.unwrap_or(5.0));
        let min_baseline = 6;
        Ok(series
            .into_iter()
            .filter_map(|(group, points)| {
                let ((current, events), past) = points.split_last()?;
                // The baseline starts at the group's first event: before it, a new group (or a new collector)
                // has no past, not a past of zeros, and it warms up like any other.
                let first = past.iter().position(|(_, e)| *e > 0).unwrap_or(past.len());
                let past = &past[first..];
                // A ratio or a latency of an empty bucket is no figure; a count of one is zero.
                let baseline: Vec<f64> = past.iter().filter_map(|(v, _)| *v).collect();
                let score = current.and_then(|c| {
                    super::anomaly::score(field, c, *events, &baseline, min_baseline)
                });
                Some(Observation {
                    holds: spec.min_events.is_none_or(|m| *events >= m)
                        && score.is_some_and(|s| op.holds(s, threshold)),
                    value: score,
                    events: *events,
                    group,
                })
            })
            .collect())
    }

    /// Sources by fan-out over `[from, to)` with the rule's filters.
    async fn fan_out(
        &self,
        rule: &Rule,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
        by_ports: bool,
    ) -> Result<Vec<crate::query::watch::FanOut>, AlertError> {
        let params: HashMap<String, String> = rule.spec.params.clone().into_iter().collect();
        let mut f =
            crate::query::filters::Filters::parse(&params, &[], to).map_err(QueryError::from)?;
        f.from = from;
        f.to = to;
        f.producers = rule
            .tenant
            .as_deref()
            .map(|t| self.keys.tenant_producers(t).to_vec());
        let client = self.read_pool.get().await?;
        Ok(crate::query::watch::fan_out(&client, &f, by_ports, 1000).await?)
    }

    /// The window's largest talkers (up to 1,000) not seen in the hourly rollup rows of the history before it.
    async fn new_talkers(
        &self,
        rule: &Rule,
        now: DateTime<Utc>,
        window: chrono::Duration,
    ) -> Result<Vec<Observation>, AlertError> {
        let spec = &rule.spec;
        let talker = spec.talker();
        // History in whole hours, up to the hour the window starts in.
        let start = now - window;
        let history_to =
            DateTime::from_timestamp(start.timestamp().div_euclid(3600) * 3600, 0).unwrap_or(start);
        let days = chrono::Duration::days(spec.history_days.unwrap_or(7) as i64);
        // Warm-up: with no history at all before the window (a new collector), every talker would be new. Asked
        // first: it is one index probe, the window's talkers are a GROUP BY over every source.
        if !crate::query::watch::has_history(
            &self.read_pool.get().await?,
            talker,
            history_to - days,
            history_to,
        )
        .await?
        {
            return Ok(Vec::new());
        }
        let mut params = spec.params.clone();
        params.insert("by".into(), talker.into());
        params.insert("limit".into(), "1000".into());
        let top = self
            .answer(rule, QueryKind::TopTalkers, now - window, now, &params)
            .await?;
        let current: Vec<(String, i64)> = top["top"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|t| {
                let key = match &t[talker] {
                    Value::String(s) => s.clone(),
                    Value::Number(n) => n.to_string(),
                    _ => return None,
                };
                Some((key, t["events"].as_i64().unwrap_or(0)))
            })
            .collect();
        let values: Vec<String> = current.iter().map(|(k, _)| k.clone()).collect();
        let client = self.read_pool.get().await?;
        let seen =
            crate::query::watch::seen(&client, talker, &values, history_to - days, history_to)
                .await?;
        let (op, threshold) = (spec.op.unwrap_or(rules::Op::Gt), spec.value.unwrap_or(0.0));
        Ok(current
            .into_iter()
            .filter(|(k, _)| !seen.contains(k))
            .map(|(group, events)| Observation {
                holds: op.holds(events as f64, threshold),
                value: Some(events as f64),
                group,
                events,
            })
            .collect())
    }

    /// Records each group's step in one transaction: states, transitions, incidents, outbox.
    pub async fn apply(
        &self,
        rule: &Rule,
        observations: &[Observation],
        now: DateTime<Utc>,
    ) -> Result<(), AlertError> {
        let mut client = self.pool.get().await?;
        let tx = client.transaction().await?;
        let rows = tx
            .query(
                "SELECT group_key, state, since, incident_id FROM alert_states WHERE rule_id = $1 FOR UPDATE",
                &[&rule.id],
            )
            .await?;
        let mut known: BTreeMap<String, (State, DateTime<Utc>, Option<i64>)> = rows
            .iter()
            .map(|r| {
                (
                    r.get::<_, String>(0),
                    (State::parse(r.get(1)), r.get(2), r.get(3)),
                )
            })
            .collect();
        let mut seen: Vec<Observation> = observations.to_vec();
        let mut fired = 0;
        // A group the answer no longer has does not hold.
        for group in known.keys() {
            if !seen.iter().any(|o| &o.group == group) {
                seen.push(Observation {
                    group: group.clone(),
                    value: None,
                    events: 0,
                    holds: false,
                });
            }
        }
        let spec = &rule.spec;
        for o in &seen {
            let (current, since, incident) =
                known.remove(&o.group).unwrap_or((State::Ok, now, None));
            let step = state::step(
                current,
                since,
                o.holds,
                now,
                spec.for_secs,
                spec.cooldown_secs,
            );
            let next = state::after(current, step);
            if step == Step::Stay {
                if current != State::Ok {
                    tx.execute(
                        "UPDATE alert_states SET value = $3 WHERE rule_id = $1 AND group_key = $2",
                        &[&rule.id, &o.group, &o.value],
                    )
                    .await?;
                }
                continue;
            }
            let incident = match step {
                Step::Fire => {
                    // A storm of firings (a new collector's first sources, say) reads the top talkers of
                    // the first few only: the rest say so, and ingest does not pay one read per group.
                    let talkers = fired < EVIDENCE_READS;
                    fired += 1;
                    Some(self.open_incident(&tx, rule, o, now, talkers).await?)
                }
                Step::Refire | Step::Recover | Step::Resolve => {
                    if let Some(id) = incident {
                        let kind = match step {
                            Step::Refire => "refired",
                            Step::Recover => "recovered",
                            _ => "resolved",
                        };
                        tx.execute(
                            "INSERT INTO alert_incident_events (incident_id, at, kind, value) VALUES ($1, $2, $3, $4)",
                            &[&id, &now, &kind, &o.value],
                        )
                        .await?;
                        if step == Step::Resolve {
                            tx.execute(
                                "UPDATE alert_incidents SET status = 'resolved', resolved_at = $2, updated_at = $2
                                 WHERE id = $1 AND status <> 'resolved'",
                                &[&id, &now],
                            )
                            .await?;
                            self.notify(&tx, rule, o, id, "resolved", now, Value::Null)
                                .await?;
                        } else {
                            tx.execute(
                                "UPDATE alert_incidents SET updated_at = $2 WHERE id = $1",
                                &[&id, &now],
                            )
                            .await?;
                        }
                    }
                    incident
                }
                _ => incident,
            };
            let incident = if next == State::Ok { None } else { incident };
            tx.execute(
                "INSERT INTO alert_states (rule_id, group_key, state, since, value, incident_id)
                 VALUES ($1, $2, $3, $4, $5, $6)
                 ON CONFLICT (rule_id, group_key) DO UPDATE
                 SET state = $3, since = $4, value = $5, incident_id = $6",
                &[&rule.id, &o.group, &next.name(), &now, &o.value, &incident],
            )
            .await?;
            tx.execute(
                "INSERT INTO alert_transitions (rule_id, group_key, from_state, to_state, at, value)
                 VALUES ($1, $2, $3, $4, $5, $6)",
                &[&rule.id, &o.group, &current.name(), &next.name(), &now, &o.value],
            )
            .await?;
            tracing::info!(rule = %rule.spec.name, group = %o.group, from = current.name(), to = next.name(),
                value = ?o.value, "Alert transition");
        }
        // Groups back to ok with nothing pending need no row.
        tx.execute(
            "DELETE FROM alert_states WHERE rule_id = $1 AND state = 'ok'",
            &[&rule.id],
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn open_incident(
        &self,
        tx: &deadpool_postgres::Transaction<'_>,
        rule: &Rule,
        o: &Observation,
        now: DateTime<Utc>,
        talkers: bool,
    ) -> Result<i64, AlertError> {
        let evidence = self.evidence(rule, o, now, talkers).await;
        let id: i64 = tx
            .query_one(
                "INSERT INTO alert_incidents (rule_id, tenant, group_key, status, opened_at, updated_at)
                 VALUES ($1, $2, $3, 'open', $4, $4) RETURNING id",
                &[&rule.id, &rule.tenant, &o.group, &now],
            )
            .await?
            .get(0);
        tx.execute(
            "INSERT INTO alert_incident_events (incident_id, at, kind, value, evidence) VALUES ($1, $2, 'fired', $3, $4)",
            &[&id, &now, &o.value, &evidence],
        )
        .await?;
        self.notify(tx, rule, o, id, "fired", now, evidence).await?;
        Ok(id)
    }

    /// The numbers behind a firing: the figure, the condition, the window, and the top talkers of the group.
    async fn evidence(
        &self,
        rule: &Rule,
        o: &Observation,
        now: DateTime<Utc>,
        talkers: bool,
    ) -> Value {
        let spec = &rule.spec;
        let (from, to) = judged_window(spec, now);
        let mut params = self.group_filters(rule, &o.group);
        params.insert("limit".into(), "5".into());
        // A group that is a source address (a scan, a new source, a rule grouped by source) is its own top
        // talker by source: the read, filtered to it, would answer it alone, at the cost of a read per firing.
        let own = spec.group_name() == Some("src_ip") && o.group != NONE && o.group != OVERALL;
        let top = if own {
            json!([{ "src_ip": o.group, "events": o.events }])
        } else if talkers {
            self.answer(rule, QueryKind::TopTalkers, from, to, &params)
                .await
                .map(|v| v["top"].clone())
                .unwrap_or_else(|e| json!({ "error": e.to_string() }))
        } else {
            json!({ "omitted": format!("more than {EVIDENCE_READS} groups of this rule fired at once") })
        };
        json!({
            "field": spec.field(),
            "condition": spec.condition(),
            "op": spec.op.map(rules::Op::symbol),
            "threshold": spec.value,
            "value": o.value,
            "events": o.events,
            "from": from,
            "to": to,
            "top_talkers": top,
        })
    }

    /// The rule's filters narrowed to one group (its `group_by` becomes a filter of the same name).
    fn group_filters(&self, rule: &Rule, group: &str) -> BTreeMap<String, String> {
        let mut params = rule.spec.params.clone();
        params.remove("group_by");
        if let Some(filter) = rule.spec.group_filter() {
            if group != NONE && group != OVERALL {
                params.insert(filter.to_string(), group.to_string());
            }
        }
        params
    }

    fn links(&self, rule: &Rule, group: &str, now: DateTime<Utc>) -> Value {
        let (from, to) = judged_window(&rule.spec, now);
        let mut params = self.group_filters(rule, group);
        params.insert("from".into(), from.to_rfc3339());
        params.insert("to".into(), to.to_rfc3339());
        let query: String = params
            .iter()
            .map(|(k, v)| format!("{}={}", encode(k), encode(v)))
            .collect::<Vec<_>>()
            .join("&");
        json!({
            "metrics": format!("{}/metrics/{}?{query}", self.public_url, rule.spec.query),
            "logs": format!("{}/api/logs?{query}", self.public_url),
        })
    }

    /// Queues a notification of `event` for the rule's webhook, in the transaction that records it.
    #[allow(clippy::too_many_arguments)]
    async fn notify(
        &self,
        tx: &deadpool_postgres::Transaction<'_>,
        rule: &Rule,
        o: &Observation,
        incident: i64,
        event: &str,
        now: DateTime<Utc>,
        evidence: Value,
    ) -> Result<(), AlertError> {
        let Some(hook) = &rule.spec.webhook else {
            return Ok(());
        };
        let id = uuid::Uuid::new_v4();
        let spec = &rule.spec;
        let condition = spec.condition();
        let payload = json!({
            "id": id.to_string(),
            "event": event,
            "at": now,
            "rule": { "id": rule.id, "name": spec.name, "kind": spec.kind },
            "group_by": spec.group_name(),
            "group": o.group,
            "value": o.value,
            "condition": condition,
            "window_secs": spec.window_secs,
            "incident": { "id": incident, "url": format!("{}/api/alerts/incidents/{incident}", self.public_url) },
            "links": self.links(rule, &o.group, now),
            "evidence": evidence,
        });
        let format = match hook.format {
            rules::WebhookFormat::Json => "json",
            rules::WebhookFormat::Slack => "slack",
        };
        tx.execute(
            "INSERT INTO alert_outbox (id, rule_id, incident_id, url, format, payload) VALUES ($1, $2, $3, $4, $5, $6)",
            &[&id, &rule.id, &incident, &hook.url, &format, &payload],
        )
        .await?;
        Ok(())
    }
}

fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// A group's key: its value as text, [`NONE`] for events without one.
fn group_key(v: &Value) -> String {
    match v {
        Value::Null => NONE.to_string(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// `field` of one point or summary of an answer, and its events.
fn figure(m: &Value, field: &str) -> (Option<f64>, i64) {
    let events = ["events", "total", "count"]
        .iter()
        .find_map(|k| m[*k].as_i64())
        .unwrap_or(0);
    let value = match field {
        "bytes" => {
            Some(m["bytes_in"].as_f64().unwrap_or(0.0) + m["bytes_out"].as_f64().unwrap_or(0.0))
        }
        // An empty bucket has no ratio (the answer says 0).
        "error_ratio" if events == 0 => None,
        f => m[f].as_f64(),
    };
    (value, events)
}

/// A figure and the events behind it.
type Figure = (Option<f64>, i64);

/// Each group's series of figures (and events) per bucket in an answer, oldest first: `groups[]` keyed by their
/// `group_by` value, or the whole answer as [`OVERALL`].
fn recent_series(
    answer: &Value,
    group_by: Option<&str>,
    field: &str,
) -> Vec<(String, Vec<Figure>)> {
    let points = |series: &Value| -> Vec<Figure> {
        series
            .as_array()
            .into_iter()
            .flatten()
            .map(|p| figure(p, field))
            .collect()
    };
    match (answer["groups"].as_array(), group_by) {
        (Some(groups), Some(by)) => groups
            .iter()
            .map(|g| (group_key(&g[by]), points(&g["series"])))
            .collect(),
        _ => vec![(OVERALL.to_string(), points(&answer["series"]))],
    }
}

/// The span a rule judged at `now`: its window up to now, or for an anomaly the last complete bucket it scored.
fn judged_window(spec: &RuleSpec, now: DateTime<Utc>) -> (DateTime<Utc>, DateTime<Utc>) {
    let w = spec.window_secs as i64;
    let to = if spec.kind == RuleKind::Anomaly {
        DateTime::from_timestamp(now.timestamp().div_euclid(w) * w, 0).unwrap_or(now)
    } else {
        now
    };
    (to - chrono::Duration::seconds(w), to)
}

/// The figure of a group that sent nothing in a bucket: zero for a count, none for a ratio or a latency.
fn absent(field: &str) -> Option<f64> {
    match field {
        "error_ratio" | "p50" | "p90" | "p95" | "p99" | "max" => None,
        _ => Some(0.0),
    }
}

/// Each group's figure (and events) in an answer: `groups[]` keyed by their `group_by` value, or the whole
/// answer as [`OVERALL`].
pub fn figures(
    answer: &Value,
    group_by: Option<&str>,
    field: &str,
) -> BTreeMap<String, (Option<f64>, i64)> {
    let of = |m: &Value| figure(m, field);
    let summary = |g: &Value| -> Value {
        if g.get("overall").is_some_and(|o| !o.is_null()) {
            g["overall"].clone()
        } else {
            g["total"].clone()
        }
    };
    match (answer["groups"].as_array(), group_by) {
        (Some(groups), Some(by)) => groups
            .iter()
            .map(|g| (group_key(&g[by]), of(&summary(g))))
            .collect(),
        _ => BTreeMap::from([(OVERALL.to_string(), of(&summary(answer)))]),
    }
}
