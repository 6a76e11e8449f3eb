/** The poll / execute / report loop: {@link Worker}. */

import { hostname } from "node:os";
import { RETRY, backoffDelay, sleep } from "./backoff.js";
import { Client, MAX_WAIT_MS } from "./client.js";
import { Lease, TaskContext } from "./context.js";
import { ApiError, ConfigError, DistorchError, TaskError, describe } from "./errors.js";
import { Log, consoleLogger, isLogLevel, type LogLevel, type Logger } from "./log.js";
import { AttemptUsage } from "./telemetry.js";
import type { FailureReport, Metrics, PolledTask } from "./types.js";

/** Heartbeat cadence when neither the options nor the task say otherwise. */
export const DEFAULT_HEARTBEAT_INTERVAL_MS = 10_000;
/** Floor for intervals derived from tiny `heartbeat_timeout` values. */
export const MIN_HEARTBEAT_INTERVAL_MS = 10;
/** Longest failure message sent; longer ones are cut (the server caps bodies at 1 MiB). */
const MAX_MESSAGE_CHARS = 8_192;

/**
 * A task handler: receives the attempt's context and its input, returns the task's output
 * (any JSON value; `undefined` is sent as `null`) or throws. Throw a {@link TaskError} to
 * choose the failure's type and whether it is retryable.
 */
export type TaskHandler<I = any, O = unknown, C = any> = (ctx: TaskContext<I, C>, input: I) => O | Promise<O>;

/** Options of a {@link Worker}. */
export interface WorkerOptions {
  /** The server, e.g. `http://127.0.0.1:8000`. Required unless `client` is given. */
  url?: string;
  /** An existing {@link Client} to use instead of one built from `url`. */
  client?: Client;
  /** The queue to take tasks from (1 to 200 of `A-Za-z0-9-_.`). */
  queue: string;
  /** Most attempts running at once; polls ask only for free slots. Default 10. */
  concurrency?: number;
  /** Identifies this worker to the server. Default `<hostname>-<pid>-<n>`. */
  workerId?: string;
  /** Most tasks one poll asks for (1 to 100). Default 10. */
  maxTasksPerPoll?: number;
  /** How long one long-poll may wait for work, in ms (0 to 60 000). Default 20 000. */
  pollWaitMs?: number;
  /** Concurrent poll loops. Default 1. */
  pollers?: number;
  /**
   * Fixed interval of automatic heartbeats, in ms. Default: a third of the task's
   * `heartbeat_timeout` (so two can be lost before the lease lapses), else 10 s.
   */
  heartbeatIntervalMs?: number;
  /** Whether reports carry `metrics` (`cpu_ms`, `peak_memory_bytes`). Default true. */
  metrics?: boolean;
  /** Where log records go. Default {@link consoleLogger} (JSON lines). */
  logger?: Logger;
  /** Least severe level logged. Default `info`. */
  logLevel?: LogLevel;
  /**
   * Whether {@link Worker.run} stops (and drains) on SIGINT and SIGTERM. A second signal
   * while draining exits the process at once (code 130 / 143). Default true.
   */
  handleSignals?: boolean;
}

type Outcome = { kind: "completed"; output: unknown } | { kind: "failed"; error: FailureReport };

/**
 * A worker for one queue: takes tasks in batched long-polls, runs their handlers with a
 * concurrency bound, heartbeats while they run, and reports their results reliably.
 *
 * ```ts
 * const worker = new Worker({ url: "http://127.0.0.1:8000", queue: "payments", concurrency: 8 });
 * worker.task("charge-card", async (ctx, input) => {
 *   if (input.amount > 1000) throw new TaskError("limit_exceeded", "too large", { retryable: false });
 *   return { charged: input.amount };
 * });
 * await worker.run(); // until SIGINT/SIGTERM or worker.stop(), then drains
 * ```
 */
export class Worker {
  /** The id this worker polls with. */
  readonly workerId: string;
  /** The queue it takes tasks from. */
  readonly queue: string;
  /** The client it talks to the server through. */
  readonly client: Client;

