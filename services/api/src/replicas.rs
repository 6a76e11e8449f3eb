//! API replicas: who they are, and polls passed on to the replicas that hold a queue's other
//! partitions ([ADR 0043](../../../docs/adr/0043-api-replicas-forward-polls-to-partition-owners.md)).
//!
//! The broker shares each `tasks.<queue>` topic's partitions among the replicas (group
//! `api-poll`), so a replica holds the attempts of its share only. Every replica appends a
//! [`Heartbeat`] to the one-partition topic `<prefix>.api-members` (its id, the URL other
//! replicas reach it at, and per queue the partitions it holds and how many attempts wait
//! there for a taker) every [`HEARTBEAT_EVERY`], and sooner when that changes. Every replica
//! reads the topic into a [`Roster`].
//!
//! A poll that its own replica cannot fill asks the replicas whose last heartbeat shows
//! attempts waiting for that queue, through `POST /internal/queues/{queue}/take`: the same
//! take, started there for the polling worker, with no wait and never passed on again. Each
//! attempt is still held and started by exactly one replica, so a step costs one `StartTask`
//! whichever replica the worker polls.
//!
//! A replica that stops heartbeating (killed, frozen, cut off), or that a forwarded take
//! cannot reach, is gone: the survivors rejoin the groups of the queues it held, so the
//! broker hands its partitions on at once rather than after its session timeout (or never,
//! on a broker that keeps a dead member in its group).

use crate::dispatch::Dispatchers;
use crate::dto::{Poll, Polled};
use crate::metrics::ApiMetrics;
use distorch_domain::topics::TaskDispatch;
use distorch_eventlog::{EventLog, NewRecord};
use distorch_tasks::Share;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

/// Longest time between two heartbeats of a replica.
pub const HEARTBEAT_EVERY: Duration = Duration::from_secs(2);
/// How often a replica looks whether what it holds changed (and heartbeats early if so).
const SHARE_CHECK: Duration = Duration::from_millis(250);
/// A replica not heard from for this long is gone.
pub const LIVE_FOR: Duration = Duration::from_secs(10);
/// A gone replica is remembered this long (for [`Roster::gone_holder`] and
/// [`Roster::orphaned`]).
const FORGET_AFTER: Duration = Duration::from_secs(300);
/// While a gone replica's partitions have no live owner, a replica that holds partitions of
/// the same queue rejoins the queue's group this often: a broker that keeps a dead member
/// drops it at a rebalance after its session timeout (10 s by default) has passed.
const REJOIN_EVERY: Duration = Duration::from_secs(4);
/// How long partitions must have looked orphaned before a replica rejoins: while a group
/// rebalances, the heartbeats of its members show partial shares for a moment, and a rejoin
/// on such a glimpse would only start another rebalance.
const ORPHANED_FOR: Duration = Duration::from_secs(2);
/// Heartbeats read back when a replica starts: more than every live replica writes within
/// [`LIVE_FOR`].
const BACKLOG: u64 = 2_000;
/// How long a forwarded take may take to connect; a replica that does not accept by then is
/// treated as gone. Once connected, the take may last as long as its start does.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);

/// One replica's heartbeat, as appended to `<prefix>.api-members`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Heartbeat {
    /// The replica's instance id (also the `reply_to` of its commands).
    pub instance: String,
    /// Base URL other replicas reach it at (`[api] advertise_url`).
    pub url: String,
    /// When it was written, in ms since the Unix epoch (the writer's clock).
    pub at_ms: i64,
    /// Per queue: the partitions it holds and the attempts it has waiting for a taker.
    #[serde(default)]
    pub queues: BTreeMap<String, Share>,
}

/// A replica to ask for a queue's attempts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Holder {
    /// Its instance id.
    pub instance: String,
    /// Its base URL.
    pub url: String,
}

