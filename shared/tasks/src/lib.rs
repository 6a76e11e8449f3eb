#![warn(missing_docs)]
//! Taking tasks from a DisTorch queue on the log: the one consumer of `<prefix>.tasks.<queue>`,
//! shared by the API's poll endpoint and by workers that read the log themselves.
//!
//! The protocol (decision records 0004 and 0036 in the repository's `docs/adr`):
//! 1. [`TaskFeed`] is one member of a consumer group on a queue's topic. It keeps decoded
//!    dispatch records ([`Claim`]s) in a small buffer and hands them to waiting takers in
//!    arrival order.
//! 2. [`Starter::start`] asks the engine to start the claimed attempts with one batch of
//!    `StartTask` commands and sorts the answers: accepted attempts go to the caller, stale
//!    ones (superseded, cancelled, already running or done) are settled and dropped, and
//!    unanswered ones go back to the front of the buffer *with their command id*, so the next
//!    take asks again with the same id and the engine applies the start once. An engine that
//!    dies or loses its partitions before answering therefore delays a start by one failover,
//!    never by the attempt's timeout.
//! 3. The caller settles each accepted claim ([`TaskFeed::settle`]) once the attempt is in
//!    safe hands (the API: handed to the polling worker; a log worker: its result durable).
//!    Offsets are committed per partition up to the lowest unsettled record, so a process that
//!    dies leaves its unsettled records to the group's next owner.

mod feed;
mod start;

pub use feed::{Claim, FeedConfig, Settle, Share, TaskFeed};
pub use start::{Started, Starter};

use distorch_domain::command::{Command, CommandEnvelope, Outcome, Reply};
use distorch_domain::ids::CommandId;
use distorch_eventlog::NewRecord;

/// A reply record's command id and outcome: the decoder of every
/// [`Rpc`](distorch_eventlog::rpc::Rpc) that speaks to the engine.
pub fn decode_reply(payload: &[u8]) -> Result<(String, Outcome), String> {
    let reply: Reply = serde_json::from_slice(payload).map_err(|e| e.to_string())?;
    Ok((reply.command_id.0, reply.outcome))
}

/// The record of `command` on `commands_topic`, keyed by its run so it lands on the
/// partition of the engine that owns the run. `None` when the command names no run (a task
/// id that is not `<run>/<n>`): no engine could apply it.
pub fn command_record(
    commands_topic: &str,
    id: CommandId,
    reply_to: Option<String>,
    command: Command,
) -> Option<NewRecord> {
    let key = command.key()?;
    let envelope = CommandEnvelope {
        id,
        reply_to,
        command,
    };
    let payload = serde_json::to_vec(&envelope).expect("commands serialise to JSON");
    Some(NewRecord::new(commands_topic, key, payload))
}
