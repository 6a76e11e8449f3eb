/** Exponential backoff with "equal jitter", as the Rust SDK uses between retries. */

/** An exponential schedule: `initialMs * 2^n`, capped at `maxMs`, then jittered. */
export interface Backoff {
  initialMs: number;
  maxMs: number;
}

/**
 * Retries of reports and polls while a server restarts: quick first retries, then no more
 * than one request every 5 s per in-flight call, so a recovering server is not swamped by
 * every worker at once.
 */
export const RETRY: Backoff = { initialMs: 100, maxMs: 5_000 };

/**
 * The wait before retry number `retry` (0-based), given a random `unit` in `[0, 1)`: spread
 * uniformly over the upper half of the exponential value, so many workers failing together
 * spread out, yet none retries immediately.
 */
export function backoffDelay(b: Backoff, retry: number, unit: number = Math.random()): number {
  const exp = Math.min(b.initialMs * 2 ** Math.min(Math.max(retry, 0), 31), b.maxMs);
  const half = exp / 2;
  const u = Math.min(Math.max(unit, 0), 1);
  return Math.round(half + half * u);
}

/** Resolves after `ms`, or as soon as `signal` aborts (never rejects). */
export function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    if (signal?.aborted) return resolve();
    const done = () => {
      clearTimeout(timer);
      signal?.removeEventListener("abort", done);
      resolve();
    };
    const timer = setTimeout(done, ms);
    signal?.addEventListener("abort", done, { once: true });
  });
}
