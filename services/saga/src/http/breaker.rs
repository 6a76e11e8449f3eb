//! Circuit breakers, one per target `host:port`: a pure state machine (time is passed in,
//! transitions are returned as data) so every rule is tested without I/O.
//!
//! closed --(N consecutive failures, or failure ratio over the window)--> open
//! open --(cooldown elapsed: one probe call is let through)--> half_open
//! half_open --(probe succeeds)--> closed, --(probe fails)--> open
//!
//! Only signs of an unhealthy service count as failures: connect errors, timeouts, 5xx and
//! 429. A 404 or 422 is the caller's problem and says the service is up.

use distorch_domain::definition::BreakerSpec;
use distorch_domain::topics::{BreakerState, BreakerTransition};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, VecDeque};

/// How long a call waits when the breaker is half-open and its probe is still out: the
/// probe answers soon, so there is no need to wait for a whole cooldown.
const HALF_OPEN_RETRY_MS: u64 = 1_000;
/// Most outcomes the failure-ratio window keeps per host, bounding memory under load.
const MAX_WINDOW_CALLS: usize = 10_000;

/// Breaker thresholds: `[http] breaker = {...}` in the configuration, overridden field by
/// field by an `http` step's `breaker`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BreakerConfig {
    /// Consecutive failures that open the breaker (0 disables this rule).
    pub consecutive_failures: u32,
    /// Failure ratio in (0, 1] over `window_ms` that opens it, once `min_calls` were made.
    pub failure_ratio: f64,
    /// Calls within the window below which the failure ratio is not considered (at least 1).
    pub min_calls: u32,
    /// Length of the sliding window of calls the failure ratio is taken over, in ms.
    pub window_ms: u64,
    /// How long it stays open before one probe call is let through.
    pub cooldown_ms: u64,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        Self {
            consecutive_failures: 5,
            failure_ratio: 0.5,
            min_calls: 10,
            window_ms: 30_000,
            cooldown_ms: 10_000,
        }
    }
}

impl BreakerConfig {
    /// These defaults with a step's overrides applied.
    pub fn with(&self, spec: Option<&BreakerSpec>) -> Self {
        let Some(s) = spec else {
            return self.clone();
        };
        Self {
            consecutive_failures: s.consecutive_failures.unwrap_or(self.consecutive_failures),
            failure_ratio: s.failure_ratio.unwrap_or(self.failure_ratio),
            min_calls: s.min_calls.unwrap_or(self.min_calls),
            window_ms: s.window_ms.unwrap_or(self.window_ms),
            cooldown_ms: s.cooldown_ms.unwrap_or(self.cooldown_ms),
        }
    }

    /// Rejects a `failure_ratio` outside (0, 1] and a zero `min_calls`; the message names
    /// the field.
    pub fn validate(&self) -> Result<(), String> {
        if !(self.failure_ratio > 0.0 && self.failure_ratio <= 1.0) {
            return Err(format!(
                "breaker.failure_ratio must be in (0, 1], not {}",
                self.failure_ratio
            ));
        }
        if self.min_calls == 0 {
            return Err("breaker.min_calls must be at least 1".into());
        }
        Ok(())
    }
}

/// Whether a call may be made now.
#[derive(Debug, Clone, PartialEq)]
pub enum Admission {
    /// Make the call; report its outcome with the same `probe` flag.
    Call {
        /// Whether this call is the half-open breaker's one probe.
        probe: bool,
    },
    /// Do not call; try again at `until_ms`.
    Reject {
        /// When a call may be tried again, in milliseconds since the Unix epoch.
        until_ms: i64,
        /// Why not; sent with the attempt's `DeferTask`.
        reason: String,
    },
}

/// The outcome of a call as the breaker sees it.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// Any answer but a 5xx or 429 (a 404 too): the service is up.
    Success,
    /// Connect error, timeout, 5xx or 429, described for the transition's `reason`.
    Failure(String),
}

#[derive(Debug, Clone)]
struct Breaker {
    state: BreakerState,
    consecutive: u32,
    /// `(at_ms, failed)` of recent calls, oldest first.
    window: VecDeque<(i64, bool)>,
    open_until_ms: i64,
    probe_out: bool,
    reason: String,
}

