//! Alert rules: what is watched (a read the API answers: its query, filters and grouping), the condition, the
//! timings and where to notify; validated with the field and the problem; stored in `alert_rules`.

use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio_postgres::Row;

use crate::db::DbError;
use crate::query::answers;
use crate::query::api::Kind as QueryKind;
use crate::query::filters::Filters;

/// What a rule watches for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum RuleKind {
    /// `field op value` over the window, per group or overall.
    Threshold,
    /// A group (producer, host, service, …) that sent during `lookback_secs` sends nothing for the window.
    NoData,
    /// `field` over the window divided by the same window `offset_secs` earlier, compared with `op value`.
    Change,
    /// A source reaching `op value` distinct destination ports (`field: dst_ports`) or addresses
    /// (`dst_addresses`) in the window.
    Scan,
    /// A `talker` (source address, country or AS number, …) not seen in the `history_days` before the window
    /// sends `op value` events in it.
    NewTalker,
    /// The robust score of `field` in the last complete bucket of `window_secs` against the
    /// `baseline_buckets` before it (`alerts::anomaly`) is `op value` (e.g. `> 5`), per group.
    Anomaly,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub enum Op {
    #[serde(rename = ">")]
    Gt,
    #[serde(rename = ">=")]
    Ge,
    #[serde(rename = "<")]
    Lt,
    #[serde(rename = "<=")]
    Le,
}

impl Op {
    pub fn holds(self, a: f64, b: f64) -> bool {
        match self {
            Op::Gt => a > b,
            Op::Ge => a >= b,
            Op::Lt => a < b,
            Op::Le => a <= b,
        }
    }

    pub fn symbol(self) -> &'static str {
        match self {
            Op::Gt => ">",
            Op::Ge => ">=",
            Op::Lt => "<",
            Op::Le => "<=",
        }
    }
}

/// What an `anomaly` rule compares its last bucket with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Seasonality {
    /// The same bucket of each of the days before: a daily cycle is its own normal.
    Day,
    /// The same bucket of each of the weeks before (same weekday and time).
    Week,
}

impl Seasonality {
    pub fn secs(self) -> i64 {
        match self {
            Seasonality::Day => 86_400,
            Seasonality::Week => 7 * 86_400,
        }
    }
}

/// How a notification is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum WebhookFormat {
    /// The collector's JSON, signed (HMAC-SHA-256 of `<timestamp>.<body>` in `X-Collector-Signature`).
    #[default]
    Json,
    /// A Slack-compatible incoming-webhook body (`{"text": …}`).
    Slack,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Webhook {
    pub url: String,
    /// Signs `json` notifications; 16 bytes or more. Never shown back.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret: Option<String>,
    #[serde(default)]
    pub format: WebhookFormat,
}

fn default_query() -> String {
    "volume".into()
}
fn default_window() -> u64 {
    300
}
fn default_cooldown() -> u64 {
    600
}
fn yes() -> bool {
    true
}

/// A rule as given and stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RuleSpec {
    pub name: String,
    pub kind: RuleKind,
    /// `volume`, `error-rate` or `latency`: the `/metrics/*` answer watched.
    #[serde(default = "default_query")]
    pub query: String,
    /// Its filters and `group_by`, as the endpoint takes them (not `from`, `to` or `bucket`: the window is the
    /// rule's).
    #[serde(default)]
    pub params: BTreeMap<String, String>,
    /// The figure compared: volume `events`, `bytes_in`, `bytes_out`, `bytes`; error rate `error_ratio`,
    /// `errors`, `client_errors`, `total`; latency `p50`, `p90`, `p95`, `p99`, `max`, `count`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub op: Option<Op>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<f64>,
    /// Groups with fewer events in the window are not judged (an error ratio of 1 event says little).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_events: Option<i64>,
    #[serde(default = "default_window")]
    pub window_secs: u64,
    /// How long the condition must hold before the rule fires (pending until then).
    #[serde(default)]
    pub for_secs: u64,
    /// A group that fires again within this long after resolving rejoins its incident without a new
    /// notification (flapping protection).
    #[serde(default = "default_cooldown")]
    pub cooldown_secs: u64,
    /// `no_data`: the groups expected are those that sent during this long before the window.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lookback_secs: Option<u64>,
    /// `change`: how much earlier the window compared with is (default one day).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub offset_secs: Option<u64>,
    /// `new_talker`: what is new: `src_ip` (default), `dst_ip`, `src_country`, `dst_country`, `src_asn`,
    /// `dst_asn` (the last four with enrichment).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub talker: Option<String>,
    /// `new_talker`: how far back a talker counts as seen (default 7 days).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub history_days: Option<u64>,
    /// `anomaly`: the buckets before the last one it is compared with (default 24; at least 6 with data are
    /// needed before it scores: the warm-up); with `seasonality`, the days or weeks (default 8, at most 28).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub baseline_buckets: Option<u32>,
    /// `anomaly`: compare with the same bucket of the days (`day`) or weeks (`week`) before rather than with
    /// the buckets just before.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seasonality: Option<Seasonality>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhook: Option<Webhook>,
    #[serde(default = "yes")]
    pub enabled: bool,
}

