//! The reports computed in memory from facts: what the embedded backend serves, and the
//! reference definition of every figure (the ClickHouse queries must agree with it, which
//! the conformance suite checks).

use super::facts::{AttemptFact, AttemptStatus, RunFact, kind_str};
use super::{
    Bottleneck, Bottlenecks, DefinitionPerformance, Percentiles, Performance, StepPerformance,
    Usage, Window, ratio,
};
use distorch_domain::event::TaskKind;
use distorch_domain::view::rfc3339;
use distorch_domain::workflow::Status;
use std::collections::BTreeMap;

/// Linear interpolation between closest ranks (numpy's default; ClickHouse's
/// `quantileExactInclusive`).
pub fn percentile(sorted: &[f64], level: f64) -> Option<f64> {
    let last = sorted.len().checked_sub(1)?;
    let rank = level.clamp(0.0, 1.0) * last as f64;
    let (lo, hi) = (rank.floor() as usize, rank.ceil() as usize);
    Some(sorted[lo] + (sorted[hi] - sorted[lo]) * (rank - lo as f64))
}

/// p50, p95 and p99 of `values` (in any order); every one `None` when `values` is empty.
pub fn percentiles(mut values: Vec<f64>) -> Percentiles {
    values.sort_by(f64::total_cmp);
    Percentiles {
        p50: percentile(&values, 0.5),
        p95: percentile(&values, 0.95),
        p99: percentile(&values, 0.99),
    }
}

/// Ended attempts that count as work done (a deferred attempt made no call).
fn counted(a: &AttemptFact, window: Window) -> bool {
    a.status.is_ended()
        && a.status != AttemptStatus::Deferred
        && a.finished_at_ms.is_some_and(|t| window.contains(t))
}