/// The replicas a replica knows of, from their heartbeats: pure bookkeeping, no I/O.
#[derive(Debug)]
pub struct Roster {
    me: String,
    members: HashMap<String, Member>,
}

#[derive(Debug)]
struct Member {
    last: Heartbeat,
    /// Set when a forwarded take could not reach it after its last heartbeat.
    unreachable: bool,
}

impl Member {
    fn live(&self, now_ms: i64) -> bool {
        !self.unreachable && now_ms - self.last.at_ms <= LIVE_FOR.as_millis() as i64
    }
}

impl Roster {
    /// Knows nobody yet; `me` is this replica's instance id (never a holder to ask).
    pub fn new(me: impl Into<String>) -> Self {
        Self {
            me: me.into(),
            members: HashMap::new(),
        }
    }

    /// Takes a heartbeat in; an older one than already known (read back late) is ignored.
    pub fn heard(&mut self, heartbeat: Heartbeat) {
        if heartbeat.instance == self.me {
            return;
        }
        match self.members.get_mut(&heartbeat.instance) {
            Some(m) if m.last.at_ms > heartbeat.at_ms => {}
            Some(m) => {
                m.last = heartbeat;
                m.unreachable = false;
            }
            None => {
                self.members.insert(
                    heartbeat.instance.clone(),
                    Member {
                        last: heartbeat,
                        unreachable: false,
                    },
                );
            }
        }
    }

    /// A forwarded take could not reach `instance`: it is gone until it heartbeats again.
    pub fn unreachable(&mut self, instance: &str) {
        if let Some(m) = self.members.get_mut(instance) {
            m.unreachable = true;
        }
    }

    /// Live replicas other than this one.
    pub fn live(&self, now_ms: i64) -> usize {
        self.members.values().filter(|m| m.live(now_ms)).count()
    }

    /// The live replicas whose last heartbeat shows attempts of `queue` waiting for a
    /// taker, the most waiting first.
    pub fn holders(&self, queue: &str, now_ms: i64) -> Vec<Holder> {
        let mut holders: Vec<(usize, Holder)> = self
            .members
            .values()
            .filter(|m| m.live(now_ms))
            .filter_map(|m| {
                let share = m.last.queues.get(queue)?;
                (share.buffered > 0).then(|| {
                    let holder = Holder {
                        instance: m.last.instance.clone(),
                        url: m.last.url.clone(),
                    };
                    (share.buffered, holder)
                })
            })
            .collect();
        holders.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.instance.cmp(&b.1.instance)));
        holders.into_iter().map(|(_, h)| h).collect()
    }

    /// The gone replica that last held `partition` of `queue`, as its last heartbeat told:
    /// the attempts it started there may never have been handed out.
    pub fn gone_holder(&self, queue: &str, partition: u32, now_ms: i64) -> Option<String> {
        self.members
            .values()
            .filter(|m| !m.live(now_ms))
            .filter(|m| {
                m.last
                    .queues
                    .get(queue)
                    .is_some_and(|s| s.partitions.contains(&partition))
            })
            .max_by_key(|m| m.last.at_ms)
            .map(|m| m.last.instance.clone())
    }

    /// The partitions of `queue` that a gone replica held as of its last heartbeat and that
    /// no live replica holds now (this one holds `mine`), with the gone replica: the broker
    /// still counts it as a member, so they have no owner until the group rebalances
    /// without it. Empty when every partition a gone replica held has moved.
    pub fn orphaned(&self, queue: &str, mine: &[u32], now_ms: i64) -> Vec<(String, Vec<u32>)> {
        let held: BTreeSet<u32> = self
            .members
            .values()
            .filter(|m| m.live(now_ms))
            .filter_map(|m| m.last.queues.get(queue))
            .flat_map(|s| s.partitions.iter().copied())
            .chain(mine.iter().copied())
            .collect();
        let mut orphaned: Vec<(String, Vec<u32>)> = self
            .members
            .values()
            .filter(|m| !m.live(now_ms))
            .filter_map(|m| {
                let share = m.last.queues.get(queue)?;
                let lost: Vec<u32> = share
                    .partitions
                    .iter()
                    .copied()
                    .filter(|p| !held.contains(p))
                    .collect();
                (!lost.is_empty()).then(|| (m.last.instance.clone(), lost))
            })
            .collect();
        orphaned.sort();
        orphaned
    }

    /// Forgets replicas not heard from for much longer than [`LIVE_FOR`].
    pub fn forget(&mut self, now_ms: i64) {
        let forget_after = FORGET_AFTER.as_millis() as i64;
        self.members
            .retain(|_, m| now_ms - m.last.at_ms <= forget_after);
    }
}

