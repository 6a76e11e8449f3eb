/**
 * A thin client for DisTorch's REST API: the calls a driver needs (register a definition;
 * start, read, wait for, signal and cancel runs; operate on tasks) and the worker protocol
 * the {@link Worker} uses (poll, heartbeat, complete, fail).
 *
 * Every method is one HTTP request except {@link Client.start} (which retries, safely: it
 * always names the run it starts) and {@link Client.wait} (which long-polls until the run
 * ends). Errors are {@link ApiError} (the server's problem+json), {@link TransportError} (no
 * response) or {@link ProtocolError} (an unreadable success body).
 */

import { randomBytes } from "node:crypto";
import { RETRY, backoffDelay, sleep } from "./backoff.js";
import { ApiError, ConfigError, DistorchError, ProtocolError, TransportError, WaitTimeoutError } from "./errors.js";
import type { Problem } from "./errors.js";
import {
  isTerminal,
  type DeadLetter,
  type DefinitionRef,
  type FailureReport,
  type HeartbeatAck,
  type HistoryEvent,
  type Metrics,
  type PolledTask,
  type RunStatus,
  type Started,
  type TaskAction,
  type TaskView,
  type WorkflowPage,
  type WorkflowStatus,
  type WorkflowView,
} from "./types.js";

/** How long a non-polling request may take before it counts as a transport failure. */
export const REQUEST_TIMEOUT_MS = 30_000;
/** Extra time a long-poll gets beyond its `wait_ms`, so a slow server is not taken for a dead one. */
export const POLL_GRACE_MS = 10_000;
/** The longest `wait_ms` the server honours on a poll or a run read. */
export const MAX_WAIT_MS = 60_000;

/** Options of a {@link Client}. */
export interface ClientOptions {
  /** Timeout of one ordinary request, in ms. Default 30 000. */
  timeoutMs?: number;
  /** Headers added to every request (e.g. an `Authorization` a proxy in front needs). */
  headers?: Record<string, string>;
  /** The `fetch` to use. Default: the global one (Node 18+). */
  fetch?: typeof fetch;
}

/** Options of {@link Client.start}. */
export interface StartOptions {
  /**
   * The run's id (a UUID) chosen by the caller: starting again with the same id returns the
   * existing run (`existing: true`) and never starts a second one. When neither this nor
   * `idempotencyKey` is given the client makes one (a UUIDv7), so its own retries are safe.
   */
  workflowId?: string;
  /**
   * Starting the same definition twice with the same key returns the first run. The
   * server refuses a start that names both a `workflowId` and an `idempotencyKey`.
   */
  idempotencyKey?: string;
  /** The definition version; default the latest. */
  version?: number;
  /**
   * How many times to re-send the start after a transport failure or a 5xx/408/429
   * (the server's 503 for an unconfirmed start included). Default 4. Retries reuse the
   * run's id, so they never start a second run.
   */
  retries?: number;
}

/** Options of {@link Client.wait}. */
export interface WaitOptions {
  /** Give up (with a {@link WaitTimeoutError}) after this many ms. Default 60 000. */
  timeoutMs?: number;
  /** Abort the wait. */
  signal?: AbortSignal;
}

/** Options of {@link Client.list}. */
export interface ListOptions {
  status?: WorkflowStatus;
  definition?: string;
  limit?: number;
  cursor?: string;
}

interface RequestInit {
  body?: unknown;
  /** A pre-encoded body (YAML). */
  raw?: string;
  contentType?: string;
  timeoutMs?: number;
  signal?: AbortSignal | undefined;
  /** A success body that is not JSON reads as `null` instead of failing. */
  lenient?: boolean;
}

interface Answer<T> {
  status: number;
  body: T;
}

/** A client for one DisTorch server. */
export class Client {
  /** `http(s)://host:port` without a trailing slash. */
  readonly baseUrl: string;
  private readonly timeoutMs: number;
  private readonly headers: Record<string, string>;
  private readonly fetchImpl: typeof fetch;