  private readonly concurrency: number;
  private readonly maxTasksPerPoll: number;
  private readonly pollWaitMs: number;
  private readonly pollers: number;
  private readonly heartbeatIntervalMs: number | undefined;
  private readonly metrics: boolean;
  private readonly handleSignals: boolean;
  private readonly log: Log;
  private readonly handlers = new Map<string, TaskHandler>();

  private readonly stopController = new AbortController();
  private readonly inFlight = new Set<Promise<void>>();
  private runPromise: Promise<void> | null = null;

  constructor(options: WorkerOptions) {
    if (!options || typeof options !== "object") throw new ConfigError("options are required");
    const queue = options.queue;
    if (typeof queue !== "string" || !/^[A-Za-z0-9._-]{1,200}$/.test(queue)) {
      throw new ConfigError(`queue ${JSON.stringify(queue)} must be 1 to 200 characters of A-Z, a-z, 0-9, '-', '_' or '.'`);
    }
    const concurrency = options.concurrency ?? 10;
    const maxTasksPerPoll = options.maxTasksPerPoll ?? 10;
    const pollWaitMs = options.pollWaitMs ?? 20_000;
    const pollers = options.pollers ?? 1;
    if (!isCount(concurrency) || !isCount(pollers)) {
      throw new ConfigError("concurrency and pollers must be integers of at least 1");
    }
    if (!isCount(maxTasksPerPoll) || maxTasksPerPoll > 100) {
      throw new ConfigError("maxTasksPerPoll must be an integer from 1 to 100");
    }
    if (!Number.isInteger(pollWaitMs) || pollWaitMs < 0 || pollWaitMs > MAX_WAIT_MS) {
      throw new ConfigError(`pollWaitMs must be an integer from 0 to ${MAX_WAIT_MS}`);
    }
    if (options.heartbeatIntervalMs !== undefined && !(options.heartbeatIntervalMs > 0)) {
      throw new ConfigError("heartbeatIntervalMs must be positive");
    }
    const level = options.logLevel ?? "info";
    if (!isLogLevel(level)) throw new ConfigError(`logLevel ${JSON.stringify(level)} is not debug, info, warn or error`);
    if (options.workerId !== undefined && (typeof options.workerId !== "string" || options.workerId.trim() === "")) {
      throw new ConfigError("workerId must be a non-empty string");
    }
    if (options.client) {
      this.client = options.client;
    } else if (options.url) {
      this.client = new Client(options.url);
    } else {
      throw new ConfigError("give url (or client)");
    }
    this.queue = queue;
    this.workerId = options.workerId ?? defaultWorkerId();
    this.concurrency = concurrency;
    this.maxTasksPerPoll = maxTasksPerPoll;
    this.pollWaitMs = pollWaitMs;
    this.pollers = pollers;
    this.heartbeatIntervalMs = options.heartbeatIntervalMs;
    this.metrics = options.metrics ?? true;
    this.handleSignals = options.handleSignals ?? true;
    this.log = new Log(options.logger ?? consoleLogger, level, { queue, workerId: this.workerId });
  }

  /** Runs `handler` for tasks of type `name`. Registering a type twice keeps the last. */
  task<I = any, O = unknown, C = any>(name: string, handler: TaskHandler<I, O, C>): this {
    if (typeof name !== "string" || name === "") throw new ConfigError("task name must be a non-empty string");
    if (typeof handler !== "function") throw new ConfigError(`handler for "${name}" must be a function`);
    this.handlers.set(name, handler as TaskHandler);
    return this;
  }

  /** Attempts currently running or being reported. */
  get inFlightCount(): number {
    return this.inFlight.size;
  }

  /** Whether {@link Worker.stop} was called (or a signal received). */
  get stopping(): boolean {
    return this.stopController.signal.aborted;
  }

  /**
   * Polls and runs tasks until {@link Worker.stop} (or SIGINT/SIGTERM), then stops polling
   * and resolves once every in-flight attempt has finished and been reported (graceful
   * shutdown). A long-poll outstanding at shutdown is abandoned. A worker runs once.
   */
  run(): Promise<void> {
    if (this.runPromise) return Promise.reject(new ConfigError("this worker is already running or has run"));
    this.runPromise = this.loop();
    return this.runPromise;
  }

