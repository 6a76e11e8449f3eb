//! The first contact with the cluster: [`probe`] checks, with the configured security, that a
//! broker answers, so that a wrong address, certificate or password stops a process at startup
//! with one error that says which, instead of librdkafka retrying in the background.
//!
//! librdkafka reports why a connection failed (a TLS handshake, a SASL exchange) only through
//! its error callback, and keeps reconnecting; a metadata request just times out. A probe
//! client with a context that remembers those reports turns them into the error.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use rdkafka::ClientContext;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{BaseProducer, Producer as _};
use tokio::time::Instant;

use super::cluster::{blocking, drop_off_runtime};
use super::config::KafkaConfig;
use crate::{LogError, Result};

/// How long one metadata request of the probe waits; the probe asks again until its deadline
/// unless the connection was refused for a reason no retry fixes.
const ATTEMPT: Duration = Duration::from_secs(1);

/// Remembers the last connection error librdkafka reported.
#[derive(Default)]
struct Diagnostics {
    last: Mutex<Option<(Option<RDKafkaErrorCode>, String)>>,
}

impl rdkafka::producer::ProducerContext for Diagnostics {
    type DeliveryOpaque = ();
    /// The probe sends nothing.
    fn delivery(&self, _: &rdkafka::producer::DeliveryResult<'_>, (): ()) {}
}

impl Diagnostics {
    fn remember(&self, code: Option<RDKafkaErrorCode>, reason: &str) {
        *self.last.lock().unwrap_or_else(PoisonError::into_inner) = Some((code, reason.to_owned()));
    }
}

impl ClientContext for Diagnostics {
    /// Connection errors come through here when the client's queue is served; librdkafka
    /// suppresses repeats of the same one, so the log lines below are the surer source.
    fn error(&self, error: KafkaError, reason: &str) {
        self.remember(error.rdkafka_error_code(), reason);
    }

    /// Called from librdkafka's own threads as each connection attempt fails: a refused TLS
    /// handshake or SASL exchange is logged here every time.
    fn log(&self, level: rdkafka::config::RDKafkaLogLevel, fac: &str, message: &str) {
        use rdkafka::config::RDKafkaLogLevel as L;
        tracing::debug!(facility = fac, "librdkafka (connection probe): {message}");
        let serious = matches!(
            level,
            L::Emerg | L::Alert | L::Critical | L::Error | L::Warning
        );
        if serious && refused(None, message) {
            self.remember(None, message);
        }
    }
}

/// Whether a connection error means the configuration is wrong (TLS or SASL refused), so
/// that waiting longer cannot help.
fn refused(code: Option<RDKafkaErrorCode>, reason: &str) -> bool {
    matches!(
        code,
        Some(
            RDKafkaErrorCode::SSL
                | RDKafkaErrorCode::Authentication
                | RDKafkaErrorCode::SaslAuthenticationFailed
                | RDKafkaErrorCode::UnsupportedSASLMechanism
                | RDKafkaErrorCode::IllegalSASLState
        )
    ) || ["SSL handshake failed", "SASL", "certificate verify failed"]
        .iter()
        .any(|s| reason.contains(s))
}

/// Asks the cluster for its metadata until it answers or `timeout` passes. A connection that
/// TLS or SASL refused fails at once with librdkafka's reason, as [`LogError::Fatal`]; a
/// cluster that never answers fails after `timeout` as [`LogError::Storage`], with the last
/// reason librdkafka gave.
pub(super) async fn probe(config: &KafkaConfig, timeout: Duration) -> Result<()> {
    let servers = config.bootstrap_servers.clone();
    let client: BaseProducer<Diagnostics> = config
        .probe()
        .create_with_context(Diagnostics::default())
        .map_err(|e| LogError::Invalid(format!("Kafka client for {servers}: {e}")))?;
    let client = Arc::new(client);
    let deadline = Instant::now() + timeout;
    let outcome = loop {
        let c = Arc::clone(&client);
        let answered = blocking(move || {
            let result = c.client().fetch_metadata(None, ATTEMPT).map(drop);
            // Serve the callbacks (the error callback among them).
            c.poll(Duration::ZERO);
            result
        })
        .await?;
        let last = client
            .context()
            .last
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        match (answered, last) {
            (Ok(()), _) => break Ok(()),
            (Err(_), Some((code, reason))) if refused(code, &reason) => {
                break Err(LogError::Fatal(format!(
                    "the Kafka cluster at {servers} refused the connection: {reason} (check the \
                     security.protocol, ssl.* and sasl.* properties)"
                )));
            }
            (Err(e), last) if Instant::now() >= deadline => {
                let why = last.map_or_else(|| e.to_string(), |(_, reason)| reason);
                break Err(LogError::Storage(format!(
                    "no Kafka broker answered at {servers} within {timeout:?}: {why}"
                )));
            }
            (Err(_), _) => {}
        }
    };
    drop_off_runtime(client);
    outcome
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tls_and_sasl_refusals_stop_at_once_and_transport_trouble_is_waited_out() {
        assert!(refused(
            Some(RDKafkaErrorCode::SSL),
            "ssl://127.0.0.1:1/bootstrap: SSL handshake failed: certificate verify failed"
        ));
        assert!(refused(
            Some(RDKafkaErrorCode::Authentication),
            "SASL authentication error: Authentication failed"
        ));
        assert!(refused(
            Some(RDKafkaErrorCode::BrokerTransportFailure),
            "127.0.0.1:1/bootstrap: SSL handshake failed: unexpected eof"
        ));
        assert!(!refused(
            Some(RDKafkaErrorCode::BrokerTransportFailure),
            "127.0.0.1:1/bootstrap: Connect to ipv4#127.0.0.1:1 failed: Connection refused"
        ));
        assert!(!refused(
            Some(RDKafkaErrorCode::AllBrokersDown),
            "1/1 brokers are down"
        ));
    }
}