  /** A client for the server at `baseUrl`, e.g. `http://127.0.0.1:8000`. */
  constructor(baseUrl: string, options: ClientOptions = {}) {
    const base = String(baseUrl ?? "").replace(/\/+$/, "");
    if (!/^https?:\/\/[^/]/.test(base)) {
      throw new ConfigError(`base url "${base}" must start with http:// or https://`);
    }
    const timeoutMs = options.timeoutMs ?? REQUEST_TIMEOUT_MS;
    if (!(timeoutMs > 0)) throw new ConfigError("timeoutMs must be positive");
    const f = options.fetch ?? globalThis.fetch;
    if (typeof f !== "function") {
      throw new ConfigError("no global fetch: DisTorch's SDK needs Node.js 18 or later");
    }
    this.baseUrl = base;
    this.timeoutMs = timeoutMs;
    this.headers = { ...(options.headers ?? {}) };
    this.fetchImpl = f;
  }

  // ---- definitions ----------------------------------------------------------------------

  /**
   * Registers a definition: YAML text (sent as `application/yaml`, as is) or a definition
   * object (sent as JSON). Each registration of a changed document gets the next
   * version; the latest document registered again answers its own version.
   */
  async registerDefinition(definition: string | object): Promise<DefinitionRef> {
    const init: RequestInit =
      typeof definition === "string"
        ? { raw: definition, contentType: "application/yaml" }
        : { body: definition };
    return (await this.request<DefinitionRef>("POST", "/api/v1/definitions", init)).body;
  }

  /** A registered definition: the latest version, or `version`. */
  async getDefinition(name: string, version?: number): Promise<{ name: string; version: number; definition: unknown }> {
    const path =
      version === undefined
        ? `/api/v1/definitions/${segment(name)}`
        : `/api/v1/definitions/${segment(name)}/versions/${version}`;
    return (await this.request<{ name: string; version: number; definition: unknown }>("GET", path)).body;
  }

  // ---- runs -----------------------------------------------------------------------------

  /**
   * Starts a run of `definition` with `input`. With the same `workflowId` or
   * `idempotencyKey` a repeated start returns the existing run instead of a second one.
   */
  async start(definition: string, input: unknown = null, options: StartOptions = {}): Promise<Started> {
    if (options.workflowId !== undefined && options.idempotencyKey !== undefined) {
      throw new ConfigError("give workflowId or idempotencyKey, not both: each names the run");
    }
    let workflowId = options.idempotencyKey === undefined ? (options.workflowId ?? uuidv7()) : undefined;
    const retries = options.retries ?? 4;
    for (let attempt = 0; ; attempt++) {
      const body: Record<string, unknown> = { definition, input: input === undefined ? null : input };
      if (options.version !== undefined) body.version = options.version;
      if (workflowId !== undefined) body.workflow_id = workflowId;
      if (options.idempotencyKey !== undefined) body.idempotency_key = options.idempotencyKey;
      try {
        const answer = await this.request<{ workflow_id: string; status: WorkflowStatus | null }>(
          "POST",
          "/api/v1/workflows",
          { body },
        );
        return {
          workflowId: answer.body.workflow_id,
          status: answer.body.status ?? null,
          existing: answer.status === 200,
        };
      } catch (e) {
        if (!(e instanceof DistorchError) || !e.retryable || attempt >= retries) throw e;
        // A 503 names the run the start will create: the retry must name it too.
        const named = e instanceof ApiError ? e.problem?.workflow_id : undefined;
        if (typeof named === "string" && options.idempotencyKey === undefined) workflowId = named;
        await sleep(Math.max(backoffDelay(RETRY, attempt), e instanceof ApiError ? (e.retryAfterMs ?? 0) : 0));
      }
    }
  }

  /** A run's current view: status, input, output, error, tasks (with their metrics)... */
  async get(workflowId: string): Promise<WorkflowView> {
    return (await this.request<WorkflowView>("GET", `/api/v1/workflows/${segment(workflowId)}`)).body;
  }

