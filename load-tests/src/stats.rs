//! Turning per-run observations into the one-line summary.

use serde::Serialize;
use std::time::Duration;

/// The JSON line `distorch-load` prints. Field names are a contract with benchmark scripts
/// and docs/benchmarks.md: add fields, never rename them.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Summary {
    pub runs: usize,
    pub concurrency: usize,
    pub steps_per_run: usize,
    /// Completed runs per second of wall time (first start sent to last run settled).
    pub workflows_per_s: f64,
    /// `workflows_per_s * steps_per_run`: task round trips the server sustained.
    pub steps_per_s: f64,
    /// Latency of completed runs only; `null` when none completed.
    pub p50_ms: Option<f64>,
    pub p99_ms: Option<f64>,
    /// The slowest completed run: a stall that p99 hides shows here (and in the wall time).
    pub max_ms: Option<f64>,
    /// Runs that did not reach `completed` (other terminal status, error or timeout).
    pub failed: usize,
    /// With `--count-records`: records appended per completed step, by topic and `total`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub records_per_step: Option<std::collections::BTreeMap<String, f64>>,
}

impl Summary {
    /// `latencies` holds one entry per completed run.
    pub fn new(
        runs: usize,
        concurrency: usize,
        steps_per_run: usize,
        wall: Duration,
        mut latencies: Vec<Duration>,
    ) -> Self {
        latencies.sort_unstable();
        let completed = latencies.len();
        let secs = wall.as_secs_f64();
        let workflows_per_s = if secs > 0.0 {
            completed as f64 / secs
        } else {
            0.0
        };
        let ms = |d: Duration| round2(d.as_secs_f64() * 1000.0);
        Summary {
            runs,
            concurrency,
            steps_per_run,
            workflows_per_s: round2(workflows_per_s),
            steps_per_s: round2(workflows_per_s * steps_per_run as f64),
            p50_ms: percentile(&latencies, 50.0).map(ms),
            p99_ms: percentile(&latencies, 99.0).map(ms),
            max_ms: latencies.last().copied().map(ms),
            failed: runs - completed,
            records_per_step: None,
        }
    }
}

/// Nearest-rank percentile of an ascending slice: the smallest value with at least `p`% of
/// the values at or below it. Never interpolates, so it is always an observed latency.
pub fn percentile(sorted: &[Duration], p: f64) -> Option<Duration> {
    if sorted.is_empty() {
        return None;
    }
    let rank = (p / 100.0 * sorted.len() as f64).ceil() as usize;
    Some(sorted[rank.clamp(1, sorted.len()) - 1])
}

/// Two decimals: more digits than that are noise in a load test and clutter the output.
fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(v: &[u64]) -> Vec<Duration> {
        v.iter().map(|&m| Duration::from_millis(m)).collect()
    }

    #[test]
    fn nearest_rank_percentiles() {
        let v = ms(&(1..=100).collect::<Vec<_>>());
        assert_eq!(percentile(&v, 50.0), Some(Duration::from_millis(50)));
        assert_eq!(percentile(&v, 99.0), Some(Duration::from_millis(99)));
        assert_eq!(percentile(&v, 100.0), Some(Duration::from_millis(100)));
        assert_eq!(percentile(&v, 0.0), Some(Duration::from_millis(1)));
        let one = ms(&[7]);
        assert_eq!(percentile(&one, 99.0), Some(Duration::from_millis(7)));
        assert_eq!(percentile(&[], 50.0), None);
    }

    #[test]
    fn summary_counts_only_completed_runs_in_throughput() {
        let s = Summary::new(4, 2, 10, Duration::from_secs(2), ms(&[30, 10, 20]));
        assert_eq!(s.failed, 1);
        assert_eq!(s.workflows_per_s, 1.5);
        assert_eq!(s.steps_per_s, 15.0);
        assert_eq!(s.p50_ms, Some(20.0));
        assert_eq!(s.p99_ms, Some(30.0));
        assert_eq!(s.max_ms, Some(30.0));
    }

    #[test]
    fn summary_serialises_to_the_documented_fields() {
        let s = Summary::new(1, 1, 3, Duration::from_secs(1), vec![]);
        let v = serde_json::to_value(&s).unwrap();
        let mut keys: Vec<_> = v.as_object().unwrap().keys().cloned().collect();
        keys.sort();
        assert_eq!(
            keys,
            [
                "concurrency",
                "failed",
                "max_ms",
                "p50_ms",
                "p99_ms",
                "runs",
                "steps_per_run",
                "steps_per_s",
                "workflows_per_s"
            ]
        );
        assert!(v["p50_ms"].is_null());
    }
}
