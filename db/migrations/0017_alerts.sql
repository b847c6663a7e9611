-- Alerts (collector/src/alerts/): rules evaluated from the read API's answers every few seconds, a state per
-- rule and group, incidents with a timeline, and an outbox of notifications delivered by webhook. All small
-- tables: under Citus they are reference tables, and none has a foreign key to a large one.

CREATE TABLE alert_rules (
    id          text        PRIMARY KEY,
    name        text        NOT NULL,
    -- The tenant whose producers the rule reads (null: every producer).
    tenant      text,
    -- The rule as given (kind, query, parameters, condition, timings, webhook), validated by the collector.
    spec        jsonb       NOT NULL,
    enabled     boolean     NOT NULL DEFAULT true,
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now()
);

-- Where each rule stands for each group of its answer (`*` when ungrouped).
CREATE TABLE alert_states (
    rule_id     text        NOT NULL,
    group_key   text        NOT NULL,
    -- ok, pending or firing.
    state       text        NOT NULL,
    -- When it entered that state.
    since       timestamptz NOT NULL,
    value       double precision,
    -- The incident it fired into (kept after it resolves, for the cooldown).
    incident_id bigint,
    resolved_at timestamptz,
    PRIMARY KEY (rule_id, group_key)
);

-- Every change of state.
CREATE TABLE alert_transitions (
    id          bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    rule_id     text        NOT NULL,
    group_key   text        NOT NULL,
    from_state  text        NOT NULL,
    to_state    text        NOT NULL,
    at          timestamptz NOT NULL DEFAULT now(),
    value       double precision
);
CREATE INDEX alert_transitions_rule ON alert_transitions (rule_id, at);

CREATE TABLE alert_incidents (
    id          bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    rule_id     text        NOT NULL,
    tenant      text,
    group_key   text        NOT NULL,
    -- open, acknowledged or resolved.
    status      text        NOT NULL,
    opened_at   timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    resolved_at timestamptz
);
CREATE INDEX alert_incidents_status ON alert_incidents (status, opened_at);

-- An incident's timeline: fired (with the evidence), resolved, refired, acknowledged, comment.
CREATE TABLE alert_incident_events (
    id          bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    incident_id bigint      NOT NULL,
    at          timestamptz NOT NULL DEFAULT now(),
    kind        text        NOT NULL,
    actor       text,
    value       double precision,
    evidence    jsonb,
    comment     text
);
CREATE INDEX alert_incident_events_incident ON alert_incident_events (incident_id, at);

-- Notifications to send: written in the transaction that records the transition, so a restart loses none; sent
-- by any collector (rows locked while they are sent), retried with backoff, given up after a limit.
CREATE TABLE alert_outbox (
    id              uuid        PRIMARY KEY,
    rule_id         text        NOT NULL,
    incident_id     bigint,
    url             text        NOT NULL,
    format          text        NOT NULL,
    payload         jsonb       NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now(),
    attempts        integer     NOT NULL DEFAULT 0,
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    delivered_at    timestamptz,
    dead_at         timestamptz,
    last_status     integer,
    last_error      text
);
CREATE INDEX alert_outbox_due ON alert_outbox (next_attempt_at) WHERE delivered_at IS NULL AND dead_at IS NULL;
