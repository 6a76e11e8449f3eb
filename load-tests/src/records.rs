//! `--count-records`: how many records the deployment appends per step, by topic, read as
//! the growth of every DisTorch topic's end offsets on the broker across the measurement.
//! Everything appended meanwhile counts (snapshots, replica heartbeats...): that is the
//! broker work a step costs.

use distorch_eventlog::EventLog;
use distorch_eventlog::kafka::KafkaLog;
use std::collections::BTreeMap;

/// The topics under a prefix that DisTorch appends to while runs go (the load's queue
/// included); a topic that does not exist counts as empty.
fn topics(prefix: &str, queue: &str) -> Vec<String> {
    [
        "commands",
        "events",
        "replies",
        "snapshots",
        "fences",
        "definitions",
        "dlq",
        "breakers",
        "api-members",
    ]
    .into_iter()
    .map(|t| format!("{prefix}.{t}"))
    .chain([format!("{prefix}.tasks.{queue}")])
    .collect()
}

/// End offsets summed per topic.
pub struct Counts(BTreeMap<String, u64>);

/// Reads the end offsets of every DisTorch topic under `prefix`.
pub async fn count(log: &KafkaLog, prefix: &str, queue: &str) -> anyhow::Result<Counts> {
    let mut counts = BTreeMap::new();
    for topic in topics(prefix, queue) {
        let Ok(partitions) = log.partitions(&topic).await else {
            continue;
        };
        let mut total = 0;
        for p in 0..partitions {
            total += log.end_offset(&topic, p).await?;
        }
        let short = topic.strip_prefix(&format!("{prefix}.")).unwrap_or(&topic);
        counts.insert(short.to_owned(), total);
    }
    Ok(Counts(counts))
}

/// Records appended between `before` and `after` per step, by topic, and their `total`.
pub fn per_step(before: &Counts, after: &Counts, steps: usize) -> BTreeMap<String, f64> {
    let steps = steps.max(1) as f64;
    let mut out: BTreeMap<String, f64> = after
        .0
        .iter()
        .map(|(topic, end)| {
            let grew = end.saturating_sub(before.0.get(topic).copied().unwrap_or(0));
            (topic.clone(), grew as f64 / steps)
        })
        .filter(|(_, n)| *n > 0.0)
        .collect();
    let total = out.values().sum::<f64>();
    out.insert("total".into(), total);
    for n in out.values_mut() {
        *n = (*n * 100.0).round() / 100.0;
    }
    out
}
