#![warn(missing_docs)]
//! The DisTorch API: REST (definitions, runs, tasks, the dead-letter queue, the worker
//! protocol, health, metrics, OpenAPI docs), GraphQL with subscriptions, and live event
//! streams over WebSocket and SSE ([`feed`]).
//!
//! This crate owns HTTP concerns only. It never changes state itself: every change is a
//! command published to the commands topic through the [`EventLog`] port and decided by the
//! engine, whose reply ([`bus::CommandBus`]) becomes the HTTP answer; reads come from the
//! [`ReadStore`] port. It must not depend on engine, saga or projector internals, nor on a
//! concrete backend (the binary chooses them).
//!
//! Entry points: [`router`] (builds the axum router and starts the background reply reader),
//! [`ApiConfig`], [`ApiError`].

mod actions;
pub mod breakers;
pub mod bus;
pub mod dispatch;
pub mod dto;
mod error;
pub mod feed;
pub mod graphql;
pub mod metrics;
mod openapi;
pub mod problem;
pub mod replicas;
mod routes;

pub use error::ApiError;
pub use metrics::SharedRegistry;
pub use openapi::ApiDoc;

use distorch_domain::topics::Topics;
use distorch_eventlog::EventLog;
use distorch_store::ReadStore;
use std::sync::Arc;
use std::time::Duration;

/// Configuration of the API service (`[api]`). The listen address belongs to the binary.
#[derive(Debug, Clone, PartialEq, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ApiConfig {
    /// Larger request bodies are refused with 413.
    pub max_body_bytes: usize,
    /// How long a request waits for the engine's reply before answering 503 (the command
    /// is durable by then and will still be applied).
    pub command_timeout_ms: u64,
    /// How long a state-changing request waits for the read model to reflect its command,
    /// so that a GET right after sees it. On timeout the request still succeeds.
    pub read_your_writes_ms: u64,
    /// Prefix of every topic name (`<prefix>.commands`...).
    pub topic_prefix: String,
    /// Partition counts used when this service creates a topic first.
    pub partitions: Partitions,
    /// Task records a queue dispatcher buffers ahead of polls.
    pub poll_prefetch: usize,
    /// Consumer group of the projector that fills the read store. Live streams join a
    /// run's stored history to the log at this group's committed offsets.
    pub projector_group: String,
    /// Prices of `GET /api/v1/analytics/cost` (`[api.cost_rates]`).
    pub cost_rates: distorch_store::analytics::CostRates,
    /// The base URL other API replicas reach this one at (`http://10.0.3.7:8000`). Set, the
    /// replica heartbeats on `<prefix>.api-members` and serves the other replicas' pollers
    /// (see [`replicas`]); `distorch api` sets it to its listen address when it is not
    /// configured. Unset (`standalone`), the API is the only replica.
    pub advertise_url: Option<String>,
}

impl Default for ApiConfig {
    fn default() -> Self {
        Self {
            max_body_bytes: 1024 * 1024,
            command_timeout_ms: 10_000,
            read_your_writes_ms: 2_000,
            topic_prefix: "distorch".into(),
            partitions: Partitions::default(),
            poll_prefetch: 256,
            projector_group: "projector".into(),
            cost_rates: Default::default(),
            advertise_url: None,
        }
    }
}

impl ApiConfig {
    /// The topic names under [`topic_prefix`](Self::topic_prefix).
    pub fn topics(&self) -> Topics {
        Topics::with_prefix(self.topic_prefix.clone())
    }
}

/// Partition counts of the topics (`[api.partitions]`), used only when this service creates
/// a missing topic: an existing topic keeps the count it has.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Partitions {
    /// Of the commands topic. The binary also gives it to the engine, which creates its
    /// topics (commands, events, replies, snapshots) with it.
    pub commands: u32,
    /// Of the events topic; the live feed runs one tail reader per partition.
    pub events: u32,
    /// Per `tasks.<queue>` topic.
    pub tasks: u32,
    /// Of the definitions topic. Nothing reads it: the engine creates that topic with one
    /// partition.
    pub definitions: u32,
    /// Of the replies topic.
    pub replies: u32,
}

impl Default for Partitions {
    fn default() -> Self {
        Self {
            commands: 8,
            events: 8,
            tasks: 8,
            definitions: 1,
            replies: 8,
        }
    }
}

/// Builds the API router and starts its background tasks (reply reader, command writer).
/// Registers the API's metrics into `registry`; `/metrics` renders the whole registry.
/// Without analytics: see [`router_with_analytics`].
pub async fn router(
    log: Arc<dyn EventLog>,
    store: Arc<dyn ReadStore>,
    config: ApiConfig,
    registry: SharedRegistry,
) -> Result<axum::Router, ApiError> {
    router_with_analytics(log, store, None, config, registry).await
}

/// [`router`], with `/api/v1/analytics/*` served from `analytics` (503 when `None`).
pub async fn router_with_analytics(
    log: Arc<dyn EventLog>,
    store: Arc<dyn ReadStore>,
    analytics: Option<Arc<dyn distorch_store::analytics::Analytics>>,
    config: ApiConfig,
    registry: SharedRegistry,
) -> Result<axum::Router, ApiError> {
    let metrics = metrics::ApiMetrics::default();
    metrics.register(&mut registry.write().unwrap_or_else(|p| p.into_inner()));
    let topics = config.topics();
    let bus = bus::CommandBus::start(
        log.clone(),
        &topics,
        &config.partitions,
        Duration::from_millis(config.command_timeout_ms),
        metrics.clone(),
    )
    .await?;
    let breakers = breakers::BreakerBoard::start(log.clone(), config.topics().breakers()).await?;
    let feed = feed::Feed::start(
        log.clone(),
        store.clone(),
        topics.events(),
        config.partitions.events,
        config.projector_group.clone(),
    )
    .await?;
    // The engine creates it too; here so the DLQ view answers before the engine's first start.
    bus::ensure_topic(log.as_ref(), &topics.dlq(), 1).await?;
    let dlq_topic = topics.dlq();
    let members_topic = topics.api_members();
    let dispatchers = Arc::new(dispatch::Dispatchers::new(
        log.clone(),
        topics,
        config.partitions.tasks,
        config.poll_prefetch,
    ));
    let replicas = match &config.advertise_url {
        Some(url) => Some(
            replicas::Replicas::start(
                log.clone(),
                members_topic,
                bus.instance_id().to_owned(),
                url.clone(),
                dispatchers.clone(),
                metrics.clone(),
            )
            .await?,
        ),
        None => None,
    };
    let state = routes::AppState {
        bus,
        store,
        dispatchers,
        metrics,
        registry,
        read_your_writes: Duration::from_millis(config.read_your_writes_ms),
        breakers,
        feed,
        analytics,
        cost_rates: config.cost_rates.clone(),
        log,
        dlq_topic,
        replicas,
    };
    Ok(routes::router(state, config.max_body_bytes))
}