  /**
   * Stops polling; resolves once in-flight attempts have finished and been reported (at
   * once if the worker was never run). A handler may call it, but must not `await` it:
   * the drain waits for that very handler.
   */
  async stop(): Promise<void> {
    if (!this.stopping) this.stopController.abort();
    if (this.runPromise) await this.runPromise;
  }

  private async loop(): Promise<void> {
    const stop = this.stopController.signal;
    const onSignal = (sig: NodeJS.Signals) => {
      if (!this.stopping) {
        this.log.info("signal received; draining in-flight tasks", { signal: sig });
        this.stopController.abort();
      } else {
        this.log.warn("second signal while draining; exiting now", { signal: sig, inFlight: this.inFlight.size });
        process.exit(sig === "SIGINT" ? 130 : 143);
      }
    };
    if (this.handleSignals) {
      process.on("SIGINT", onSignal);
      process.on("SIGTERM", onSignal);
    }
    try {
      this.log.info("worker started", {
        handlers: [...this.handlers.keys()],
        concurrency: this.concurrency,
        maxTasksPerPoll: this.maxTasksPerPoll,
      });
      const slots = new Slots(this.concurrency);
      const pollers = Array.from({ length: this.pollers }, () => this.pollLoop(slots));
      await new Promise<void>((resolve) => {
        if (stop.aborted) resolve();
        else stop.addEventListener("abort", () => resolve(), { once: true });
      });
      this.log.info("worker shutting down; draining in-flight tasks", { inFlight: this.inFlight.size });
      await Promise.all(pollers);
      while (this.inFlight.size > 0) await Promise.allSettled([...this.inFlight]);
      this.log.info("worker stopped");
    } finally {
      if (this.handleSignals) {
        process.off("SIGINT", onSignal);
        process.off("SIGTERM", onSignal);
      }
    }
  }

  private async pollLoop(slots: Slots): Promise<void> {
    const stop = this.stopController.signal;
    let failures = 0;
    for (;;) {
      // Wait for one free slot, then take whatever else is free without waiting: asking for
      // slots we do not have would make the server lease tasks we cannot start.
      if (!(await slots.acquire(stop))) return;
      if (stop.aborted) {
        slots.release(1);
        return;
      }
      let wanted = 1 + slots.tryAcquireUpTo(this.maxTasksPerPoll - 1);
      let tasks: PolledTask[];
      try {
        tasks = await this.client.poll(this.queue, this.workerId, wanted, this.pollWaitMs, stop);
        failures = 0;
      } catch (e) {
        slots.release(wanted);
        if (stop.aborted) return; // the poll was abandoned by shutdown
        const delay = Math.max(backoffDelay(RETRY, failures), e instanceof ApiError ? (e.retryAfterMs ?? 0) : 0);
        failures++;
        if (e instanceof DistorchError && e.retryable) {
          this.log.warn("poll failed", { error: e, retryInMs: delay });
        } else {
          // Retrying will not fix a rejected poll, but stopping silently would be worse.
          this.log.error("poll rejected", { error: e, retryInMs: delay });
        }
        await sleep(delay, stop);
        continue;
      }
      if (tasks.length > 0) this.log.debug("polled", { asked: wanted, got: tasks.length });
      for (const task of tasks) {
        if (wanted > 0) {
          wanted--;
        } else {
          // The server sent more than asked for. Run it anyway (it is leased to us), but only
          // once a slot frees up, keeping the concurrency promise.
          this.log.warn("poll returned more tasks than requested", { taskId: task.task_id });
          await slots.acquire();
        }
        const p: Promise<void> = this.execute(task)
          .catch((e) => this.log.error("internal error running an attempt", { error: e, taskId: task.task_id }))
          .finally(() => {
            this.inFlight.delete(p);
            slots.release(1);
          });
        this.inFlight.add(p);
      }
      // Slots asked for but not filled go back to the pool.
      slots.release(wanted);
    }
  }

