//! Where the broker is and how our clients talk to it: [`KafkaConfig`], its `kafka://` URL
//! form, and the librdkafka properties of each kind of client we create.
//!
//! The properties that carry the log's contract (idempotence, `acks=all`, manual commits,
//! no topic auto-creation) are set here and cannot be overridden by accident: user
//! properties are applied first, ours after, except for the few tuning knobs listed in
//! [`TUNABLE`].

use std::collections::BTreeMap;

use rdkafka::ClientConfig;

use crate::LogError;

/// Connection settings of [`KafkaLog`](super::KafkaLog).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KafkaConfig {
    /// `host:port[,host:port]`, librdkafka's `bootstrap.servers`.
    pub bootstrap_servers: String,
    /// Replication factor of the topics `create_topic` makes; `None` leaves it to the
    /// broker's `default.replication.factor` (KIP-464).
    pub replication_factor: Option<u16>,
    /// Sent to the broker with every request (`client.id`), so its logs and quotas can tell
    /// DisTorch's clients apart.
    pub client_id: String,
    /// Further librdkafka properties (timeouts, fetch sizes, ...), e.g. from URL query
    /// parameters. They cannot weaken the contract; see the module docs.
    pub properties: BTreeMap<String, String>,
    /// Put before every consumer group name, so that deployments sharing a cluster (each
    /// with its own topic prefix) never share a group: `acme.` makes `engine` `acme.engine`.
    pub group_prefix: String,
}

impl KafkaConfig {
    /// Settings for the given bootstrap servers, everything else default.
    pub fn new(bootstrap_servers: impl Into<String>) -> Self {
        Self {
            bootstrap_servers: bootstrap_servers.into(),
            replication_factor: None,
            client_id: "distorch".to_owned(),
            properties: BTreeMap::new(),
            group_prefix: String::new(),
        }
    }

    /// Parses `kafka://host:port[,host:port...][?key=value&...]`.
    ///
    /// Query keys `replication_factor` and `client_id` set those fields; any other key is
    /// passed to librdkafka as a property (which rejects unknown ones when the log opens).
    pub fn from_url(url: &str) -> Result<Self, LogError> {
        let invalid = |why: String| LogError::Invalid(format!("Kafka URL {url:?}: {why}"));
        let rest = url
            .strip_prefix("kafka://")
            .ok_or_else(|| invalid("must start with kafka://".to_owned()))?;
        let (hosts, query) = rest.split_once('?').unwrap_or((rest, ""));
        let hosts = hosts.strip_suffix('/').unwrap_or(hosts);
        if hosts.is_empty() {
            return Err(invalid(
                "names no broker; expected kafka://host:port[,host:port]".to_owned(),
            ));
        }
        for server in hosts.split(',') {
            check_server(server).map_err(|why| invalid(format!("broker {server:?} {why}")))?;
        }

        let mut config = Self::new(hosts);
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (key, value) = pair
                .split_once('=')
                .ok_or_else(|| invalid(format!("query parameter {pair:?} has no value")))?;
            match key {
                "replication_factor" => {
                    let factor = value
                        .parse::<u16>()
                        .ok()
                        .filter(|f| *f > 0)
                        .ok_or_else(|| {
                            invalid(format!(
                                "replication_factor must be a positive number, not {value:?}"
                            ))
                        })?;
                    config.replication_factor = Some(factor);
                }
                "client_id" => config.client_id = value.to_owned(),
                _ => {
                    config.properties.insert(key.to_owned(), value.to_owned());
                }
            }
        }
        Ok(config)
    }

    /// Properties every client shares: where the brokers are, who we are, user extras.
    fn base(&self) -> ClientConfig {
        let mut config = ClientConfig::new();
        for (key, value) in &self.properties {
            config.set(key, value);
        }
        config
            .set("bootstrap.servers", &self.bootstrap_servers)
            .set("client.id", &self.client_id)
            // Topics exist only through `create_topic`: a metadata lookup, a produce or a
            // subscription naming a missing topic must fail (UnknownTopic), not create it
            // with the broker's default partition count.
            .set("allow.auto.create.topics", "false");
        config
    }

    /// [`Self::base`] plus the consumer-only tuning (a producer would warn about it).
    fn consumer_base(&self) -> ClientConfig {
        let mut config = self.base();
        self.tunable_default(&mut config, "fetch.wait.max.ms", "100");
        config
    }

    /// The producer of `append`.
    pub(super) fn producer(&self) -> ClientConfig {
        let mut config = self.base();
        config
            // Exactly one copy of each record, in order per partition, even when a request
            // is retried after a lost acknowledgement; implies max.in.flight <= 5.
            .set("enable.idempotence", "true")
            // Durable means acknowledged by every in-sync replica.
            .set("acks", "all");
        // A dead cluster surfaces as a retryable error after a minute instead of librdkafka's
        // five, so callers can report it.
        self.tunable_default(&mut config, "message.timeout.ms", "60000");
        config
    }

    /// A member of `group`, committing by hand.
    pub(super) fn group_member(&self, group: &str) -> ClientConfig {
        let mut config = self.consumer_base();
        config
            .set("group.id", group)
            // Offsets move only through `Consumer::commit`: at-least-once.
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            // A group with no commit starts at the beginning (the contract).
            .set("auto.offset.reset", "earliest");
        // Eager round-robin: every rebalance revokes everything, which keeps the member's
        // view (its assignment) simple, and round-robin spreads the partitions of several
        // topics evenly (range would give partition 0 of every topic to the same member).
        self.tunable_default(&mut config, "partition.assignment.strategy", "roundrobin");
        // A crashed member's partitions move after 10 s instead of 45 s.
        self.tunable_default(&mut config, "session.timeout.ms", "10000");
        config
    }

    /// A client that only looks up `group`'s committed offsets (it never joins the group).
    pub(super) fn group_lookup(&self, group: &str) -> ClientConfig {
        let mut config = self.consumer_base();
        config
            .set("group.id", group)
            .set("enable.auto.commit", "false");
        config
    }

    /// A group-less consumer for `read`, positioned by hand.
    pub(super) fn reader(&self) -> ClientConfig {
        let mut config = self.consumer_base();
        config
            // librdkafka wants a group for `assign`; readers never join or commit it.
            .set("group.id", format!("{}.reader", self.client_id))
            .set("enable.auto.commit", "false")
            // A read below the log start or beyond the end must not silently jump elsewhere.
            .set("auto.offset.reset", "error");
        // Readers are pooled; cap the prefetch of each (librdkafka's default is 64 MiB).
        self.tunable_default(&mut config, "queued.max.messages.kbytes", "8192");
        config
    }

    /// The admin client of `create_topic`.
    pub(super) fn admin(&self) -> ClientConfig {
        self.base()
    }

    /// The short-lived client that checks, at connect, that the cluster answers.
    pub(super) fn probe(&self) -> ClientConfig {
        self.base()
    }

    fn tunable_default(&self, config: &mut ClientConfig, key: &str, value: &str) {
        debug_assert!(TUNABLE.contains(&key));
        if !self.properties.contains_key(key) {
            config.set(key, value);
        }
    }
}