/// A field of a rule that cannot work, and why.
#[derive(Debug, thiserror::Error)]
pub enum RuleError {
    #[error("{field}: {problem}")]
    Invalid { field: String, problem: String },
    #[error("no alert rule with id {0:?}")]
    NotFound(String),
    #[error(transparent)]
    Db(#[from] DbError),
}

impl From<tokio_postgres::Error> for RuleError {
    fn from(e: tokio_postgres::Error) -> Self {
        RuleError::Db(e.into())
    }
}

fn invalid(field: impl Into<String>, problem: impl Into<String>) -> RuleError {
    RuleError::Invalid {
        field: field.into(),
        problem: problem.into(),
    }
}

/// The figures a rule of `kind` over `query` compares, the first being the default.
fn fields_for(kind: RuleKind, query: QueryKind) -> &'static [&'static str] {
    match kind {
        RuleKind::Scan => &["dst_ports", "dst_addresses"],
        RuleKind::NewTalker => &["events"],
        _ => fields_of(query),
    }
}

/// The figures each query's answer has, the first being the default.
fn fields_of(query: QueryKind) -> &'static [&'static str] {
    match query {
        QueryKind::Volume => &["events", "bytes", "bytes_in", "bytes_out"],
        QueryKind::ErrorRate => &["error_ratio", "errors", "client_errors", "total"],
        _ => &["p99", "p95", "p90", "p50", "max", "count"],
    }
}

/// Longest window, lookback or offset: eight days of rollups answer it.
const MAX_SECS: u64 = 8 * 86_400;

impl RuleSpec {
    pub fn query_kind(&self) -> Option<QueryKind> {
        match self.query.as_str() {
            "volume" => Some(QueryKind::Volume),
            "error-rate" => Some(QueryKind::ErrorRate),
            "latency" => Some(QueryKind::Latency),
            _ => None,
        }
    }

    /// The figure compared (the query's default when not given).
    pub fn field(&self) -> &str {
        self.field
            .as_deref()
            .unwrap_or_else(|| self.query_kind().map_or("events", |q| fields_of(q)[0]))
    }

    /// The grouping parameter, if any.
    pub fn group_by(&self) -> Option<&str> {
        self.params
            .get("group_by")
            .map(String::as_str)
            .filter(|g| !g.is_empty())
    }

    /// The condition in words, for notifications: `error_ratio > 0.05`, `no events for 300 s`, ….
    pub fn condition(&self) -> String {
        let against = format!(
            "{} {}",
            self.op.map_or("", Op::symbol),
            self.value.unwrap_or_default()
        );
        let field = self.field();
        match self.kind {
            RuleKind::NoData => format!("no events for {} s", self.window_secs),
            RuleKind::Threshold => format!("{field} {against}"),
            RuleKind::Change => format!(
                "{field} now ÷ {} s earlier {against}",
                self.offset_secs.unwrap_or(86_400)
            ),
            RuleKind::Anomaly => {
                let against_what = match self.seasonality {
                    Some(Seasonality::Day) => " against the same time of past days",
                    Some(Seasonality::Week) => " against the same time of past weeks",
                    None => "",
                };
                format!(
                    "anomaly score of {field} per {} s{against_what} {against}",
                    self.window_secs
                )
            }
            RuleKind::Scan => format!("{field} reached {against}"),
            RuleKind::NewTalker => format!(
                "{} not seen in {} days sends {against} events",
                self.talker(),
                self.history_days.unwrap_or(7)
            ),
        }
    }