  /** Runs one attempt to its report. The caller holds its slot until this settles. */
  private async execute(task: PolledTask): Promise<void> {
    const log = this.log.child({
      taskId: task.task_id,
      workflowId: task.workflow_id,
      stepId: task.step_id,
      task: task.task,
      attempt: task.attempt,
    });
    const handler = this.handlers.get(task.task);
    if (!handler) {
      log.warn("no handler for task type; failing it");
      await this.report(log, task, {
        kind: "failed",
        error: {
          type: "unknown_task",
          message: `worker ${this.workerId} on queue ${this.queue} has no handler for task type \`${task.task}\``,
          retryable: false,
        },
      });
      return;
    }

    const interval = this.heartbeatIntervalMs ?? heartbeatIntervalFor(task.heartbeat_timeout_ms);
    const lease = new Lease(this.client, task.task_id, task.attempt, log);
    const ctx = new TaskContext(task, lease, log);
    const usage = this.metrics ? AttemptUsage.begin() : undefined;
    const started = performance.now();

    // Automatic heartbeats: one an interval after the last (the handler's own included).
    let finished = false;
    let timer: NodeJS.Timeout | undefined;
    const schedule = () => {
      if (finished || lease.cancelled) return;
      const wait = Math.max(0, lease.lastBeat + interval - performance.now());
      timer = setTimeout(tick, wait);
    };
    const tick = () => {
      if (finished || lease.cancelled) return;
      if (lease.lastBeat + interval > performance.now()) return schedule();
      usage?.observe();
      void lease.beat().then(schedule);
    };
    schedule();

    log.debug("attempt started", { heartbeatIntervalMs: interval, hasCheckpoint: ctx.checkpoint !== undefined });
    let outcome: Outcome;
    try {
      const output = await handler(ctx, ctx.input);
      outcome = { kind: "completed", output: output === undefined ? null : output };
    } catch (e) {
      outcome = { kind: "failed", error: this.failureOf(e, log, lease.cancelled) };
    } finally {
      finished = true;
      clearTimeout(timer);
    }
    const metrics = usage?.finish();
    // A heartbeat still in flight settles first, so the report never overtakes it and a
    // refusal it brings is seen before reporting.
    await lease.idle();
    if (lease.cancelled) {
      const reason = (lease.signal.reason as { reason?: string } | undefined)?.reason;
      log.info("attempt cancelled or superseded; result dropped, nothing reported", { reason });
      return;
    }
    log.debug("attempt finished", { outcome: outcome.kind, durationMs: Math.round(performance.now() - started) });
    await this.report(log, task, outcome, metrics);
  }

  private failureOf(e: unknown, log: Log, cancelled: boolean): FailureReport {
    if (e instanceof TaskError) {
      log.info("handler failed the task", { errorType: e.type, retryable: e.retryable, error: e.message, retryAfterMs: e.retryAfterMs });
      const failure: FailureReport = { type: e.type, message: clip(e.message), retryable: e.retryable };
      if (e.retryable && e.retryAfterMs !== undefined) failure.retryAfterMs = e.retryAfterMs;
      return failure;
    }
    if (!cancelled) {
      log.error("handler threw", { error: e, stack: e instanceof Error ? e.stack : undefined });
    }
    const message = e instanceof Error ? `${e.name}: ${e.message}` : `thrown: ${describe(e)}`;
    return { type: "panic", message: clip(message), retryable: true };
  }

