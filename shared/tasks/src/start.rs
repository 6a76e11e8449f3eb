//! [`Starter`]: asks the engine to start claimed attempts, and asks again for the ones it
//! did not answer.

use crate::command_record;
use crate::feed::{Claim, PendingStart, TaskFeed};
use distorch_domain::command::{Command, Outcome};
use distorch_domain::ids::CommandId;
use distorch_eventlog::LogError;
use distorch_eventlog::rpc::Rpc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Sends `StartTask` commands for claims and sorts the engine's answers. Shares the
/// process's [`Rpc`] (one reply reader, one batching writer) with its other commands.
#[derive(Debug)]
pub struct Starter {
    rpc: Rpc<Outcome>,
    commands_topic: String,
    reply_timeout: Duration,
    next_id: AtomicU64,
}

/// What [`Starter::start`] did with a batch of claims.
#[derive(Debug, Default)]
pub struct Started {
    /// Attempts the engine started for the caller: run them (or hand them out), then settle.
    pub accepted: Vec<Claim>,
    /// Claims whose attempt is stale (superseded, cancelled, already running or done):
    /// settled and dropped.
    pub stale: usize,
    /// Claims that named no run (a malformed task id): no engine can start them; settled
    /// and dropped.
    pub malformed: usize,
    /// Claims without an answer before the reply timeout (an engine failing over): given
    /// back to the feed with their command, which the next take sends again.
    pub unanswered: usize,
}

impl Starter {
    /// `rpc` reads the replies to this process (its decoder is [`crate::decode_reply`]);
    /// commands go to `commands_topic`; each batch waits at most `reply_timeout`.
    pub fn new(rpc: Rpc<Outcome>, commands_topic: String, reply_timeout: Duration) -> Self {
        Self {
            rpc,
            commands_topic,
            reply_timeout,
            next_id: AtomicU64::new(0),
        }
    }

    /// A command id unique to this process: every start of a delivered record is its own
    /// command (a record delivered twice must be refused the second time).
    fn next_id(&self) -> String {
        let n = self.next_id.fetch_add(1, Ordering::Relaxed);
        format!("{}.start.{n}", self.rpc.instance())
    }

    /// Starts the claims' attempts for `worker_id` with one batch of `StartTask` commands,
    /// each naming this process as the one the attempt goes `via`. A claim that was asked
    /// before without an answer is asked again with the same command (id, worker and all),
    /// so the engine applies its start once whichever copy it sees first.
    ///
    /// Stale and malformed claims are settled here; unanswered ones are given back to
    /// `feed`. An `Err` means the append failed: every claim is given back.
    pub async fn start(
        &self,
        feed: &TaskFeed,
        worker_id: &str,
        claims: Vec<Claim>,
    ) -> Result<Started, LogError> {
        self.start_replacing(feed, worker_id, claims, |_| None)
            .await
    }

    /// [`Starter::start`], where `gone(partition)` names the process that held the claim's
    /// partition before and is gone: an attempt it started and may never have handed on is
    /// taken over (`StartTask.replaces`) rather than refused as already running.
    pub async fn start_replacing(
        &self,
        feed: &TaskFeed,
        worker_id: &str,
        claims: Vec<Claim>,
        gone: impl Fn(u32) -> Option<String>,
    ) -> Result<Started, LogError> {
        let mut started = Started::default();
        let mut sent = Vec::with_capacity(claims.len());
        let mut requests = Vec::with_capacity(claims.len());
        for mut claim in claims {
            let pending = claim.pending.get_or_insert_with(|| PendingStart {
                id: self.next_id(),
                worker_id: worker_id.to_owned(),
                replaces: gone(claim.partition),
            });
            let command = Command::StartTask {
                task_id: claim.dispatch.task_id.clone(),
                attempt: claim.dispatch.attempt,
                worker_id: pending.worker_id.clone(),
                via: Some(self.rpc.instance().to_owned()),
                replaces: pending.replaces.clone(),
            };
            let reply_to = Some(self.rpc.instance().to_owned());
            match command_record(
                &self.commands_topic,
                CommandId(pending.id.clone()),
                reply_to,
                command,
            ) {
                Some(record) => {
                    requests.push((pending.id.clone(), record));
                    sent.push(claim);
                }
                None => {
                    tracing::warn!(task_id = %claim.dispatch.task_id, "skipping a task record whose task id names no run");
                    feed.settle(&claim);
                    started.malformed += 1;
                }
            }
        }
        if sent.is_empty() {
            return Ok(started);
        }
        let answers = match self.rpc.request(requests, self.reply_timeout).await {
            Ok(answers) => answers,
            Err(e) => {
                feed.requeue(sent);
                return Err(e);
            }
        };
        let mut unanswered = Vec::new();
        for (mut claim, answer) in sent.into_iter().zip(answers) {
            match answer {
                Ok(Outcome::Accepted { .. }) => {
                    claim.pending = None;
                    started.accepted.push(claim);
                }
                Ok(Outcome::Rejected { rejection }) => {
                    tracing::debug!(
                        task_id = %claim.dispatch.task_id,
                        attempt = claim.dispatch.attempt,
                        %rejection,
                        "dropping a stale task attempt"
                    );
                    feed.settle(&claim);
                    started.stale += 1;
                }
                Err(_) => unanswered.push(claim),
            }
        }
        if !unanswered.is_empty() {
            started.unanswered = unanswered.len();
            tracing::warn!(
                topic = feed.topic(),
                count = unanswered.len(),
                timeout = ?self.reply_timeout,
                "no answer to StartTask (an engine failing over?); asking again with the same command"
            );
            feed.requeue(unanswered);
        }
        Ok(started)
    }
}