  /**
   * Waits until the run has ended (completed, failed, compensated or cancelled) and returns
   * its view, long-polling the server (`?wait_ms=`). Throws {@link WaitTimeoutError} when it
   * has not ended within `timeoutMs`. Transport failures and 5xx are retried until then.
   */
  async wait(workflowId: string, options: WaitOptions = {}): Promise<WorkflowView> {
    const timeoutMs = options.timeoutMs ?? 60_000;
    const deadline = Date.now() + timeoutMs;
    const started = Date.now();
    let last: WorkflowView | undefined;
    let failures = 0;
    for (;;) {
      if (options.signal?.aborted) throw options.signal.reason;
      const left = deadline - Date.now();
      if (left <= 0 && last !== undefined) throw new WaitTimeoutError(workflowId, timeoutMs, last);
      const waitMs = Math.max(0, Math.min(left, MAX_WAIT_MS));
      const asked = Date.now();
      try {
        const view = (
          await this.request<WorkflowView>("GET", `/api/v1/workflows/${segment(workflowId)}?wait_ms=${waitMs}`, {
            timeoutMs: waitMs + this.timeoutMs,
            signal: options.signal,
          })
        ).body;
        failures = 0;
        last = view;
        if (isTerminal(view.status)) return view;
        if (left <= 0) throw new WaitTimeoutError(workflowId, timeoutMs, last);
        // The server answers early only when its wait was cut short; do not spin on it.
        if (Date.now() - asked < 20) await sleep(50, options.signal);
      } catch (e) {
        if (e instanceof WaitTimeoutError) throw e;
        // Right after a start the read model may briefly not know the run yet.
        const young = e instanceof ApiError && e.status === 404 && Date.now() - started < 2_000;
        const retry = young || (e instanceof DistorchError && e.retryable);
        if (!retry || options.signal?.aborted) throw e;
        if (Date.now() >= deadline) throw last ? new WaitTimeoutError(workflowId, timeoutMs, last) : e;
        await sleep(Math.min(young ? 100 : backoffDelay(RETRY, failures++), Math.max(deadline - Date.now(), 0)), options.signal);
      }
    }
  }

  /** Runs, newest first, one page at a time. */
  async list(options: ListOptions = {}): Promise<WorkflowPage> {
    const q = new URLSearchParams();
    if (options.status) q.set("status", options.status);
    if (options.definition) q.set("definition", options.definition);
    if (options.limit !== undefined) q.set("limit", String(options.limit));
    if (options.cursor) q.set("cursor", options.cursor);
    const query = q.toString();
    return (await this.request<WorkflowPage>("GET", `/api/v1/workflows${query ? `?${query}` : ""}`)).body;
  }

  /** The run's events, in order. */
  async history(workflowId: string): Promise<HistoryEvent[]> {
    const body = (
      await this.request<{ events: HistoryEvent[] }>("GET", `/api/v1/workflows/${segment(workflowId)}/history`)
    ).body;
    return body.events;
  }

  /**
   * Sends signal `name` with `payload` to a run; a `signal` step of that name takes it (it
   * is kept if the run has not reached that step yet).
   */
  async signal(workflowId: string, name: string, payload: unknown = null): Promise<{ workflow_id: string; signal: string }> {
    return (
      await this.request<{ workflow_id: string; signal: string }>(
        "POST",
        `/api/v1/workflows/${segment(workflowId)}/signals/${segment(name)}`,
        { body: payload === undefined ? null : payload },
      )
    ).body;
  }

  /**
   * Cancels a run, optionally compensating its completed steps first. Workers learn it
   * from their next heartbeat (the server refuses it) and their handlers see
   * `ctx.cancelled`. A 409 {@link ApiError} means the run's status does not allow it.
   */
  async cancel(workflowId: string, options: { compensate?: boolean; reason?: string } = {}): Promise<RunStatus> {
    const body: Record<string, unknown> = {};
    if (options.compensate !== undefined) body.compensate = options.compensate;
    if (options.reason !== undefined) body.reason = options.reason;
    return (await this.request<RunStatus>("POST", `/api/v1/workflows/${segment(workflowId)}/cancel`, { body })).body;
  }

  /** Pauses a run: nothing new is scheduled until it is resumed. */
  async pause(workflowId: string): Promise<RunStatus> {
    return (await this.request<RunStatus>("POST", `/api/v1/workflows/${segment(workflowId)}/pause`)).body;
  }

  /** Resumes a paused run. */
  async resume(workflowId: string): Promise<RunStatus> {
    return (await this.request<RunStatus>("POST", `/api/v1/workflows/${segment(workflowId)}/resume`)).body;
  }

  // ---- tasks (operators) ------------------------------------------------------------------

  /** A task with its latest attempt. */
  async getTask(taskId: string): Promise<TaskView> {
    return (await this.request<TaskView>("GET", `/api/v1/tasks/${segment(taskId)}`)).body;
  }

