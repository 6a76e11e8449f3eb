//! SLA alerts: the [`Alerter`] reads the events topic in its own consumer group (`alerts`),
//! counts every `SlaWarned` / `SlaBreached` and POSTs a JSON [`Alert`] to every configured
//! webhook. It runs apart from [`crate::Saga`] so a slow or dead webhook never delays the
//! reactions that move runs forward.
//!
//! Delivery is at-least-once: a batch's offsets are committed only once every webhook of
//! every alert in it has accepted the alert or exhausted its attempts (a give-up is logged
//! and counted). Each request carries an `Idempotency-Key` that is the same on every retry
//! and redelivery, so a receiver can drop duplicates.
//!
//! The alert has no definition name: events do not carry it and the alerter keeps no state
//! of its own to look it up. `workflow_id` leads to it through the API.

use crate::SagaError;
use distorch_domain::event::{Event, EventEnvelope};
use distorch_domain::ids::WorkflowId;
use distorch_domain::topics::Topics;
use distorch_eventlog::offsets::COMMIT_INTERVAL;
use distorch_eventlog::offsets::PacedCommits;
use distorch_eventlog::{EventLog, Record};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::registry::Registry;
use serde::{Deserialize, Serialize};
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

/// The consumer group of the alerter on the events topic.
pub const GROUP: &str = "alerts";

/// `[alerts]` in the configuration file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AlertsConfig {
    /// `http://` URLs that receive every SLA warning and breach. Empty: alerts are only counted.
    pub webhooks: Vec<String>,
    /// Per request, connecting included.
    pub timeout_ms: u64,
    /// Attempts per webhook and alert (the first one included) before giving up.
    pub max_attempts: u32,
    /// Wait before the second attempt; doubles on each further attempt.
    pub initial_backoff_ms: u64,
    /// Longest wait between two attempts.
    pub max_backoff_ms: u64,
    /// Most webhook requests in flight at once.
    pub concurrency: usize,
}

impl Default for AlertsConfig {
    fn default() -> Self {
        Self {
            webhooks: Vec::new(),
            timeout_ms: 5_000,
            max_attempts: 5,
            initial_backoff_ms: 200,
            max_backoff_ms: 30_000,
            concurrency: 16,
        }
    }
}

impl AlertsConfig {
    /// Rejects what could never deliver, so a typo fails at startup rather than at the
    /// first breach.
    pub fn validate(&self) -> Result<(), SagaError> {
        let bad = |msg: String| Err(SagaError::Config(format!("alerts: {msg}")));
        for url in &self.webhooks {
            match reqwest::Url::parse(url) {
                Ok(u) if u.scheme() == "http" && u.host_str().is_some() => {}
                Ok(u) => {
                    return bad(format!(
                        "webhook {url:?}: only http:// URLs are supported, not {}://",
                        u.scheme()
                    ));
                }
                Err(e) => return bad(format!("webhook {url:?} is not a URL: {e}")),
            }
        }
        if self.max_attempts == 0 {
            return bad("max_attempts must be at least 1".into());
        }
        if self.timeout_ms == 0 {
            return bad("timeout_ms must be at least 1".into());
        }
        if self.concurrency == 0 {
            return bad("concurrency must be at least 1".into());
        }
        Ok(())
    }

    /// The wait after failed attempt `attempt` (1-based): initial * 2^(attempt-1), capped.
    pub fn backoff(&self, attempt: u32) -> Duration {
        let factor = 1u64
            .checked_shl(attempt.saturating_sub(1))
            .unwrap_or(u64::MAX);
        let ms = self
            .initial_backoff_ms
            .saturating_mul(factor)
            .min(self.max_backoff_ms);
        Duration::from_millis(ms)
    }
}

/// What an [`Alert`] reports (`kind` in its JSON).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AlertKind {
    /// `sla_warning`: the SLA's `warn_at` share of its duration has passed (`SlaWarned`).
    SlaWarning,
    /// `sla_breach`: the SLA's whole duration has passed (`SlaBreached`).
    SlaBreach,
}

/// The JSON body POSTed to a webhook.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Alert {
    /// Warning or breach.
    pub kind: AlertKind,
    /// The run whose SLA (or whose step's SLA) it is.
    pub workflow_id: WorkflowId,
    /// `None` (JSON null): the SLA of the whole run.
    pub step_key: Option<String>,
    /// The SLA's full duration, in milliseconds (for a warning too).
    pub sla_ms: u64,
    /// When the engine decided it, RFC 3339 UTC.
    pub at: String,
    /// The event's sequence number within its run.
    pub event_seq: u64,
}

