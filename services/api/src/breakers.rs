//! Circuit breaker states of the HTTP executor's targets, for `GET /api/v1/breakers`.
//!
//! The executor appends every transition to `<prefix>.breakers` (one partition, keyed by
//! host). A background reader folds that topic from offset 0 into memory, as the command
//! bus's reply reader does with replies: the latest record of a host is its state. The
//! topic holds one small record per transition, so a full replay at startup is cheap.

use crate::bus::ensure_topic;
use crate::error::ApiError;
use distorch_domain::topics::BreakerTransition;
use distorch_eventlog::EventLog;
use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;
use tokio::task::JoinHandle;

/// Long-poll wait of the reader; only bounds how often it loops when idle.
const READ_WAIT: Duration = Duration::from_secs(5);

type States = RwLock<BTreeMap<String, BreakerTransition>>;

/// Breaker states by host, kept current by a background reader. Cheap to clone.
#[derive(Clone)]
pub struct BreakerBoard {
    inner: Arc<Inner>,
}

struct Inner {
    states: Arc<States>,
    reader: JoinHandle<()>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

impl BreakerBoard {
    /// Creates the topic if missing (the executor may start later) and starts the reader.
    pub async fn start(log: Arc<dyn EventLog>, topic: String) -> Result<Self, ApiError> {
        ensure_topic(log.as_ref(), &topic, 1).await?;
        let states: Arc<States> = Arc::default();
        let reader = tokio::spawn(read_loop(log, topic, states.clone()));
        Ok(Self {
            inner: Arc::new(Inner { states, reader }),
        })
    }

    /// Every host seen, by name.
    pub fn list(&self) -> Vec<BreakerTransition> {
        let states = self.inner.states.read().unwrap_or_else(|p| p.into_inner());
        states.values().cloned().collect()
    }
}

async fn read_loop(log: Arc<dyn EventLog>, topic: String, states: Arc<States>) {
    let mut from = 0;
    loop {
        match log.read(&topic, 0, from, 1024, READ_WAIT).await {
            Ok(records) => {
                for record in records {
                    from = record.offset + 1;
                    match serde_json::from_slice::<BreakerTransition>(&record.payload) {
                        Ok(s) => {
                            let mut states = states.write().unwrap_or_else(|p| p.into_inner());
                            states.insert(s.host.clone(), s);
                        }
                        Err(e) => tracing::warn!(
                            offset = record.offset,
                            error = %e,
                            "skipping undecodable breaker record"
                        ),
                    }
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "reading breaker transitions failed; retrying");
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
    }
}
