//! Per-attempt resource usage, from process-wide figures in `/proc`.
//!
//! There is no portable, dependency-free way to attribute CPU or memory to one tokio task:
//! a task hops between runtime threads and shares the heap with everything else. So each
//! attempt samples the whole process before and after its handler runs:
//!
//! - **CPU**: `utime + stime` of `/proc/self/stat` (all threads), in clock ticks. The tick
//!   rate is assumed to be 100 Hz (`getconf CLK_TCK` on every mainstream Linux
//!   architecture; reading it needs `sysconf` through libc, which this crate avoids). The
//!   resolution is therefore 10 ms: a handler shorter than that reports 0 or 10.
//! - **Peak memory**: if the process high-water mark (`VmHWM`) rose during the attempt, the
//!   process reached a new peak while it ran and that peak is reported exactly. Otherwise
//!   the largest `VmRSS` seen at the start, at each heartbeat and at the end is reported,
//!   a lower bound of the true peak.
//!
//! Concurrent handlers share these figures: with N attempts in flight each one's `cpu_ms`
//! includes the others' CPU (and the SDK's own), and `peak_memory_bytes` is the process's.
//! They are exact for a worker with `concurrency(1)` and otherwise indicate load, not cost.
//! On other operating systems no metrics are sent.
//!
//! Reading both files costs about 70 µs, which at thousands of tasks per second would
//! cost a sizeable share of a core. So a sample is shared by every attempt that asks within
//! [`SAMPLE_TTL`] (one clock tick, the CPU figure's resolution anyway), bounding the cost to
//! about 100 reads per second whatever the task rate. The reads are plain blocking
//! `std::fs` calls: procfs files are generated in memory, which is cheaper than a hop to a
//! blocking thread.

use crate::client::Metrics;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Clock ticks per second assumed for `/proc/self/stat` (see the module docs).
const CLOCK_TICKS_PER_SEC: f64 = 100.0;

/// How long a sample is reused (see the module docs).
const SAMPLE_TTL: Duration = Duration::from_millis(10);

/// One reading of the process's counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Sample {
    /// User + system CPU time of all threads, in clock ticks.
    pub cpu_ticks: u64,
    pub rss_bytes: u64,
    pub hwm_bytes: u64,
}

impl Sample {
    /// The process's counters as of at most [`SAMPLE_TTL`] ago; `None` where `/proc` is
    /// unavailable.
    pub fn take() -> Option<Sample> {
        static LAST: Mutex<Option<(Instant, Sample)>> = Mutex::new(None);
        if !cfg!(target_os = "linux") {
            return None;
        }
        let now = Instant::now();
        let cached = *LAST.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((at, sample)) = cached
            && now.duration_since(at) < SAMPLE_TTL
        {
            return Some(sample);
        }
        // Read outside the lock: two attempts may both refresh, which is cheaper than
        // making every attempt wait on one reader.
        let fresh = Self::read()?;
        *LAST.lock().unwrap_or_else(|e| e.into_inner()) = Some((now, fresh));
        Some(fresh)
    }

    fn read() -> Option<Sample> {
        let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
        let status = std::fs::read_to_string("/proc/self/status").ok()?;
        Some(Sample {
            cpu_ticks: parse_stat_cpu_ticks(&stat)?,
            rss_bytes: parse_status_bytes(&status, "VmRSS")?,
            hwm_bytes: parse_status_bytes(&status, "VmHWM")?,
        })
    }
}

/// Tracks one attempt from handler start to handler end.
#[derive(Debug)]
pub(crate) struct AttemptUsage {
    start: Option<Sample>,
    max_rss_bytes: u64,
}

impl AttemptUsage {
    pub fn begin() -> Self {
        let start = Sample::take();
        Self {
            start,
            max_rss_bytes: start.map_or(0, |s| s.rss_bytes),
        }
    }

    /// Records the current RSS; called at heartbeats so long attempts get a better peak.
    pub fn observe(&mut self) {
        if self.start.is_some()
            && let Some(s) = Sample::take()
        {
            self.max_rss_bytes = self.max_rss_bytes.max(s.rss_bytes);
        }
    }

    /// The metrics to report, or `None` when the process could not be sampled.
    pub fn finish(self) -> Option<Metrics> {
        let start = self.start?;
        let end = Sample::take()?;
        Some(usage(start, end, self.max_rss_bytes))
    }
}