type StepKey = (String, String, &'static str);

fn step_key(a: &AttemptFact) -> StepKey {
    (a.definition.clone(), a.step_id.clone(), kind_str(a.kind))
}

/// `runs` and `attempts` may hold facts outside the window; only those inside count.
pub fn performance(window: Window, runs: &[RunFact], attempts: &[AttemptFact]) -> Performance {
    #[derive(Default)]
    struct Def {
        runs: u64,
        by_status: BTreeMap<&'static str, u64>,
        end_to_end: Vec<f64>,
        attempts: u64,
        retries: u64,
    }
    #[derive(Default)]
    struct Step {
        attempts: u64,
        completed: u64,
        failed: u64,
        retries: u64,
        run: Vec<f64>,
        end_to_end: Vec<f64>,
    }
    let mut defs: BTreeMap<String, Def> = BTreeMap::new();
    let mut steps: BTreeMap<StepKey, Step> = BTreeMap::new();
    for r in runs {
        let Some(end) = r.finished_at_ms.filter(|t| window.contains(*t)) else {
            continue;
        };
        let d = defs.entry(r.definition.clone()).or_default();
        d.runs += 1;
        *d.by_status.entry(r.status.as_str()).or_default() += 1;
        d.end_to_end.push((end - r.started_at_ms) as f64);
    }
    for a in attempts.iter().filter(|a| counted(a, window)) {
        let d = defs.entry(a.definition.clone()).or_default();
        d.attempts += 1;
        d.retries += u64::from(a.retried);
        let s = steps.entry(step_key(a)).or_default();
        s.attempts += 1;
        s.completed += u64::from(a.status == AttemptStatus::Completed);
        s.failed += u64::from(a.status == AttemptStatus::Failed);
        s.retries += u64::from(a.retried);
        s.run.extend(a.run_ms().map(|ms| ms as f64));
        s.end_to_end.extend(a.end_to_end_ms().map(|ms| ms as f64));
    }
    let seconds = window.seconds();
    Performance {
        from: rfc3339(window.from_ms),
        to: rfc3339(window.to_ms),
        definitions: defs
            .into_iter()
            .map(|(definition, d)| {
                let n = |s: Status| d.by_status.get(s.as_str()).copied().unwrap_or(0);
                let (failed, compensated) = (n(Status::Failed), n(Status::Compensated));
                DefinitionPerformance {
                    definition,
                    runs: d.runs,
                    completed: n(Status::Completed),
                    failed,
                    compensated,
                    cancelled: n(Status::Cancelled),
                    failure_rate: ratio(failed + compensated, d.runs),
                    throughput_per_s: d.runs as f64 / seconds,
                    end_to_end_ms: percentiles(d.end_to_end),
                    attempts: d.attempts,
                    retries: d.retries,
                    retry_rate: ratio(d.retries, d.attempts),
                }
            })
            .collect(),
        steps: steps
            .into_iter()
            .map(|((definition, step_id, kind), s)| StepPerformance {
                definition,
                step_id,
                kind: kind.to_owned(),
                attempts: s.attempts,
                completed: s.completed,
                failed: s.failed,
                failure_rate: ratio(s.failed, s.attempts),
                retries: s.retries,
                retry_rate: ratio(s.retries, s.attempts),
                throughput_per_s: s.completed as f64 / seconds,
                run_ms: percentiles(s.run),
                end_to_end_ms: percentiles(s.end_to_end),
            })
            .collect(),
    }
}

/// The disjoint parts of one attempt's time: queue wait, run, backoff, human wait, breaker
/// wait. A human task's whole time is human wait.
pub fn time_parts(a: &AttemptFact) -> [i64; 5] {
    let (queue, run, human) = match a.kind {
        TaskKind::Human => (0, 0, a.human_wait_ms().unwrap_or(0)),
        _ => (a.queue_wait_ms().unwrap_or(0), a.run_ms().unwrap_or(0), 0),
    };
    [queue, run, a.backoff_ms, human, a.breaker_wait_ms]
}

/// Every attempt that ended in the window counts, deferred ones included (their wait is
/// the breaker's).
pub fn bottlenecks(window: Window, attempts: &[AttemptFact]) -> Bottlenecks {
    #[derive(Default)]
    struct Acc {
        parts: [i64; 5],
        attempts: u64,
        retries: u64,
    }
    let mut steps: BTreeMap<StepKey, Acc> = BTreeMap::new();
    for a in attempts {
        let ended = a.status.is_ended() && a.finished_at_ms.is_some_and(|t| window.contains(t));
        if !ended {
            continue;
        }
        let acc = steps.entry(step_key(a)).or_default();
        for (sum, part) in acc.parts.iter_mut().zip(time_parts(a)) {
            *sum += part;
        }
        acc.attempts += u64::from(a.status != AttemptStatus::Deferred);
        acc.retries += u64::from(a.retried);
    }
    let total_ms: i64 = steps.values().map(|s| s.parts.iter().sum::<i64>()).sum();
    let mut rows: Vec<Bottleneck> = steps
        .into_iter()
        .map(|((definition, step_id, kind), s)| {
            let [
                queue_wait_ms,
                run_ms,
                backoff_ms,
                human_wait_ms,
                breaker_wait_ms,
            ] = s.parts;
            let step_total = s.parts.iter().sum::<i64>();
            Bottleneck {
                definition,
                step_id,
                kind: kind.to_owned(),
                share: share(step_total, total_ms),
                total_ms: step_total,
                queue_wait_ms,
                run_ms,
                backoff_ms,
                human_wait_ms,
                breaker_wait_ms,
                attempts: s.attempts,
                retries: s.retries,
            }
        })
        .collect();
    sort_bottlenecks(&mut rows);
    Bottlenecks {
        from: rfc3339(window.from_ms),
        to: rfc3339(window.to_ms),
        total_ms,
        steps: rows,
    }
}

pub(crate) fn share(part: i64, whole: i64) -> f64 {
    if whole <= 0 {
        0.0
    } else {
        part as f64 / whole as f64
    }
}

/// Largest total first; ties by definition, step id, kind.
pub(crate) fn sort_bottlenecks(rows: &mut [Bottleneck]) {
    rows.sort_by(|a, b| {
        b.total_ms.cmp(&a.total_ms).then_with(|| {
            (&a.definition, &a.step_id, &a.kind).cmp(&(&b.definition, &b.step_id, &b.kind))
        })
    });
}

/// Resource use per definition, step, task type, queue and tenant of the attempts (deferred
/// ones excluded) that ended in the window.
pub fn usage(window: Window, attempts: &[AttemptFact]) -> Vec<Usage> {
    let mut groups: BTreeMap<(String, String, String, String, String), Usage> = BTreeMap::new();
    for a in attempts.iter().filter(|a| counted(a, window)) {
        let key = (
            a.definition.clone(),
            a.step_id.clone(),
            a.task.clone(),
            a.queue.clone(),
            a.tenant.clone(),
        );
        let u = groups.entry(key).or_insert_with(|| Usage {
            definition: a.definition.clone(),
            step_id: a.step_id.clone(),
            task: a.task.clone(),
            queue: a.queue.clone(),
            tenant: a.tenant.clone(),
            attempts: 0,
            cpu_ms: 0.0,
            byte_ms: 0.0,
        });
        u.attempts += 1;
        u.cpu_ms += a.cpu_ms.unwrap_or(0.0);
        if let (Some(bytes), Some(ms)) = (a.peak_memory_bytes, a.run_ms()) {
            u.byte_ms += bytes as f64 * ms as f64;
        }
    }
    groups.into_values().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_interpolate_between_ranks() {
        let p = percentiles(vec![400.0, 100.0, 300.0, 200.0]);
        assert_eq!(p.p50, Some(250.0));
        assert!((p.p95.unwrap() - 385.0).abs() < 1e-9);
        assert!((p.p99.unwrap() - 397.0).abs() < 1e-9);
        assert_eq!(percentiles(vec![7.0]).p99, Some(7.0));
        assert_eq!(percentiles(vec![]), Percentiles::default());
    }
}
