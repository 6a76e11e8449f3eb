/**
 * Per-attempt resource usage, from process-wide counters.
 *
 * Node cannot attribute CPU time or memory to one async task: every handler shares one
 * event loop, one heap and the libuv thread pool. So, like the Rust SDK, each attempt
 * samples the whole process when its handler starts and when it settles:
 *
 * - **CPU** (`cpu_ms`): the change in `process.cpuUsage()` (user + system time of every
 *   thread of the process: the JS thread, libuv's pool, the GC and compiler threads) across
 *   the handler call, with microsecond resolution.
 * - **Peak memory** (`peak_memory_bytes`): if the process high-water mark
 *   (`process.resourceUsage().maxRSS`, i.e. `getrusage`'s `ru_maxrss`) rose during the
 *   attempt, the process reached a new peak while it ran and that peak is reported.
 *   Otherwise the largest resident set size (`process.memoryUsage.rss()`) seen at the start,
 *   at each automatic heartbeat and at the end is reported: a lower bound of the true peak.
 *
 * With several attempts in flight each one's figures include the others' (and the SDK's
 * own work). They are exact only with `concurrency: 1`; otherwise they indicate load, not
 * cost.
 */

import type { Metrics } from "./types.js";

interface Sample {
  cpu: NodeJS.CpuUsage;
  rssBytes: number;
  hwmBytes: number;
}

function take(): Sample {
  return {
    cpu: process.cpuUsage(),
    rssBytes: process.memoryUsage.rss(),
    // `maxRSS` is in kilobytes.
    hwmBytes: process.resourceUsage().maxRSS * 1024,
  };
}

/** Tracks one attempt from handler start to handler end. */
export class AttemptUsage {
  private readonly start: Sample;
  private maxRssBytes: number;

  private constructor() {
    this.start = take();
    this.maxRssBytes = this.start.rssBytes;
  }

  /** Samples the process as the handler starts. */
  static begin(): AttemptUsage {
    return new AttemptUsage();
  }

  /** Records the current RSS; called at heartbeats so long attempts get a better peak. */
  observe(): void {
    this.maxRssBytes = Math.max(this.maxRssBytes, process.memoryUsage.rss());
  }

  /** The metrics to report for the attempt, sampled now. */
  finish(): Metrics {
    return usage(this.start, take(), this.maxRssBytes);
  }
}

/** Combines the samples around an attempt into its metrics (see the module docs). */
export function usage(start: Sample, end: Sample, maxRssSeen: number): Metrics {
  const micros = end.cpu.user - start.cpu.user + (end.cpu.system - start.cpu.system);
  const peak =
    end.hwmBytes > start.hwmBytes ? end.hwmBytes : Math.max(maxRssSeen, start.rssBytes, end.rssBytes);
  return {
    cpu_ms: Math.max(0, Math.round(micros) / 1000),
    peak_memory_bytes: Math.round(peak),
  };
}
