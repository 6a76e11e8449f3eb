//! The rule that decides when a group member should leave and rejoin its group because a
//! partition looks orphaned: [`OrphanWatch`].
//!
//! Some brokers (tansu 0.6.0) never rebalance a group when a member dies without leaving: its
//! partitions keep an owner that nobody is, and their records wait forever. A live member can
//! tell from outside: a partition it does not own has records waiting (end offset past the
//! group's committed offset), and the committed offset has not moved for a while. Leaving and
//! rejoining makes the broker rebalance, which hands the dead member's partitions to the
//! living. On a broker that rebalances by itself (Apache Kafka, Redpanda) the dead member's
//! partitions move after `session.timeout.ms`, before the watch's timeout, and it never fires.
//!
//! Pure bookkeeping: the group consumer feeds it what it reads from the broker.

use std::collections::HashMap;
use std::time::{Duration, Instant};

/// Per partition not owned by this member: the committed offset last seen, and since when it
/// has stood still with records waiting.
#[derive(Debug)]
pub(super) struct OrphanWatch {
    timeout: Duration,
    stalled: HashMap<(String, u32), (u64, Instant)>,
}

impl OrphanWatch {
    /// A watch that calls a partition orphaned after `timeout` of standing still; a zero
    /// timeout never does.
    pub(super) fn new(timeout: Duration) -> Self {
        Self {
            timeout,
            stalled: HashMap::new(),
        }
    }

    pub(super) fn enabled(&self) -> bool {
        !self.timeout.is_zero()
    }

    /// Notes what the broker says of a partition another member owns at `now`: the group's
    /// committed offset (`None`: nothing committed) and the end offset. True when records
    /// have been waiting behind an unmoving commit for longer than the timeout.
    pub(super) fn observe(
        &mut self,
        topic: &str,
        partition: u32,
        committed: Option<u64>,
        end: u64,
        now: Instant,
    ) -> bool {
        let key = (topic.to_owned(), partition);
        let committed = committed.unwrap_or(0);
        if !self.enabled() || end <= committed {
            self.stalled.remove(&key);
            return false;
        }
        let since = self.stalled.entry(key).or_insert((committed, now));
        if since.0 != committed {
            *since = (committed, now);
            return false;
        }
        now.duration_since(since.1) > self.timeout
    }

    /// Forgets a partition: this member owns it now.
    pub(super) fn forget(&mut self, topic: &str, partition: u32) {
        self.stalled.remove(&(topic.to_owned(), partition));
    }

    /// Forgets everything, as after rejoining.
    pub(super) fn clear(&mut self) {
        self.stalled.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: Duration = Duration::from_secs(15);

    #[test]
    fn records_waiting_behind_a_commit_that_stands_still_past_the_timeout_are_orphaned() {
        let t0 = Instant::now();
        let mut watch = OrphanWatch::new(T);
        // Given records waiting on a partition whose commit does not move
        assert!(!watch.observe("c", 1, Some(10), 14, t0));
        assert!(!watch.observe("c", 1, Some(10), 20, t0 + T));
        // When the timeout has passed, then it is orphaned
        assert!(watch.observe("c", 1, Some(10), 20, t0 + T + Duration::from_millis(1)));
    }

    #[test]
    fn a_moving_commit_or_nothing_waiting_is_a_live_owner() {
        let t0 = Instant::now();
        let mut watch = OrphanWatch::new(T);
        assert!(!watch.observe("c", 1, Some(10), 14, t0));
        // The owner commits: the clock starts again
        assert!(!watch.observe("c", 1, Some(12), 14, t0 + T));
        assert!(!watch.observe("c", 1, Some(12), 14, t0 + T + T / 2));
        assert!(watch.observe("c", 1, Some(12), 14, t0 + T + T + Duration::from_millis(1)));
        // Caught up: nothing waits, nothing is orphaned, and the clock is reset
        assert!(!watch.observe("c", 1, Some(14), 14, t0 + 3 * T));
        assert!(!watch.observe("c", 1, Some(14), 15, t0 + 3 * T));
        assert!(!watch.observe("c", 1, Some(14), 15, t0 + 4 * T - Duration::from_millis(1)));
    }

    #[test]
    fn a_partition_never_committed_counts_from_zero_and_partitions_are_watched_apart() {
        let t0 = Instant::now();
        let mut watch = OrphanWatch::new(T);
        assert!(!watch.observe("c", 0, None, 3, t0));
        assert!(!watch.observe("c", 2, None, 0, t0));
        assert!(watch.observe("c", 0, None, 3, t0 + 2 * T));
        assert!(
            !watch.observe("c", 2, None, 0, t0 + 2 * T),
            "nothing waits there"
        );
        assert!(!watch.observe("e", 0, None, 3, t0 + 2 * T), "another topic");
    }

    #[test]
    fn an_owned_partition_is_forgotten_and_a_zero_timeout_never_fires() {
        let t0 = Instant::now();
        let mut watch = OrphanWatch::new(T);
        assert!(!watch.observe("c", 1, Some(1), 5, t0));
        watch.forget("c", 1);
        assert!(
            !watch.observe("c", 1, Some(1), 5, t0 + 2 * T),
            "the clock restarted"
        );
        let mut off = OrphanWatch::new(Duration::ZERO);
        assert!(!off.observe("c", 1, Some(1), 5, t0));
        assert!(!off.observe("c", 1, Some(1), 5, t0 + 100 * T));
    }
}