/// This replica's part in the membership: its roster, its heartbeats and its forwarded
/// takes. Present only where replicas can exist (`distorch api`; `standalone` is one).
pub struct Replicas {
    me: Heartbeat,
    roster: Mutex<Roster>,
    http: reqwest::Client,
    metrics: ApiMetrics,
}

impl std::fmt::Debug for Replicas {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Replicas")
            .field("instance", &self.me.instance)
            .field("url", &self.me.url)
            .finish_non_exhaustive()
    }
}

fn now_ms() -> i64 {
    jiff::Timestamp::now().as_millisecond()
}

impl Replicas {
    /// Joins the membership as `instance`, reached at `url`: creates the members topic if
    /// missing, and starts heartbeating what `dispatchers` hold and reading the others.
    pub async fn start(
        log: Arc<dyn EventLog>,
        topic: String,
        instance: String,
        url: String,
        dispatchers: Arc<Dispatchers>,
        metrics: ApiMetrics,
    ) -> Result<Arc<Self>, crate::ApiError> {
        crate::bus::ensure_topic(log.as_ref(), &topic, 1).await?;
        let http = reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .build()
            .map_err(|e| crate::ApiError::Unavailable(format!("no HTTP client: {e}")))?;
        let replicas = Arc::new(Self {
            me: Heartbeat {
                instance: instance.clone(),
                url: url.trim_end_matches('/').to_owned(),
                at_ms: 0,
                queues: BTreeMap::new(),
            },
            roster: Mutex::new(Roster::new(instance)),
            http,
            metrics,
        });
        let from = log.end_offset(&topic, 0).await?.saturating_sub(BACKLOG);
        tokio::spawn(read_members(
            log.clone(),
            topic.clone(),
            from,
            Arc::downgrade(&replicas),
        ));
        tokio::spawn(heartbeat(
            log,
            topic,
            Arc::downgrade(&replicas),
            dispatchers,
        ));
        tracing::info!(instance = %replicas.me.instance, url = %replicas.me.url, "joined the API replicas");
        Ok(replicas)
    }

    fn roster(&self) -> std::sync::MutexGuard<'_, Roster> {
        self.roster.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The gone replica that last held `partition` of `queue` (see [`Roster::gone_holder`]).
    pub fn gone_holder(&self, queue: &str, partition: u32) -> Option<String> {
        self.roster().gone_holder(queue, partition, now_ms())
    }

    /// Up to `max` attempts of `queue` taken and started for `worker_id` at the other
    /// replicas that have some waiting; asked one after another until `max` are in hand.
    /// A replica that cannot be reached counts as empty (and as gone); so does one that
    /// answers with an error. Nobody with attempts waiting: nothing asked, no I/O.
    pub async fn take(&self, queue: &str, worker_id: &str, max: usize) -> Vec<TaskDispatch> {
        let holders = self.roster().holders(queue, now_ms());
        let mut tasks = Vec::new();
        for holder in holders {
            if tasks.len() >= max {
                break;
            }
            let want = max - tasks.len();
            match self.take_from(&holder, queue, worker_id, want).await {
                Ok(got) => tasks.extend(got),
                Err(Failure::Unreachable(e)) => {
                    tracing::warn!(replica = %holder.instance, url = %holder.url, error = %e, "an API replica is unreachable; treating it as gone");
                    self.roster().unreachable(&holder.instance);
                }
                Err(Failure::Answered(e)) => {
                    tracing::warn!(replica = %holder.instance, url = %holder.url, error = %e, "a forwarded take failed");
                }
            }
        }
        self.metrics.tasks_forwarded(queue, tasks.len());
        tasks
    }