  /**
   * Sends the outcome, retrying transport failures, 5xx, 408 and 429 with backoff so a
   * result survives a server restart. Stops on success, on 409 (superseded: dropped), on any
   * other 4xx (logged), and on a retryable failure once shutdown has begun: the attempt then
   * times out on the server and is retried there (the at-least-once fallback).
   */
  private async report(log: Log, task: PolledTask, outcome: Outcome, metrics?: Metrics): Promise<void> {
    const stop = this.stopController.signal;
    let retry = 0;
    for (;;) {
      try {
        if (outcome.kind === "completed") {
          await this.client.complete(task.task_id, task.attempt, outcome.output, metrics);
        } else {
          await this.client.fail(task.task_id, task.attempt, outcome.error, metrics);
        }
        log.debug("reported", { outcome: outcome.kind, metrics });
        return;
      } catch (e) {
        if (!(e instanceof DistorchError)) {
          // The output could not be encoded as JSON (a cycle, a BigInt): every attempt would
          // fail the same way.
          if (outcome.kind === "completed") {
            log.error("task output is not JSON-serialisable; failing the task", { error: e });
            outcome = { kind: "failed", error: { type: "invalid_output", message: clip(`output is not JSON-serialisable: ${describe(e)}`), retryable: false } };
            continue;
          }
          log.error("report could not be sent; result dropped", { error: e });
          return;
        }
        if (e instanceof ApiError && e.conflict) {
          log.info("report rejected: attempt superseded (409); result dropped", { outcome: outcome.kind, detail: e.detail });
          return;
        }
        if (e instanceof ApiError && e.status === 413 && outcome.kind === "completed") {
          log.error("task output is larger than the server accepts; failing the task", { error: e });
          outcome = { kind: "failed", error: { type: "output_too_large", message: clip(e.detail ?? e.message), retryable: false } };
          continue;
        }
        if (!e.retryable) {
          log.error("report rejected; result dropped", { error: e, outcome: outcome.kind });
          return;
        }
        if (stop.aborted) {
          log.warn("report failed during shutdown; the server will retry the task after its timeout", { error: e });
          return;
        }
        const delay = Math.max(backoffDelay(RETRY, retry), e instanceof ApiError ? (e.retryAfterMs ?? 0) : 0);
        retry++;
        log.warn("report failed; retrying", { error: e, retryInMs: delay, retry });
        // Shutdown cuts the wait short for one last try rather than abandoning at once.
        await sleep(delay, stop);
      }
    }
  }
}

/** Default heartbeat interval for a task: a third of its timeout (at least 10 ms), else 10 s. */
export function heartbeatIntervalFor(heartbeatTimeoutMs: number | null | undefined): number {
  if (typeof heartbeatTimeoutMs !== "number" || !(heartbeatTimeoutMs > 0)) return DEFAULT_HEARTBEAT_INTERVAL_MS;
  return Math.max(heartbeatTimeoutMs / 3, MIN_HEARTBEAT_INTERVAL_MS);
}

/** A counting semaphore for attempt slots. */
class Slots {
  private waiters: Array<() => void> = [];

  constructor(private available: number) {}

  /** Resolves `true` with one slot, or `false` once `signal` aborts first. */
  acquire(signal?: AbortSignal): Promise<boolean> {
    if (signal?.aborted) return Promise.resolve(false);
    if (this.available > 0) {
      this.available--;
      return Promise.resolve(true);
    }
    return new Promise((resolve) => {
      const grant = () => {
        signal?.removeEventListener("abort", abort);
        resolve(true);
      };
      const abort = () => {
        this.waiters = this.waiters.filter((w) => w !== grant);
        resolve(false);
      };
      this.waiters.push(grant);
      signal?.addEventListener("abort", abort, { once: true });
    });
  }

  /** Takes up to `n` free slots without waiting; returns how many. */
  tryAcquireUpTo(n: number): number {
    const got = Math.max(0, Math.min(n, this.available));
    this.available -= got;
    return got;
  }

  release(n: number): void {
    for (let i = 0; i < n; i++) {
      const next = this.waiters.shift();
      if (next) next();
      else this.available++;
    }
  }
}

let nextWorker = 1;

function defaultWorkerId(): string {
  let host = "worker";
  try {
    host = hostname().trim() || host;
  } catch {
    // keep the fallback
  }
  return `${host}-${process.pid}-${nextWorker++}`;
}

function isCount(n: unknown): n is number {
  return typeof n === "number" && Number.isInteger(n) && n >= 1;
}

function clip(s: string): string {
  return s.length > MAX_MESSAGE_CHARS ? `${s.slice(0, MAX_MESSAGE_CHARS)}…` : s;
}
