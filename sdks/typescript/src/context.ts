/** What a handler sees: {@link TaskContext}, and the attempt's lease behind it. */

import type { Client } from "./client.js";
import { ApiError } from "./errors.js";
import type { Log, TaskLog } from "./log.js";
import type { PolledTask } from "./types.js";

/** Thrown by {@link TaskContext.throwIfCancelled}, and the reason `ctx.signal` aborts with. */
export class CancelledError extends Error {
  override name = "CancelledError";
  /** `superseded` (HTTP 409: timed out, or another attempt took over) or `cancel_requested` (its run or task was cancelled). */
  readonly reason: "superseded" | "cancel_requested";

  constructor(reason: "superseded" | "cancel_requested", detail?: string) {
    super(
      reason === "cancel_requested"
        ? "cancellation was requested for this attempt"
        : `this attempt is no longer current${detail ? `: ${detail}` : ""}`,
    );
    this.reason = reason;
  }
}

/**
 * The server-side lease of one attempt, shared by its handler (`ctx.heartbeat`) and the
 * worker's automatic heartbeats. Heartbeats of one attempt are sent one at a time, in
 * order: a heartbeat asked for while another is in flight waits for it, and several
 * waiting ones are sent as one carrying the latest checkpoint.
 */
export class Lease {
  /** `performance.now()` when a heartbeat was last asked for (sent or not). */
  lastBeat = performance.now();
  private readonly controller = new AbortController();
  private inflight: Promise<boolean> | null = null;
  private queued: { checkpoint: unknown; promise: Promise<boolean> } | null = null;

  constructor(
    private readonly client: Client,
    readonly taskId: string,
    readonly attempt: number,
    private readonly log: Log,
  ) {}

  get signal(): AbortSignal {
    return this.controller.signal;
  }

  get cancelled(): boolean {
    return this.controller.signal.aborted;
  }

  /** Sends a heartbeat (serialised with the others); resolves whether the attempt is current. Never rejects. */
  beat(checkpoint?: unknown): Promise<boolean> {
    if (this.cancelled) return Promise.resolve(false);
    this.lastBeat = performance.now();
    if (this.queued) {
      if (checkpoint !== undefined) this.queued.checkpoint = checkpoint;
      return this.queued.promise;
    }
    if (!this.inflight) return this.launch(checkpoint);
    const queued = { checkpoint, promise: Promise.resolve(true) };
    queued.promise = this.inflight.then(() => {
      this.queued = null;
      return this.launch(queued.checkpoint);
    });
    this.queued = queued;
    return queued.promise;
  }

  /** Resolves once no heartbeat is in flight or queued. */
  async idle(): Promise<void> {
    while (this.queued || this.inflight) {
      await (this.queued?.promise ?? this.inflight);
    }
  }

  /** Marks the attempt cancelled and aborts `ctx.signal` (once). */
  cancel(reason: "superseded" | "cancel_requested", detail?: string): void {
    if (!this.cancelled) this.controller.abort(new CancelledError(reason, detail));
  }

  private launch(checkpoint: unknown): Promise<boolean> {
    if (this.cancelled) return Promise.resolve(false);
    const p = this.send(checkpoint).finally(() => {
      if (this.inflight === p) this.inflight = null;
    });
    this.inflight = p;
    return p;
  }

  private async send(checkpoint: unknown): Promise<boolean> {
    try {
      const ack = await this.client.heartbeat(this.taskId, this.attempt, checkpoint);
      if (ack.cancel_requested) {
        this.log.info("cancellation requested; the handler is told through ctx.signal");
        this.cancel("cancel_requested");
        return false;
      }
      return true;
    } catch (e) {
      if (e instanceof ApiError && e.conflict) {
        this.log.info("attempt superseded or its run cancelled (heartbeat refused with 409); the handler is told through ctx.signal", {
          detail: e.detail,
        });
        this.cancel("superseded", e.detail);
        return false;
      }
      // The attempt may well still be current; the next heartbeat will tell.
      this.log.warn("heartbeat failed", { error: e });
      return true;
    }
  }
}

/**
 * One task attempt, as handed to a handler (its first argument; the second is `ctx.input`).
 *
 * @typeParam I the task's input type.
 * @typeParam C the checkpoint type (what `ctx.heartbeat` saves and `ctx.checkpoint` holds).
 */
export class TaskContext<I = any, C = any> {
  /** The task's id (`<workflow id>.<n>`), the same for all its attempts: a stable key for idempotent side effects. */
  readonly taskId: string;
  /** The run the task belongs to. */
  readonly workflowId: string;
  /** The id of the definition step that created the task. */
  readonly stepId: string;
  /** The task type this handler was registered for. */
  readonly task: string;
  /** 1-based attempt number; `> 1` means an earlier attempt failed or timed out. */
  readonly attempt: number;
  /** The step's input, as the definition computed it for this task. */
  readonly input: I;
  /**
   * The last checkpoint an earlier attempt saved with {@link TaskContext.heartbeat}:
   * resume from it instead of starting over. `undefined` when there is none.
   */
  readonly checkpoint: C | undefined;
  /** The server times the attempt out when it hears no heartbeat for this long (if set). */
  readonly heartbeatTimeoutMs: number | undefined;
  /** Structured logging carrying `taskId`, `workflowId`, `stepId`, `task` and `attempt`. */
  readonly log: TaskLog;

  /** @internal */
  constructor(
    task: PolledTask,
    private readonly lease: Lease,
    log: TaskLog,
  ) {
    this.taskId = task.task_id;
    this.workflowId = task.workflow_id;
    this.stepId = task.step_id;
    this.task = task.task;
    this.attempt = task.attempt;
    this.input = task.input as I;
    this.checkpoint = (task.checkpoint ?? undefined) as C | undefined;
    this.heartbeatTimeoutMs = task.heartbeat_timeout_ms ?? undefined;
    this.log = log;
  }

  /**
   * Sends a heartbeat now, saving `details` as the checkpoint a later attempt receives in
   * `ctx.checkpoint`, and resolves whether this attempt is still current. Never rejects,
   * so it may be called without `await`.
   *
   * `false` means the server refused it (HTTP 409: the attempt timed out, its run was
   * cancelled, or another attempt finished) or asked for cancellation: stop working and
   * return; whatever the handler returns afterwards is discarded. `ctx.cancelled` turns
   * true and `ctx.signal` aborts at the same moment.
   *
   * Automatic heartbeats keep the lease alive anyway; call this to save progress or to find
   * out early that work should stop. A network failure is logged and resolves `true`.
   */
  heartbeat(details?: C): Promise<boolean> {
    return this.lease.beat(details);
  }

  /** Whether a heartbeat learnt that this attempt is cancelled or superseded. */
  get cancelled(): boolean {
    return this.lease.cancelled;
  }

  /**
   * Aborted (with a {@link CancelledError} as its reason) when a heartbeat learns that this
   * attempt is cancelled or superseded. Pass it to `fetch`, timers and the like.
   */
  get signal(): AbortSignal {
    return this.lease.signal;
  }

  /** Throws the {@link CancelledError} if the attempt is cancelled. */
  throwIfCancelled(): void {
    if (this.lease.cancelled) throw this.lease.signal.reason;
  }
}