    async fn take_from(
        &self,
        holder: &Holder,
        queue: &str,
        worker_id: &str,
        max: usize,
    ) -> Result<Vec<TaskDispatch>, Failure> {
        let resp = self
            .http
            .post(format!("{}/internal/queues/{queue}/take", holder.url))
            .json(&Poll {
                worker_id: worker_id.to_owned(),
                max_tasks: Some(max as u32),
                wait_ms: Some(0),
            })
            .send()
            .await
            .map_err(|e| {
                if e.is_connect() {
                    Failure::Unreachable(e.to_string())
                } else {
                    Failure::Answered(e.to_string())
                }
            })?;
        let status = resp.status();
        if !status.is_success() {
            let body = resp.text().await.unwrap_or_default();
            return Err(Failure::Answered(format!("{status}: {body}")));
        }
        let polled: Polled = resp
            .json()
            .await
            .map_err(|e| Failure::Answered(e.to_string()))?;
        Ok(polled.tasks)
    }
}

enum Failure {
    /// No connection: the replica is gone (or cut off).
    Unreachable(String),
    /// It answered, with an error or something unreadable. A connection that broke after
    /// the request was sent lands here too: the replica may have started attempts for it.
    Answered(String),
}

/// Reads heartbeats from `from` on, for as long as the replicas value lives.
async fn read_members(
    log: Arc<dyn EventLog>,
    topic: String,
    mut from: u64,
    replicas: std::sync::Weak<Replicas>,
) {
    let mut failures = 0u32;
    loop {
        let read = log.read(&topic, 0, from, 512, Duration::from_secs(1)).await;
        let Some(replicas) = replicas.upgrade() else {
            return;
        };
        match read {
            Ok(records) => {
                failures = 0;
                let mut roster = replicas.roster();
                for record in records {
                    from = record.offset + 1;
                    match serde_json::from_slice::<Heartbeat>(&record.payload) {
                        Ok(heartbeat) => roster.heard(heartbeat),
                        Err(e) => {
                            tracing::warn!(offset = record.offset, error = %e, "skipping an undecodable replica heartbeat")
                        }
                    }
                }
            }
            Err(e) => {
                failures += 1;
                if failures == 1 || failures.is_multiple_of(30) {
                    tracing::warn!(error = %e, topic, "cannot read the replicas' heartbeats");
                }
                drop(replicas);
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
}

/// What other replicas act on in a heartbeat: per queue, the partitions held and whether
/// attempts wait there. A change is announced at once.
type Shape = BTreeMap<String, (Vec<u32>, bool)>;

/// Appends this replica's heartbeat every [`HEARTBEAT_EVERY`], or as soon as what it holds
/// changes; rejoins the group of a queue whose partitions a gone replica held until they
/// have moved.
async fn heartbeat(
    log: Arc<dyn EventLog>,
    topic: String,
    replicas: std::sync::Weak<Replicas>,
    dispatchers: Arc<Dispatchers>,
) {
    let mut sent: Option<(tokio::time::Instant, Shape)> = None;
    let mut last_rejoin = HashMap::new();
    let mut orphaned_since = HashMap::new();
    let mut tick = tokio::time::interval(SHARE_CHECK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(replicas) = replicas.upgrade() else {
            return;
        };
        let now = now_ms();
        let queues: BTreeMap<String, Share> = dispatchers
            .started()
            .iter()
            .map(|d| (d.queue().to_owned(), d.share()))
            .collect();
        // What matters to the others: partitions held, and whether attempts wait.
        let shape: Shape = queues
            .iter()
            .map(|(q, s)| (q.clone(), (s.partitions.clone(), s.buffered > 0)))
            .collect();
        let due = match &sent {
            None => true,
            Some((at, last)) => at.elapsed() >= HEARTBEAT_EVERY || *last != shape,
        };
        if due {
            let heartbeat = Heartbeat {
                at_ms: now,
                queues,
                ..replicas.me.clone()
            };
            let payload = serde_json::to_vec(&heartbeat).expect("heartbeats serialise");
            let record = NewRecord::new(topic.clone(), heartbeat.instance.clone(), payload);
            match log.append(vec![record]).await {
                Ok(_) => sent = Some((tokio::time::Instant::now(), shape)),
                Err(e) => {
                    tracing::warn!(error = %e, topic, "cannot append this replica's heartbeat")
                }
            }
        }
        let orphaned: Vec<_> = {
            let mut roster = replicas.roster();
            roster.forget(now);
            replicas.metrics.set_replicas(roster.live(now) + 1);
            dispatchers
                .started()
                .into_iter()
                .map(|d| {
                    let gone = roster.orphaned(d.queue(), &d.share().partitions, now);
                    (d, gone)
                })
                .collect()
        };
        let at = tokio::time::Instant::now();
        for (dispatcher, gone) in orphaned {
            let queue = dispatcher.queue().to_owned();
            if gone.is_empty() {
                orphaned_since.remove(&queue);
                continue;
            }
            let since = *orphaned_since.entry(queue.clone()).or_insert(at);
            let rejoined_long_ago = last_rejoin
                .get(&queue)
                .is_none_or(|last: &tokio::time::Instant| at - *last >= REJOIN_EVERY);
            if at - since >= ORPHANED_FOR && rejoined_long_ago {
                tracing::warn!(
                    queue,
                    ?gone,
                    "partitions of the queue were held by API replicas that are gone; rejoining its group so they move"
                );
                dispatcher.rejoin();
                last_rejoin.insert(queue, at);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn beat(instance: &str, at_ms: i64, queues: &[(&str, &[u32], usize)]) -> Heartbeat {
        Heartbeat {
            instance: instance.into(),
            url: format!("http://{instance}"),
            at_ms,
            queues: queues
                .iter()
                .map(|(q, p, b)| {
                    let share = Share {
                        partitions: p.to_vec(),
                        buffered: *b,
                    };
                    (q.to_string(), share)
                })
                .collect(),
        }
    }

    fn instances(holders: Vec<Holder>) -> Vec<String> {
        holders.into_iter().map(|h| h.instance).collect()
    }

    #[test]
    fn holders_are_the_live_replicas_with_attempts_waiting_most_first() {
        // Given three other replicas: b with 3 waiting, c with 7, d holding partitions but
        // nothing waiting; and this replica's own heartbeat read back.
        let mut roster = Roster::new("a");
        roster.heard(beat("a", 1_000, &[("q", &[0], 9)]));
        roster.heard(beat("b", 1_000, &[("q", &[1, 2], 3)]));
        roster.heard(beat("c", 1_000, &[("q", &[3], 7), ("other", &[0], 1)]));
        roster.heard(beat("d", 1_000, &[("q", &[4], 0)]));
        // When a poll of q looks for holders
        // Then it asks c, then b; never itself, never a replica with nothing waiting.
        assert_eq!(instances(roster.holders("q", 2_000)), ["c", "b"]);
        assert_eq!(instances(roster.holders("other", 2_000)), ["c"]);
        assert!(roster.holders("unknown", 2_000).is_empty());
        assert_eq!(roster.live(2_000), 3);
    }

    #[test]
    fn the_partitions_of_a_silent_replica_are_orphaned_until_a_live_one_holds_them() {
        // Given b and c heartbeating at t=1s, b holding partitions 1 and 2 of q, c holding 3,
        // and this replica holding 0
        let mut roster = Roster::new("a");
        roster.heard(beat("b", 1_000, &[("q", &[1, 2], 5)]));
        roster.heard(beat("c", 1_000, &[("q", &[3], 0)]));
        assert!(roster.orphaned("q", &[0], 5_000).is_empty());
        // When b is silent for longer than LIVE_FOR
        let late = 1_000 + LIVE_FOR.as_millis() as i64 + 1;
        roster.heard(beat("c", late, &[("q", &[3], 0)]));
        // Then it is no holder, and its partitions are orphaned
        assert!(roster.holders("q", late).is_empty());
        assert_eq!(roster.live(late), 1);
        assert_eq!(
            roster.orphaned("q", &[0], late),
            [("b".to_string(), vec![1, 2])]
        );
        assert!(roster.orphaned("other", &[0], late).is_empty());
        // And when the group has handed 1 to this replica and 2 to c, nothing is orphaned
        assert_eq!(
            roster.orphaned("q", &[0, 1], late),
            [("b".to_string(), vec![2])]
        );
        roster.heard(beat("c", late + 10, &[("q", &[2, 3], 0)]));
        assert!(roster.orphaned("q", &[0, 1], late + 20).is_empty());
    }

    #[test]
    fn an_unreachable_replica_is_gone_at_once_until_it_heartbeats_again() {
        // Given b live with attempts waiting
        let mut roster = Roster::new("a");
        roster.heard(beat("b", 1_000, &[("q", &[1], 5)]));
        // When a forwarded take cannot connect to it
        roster.unreachable("b");
        // Then it is gone now, not LIVE_FOR later
        assert!(roster.holders("q", 1_001).is_empty());
        assert_eq!(roster.orphaned("q", &[0], 1_001).len(), 1);
        // And a heartbeat older than the last one known (read back late) changes nothing
        roster.heard(beat("b", 900, &[("q", &[1], 5)]));
        assert!(roster.holders("q", 1_002).is_empty());
        // While a newer one brings it back.
        roster.heard(beat("b", 1_100, &[("q", &[1], 5)]));
        assert_eq!(instances(roster.holders("q", 1_200)), ["b"]);
        assert!(roster.orphaned("q", &[0], 1_200).is_empty());
    }

    #[test]
    fn the_attempts_of_a_gone_replica_are_taken_over_from_the_last_one_that_held_them() {
        // Given b held partition 1 of q until it went silent, c held it before b and went
        // silent earlier, and d holds partition 2 and is live
        let mut roster = Roster::new("a");
        roster.heard(beat("c", 500, &[("q", &[1], 0)]));
        roster.heard(beat("b", 1_000, &[("q", &[1], 2)]));
        roster.heard(beat("d", 20_000, &[("q", &[2], 0)]));
        let now = 15_000;
        // When this replica starts attempts read from partitions 1 and 2
        // Then those of partition 1 replace b; those of a live replica's partition replace
        // nobody, nor do those of a partition nobody gone held.
        assert_eq!(roster.gone_holder("q", 1, now).as_deref(), Some("b"));
        assert_eq!(roster.gone_holder("q", 2, now), None);
        assert_eq!(roster.gone_holder("q", 3, now), None);
        assert_eq!(roster.gone_holder("other", 1, now), None);
    }

    #[test]
    fn replicas_silent_for_long_are_forgotten() {
        let mut roster = Roster::new("a");
        roster.heard(beat("b", 0, &[]));
        roster.forget(FORGET_AFTER.as_millis() as i64);
        assert_eq!(
            roster.members.len(),
            1,
            "remembered while it may hold partitions"
        );
        roster.forget(FORGET_AFTER.as_millis() as i64 + 1);
        assert!(roster.members.is_empty());
    }
}