impl Default for Breaker {
    fn default() -> Self {
        Self {
            state: BreakerState::Closed,
            consecutive: 0,
            window: VecDeque::new(),
            open_until_ms: 0,
            probe_out: false,
            reason: String::new(),
        }
    }
}

/// Every host's breaker. Hosts never called have none and are closed.
#[derive(Debug, Default)]
pub struct Breakers {
    hosts: BTreeMap<String, Breaker>,
}

impl Breakers {
    /// Decides whether a call to `host` may go out at `now_ms`. Moving from open to
    /// half-open is a transition, returned for publication.
    pub fn admit(
        &mut self,
        host: &str,
        cfg: &BreakerConfig,
        now_ms: i64,
    ) -> (Admission, Option<BreakerTransition>) {
        let Some(b) = self.hosts.get_mut(host) else {
            return (Admission::Call { probe: false }, None);
        };
        match b.state {
            BreakerState::Closed => (Admission::Call { probe: false }, None),
            BreakerState::Open if now_ms < b.open_until_ms => {
                let reason = format!("circuit breaker for {host} is open: {}", b.reason);
                let until_ms = b.open_until_ms;
                (Admission::Reject { until_ms, reason }, None)
            }
            BreakerState::Open => {
                b.state = BreakerState::HalfOpen;
                b.probe_out = true;
                let reason = "cooldown elapsed; one probe call is let through".to_string();
                let t = transition(host, b, now_ms, reason);
                (Admission::Call { probe: true }, Some(t))
            }
            BreakerState::HalfOpen if b.probe_out => {
                let wait = cfg.cooldown_ms.min(HALF_OPEN_RETRY_MS);
                let reason = format!("circuit breaker for {host} is half-open; its probe is out");
                (
                    Admission::Reject {
                        until_ms: now_ms.saturating_add(ms(wait)),
                        reason,
                    },
                    None,
                )
            }
            // The probe's outcome was lost (should not happen): let another probe through.
            BreakerState::HalfOpen => {
                b.probe_out = true;
                (Admission::Call { probe: true }, None)
            }
        }
    }

    /// Records the outcome of a call admitted with `probe`. Returns the transition it
    /// causes, if any. Outcomes of calls that went out before the breaker opened are
    /// ignored while it is open or half-open: only the probe decides.
    pub fn record(
        &mut self,
        host: &str,
        cfg: &BreakerConfig,
        now_ms: i64,
        probe: bool,
        outcome: Outcome,
    ) -> Option<BreakerTransition> {
        let b = self.hosts.entry(host.to_string()).or_default();
        match (b.state, probe) {
            (BreakerState::HalfOpen, true) => {
                b.probe_out = false;
                match outcome {
                    Outcome::Success => {
                        *b = Breaker::default();
                        Some(transition(host, b, now_ms, "probe call succeeded".into()))
                    }
                    Outcome::Failure(why) => {
                        b.consecutive = b.consecutive.saturating_add(1);
                        Some(open(
                            host,
                            b,
                            cfg,
                            now_ms,
                            format!("probe call failed: {why}"),
                        ))
                    }
                }
            }
            (BreakerState::Closed, _) => {
                let failed = matches!(outcome, Outcome::Failure(_));
                b.window.push_back((now_ms, failed));
                let horizon = now_ms.saturating_sub(ms(cfg.window_ms));
                while b
                    .window
                    .front()
                    .is_some_and(|(at, _)| *at < horizon || b.window.len() > MAX_WINDOW_CALLS)
                {
                    b.window.pop_front();
                }
                let Outcome::Failure(why) = outcome else {
                    b.consecutive = 0;
                    return None;
                };
                b.consecutive = b.consecutive.saturating_add(1);
                if cfg.consecutive_failures > 0 && b.consecutive >= cfg.consecutive_failures {
                    let reason = format!("{} consecutive failures; last: {why}", b.consecutive);
                    return Some(open(host, b, cfg, now_ms, reason));
                }
                let calls = b.window.len();
                let failures = b.window.iter().filter(|(_, f)| *f).count();
                if cfg.min_calls > 0
                    && calls >= cfg.min_calls as usize
                    && failures as f64 / calls as f64 >= cfg.failure_ratio
                {
                    let reason = format!(
                        "{failures} of the last {calls} calls failed within {} ms; last: {why}",
                        cfg.window_ms
                    );
                    return Some(open(host, b, cfg, now_ms, reason));
                }
                None
            }
            _ => None,
        }
    }