impl Alert {
    /// The alert an event calls for, if any.
    pub fn from_event(env: &EventEnvelope) -> Option<Alert> {
        let (kind, step_key, sla_ms) = match &env.event {
            Event::SlaWarned { step_key, sla_ms } => (AlertKind::SlaWarning, step_key, *sla_ms),
            Event::SlaBreached { step_key, sla_ms } => (AlertKind::SlaBreach, step_key, *sla_ms),
            _ => return None,
        };
        Some(Alert {
            kind,
            workflow_id: env.workflow_id,
            step_key: step_key.clone(),
            sla_ms,
            at: rfc3339(env.at_ms),
            event_seq: env.seq,
        })
    }

    /// Stable across retries and redeliveries of the same alert to the same webhook.
    pub fn idempotency_key(&self, webhook: usize) -> String {
        format!("{}:{}:{webhook}", self.workflow_id, self.event_seq)
    }
}

fn rfc3339(at_ms: i64) -> String {
    let t = UNIX_EPOCH + Duration::from_millis(u64::try_from(at_ms).unwrap_or(0));
    humantime::format_rfc3339_millis(t).to_string()
}

/// Whether a payload may hold an SLA event: a byte scan that spares decoding the other
/// events. False positives (an input mentioning it) are decoded and dropped.
fn may_be_sla(payload: &[u8]) -> bool {
    crate::contains(payload, b"\"sla_")
}

/// Counters of the alerter, under `distorch_*`. Events redelivered after a restart are
/// counted again.
#[derive(Clone, Debug, Default)]
pub struct AlertMetrics {
    /// `SlaBreached` events read (`distorch_sla_breaches`), whether or not webhooks are set.
    pub sla_breaches: Counter,
    /// `SlaWarned` events read (`distorch_sla_warnings`), whether or not webhooks are set.
    pub sla_warnings: Counter,
    /// Deliveries a webhook accepted with a 2xx, one per alert and webhook
    /// (`distorch_alerts_delivered`).
    pub delivered: Counter,
    /// Deliveries given up on, after `max_attempts` or an answer no retry changes (3xx,
    /// most 4xx), one per alert and webhook (`distorch_alerts_failed`).
    pub failed: Counter,
}

impl AlertMetrics {
    /// Creates the counters and registers them in `registry`; call it once per registry.
    pub fn new(registry: &mut Registry) -> Self {
        let m = Self::default();
        let r = registry.sub_registry_with_prefix("distorch");
        r.register("sla_breaches", "SLA breaches seen", m.sla_breaches.clone());
        r.register("sla_warnings", "SLA warnings seen", m.sla_warnings.clone());
        r.register(
            "alerts_delivered",
            "Alerts a webhook accepted",
            m.delivered.clone(),
        );
        r.register(
            "alerts_failed",
            "Alerts given up on after the last attempt or a permanent rejection",
            m.failed.clone(),
        );
        m
    }
}

/// How one attempt ended.
#[derive(Debug, PartialEq, Eq)]
enum Attempt {
    Delivered,
    Retry(String),
    GiveUp(String),
}

fn classify(status: reqwest::StatusCode) -> Attempt {
    if status.is_success() {
        Attempt::Delivered
    } else if status.is_server_error()
        || status == reqwest::StatusCode::TOO_MANY_REQUESTS
        || status == reqwest::StatusCode::REQUEST_TIMEOUT
    {
        Attempt::Retry(format!("HTTP {status}"))
    } else {
        // Any other answer (4xx, 3xx) will not change on a retry.
        Attempt::GiveUp(format!("HTTP {status}"))
    }
}

/// Posts the [`Alert`]s of SLA events to the configured webhooks (see the module docs).
pub struct Alerter {
    log: Arc<dyn EventLog>,
    topics: Topics,
    config: Arc<AlertsConfig>,
    http: reqwest::Client,
    metrics: AlertMetrics,
    batch: usize,
}