/// Combines the samples around an attempt into its metrics (see the module docs).
fn usage(start: Sample, end: Sample, max_rss_seen: u64) -> Metrics {
    let ticks = end.cpu_ticks.saturating_sub(start.cpu_ticks);
    let peak = if end.hwm_bytes > start.hwm_bytes {
        end.hwm_bytes
    } else {
        max_rss_seen.max(start.rss_bytes).max(end.rss_bytes)
    };
    Metrics {
        cpu_ms: Some(ticks as f64 * 1000.0 / CLOCK_TICKS_PER_SEC),
        peak_memory_bytes: Some(peak),
    }
}

/// `utime + stime` (fields 14 and 15) of a `/proc/<pid>/stat` line.
///
/// Fields are counted after the last `)`: the command name (field 2) is parenthesised and
/// may itself contain spaces and parentheses.
fn parse_stat_cpu_ticks(stat: &str) -> Option<u64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    // `rest` starts at field 3 (state), so utime and stime are its 12th and 13th.
    let mut fields = rest.split_ascii_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime + stime)
}

/// A `Key:   1234 kB` line of `/proc/<pid>/status`, in bytes.
fn parse_status_bytes(status: &str, key: &str) -> Option<u64> {
    status.lines().find_map(|line| {
        let value = line.strip_prefix(key)?.strip_prefix(':')?;
        let kb = value.trim().strip_suffix("kB")?.trim();
        kb.parse::<u64>().ok()?.checked_mul(1024)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const STAT: &str = "11386 (my (odd) worker) R 11383 11383 8385 0 -1 4194304 100 0 0 0 \
        250 42 0 0 20 0 1 0 96115 3133440 381 18446744073709551615";

    const STATUS: &str = "Name:\tworker\nVmPeak:\t  9000 kB\nVmHWM:\t    1920 kB\n\
        VmRSS:\t    1536 kB\nRssAnon:\t  100 kB\n";

    #[test]
    fn stat_sums_utime_and_stime_after_a_tricky_command_name() {
        assert_eq!(parse_stat_cpu_ticks(STAT), Some(292));
        assert_eq!(parse_stat_cpu_ticks("1 (x) R 1 2"), None);
        assert_eq!(parse_stat_cpu_ticks("garbage"), None);
    }

    #[test]
    fn status_values_are_converted_from_kib() {
        assert_eq!(parse_status_bytes(STATUS, "VmHWM"), Some(1920 * 1024));
        assert_eq!(parse_status_bytes(STATUS, "VmRSS"), Some(1536 * 1024));
        // `VmRSS` must not match a longer key sharing its prefix, nor a missing one.
        assert_eq!(parse_status_bytes("VmRSSx:\t1 kB\n", "VmRSS"), None);
        assert_eq!(parse_status_bytes(STATUS, "VmSwap"), None);
    }

    fn sample(cpu_ticks: u64, rss: u64, hwm: u64) -> Sample {
        Sample {
            cpu_ticks,
            rss_bytes: rss,
            hwm_bytes: hwm,
        }
    }

    #[test]
    fn cpu_is_the_tick_delta_at_100_hz() {
        let m = usage(sample(100, 10, 20), sample(103, 10, 20), 10);
        assert_eq!(m.cpu_ms, Some(30.0));
    }

    #[test]
    fn a_new_high_water_mark_during_the_attempt_is_its_peak() {
        let m = usage(sample(0, 10, 20), sample(0, 12, 50), 15);
        assert_eq!(m.peak_memory_bytes, Some(50));
    }

    #[test]
    fn otherwise_the_peak_is_the_largest_rss_seen() {
        let m = usage(sample(0, 10, 100), sample(0, 12, 100), 30);
        assert_eq!(m.peak_memory_bytes, Some(30));
        let m = usage(sample(0, 10, 100), sample(0, 12, 100), 0);
        assert_eq!(m.peak_memory_bytes, Some(12));
    }

    #[test]
    #[cfg(target_os = "linux")]
    fn the_live_process_can_be_sampled() {
        let s = Sample::take().expect("procfs on linux");
        assert!(s.rss_bytes > 0 && s.hwm_bytes >= s.rss_bytes);
    }
}
