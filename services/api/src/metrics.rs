//! The API's own Prometheus metrics, registered into the registry the binary shares with
//! the other services, and the `/metrics` renderer.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use std::sync::{Arc, RwLock};

/// The process-wide registry. Services register into it at startup (write lock) and
/// `/metrics` renders it (read lock); prometheus-client needs `&mut` to register, which is
/// why a plain `Arc<Registry>` is not enough.
pub type SharedRegistry = Arc<RwLock<Registry>>;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct HttpLabels {
    method: String,
    /// The matched route template (`/api/v1/workflows/{id}`), never the raw path, so ids
    /// do not explode the label cardinality.
    route: String,
    status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CommandLabels {
    command: &'static str,
    /// `accepted`, `rejected`, `timeout`, `error`, or `published` (no reply asked).
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct QueueLabels {
    queue: String,
}

/// The API's metrics, all under the `distorch_api` prefix. Cheap to clone: every field is
/// an `Arc` inside.
#[derive(Clone, Debug, Default)]
pub struct ApiMetrics {
    http_requests: Family<HttpLabels, Counter>,
    commands: Family<CommandLabels, Counter>,
    poll_tasks: Family<QueueLabels, Counter>,
    queue_depth: Family<QueueLabels, Gauge>,
    poll_forwarded: Family<QueueLabels, Counter>,
    replicas: Gauge,
}

impl ApiMetrics {
    /// Registers every metric into `registry` under the `distorch_api` prefix; call once per
    /// registry.
    pub fn register(&self, registry: &mut Registry) {
        let api = registry.sub_registry_with_prefix("distorch_api");
        api.register(
            "http_requests",
            "HTTP requests served, by method, route and status",
            self.http_requests.clone(),
        );
        api.register(
            "commands",
            "Commands published to the engine, by command and outcome",
            self.commands.clone(),
        );
        api.register(
            "poll_tasks",
            "Task attempts handed to workers through the poll endpoint, by queue",
            self.poll_tasks.clone(),
        );
        api.register(
            "queue_depth",
            "Task records on a queue not yet handed out (log end offsets minus the api-poll \
             group's commits), refreshed on scrape",
            self.queue_depth.clone(),
        );
        api.register(
            "poll_forwarded_tasks",
            "Task attempts handed to this replica's pollers by other API replicas, by queue",
            self.poll_forwarded.clone(),
        );
        api.register(
            "replicas",
            "API replicas alive, this one included, as their heartbeats tell",
            self.replicas.clone(),
        );
    }

    /// Counts one request; `route` is the matched route template, never the raw path.
    pub fn http_request(&self, method: &str, route: &str, status: u16) {
        let labels = HttpLabels {
            method: method.to_owned(),
            route: route.to_owned(),
            status,
        };
        self.http_requests.get_or_create(&labels).inc();
    }

    /// Counts one command by name and outcome (`accepted`, `rejected`, `timeout`, `error`
    /// or `published`).
    pub fn command(&self, command: &'static str, outcome: &'static str) {
        self.commands_n(command, outcome, 1);
    }

    /// Counts `n` commands of one name and outcome; nothing when `n` is 0.
    pub fn commands_n(&self, command: &'static str, outcome: &'static str, n: usize) {
        if n > 0 {
            self.commands
                .get_or_create(&CommandLabels { command, outcome })
                .inc_by(n as u64);
        }
    }

    /// Counts `n` attempts handed to workers from `queue`.
    pub fn tasks_handed_out(&self, queue: &str, n: usize) {
        let labels = QueueLabels {
            queue: queue.to_owned(),
        };
        self.poll_tasks.get_or_create(&labels).inc_by(n as u64);
    }

    /// Counts `n` attempts of `queue` taken from other replicas for this one's pollers.
    pub fn tasks_forwarded(&self, queue: &str, n: usize) {
        if n > 0 {
            let labels = QueueLabels {
                queue: queue.to_owned(),
            };
            self.poll_forwarded.get_or_create(&labels).inc_by(n as u64);
        }
    }

    /// Sets the number of live API replicas.
    pub fn set_replicas(&self, n: usize) {
        self.replicas.set(i64::try_from(n).unwrap_or(i64::MAX));
    }

    /// Sets the queue-depth gauge of `queue` (saturating at `i64::MAX`).
    pub fn set_queue_depth(&self, queue: &str, depth: u64) {
        let labels = QueueLabels {
            queue: queue.to_owned(),
        };
        self.queue_depth
            .get_or_create(&labels)
            .set(i64::try_from(depth).unwrap_or(i64::MAX));
    }
}

/// OpenMetrics text of the whole shared registry.
pub fn render(registry: &SharedRegistry) -> Result<String, std::fmt::Error> {
    let mut out = String::new();
    let guard = registry
        .read()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    prometheus_client::encoding::text::encode(&mut out, &guard)?;
    Ok(out)
}