    /// A probe that could not be made (the request itself was unusable) decides nothing:
    /// the next call becomes the probe.
    pub fn release_probe(&mut self, host: &str) {
        if let Some(b) = self.hosts.get_mut(host)
            && b.state == BreakerState::HalfOpen
        {
            b.probe_out = false;
        }
    }

    /// The current state of `host` (closed when never seen).
    pub fn state(&self, host: &str) -> BreakerState {
        self.hosts
            .get(host)
            .map_or(BreakerState::Closed, |b| b.state)
    }
}

fn open(
    host: &str,
    b: &mut Breaker,
    cfg: &BreakerConfig,
    now_ms: i64,
    reason: String,
) -> BreakerTransition {
    b.state = BreakerState::Open;
    b.open_until_ms = now_ms.saturating_add(ms(cfg.cooldown_ms));
    b.probe_out = false;
    b.window.clear();
    b.reason.clone_from(&reason);
    transition(host, b, now_ms, reason)
}

fn transition(host: &str, b: &Breaker, at_ms: i64, reason: String) -> BreakerTransition {
    BreakerTransition {
        host: host.to_string(),
        state: b.state,
        at_ms,
        reason,
        consecutive_failures: b.consecutive,
    }
}

fn ms(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    const H: &str = "svc:80";

    fn cfg() -> BreakerConfig {
        BreakerConfig {
            consecutive_failures: 3,
            failure_ratio: 0.5,
            min_calls: 10,
            window_ms: 1_000,
            cooldown_ms: 500,
        }
    }

    fn fail() -> Outcome {
        Outcome::Failure("503".into())
    }

    fn call(b: &mut Breakers, now: i64) -> bool {
        matches!(b.admit(H, &cfg(), now).0, Admission::Call { probe: false })
    }

    #[test]
    fn given_closed_when_n_consecutive_failures_then_it_opens_and_rejects_until_the_cooldown_ends()
    {
        let mut b = Breakers::default();
        assert!(call(&mut b, 0));
        assert_eq!(b.record(H, &cfg(), 1, false, fail()), None);
        assert_eq!(b.record(H, &cfg(), 2, false, fail()), None);
        let t = b.record(H, &cfg(), 3, false, fail()).expect("opens");
        assert_eq!(t.state, BreakerState::Open);
        assert_eq!(t.consecutive_failures, 3);
        assert_eq!(t.host, H);
        match b.admit(H, &cfg(), 100).0 {
            Admission::Reject { until_ms, reason } => {
                assert_eq!(until_ms, 503);
                assert!(reason.contains("open"), "{reason}");
            }
            other => panic!("expected a rejection, got {other:?}"),
        }
    }

    #[test]
    fn given_closed_when_a_success_interrupts_the_failures_then_the_count_starts_over() {
        let mut b = Breakers::default();
        b.record(H, &cfg(), 1, false, fail());
        b.record(H, &cfg(), 2, false, fail());
        b.record(H, &cfg(), 3, false, Outcome::Success);
        assert_eq!(b.record(H, &cfg(), 4, false, fail()), None);
        assert_eq!(b.record(H, &cfg(), 5, false, fail()), None);
        assert_eq!(b.state(H), BreakerState::Closed);
    }

    #[test]
    fn given_closed_when_the_failure_ratio_over_the_window_is_reached_then_it_opens() {
        let mut b = Breakers::default();
        let mut opened = None;
        // Alternating failures never make 3 in a row, but reach 50% once 10 calls were made.
        for i in 0..11 {
            let o = if i % 2 == 0 { fail() } else { Outcome::Success };
            opened = opened.or(b.record(H, &cfg(), i, false, o));
        }
        let t = opened.expect("the ratio opens it");
        assert_eq!(t.state, BreakerState::Open);
        assert!(t.reason.contains("6 of the last 11"), "{}", t.reason);
    }

    #[test]
    fn given_closed_when_old_calls_leave_the_window_then_they_no_longer_count() {
        let mut b = Breakers::default();
        for i in 0..9 {
            let o = if i % 2 == 0 { fail() } else { Outcome::Success };
            b.record(H, &cfg(), i, false, o);
        }
        // Much later: the earlier calls fell out of the 1 s window.
        assert_eq!(b.record(H, &cfg(), 5_000, false, fail()), None);
        assert_eq!(b.state(H), BreakerState::Closed);
    }

    #[test]
    fn given_open_when_the_cooldown_ends_then_one_probe_goes_out_and_others_wait() {
        let mut b = Breakers::default();
        for i in 0..3 {
            b.record(H, &cfg(), i, false, fail());
        }
        let (a, t) = b.admit(H, &cfg(), 600);
        assert_eq!(a, Admission::Call { probe: true });
        assert_eq!(
            t.expect("half-open transition").state,
            BreakerState::HalfOpen
        );
        match b.admit(H, &cfg(), 601).0 {
            Admission::Reject { until_ms, .. } => assert_eq!(until_ms, 1_101),
            other => panic!("expected a rejection, got {other:?}"),
        }
    }

    #[test]
    fn given_half_open_when_the_probe_succeeds_then_it_closes() {
        let mut b = Breakers::default();
        for i in 0..3 {
            b.record(H, &cfg(), i, false, fail());
        }
        b.admit(H, &cfg(), 600);
        // A call from before the breaker opened reports late: it decides nothing.
        assert_eq!(b.record(H, &cfg(), 605, false, Outcome::Success), None);
        let t = b
            .record(H, &cfg(), 610, true, Outcome::Success)
            .expect("closes");
        assert_eq!(t.state, BreakerState::Closed);
        assert_eq!(t.consecutive_failures, 0);
        assert!(call(&mut b, 611));
    }

    #[test]
    fn given_half_open_when_the_probe_fails_then_it_reopens_for_another_cooldown() {
        let mut b = Breakers::default();
        for i in 0..3 {
            b.record(H, &cfg(), i, false, fail());
        }
        b.admit(H, &cfg(), 600);
        let t = b.record(H, &cfg(), 650, true, fail()).expect("reopens");
        assert_eq!(t.state, BreakerState::Open);
        assert_eq!(t.consecutive_failures, 4);
        assert!(t.reason.contains("probe"), "{}", t.reason);
        match b.admit(H, &cfg(), 700).0 {
            Admission::Reject { until_ms, .. } => assert_eq!(until_ms, 1_150),
            other => panic!("expected a rejection, got {other:?}"),
        }
    }

    #[test]
    fn given_open_when_late_outcomes_of_earlier_calls_arrive_then_they_change_nothing() {
        let mut b = Breakers::default();
        for i in 0..3 {
            b.record(H, &cfg(), i, false, fail());
        }
        assert_eq!(b.record(H, &cfg(), 10, false, fail()), None);
        assert_eq!(b.record(H, &cfg(), 11, false, Outcome::Success), None);
        assert_eq!(b.state(H), BreakerState::Open);
    }

    #[test]
    fn hosts_have_separate_breakers_and_step_overrides_apply_field_by_field() {
        let mut b = Breakers::default();
        for i in 0..3 {
            b.record(H, &cfg(), i, false, fail());
        }
        assert!(matches!(
            b.admit("other:80", &cfg(), 5).0,
            Admission::Call { probe: false }
        ));
        let spec = BreakerSpec {
            consecutive_failures: Some(1),
            failure_ratio: None,
            min_calls: None,
            window_ms: None,
            cooldown_ms: Some(50),
        };
        let c = cfg().with(Some(&spec));
        assert_eq!(c.consecutive_failures, 1);
        assert_eq!(c.cooldown_ms, 50);
        assert_eq!(c.min_calls, 10);
        assert_eq!(cfg().with(None), cfg());
    }

    #[test]
    fn a_transition_serialises_as_the_breakers_topic_record() {
        let t = BreakerTransition {
            host: H.into(),
            state: BreakerState::HalfOpen,
            at_ms: 7,
            reason: "r".into(),
            consecutive_failures: 3,
        };
        assert_eq!(
            serde_json::to_value(&t).unwrap(),
            serde_json::json!({"host": H, "state": "half_open", "at_ms": 7, "reason": "r", "consecutive_failures": 3})
        );
    }
}