/// Properties where our default gives way to the user's value: tuning, not contract.
///
/// - `fetch.wait.max.ms=100`: how long a broker may hold an empty fetch. Kafka answers as
///   soon as data arrives anyway; brokers that do not (tansu sleeps out part of the wait)
///   would otherwise add up to librdkafka's 500 ms to every long-poll wake-up.
const TUNABLE: &[&str] = &[
    "fetch.wait.max.ms",
    "message.timeout.ms",
    "partition.assignment.strategy",
    "session.timeout.ms",
    "queued.max.messages.kbytes",
];

fn check_server(server: &str) -> Result<(), String> {
    let (host, port) = server
        .rsplit_once(':')
        .ok_or_else(|| "needs a port (host:port)".to_owned())?;
    if host.is_empty() || host.contains('/') || host.contains('@') {
        return Err("needs a host name or address before the port".to_owned());
    }
    match port.parse::<u16>() {
        Ok(p) if p > 0 => Ok(()),
        _ => Err(format!("has an invalid port {port:?}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_url_names_one_or_more_brokers() {
        let config = KafkaConfig::from_url("kafka://a:9092,10.0.0.2:19092").expect("valid");
        assert_eq!(config.bootstrap_servers, "a:9092,10.0.0.2:19092");
        assert_eq!(config.replication_factor, None);
        assert_eq!(config.client_id, "distorch");
        assert!(config.properties.is_empty());
    }

    #[test]
    fn query_parameters_set_fields_and_librdkafka_properties() {
        let config = KafkaConfig::from_url(
            "kafka://[::1]:9092/?replication_factor=3&client_id=engine-1&security.protocol=ssl",
        )
        .expect("valid");
        assert_eq!(config.bootstrap_servers, "[::1]:9092");
        assert_eq!(config.replication_factor, Some(3));
        assert_eq!(config.client_id, "engine-1");
        assert_eq!(
            config
                .properties
                .get("security.protocol")
                .map(String::as_str),
            Some("ssl")
        );
    }

    #[test]
    fn bad_urls_say_what_is_wrong() {
        let cases = [
            ("sqlite://x", "must start with kafka://"),
            ("kafka://", "names no broker"),
            ("kafka://broker", "\"broker\" needs a port"),
            ("kafka://broker:ninety", "invalid port \"ninety\""),
            ("kafka://a:9092,:9093", "\":9093\" needs a host"),
            ("kafka://a:9092?replication_factor=0", "positive number"),
            ("kafka://a:9092?acks", "\"acks\" has no value"),
        ];
        for (url, expected) in cases {
            match KafkaConfig::from_url(url) {
                Err(LogError::Invalid(msg)) => {
                    assert!(msg.contains(expected), "{url}: {msg:?} lacks {expected:?}");
                    assert!(msg.contains(url), "{url}: {msg:?} names the URL");
                }
                other => panic!("{url}: expected Invalid, got {other:?}"),
            }
        }
    }

    #[test]
    fn user_properties_cannot_weaken_the_contract() {
        let mut config = KafkaConfig::new("a:9092");
        config.properties.insert("acks".into(), "1".into());
        config
            .properties
            .insert("enable.auto.commit".into(), "true".into());
        config
            .properties
            .insert("fetch.wait.max.ms".into(), "500".into());
        let producer = config.producer();
        assert_eq!(producer.get("acks"), Some("all"));
        assert_eq!(producer.get("enable.idempotence"), Some("true"));
        assert_eq!(
            KafkaConfig::new("a:9092")
                .producer()
                .get("fetch.wait.max.ms"),
            None,
            "consumer tuning stays off the producer"
        );
        let member = config.group_member("g");
        assert_eq!(member.get("enable.auto.commit"), Some("false"));
        assert_eq!(
            member.get("fetch.wait.max.ms"),
            Some("500"),
            "tuning is theirs"
        );
    }
}
