//! Progress and lag of a projector, shared with whoever reports them (the API's `/metrics`).

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::{Registry, Unit};
use std::sync::atomic::AtomicU64;

/// A cheap, cloneable handle on the projector's counters. The metrics are atomics shared by
/// every clone, so the projector updates them and `/metrics` reads them without a lock.
#[derive(Debug, Clone, Default)]
pub struct ProjectorStats {
    events_behind: Gauge,
    seconds_behind: Gauge<f64, AtomicU64>,
    applied_events: Counter,
    applied_definitions: Counter,
    undecodable_records: Counter,
    store_failures: Counter,
}

impl ProjectorStats {
    /// Registers every metric under `distorch_projector_*`.
    pub fn register(&self, registry: &mut Registry) {
        let r = registry.sub_registry_with_prefix("distorch_projector");
        r.register(
            "events_behind",
            "Records on the projector's partitions not yet applied (end offset - position)",
            self.events_behind.clone(),
        );
        r.register_with_unit(
            "behind",
            "Age of the last applied record while records are waiting, else 0",
            Unit::Seconds,
            self.seconds_behind.clone(),
        );
        r.register(
            "applied_events",
            "Workflow events applied to the read store",
            self.applied_events.clone(),
        );
        r.register(
            "applied_definitions",
            "Definition registrations applied to the read store",
            self.applied_definitions.clone(),
        );
        r.register(
            "undecodable_records",
            "Records skipped because they did not decode",
            self.undecodable_records.clone(),
        );
        r.register(
            "store_failures",
            "Failed read-store writes (the batch is retried)",
            self.store_failures.clone(),
        );
    }

    /// Records on the assigned partitions not yet applied, summed over partitions.
    pub fn events_behind(&self) -> u64 {
        self.events_behind.get().max(0).unsigned_abs()
    }

    /// How stale the read models are: 0 when caught up.
    pub fn seconds_behind(&self) -> f64 {
        self.seconds_behind.get()
    }

    /// Workflow events this projector applied to the read store (a rebuild's included;
    /// events delivered again after a rebalance count again).
    pub fn applied_events(&self) -> u64 {
        self.applied_events.get()
    }

    /// Definition registrations this projector applied to the read store.
    pub fn applied_definitions(&self) -> u64 {
        self.applied_definitions.get()
    }

    /// Records this projector skipped because they did not decode.
    pub fn undecodable_records(&self) -> u64 {
        self.undecodable_records.get()
    }

    /// Failed read-store or analytics writes this projector retried.
    pub fn store_failures(&self) -> u64 {
        self.store_failures.get()
    }

    pub(crate) fn set_lag(&self, events: u64, seconds: f64) {
        self.events_behind
            .set(i64::try_from(events).unwrap_or(i64::MAX));
        self.seconds_behind.set(seconds);
    }

    pub(crate) fn applied(&self, events: usize, definitions: usize) {
        self.applied_events.inc_by(events as u64);
        self.applied_definitions.inc_by(definitions as u64);
    }

    pub(crate) fn undecodable(&self) {
        self.undecodable_records.inc();
    }

    pub(crate) fn store_failed(&self) {
        self.store_failures.inc();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus_client::encoding::text::encode;

    #[test]
    fn registered_metrics_show_current_values() {
        let stats = ProjectorStats::default();
        let mut registry = Registry::default();
        stats.register(&mut registry);
        stats.set_lag(12, 1.5);
        stats.applied(3, 1);
        stats.undecodable();

        let mut text = String::new();
        encode(&mut text, &registry).expect("encode");
        for line in [
            "distorch_projector_events_behind 12",
            "distorch_projector_behind_seconds 1.5",
            "distorch_projector_applied_events_total 3",
            "distorch_projector_applied_definitions_total 1",
            "distorch_projector_undecodable_records_total 1",
            "distorch_projector_store_failures_total 0",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "{line:?} missing from\n{text}"
            );
        }
        assert_eq!((stats.events_behind(), stats.seconds_behind()), (12, 1.5));
    }
}