    /// `new_talker`'s talker column.
    pub fn talker(&self) -> &str {
        self.talker.as_deref().unwrap_or("src_ip")
    }

    /// What a group of this rule is, as a name (`group_by`'s, `src_ip` for a scan, the talker).
    pub fn group_name(&self) -> Option<&str> {
        match self.kind {
            RuleKind::Scan => Some("src_ip"),
            RuleKind::NewTalker => Some(self.talker()),
            _ => self.group_by(),
        }
    }

    /// The filter parameter narrowing a read to one group (`src` for a source address).
    pub fn group_filter(&self) -> Option<&str> {
        self.group_name().map(|g| match g {
            "src_ip" => "src",
            "dst_ip" => "dst",
            other => other,
        })
    }

    /// Checks every field; the error names the first that cannot work.
    pub fn validate(&self) -> Result<(), RuleError> {
        let name = self.name.trim();
        if name.is_empty() || name.len() > 200 {
            return Err(invalid("name", "1 to 200 characters"));
        }
        let query = self.query_kind().ok_or_else(|| {
            invalid(
                "query",
                format!(
                    "{:?} is not watched; accepted: volume, error-rate, latency",
                    self.query
                ),
            )
        })?;
        if matches!(
            self.kind,
            RuleKind::NoData | RuleKind::Scan | RuleKind::NewTalker
        ) && query != QueryKind::Volume
        {
            return Err(invalid("query", "this kind of rule watches volume"));
        }
        if matches!(self.kind, RuleKind::Scan | RuleKind::NewTalker) && self.group_by().is_some() {
            return Err(invalid(
                "params.group_by",
                "a scan is per source, and a new talker per `talker`: no group_by",
            ));
        }
        if self.kind == RuleKind::NewTalker
            && crate::query::watch::history_of(self.talker()).is_none()
        {
            return Err(invalid(
                "talker",
                format!(
                    "{:?} has no history; accepted: src_ip, dst_ip, src_country, dst_country, src_asn, dst_asn",
                    self.talker()
                ),
            ));
        }
        if self.kind == RuleKind::Anomaly && ![60, 300, 3600].contains(&self.window_secs) {
            return Err(invalid(
                "window_secs",
                "an anomaly is scored per bucket: 60, 300 or 3600",
            ));
        }
        if self.seasonality.is_some() && self.kind != RuleKind::Anomaly {
            return Err(invalid(
                "seasonality",
                "only an anomaly rule has a baseline",
            ));
        }
        let most = if self.seasonality.is_some() { 28 } else { 288 };
        if self
            .baseline_buckets
            .is_some_and(|b| !(6..=most).contains(&b))
        {
            return Err(invalid("baseline_buckets", format!("from 6 to {most}")));
        }
        if self.history_days.is_some_and(|d| !(1..=90).contains(&d)) {
            return Err(invalid("history_days", "from 1 to 90"));
        }
        for reserved in ["from", "to", "bucket"] {
            if self.params.contains_key(reserved) {
                return Err(invalid(
                    format!("params.{reserved}"),
                    "set by the rule's window_secs, not a parameter",
                ));
            }
        }
        let params: HashMap<String, String> = self.params.clone().into_iter().collect();
        Filters::parse(&params, query.extra_params(), chrono::Utc::now()).map_err(|e| {
            invalid(
                format!("params.{}", e.param),
                format!("{}; accepted: {}", e.problem, e.accepted),
            )
        })?;
        answers::parse_group_by(&params, query == QueryKind::Latency).map_err(|e| {
            invalid(
                "params.group_by",
                format!("{}; accepted: {}", e.problem, e.accepted),
            )
        })?;
        if self.kind == RuleKind::NoData && self.group_by().is_none() {
            return Err(invalid(
                "params.group_by",
                "no_data needs the groups it expects to hear from (producer, host, service, …)",
            ));
        }
        let fields = fields_for(self.kind, query);
        if !fields.contains(&self.field()) {
            return Err(invalid(
                "field",
                format!(
                    "{:?} is not what this rule can compare; accepted: {}",
                    self.field(),
                    fields.join(", ")
                ),
            ));
        }
        if self.kind != RuleKind::NoData {
            if self.op.is_none() {
                return Err(invalid("op", "required: one of >, >=, <, <="));
            }
            match self.value {
                Some(v) if v.is_finite() => {}
                _ => return Err(invalid("value", "required: a number")),
            }
        }
        for (field, secs) in [
            ("window_secs", Some(self.window_secs)),
            ("lookback_secs", self.lookback_secs),
            ("offset_secs", self.offset_secs),
        ] {
            if let Some(s) = secs {
                if !(60..=MAX_SECS).contains(&s) {
                    return Err(invalid(
                        field,
                        format!("{s} is not from 60 to {MAX_SECS} seconds"),
                    ));
                }
            }
        }
        if self.for_secs > MAX_SECS || self.cooldown_secs > MAX_SECS {
            return Err(invalid("for_secs", format!("at most {MAX_SECS} seconds")));
        }
        if let Some(w) = &self.webhook {
            let url =
                reqwest::Url::parse(&w.url).map_err(|e| invalid("webhook.url", format!("{e}")))?;
            if !matches!(url.scheme(), "http" | "https") {
                return Err(invalid("webhook.url", "an http or https URL"));
            }
            match (&w.secret, w.format) {
                (Some(s), _) if s.len() < 16 => {
                    return Err(invalid("webhook.secret", "16 bytes or more"))
                }
                (None, WebhookFormat::Json) => return Err(invalid(
                    "webhook.secret",
                    "required for json notifications: the receiver checks their signature with it",
                )),
                _ => {}
            }
        }
        Ok(())
    }
}