impl Alerter {
    /// An alerter that does nothing until [`Alerter::run`]. Fails with
    /// [`SagaError::Config`] when `config` does not [validate](AlertsConfig::validate).
    pub fn new(
        log: Arc<dyn EventLog>,
        topics: Topics,
        config: AlertsConfig,
        metrics: AlertMetrics,
    ) -> Result<Self, SagaError> {
        config.validate()?;
        let http = reqwest::Client::builder()
            .timeout(Duration::from_millis(config.timeout_ms))
            .user_agent(concat!("distorch-alerter/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| SagaError::Config(format!("alerts: cannot build the HTTP client: {e}")))?;
        Ok(Self {
            log,
            topics,
            config: Arc::new(config),
            http,
            metrics,
            batch: 2000,
        })
    }

    /// Consumes the events topic until `shutdown`. Delivered batches are committed every
    /// [`COMMIT_INTERVAL`] and at shutdown; a shutdown mid-batch leaves the batch uncommitted.
    /// Either way what was not committed goes out again on the next start (same idempotency
    /// keys).
    pub async fn run(self, shutdown: impl Future<Output = ()>) -> Result<(), SagaError> {
        let mut consumer = self.log.consumer(GROUP, &[self.topics.events()]).await?;
        tokio::pin!(shutdown);
        let limit = Arc::new(Semaphore::new(self.config.concurrency));
        let mut commits = PacedCommits::new(COMMIT_INTERVAL);
        loop {
            let records = tokio::select! {
                r = consumer.poll(self.batch, Duration::from_millis(500)) => r?,
                () = &mut shutdown => break,
            };
            if let Err(e) = commits.commit_due(&mut *consumer).await {
                tracing::warn!(error = %e, "alerter: committing offsets failed; will retry");
            }
            if records.is_empty() {
                continue;
            }
            let mut deliveries = JoinSet::new();
            for alert in self.alerts(&records) {
                let alert = Arc::new(alert);
                for (index, url) in self.config.webhooks.iter().enumerate() {
                    deliveries.spawn(deliver(
                        self.http.clone(),
                        self.config.clone(),
                        self.metrics.clone(),
                        limit.clone(),
                        url.clone(),
                        index,
                        alert.clone(),
                    ));
                }
            }
            let all_done = async { while deliveries.join_next().await.is_some() {} };
            tokio::select! {
                () = all_done => {}
                // Dropping the set aborts the deliveries in flight.
                () = &mut shutdown => break,
            }
            commits.handled(&records);
        }
        if let Err(e) = commits.commit_rest(&mut *consumer).await {
            tracing::warn!(error = %e, "alerter: last commit failed; its alerts will go out again");
        }
        Ok(())
    }

    /// The alerts of a batch, counted.
    fn alerts(&self, records: &[Record]) -> Vec<Alert> {
        let mut out = Vec::new();
        for env in crate::decode_matching(records, may_be_sla) {
            let Some(alert) = Alert::from_event(&env) else {
                continue;
            };
            match alert.kind {
                AlertKind::SlaWarning => self.metrics.sla_warnings.inc(),
                AlertKind::SlaBreach => self.metrics.sla_breaches.inc(),
            };
            tracing::info!(workflow_id = %alert.workflow_id, step_key = ?alert.step_key, kind = ?alert.kind, sla_ms = alert.sla_ms, "SLA alert");
            out.push(alert);
        }
        out
    }
}

/// POSTs one alert to one webhook, retrying with exponential backoff; never fails.
async fn deliver(
    http: reqwest::Client,
    config: Arc<AlertsConfig>,
    metrics: AlertMetrics,
    limit: Arc<Semaphore>,
    url: String,
    index: usize,
    alert: Arc<Alert>,
) {
    let key = alert.idempotency_key(index);
    let mut attempt = 1;
    loop {
        let outcome = {
            // Held only while the request is in flight, not while backing off.
            let _permit = limit.acquire().await;
            let sent = http
                .post(&url)
                .header("idempotency-key", &key)
                .json(&*alert)
                .send()
                .await;
            match sent {
                Ok(resp) => classify(resp.status()),
                Err(e) => Attempt::Retry(e.to_string()),
            }
        };
        let error = match outcome {
            Attempt::Delivered => {
                metrics.delivered.inc();
                tracing::debug!(%url, %key, attempt, "alert delivered");
                return;
            }
            Attempt::Retry(e) if attempt < config.max_attempts => e,
            Attempt::Retry(e) | Attempt::GiveUp(e) => {
                metrics.failed.inc();
                tracing::warn!(%url, %key, attempt, error = %e, "alert not delivered; giving up");
                return;
            }
        };
        let wait = jitter(config.backoff(attempt));
        tracing::debug!(%url, %key, attempt, error = %error, ?wait, "alert delivery failed; retrying");
        tokio::time::sleep(wait).await;
        attempt += 1;
    }
}

/// Up to a quarter more, so alerts that failed together do not all retry together.
fn jitter(d: Duration) -> Duration {
    let quarter = u64::try_from(d.as_millis() / 4).unwrap_or(u64::MAX);
    if quarter == 0 {
        return d;
    }
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|t| u64::from(t.subsec_nanos()))
        .unwrap_or(0);
    d + Duration::from_millis(nanos % quarter)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn env(seq: u64, at_ms: i64, event: Event) -> EventEnvelope {
        EventEnvelope {
            workflow_id: serde_json::from_value(json!("01960000-0000-7000-8000-000000000001"))
                .unwrap(),
            seq,
            at_ms,
            command_id: None,
            v: 1,
            event,
        }
    }

    #[test]
    fn a_breach_of_a_step_becomes_a_breach_alert() {
        let e = env(
            12,
            1_700_000_000_123,
            Event::SlaBreached {
                step_key: Some("charge".into()),
                sla_ms: 300,
            },
        );
        let alert = Alert::from_event(&e).expect("an alert");
        assert_eq!(
            serde_json::to_value(&alert).unwrap(),
            json!({
                "kind": "sla_breach",
                "workflow_id": "01960000-0000-7000-8000-000000000001",
                "step_key": "charge",
                "sla_ms": 300,
                "at": "2023-11-14T22:13:20.123Z",
                "event_seq": 12,
            })
        );
    }

    #[test]
    fn a_warning_of_the_run_has_a_null_step_key() {
        let e = env(
            3,
            0,
            Event::SlaWarned {
                step_key: None,
                sla_ms: 1000,
            },
        );
        let v = serde_json::to_value(Alert::from_event(&e).unwrap()).unwrap();
        assert_eq!(v["kind"], "sla_warning");
        assert_eq!(v["step_key"], serde_json::Value::Null);
        assert_eq!(v["at"], "1970-01-01T00:00:00.000Z");
    }

    #[test]
    fn other_events_raise_no_alert() {
        let e = env(1, 0, Event::WorkflowPaused);
        assert_eq!(Alert::from_event(&e), None);
    }

    #[test]
    fn sla_events_pass_the_byte_filter_and_most_others_do_not() {
        for event in [
            Event::SlaWarned {
                step_key: None,
                sla_ms: 1,
            },
            Event::SlaBreached {
                step_key: Some("a".into()),
                sla_ms: 1,
            },
        ] {
            let bytes = serde_json::to_vec(&env(1, 0, event)).unwrap();
            assert!(may_be_sla(&bytes));
        }
        let bytes = serde_json::to_vec(&env(1, 0, Event::WorkflowPaused)).unwrap();
        assert!(!may_be_sla(&bytes));
    }

    #[test]
    fn the_idempotency_key_names_the_run_the_event_and_the_webhook() {
        let e = env(
            5,
            0,
            Event::SlaBreached {
                step_key: None,
                sla_ms: 1,
            },
        );
        let alert = Alert::from_event(&e).unwrap();
        assert_eq!(
            alert.idempotency_key(2),
            "01960000-0000-7000-8000-000000000001:5:2"
        );
        assert_eq!(alert.idempotency_key(2), alert.idempotency_key(2));
        assert_ne!(alert.idempotency_key(0), alert.idempotency_key(1));
    }

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let c = AlertsConfig {
            initial_backoff_ms: 200,
            max_backoff_ms: 1000,
            ..AlertsConfig::default()
        };
        let ms: Vec<u128> = (1..=5).map(|a| c.backoff(a).as_millis()).collect();
        assert_eq!(ms, [200, 400, 800, 1000, 1000]);
        assert_eq!(c.backoff(200).as_millis(), 1000, "no overflow");
        let j = jitter(Duration::from_millis(400));
        assert!(j >= Duration::from_millis(400) && j < Duration::from_millis(500));
    }