  /** Runs a failed or parked task again with a fresh attempt budget. */
  async retryTask(taskId: string): Promise<TaskAction> {
    return (await this.request<TaskAction>("POST", `/api/v1/tasks/${segment(taskId)}/retry`)).body;
  }

  /** Treats a task as completed with `output`. */
  async skipTask(taskId: string, output: unknown = null): Promise<TaskAction> {
    return (await this.request<TaskAction>("POST", `/api/v1/tasks/${segment(taskId)}/skip`, { body: { output } })).body;
  }

  /** Tasks parked in the dead-letter queue. */
  async deadLetters(): Promise<DeadLetter[]> {
    return (await this.request<{ items: DeadLetter[] }>("GET", "/api/v1/dlq")).body.items;
  }

  // ---- the worker protocol ----------------------------------------------------------------

  /**
   * Long-polls `queue` for up to `maxTasks` (1 to 100) attempts, waiting at most `waitMs`
   * (≤ 60 000) for the first. Every attempt returned has been started for `workerId`.
   * An empty list means the wait ended with no work. Aborting `signal` abandons the poll.
   */
  async poll(queue: string, workerId: string, maxTasks: number, waitMs: number, signal?: AbortSignal): Promise<PolledTask[]> {
    const body = { worker_id: workerId, max_tasks: maxTasks, wait_ms: waitMs };
    const answer = await this.request<{ tasks?: PolledTask[] }>("POST", `/api/v1/queues/${segment(queue)}/poll`, {
      body,
      timeoutMs: waitMs + POLL_GRACE_MS,
      signal,
    });
    if (!Array.isArray(answer.body.tasks)) {
      throw new ProtocolError(`${this.baseUrl}/api/v1/queues/${segment(queue)}/poll`, "no `tasks` array");
    }
    return answer.body.tasks;
  }

  /** Reports an attempt's success. A 409 {@link ApiError} means it was superseded. */
  async complete(taskId: string, attempt: number, output: unknown, metrics?: Metrics): Promise<void> {
    const body: Record<string, unknown> = { attempt, output: output === undefined ? null : output };
    if (metrics) body.metrics = metrics;
    await this.request("POST", `/api/v1/tasks/${segment(taskId)}/complete`, { body });
  }

  /**
   * Reports an attempt's failure. `error.retryAfterMs` (sent as `retry_after_ms`, rounded
   * up to a whole millisecond) makes the server wait at least that long before the next
   * attempt, if the retry policy allows one. A 409 {@link ApiError} means it was superseded.
   */
  async fail(taskId: string, attempt: number, error: FailureReport, metrics?: Metrics): Promise<void> {
    const body: Record<string, unknown> = {
      attempt,
      error: { type: error.type, message: error.message, retryable: error.retryable },
    };
    if (metrics) body.metrics = metrics;
    if (error.retryAfterMs !== undefined) {
      if (!Number.isFinite(error.retryAfterMs) || error.retryAfterMs < 0) {
        throw new RangeError(`retryAfterMs must be a finite number >= 0, got ${error.retryAfterMs}`);
      }
      body.retry_after_ms = Math.ceil(error.retryAfterMs);
    }
    await this.request("POST", `/api/v1/tasks/${segment(taskId)}/fail`, { body });
  }

  /**
   * Extends the attempt's lease, saving `checkpoint` (when given) for a later attempt to
   * resume from. A 409 {@link ApiError} means the attempt is superseded or its run cancelled.
   */
  async heartbeat(taskId: string, attempt: number, checkpoint?: unknown): Promise<HeartbeatAck> {
    const body: Record<string, unknown> = { attempt };
    if (checkpoint !== undefined && checkpoint !== null) body.checkpoint = checkpoint;
    const answer = await this.request<Partial<HeartbeatAck> | null>(
      "POST",
      `/api/v1/tasks/${segment(taskId)}/heartbeat`,
      { body, lenient: true },
    );
    // The lease was extended whatever the body says; an unreadable ack means "carry on".
    return { cancel_requested: answer.body?.cancel_requested === true };
  }

  // ---- plumbing ---------------------------------------------------------------------------