/// A stored rule, as listed (the webhook's secret left out).
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Rule {
    pub id: String,
    pub tenant: Option<String>,
    #[serde(flatten)]
    pub spec: RuleSpec,
    pub created_at: chrono::DateTime<chrono::Utc>,
    pub updated_at: chrono::DateTime<chrono::Utc>,
}

impl Rule {
    fn from_row(r: &Row) -> Result<Rule, RuleError> {
        let spec: Value = r.try_get("spec")?;
        let spec: RuleSpec = serde_json::from_value(spec)
            .map_err(|e| invalid("spec", format!("stored rule does not read: {e}")))?;
        Ok(Rule {
            id: r.try_get("id")?,
            tenant: r.try_get("tenant")?,
            spec,
            created_at: r.try_get("created_at")?,
            updated_at: r.try_get("updated_at")?,
        })
    }

    /// Without the webhook's secret: what is shown.
    pub fn shown(mut self) -> Rule {
        if let Some(w) = &mut self.spec.webhook {
            w.secret = None;
        }
        self
    }
}

const COLUMNS: &str = "id, tenant, spec, created_at, updated_at";

fn spec_json(spec: &RuleSpec) -> Result<Value, RuleError> {
    serde_json::to_value(spec).map_err(|e| invalid("spec", e.to_string()))
}

pub async fn create(
    client: &impl deadpool_postgres::GenericClient,
    spec: &RuleSpec,
    tenant: Option<&str>,
) -> Result<Rule, RuleError> {
    spec.validate()?;
    let id = format!("rule_{:016x}", rand::random::<u64>());
    let row = client
        .query_one(
            &format!(
                "INSERT INTO alert_rules (id, name, tenant, spec, enabled) VALUES ($1, $2, $3, $4, $5)
                 RETURNING {COLUMNS}"
            ),
            &[&id, &spec.name, &tenant, &spec_json(spec)?, &spec.enabled],
        )
        .await?;
    Rule::from_row(&row)
}

/// Every rule (of `tenant`, when given), oldest first.
pub async fn list(
    client: &impl deadpool_postgres::GenericClient,
    tenant: Option<&str>,
) -> Result<Vec<Rule>, RuleError> {
    let rows = client
        .query(
            &format!(
                "SELECT {COLUMNS} FROM alert_rules WHERE $1::text IS NULL OR tenant = $1 ORDER BY created_at, id"
            ),
            &[&tenant],
        )
        .await?;
    rows.iter().map(Rule::from_row).collect()
}

pub async fn get(
    client: &impl deadpool_postgres::GenericClient,
    id: &str,
    tenant: Option<&str>,
) -> Result<Rule, RuleError> {
    let row = client
        .query_opt(
            &format!("SELECT {COLUMNS} FROM alert_rules WHERE id = $1 AND ($2::text IS NULL OR tenant = $2)"),
            &[&id, &tenant],
        )
        .await?
        .ok_or_else(|| RuleError::NotFound(id.to_string()))?;
    Rule::from_row(&row)
}