    #[test]
    fn server_errors_are_retried_and_client_errors_are_not() {
        use reqwest::StatusCode as S;
        assert_eq!(classify(S::OK), Attempt::Delivered);
        assert_eq!(classify(S::NO_CONTENT), Attempt::Delivered);
        assert!(matches!(
            classify(S::SERVICE_UNAVAILABLE),
            Attempt::Retry(_)
        ));
        assert!(matches!(classify(S::TOO_MANY_REQUESTS), Attempt::Retry(_)));
        assert!(matches!(classify(S::BAD_REQUEST), Attempt::GiveUp(_)));
        assert!(matches!(classify(S::NOT_FOUND), Attempt::GiveUp(_)));
    }

    #[test]
    fn config_rejects_what_could_never_deliver() {
        let with = |webhooks: &[&str]| AlertsConfig {
            webhooks: webhooks.iter().map(|s| s.to_string()).collect(),
            ..AlertsConfig::default()
        };
        assert!(AlertsConfig::default().validate().is_ok());
        assert!(with(&["http://127.0.0.1:9/hook"]).validate().is_ok());
        for bad in ["https://example.com/hook", "not a url", "ftp://x/y"] {
            let err = with(&[bad]).validate().unwrap_err().to_string();
            assert!(err.contains(bad), "{err}");
        }
        let zero = AlertsConfig {
            max_attempts: 0,
            ..AlertsConfig::default()
        };
        assert!(zero.validate().is_err());
    }

    #[test]
    fn config_reads_from_toml_shaped_data_with_defaults() {
        let c: AlertsConfig =
            serde_json::from_value(json!({"webhooks": ["http://a/b"], "max_attempts": 2})).unwrap();
        assert_eq!(c.webhooks, ["http://a/b"]);
        assert_eq!(c.max_attempts, 2);
        assert_eq!(c.timeout_ms, 5_000);
        assert_eq!(c.initial_backoff_ms, 200);
        assert!(serde_json::from_value::<AlertsConfig>(json!({"webhook": []})).is_err());
    }
}
