//! Where a rule stands for one group, and the step each evaluation takes: ok → pending (while the condition has
//! held for less than `for_secs`) → firing → resolving (the condition stopped; the incident stays open for
//! `cooldown_secs`, and a group that fires again meanwhile rejoins it without a new notification) → ok.

use chrono::{DateTime, Utc};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    Ok,
    Pending,
    Firing,
    Resolving,
}

impl State {
    pub fn name(self) -> &'static str {
        match self {
            State::Ok => "ok",
            State::Pending => "pending",
            State::Firing => "firing",
            State::Resolving => "resolving",
        }
    }

    pub fn parse(s: &str) -> State {
        match s {
            "pending" => State::Pending,
            "firing" => State::Firing,
            "resolving" => State::Resolving,
            _ => State::Ok,
        }
    }
}

/// What one evaluation does for a group.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Nothing to record.
    Stay,
    /// The condition holds, not yet for long enough.
    Pend,
    /// It stopped holding before the rule fired.
    Cancel,
    /// It fires: opens an incident and notifies.
    Fire,
    /// It holds again while resolving: back to firing in the same incident, without a notification.
    Refire,
    /// It stopped holding: the incident waits out the cooldown.
    Recover,
    /// Quiet for the cooldown (or no cooldown): the incident resolves and the resolution is notified.
    Resolve,
}

/// The step from `state` (entered at `since`) when the condition `holds` at `now`.
pub fn step(
    state: State,
    since: DateTime<Utc>,
    holds: bool,
    now: DateTime<Utc>,
    for_secs: u64,
    cooldown_secs: u64,
) -> Step {
    let lasted = |secs: u64| (now - since).num_seconds() >= secs as i64;
    match (state, holds) {
        (State::Ok, true) if for_secs == 0 => Step::Fire,
        (State::Ok, true) => Step::Pend,
        (State::Ok, false) => Step::Stay,
        (State::Pending, true) if lasted(for_secs) => Step::Fire,
        (State::Pending, true) => Step::Stay,
        (State::Pending, false) => Step::Cancel,
        (State::Firing, true) => Step::Stay,
        (State::Firing, false) if cooldown_secs == 0 => Step::Resolve,
        (State::Firing, false) => Step::Recover,
        (State::Resolving, true) => Step::Refire,
        (State::Resolving, false) if lasted(cooldown_secs) => Step::Resolve,
        (State::Resolving, false) => Step::Stay,
    }
}

/// The state a step leaves.
pub fn after(state: State, step: Step) -> State {
    match step {
        Step::Stay => state,
        Step::Pend => State::Pending,
        Step::Cancel | Step::Resolve => State::Ok,
        Step::Fire | Step::Refire => State::Firing,
        Step::Recover => State::Resolving,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_group_goes_through_pending_firing_resolving_and_back() {
        let t0 = Utc::now();
        let at = |s: i64| t0 + chrono::Duration::seconds(s);
        // for 30 s, cooldown 60 s.
        let run = [
            (State::Ok, 0, true, 0, Step::Pend),
            (State::Pending, 0, true, 10, Step::Stay),
            (State::Pending, 0, false, 20, Step::Cancel),
            (State::Pending, 0, true, 30, Step::Fire),
            (State::Firing, 30, true, 40, Step::Stay),
            (State::Firing, 30, false, 50, Step::Recover),
            (State::Resolving, 50, true, 60, Step::Refire),
            (State::Resolving, 50, false, 100, Step::Stay),
            (State::Resolving, 50, false, 110, Step::Resolve),
            (State::Ok, 110, false, 120, Step::Stay),
        ];
        for (state, since, holds, now, want) in run {
            assert_eq!(
                step(state, at(since), holds, at(now), 30, 60),
                want,
                "{state:?} at {now}"
            );
        }
        assert_eq!(step(State::Ok, t0, true, t0, 0, 0), Step::Fire);
        assert_eq!(step(State::Firing, t0, false, t0, 0, 0), Step::Resolve);
        assert_eq!(after(State::Firing, Step::Recover), State::Resolving);
    }
}