/// Replaces a rule's spec; a webhook given without its secret keeps the stored one.
pub async fn update(
    client: &impl deadpool_postgres::GenericClient,
    id: &str,
    spec: &RuleSpec,
    tenant: Option<&str>,
) -> Result<Rule, RuleError> {
    let mut spec = spec.clone();
    if let Some(w) = &mut spec.webhook {
        if w.secret.is_none() {
            let old = get(client, id, tenant).await?;
            w.secret = old.spec.webhook.and_then(|o| o.secret);
        }
    }
    spec.validate()?;
    let row = client
        .query_opt(
            &format!(
                "UPDATE alert_rules SET name = $2, spec = $3, enabled = $4, updated_at = now()
                 WHERE id = $1 AND ($5::text IS NULL OR tenant = $5) RETURNING {COLUMNS}"
            ),
            &[&id, &spec.name, &spec_json(&spec)?, &spec.enabled, &tenant],
        )
        .await?
        .ok_or_else(|| RuleError::NotFound(id.to_string()))?;
    Rule::from_row(&row)
}

/// Deletes a rule and its states (its incidents and their timelines stay).
pub async fn delete(
    client: &mut deadpool_postgres::Object,
    id: &str,
    tenant: Option<&str>,
) -> Result<(), RuleError> {
    let tx = client.transaction().await?;
    let n = tx
        .execute(
            "DELETE FROM alert_rules WHERE id = $1 AND ($2::text IS NULL OR tenant = $2)",
            &[&id, &tenant],
        )
        .await?;
    if n == 0 {
        return Err(RuleError::NotFound(id.to_string()));
    }
    tx.execute("DELETE FROM alert_states WHERE rule_id = $1", &[&id])
        .await?;
    tx.commit().await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(json: &str) -> Result<RuleSpec, String> {
        let s: RuleSpec = serde_json::from_str(json).map_err(|e| e.to_string())?;
        s.validate().map(|()| s).map_err(|e| e.to_string())
    }

    #[test]
    fn rules_that_cannot_work_are_refused_with_the_field() {
        let ok = spec(
            r#"{"name":"web errors","kind":"threshold","query":"error-rate","params":{"service":"web"},
                "op":">","value":0.05,"webhook":{"url":"http://127.0.0.1:9/h","secret":"0123456789abcdef"}}"#,
        )
        .unwrap();
        assert_eq!(ok.field(), "error_ratio");
        for (json, starts) in [
            (
                r#"{"name":"","kind":"threshold","op":">","value":1}"#,
                "name:",
            ),
            (
                r#"{"name":"x","kind":"threshold","query":"logs","op":">","value":1}"#,
                "query:",
            ),
            (r#"{"name":"x","kind":"threshold","op":">"}"#, "value:"),
            (r#"{"name":"x","kind":"threshold","value":1}"#, "op:"),
            (
                r#"{"name":"x","kind":"threshold","field":"p99","op":">","value":1}"#,
                "field:",
            ),
            (
                r#"{"name":"x","kind":"threshold","params":{"from":"-1h"},"op":">","value":1}"#,
                "params.from:",
            ),
            (
                r#"{"name":"x","kind":"threshold","params":{"sevrice":"web"},"op":">","value":1}"#,
                "params.sevrice:",
            ),
            (r#"{"name":"x","kind":"no_data"}"#, "params.group_by:"),
            (
                r#"{"name":"x","kind":"threshold","op":">","value":1,"window_secs":5}"#,
                "window_secs:",
            ),
            (
                r#"{"name":"x","kind":"threshold","op":">","value":1,"webhook":{"url":"http://h/x"}}"#,
                "webhook.secret:",
            ),
            (
                r#"{"name":"x","kind":"threshold","op":">","value":1,"webhook":{"url":"ftp://h/x","format":"slack"}}"#,
                "webhook.url:",
            ),
        ] {
            let e = spec(json).unwrap_err();
            assert!(e.starts_with(starts), "{json}: {e}");
        }
        assert!(
            spec(r#"{"name":"x","kind":"threshold","op":">","value":1,"extra":1}"#)
                .unwrap_err()
                .contains("unknown field")
        );
    }
}