  private async request<T = unknown>(method: string, path: string, init: RequestInit = {}): Promise<Answer<T>> {
    const url = this.baseUrl + path;
    const headers: Record<string, string> = { accept: "application/json, application/problem+json", ...this.headers };
    let payload: string | undefined;
    if (init.raw !== undefined) {
      payload = init.raw;
      headers["content-type"] = init.contentType ?? "text/plain";
    } else if (init.body !== undefined) {
      payload = JSON.stringify(init.body);
      headers["content-type"] = "application/json";
    }

    const timeoutMs = init.timeoutMs ?? this.timeoutMs;
    const controller = new AbortController();
    let timedOut = false;
    const timer = setTimeout(() => {
      timedOut = true;
      controller.abort();
    }, timeoutMs);
    const outer = init.signal;
    const onAbort = () => controller.abort(outer?.reason);
    if (outer) {
      if (outer.aborted) controller.abort(outer.reason);
      else outer.addEventListener("abort", onAbort, { once: true });
    }
    try {
      let resp: Response;
      try {
        resp = await this.fetchImpl(url, { method, headers, body: payload ?? null, signal: controller.signal });
      } catch (e) {
        if (outer?.aborted) throw outer.reason ?? e;
        throw new TransportError(method, url, timedOut ? new Error(`no response within ${timeoutMs} ms`) : e);
      }
      let text: string;
      try {
        text = await resp.text();
      } catch (e) {
        if (outer?.aborted) throw outer.reason ?? e;
        if (!resp.ok) text = "";
        else throw new TransportError(method, url, timedOut ? new Error(`no response within ${timeoutMs} ms`) : e);
      }
      if (!resp.ok) throw apiError(method, url, resp, text);
      if (text.trim() === "") return { status: resp.status, body: {} as T };
      try {
        return { status: resp.status, body: JSON.parse(text) as T };
      } catch (e) {
        if (init.lenient) return { status: resp.status, body: null as T };
        throw new ProtocolError(url, `body is not JSON (${(e as Error).message})`);
      }
    } finally {
      clearTimeout(timer);
      outer?.removeEventListener("abort", onAbort);
    }
  }
}

function apiError(method: string, url: string, resp: Response, text: string): ApiError {
  let problem: Problem | undefined;
  try {
    const parsed = JSON.parse(text) as unknown;
    if (parsed && typeof parsed === "object" && !Array.isArray(parsed)) problem = parsed as Problem;
  } catch {
    // Not JSON: a proxy's page or plain text.
  }
  const trimmed = text.trim();
  const detail =
    typeof problem?.detail === "string"
      ? problem.detail
      : problem === undefined && trimmed !== "" && trimmed.length <= 512
        ? trimmed
        : undefined;
  return new ApiError({
    status: resp.status,
    title: typeof problem?.title === "string" ? problem.title : resp.statusText || `HTTP ${resp.status}`,
    detail,
    type: typeof problem?.type === "string" ? problem.type : undefined,
    method,
    url,
    problem,
    retryAfterMs: parseRetryAfter(resp.headers.get("retry-after")),
  });
}

/** `Retry-After` as seconds or an HTTP date, in ms; `undefined` when absent or unreadable. */
export function parseRetryAfter(value: string | null): number | undefined {
  if (value === null || value.trim() === "") return undefined;
  const v = value.trim();
  if (/^\d+$/.test(v)) return Number(v) * 1000;
  const at = Date.parse(v);
  return Number.isNaN(at) ? undefined : Math.max(0, at - Date.now());
}

/** Percent-encodes one path segment (everything but `A-Za-z0-9-_.~`), as the Rust SDK does. */
export function segment(s: string): string {
  return encodeURIComponent(s).replace(/[!'()*]/g, (c) => `%${c.charCodeAt(0).toString(16).toUpperCase()}`);
}

/** A random UUIDv7 (time-ordered), the kind of id the server gives runs itself. */
export function uuidv7(): string {
  const b = randomBytes(16);
  const ms = Date.now();
  b[0] = Math.floor(ms / 2 ** 40) & 0xff;
  b[1] = Math.floor(ms / 2 ** 32) & 0xff;
  b[2] = Math.floor(ms / 2 ** 24) & 0xff;
  b[3] = Math.floor(ms / 2 ** 16) & 0xff;
  b[4] = Math.floor(ms / 2 ** 8) & 0xff;
  b[5] = ms & 0xff;
  b[6] = (b[6]! & 0x0f) | 0x70;
  b[8] = (b[8]! & 0x3f) | 0x80;
  const h = b.toString("hex");
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`;
}
