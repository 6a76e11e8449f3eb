/**
 * The SDK's error types: what the server or the network said ({@link ApiError},
 * {@link TransportError}, {@link ProtocolError}), bad configuration ({@link ConfigError}),
 * and what a handler throws to fail a task ({@link TaskError}).
 */

/** Base class of every error this SDK throws about the server or its configuration. */
export class DistorchError extends Error {
  override name = "DistorchError";

  /** Whether sending the same request again may succeed. */
  get retryable(): boolean {
    return false;
  }
}

/** Members of an `application/problem+json` body (RFC 9457) the server sends. */
export interface Problem {
  type?: string;
  title?: string;
  status?: number;
  detail?: string;
  /** Set on a 503 to a start: the run the start will create; retry the start with it. */
  workflow_id?: string;
  [member: string]: unknown;
}

/**
 * The server answered with a non-success status. Its problem+json body is parsed into
 * `title`, `detail` and `type`; `retryAfterMs` comes from a `Retry-After` header.
 */
export class ApiError extends DistorchError {
  override name = "ApiError";
  /** The HTTP status code. */
  readonly status: number;
  /** The problem's `title` (the status's reason phrase), else the HTTP status text. */
  readonly title: string;
  /** The problem's `detail`: what exactly is wrong, and where. Else a short plain-text body. */
  readonly detail: string | undefined;
  /** The problem's `type`, e.g. `urn:distorch:problem:conflict`. */
  readonly type: string | undefined;
  /** The request's method. */
  readonly method: string;
  /** The URL requested. */
  readonly url: string;
  /** The whole problem body when it was JSON. */
  readonly problem: Problem | undefined;
  /** From a `Retry-After` header (seconds or an HTTP date), in milliseconds. */
  readonly retryAfterMs: number | undefined;

  constructor(init: {
    status: number;
    title: string;
    detail?: string | undefined;
    type?: string | undefined;
    method: string;
    url: string;
    problem?: Problem | undefined;
    retryAfterMs?: number | undefined;
  }) {
    super(
      `${init.method} ${init.url} returned ${init.status} ${init.title}` +
        (init.detail ? `: ${init.detail}` : ""),
    );
    this.status = init.status;
    this.title = init.title;
    this.detail = init.detail;
    this.type = init.type;
    this.method = init.method;
    this.url = init.url;
    this.problem = init.problem;
    this.retryAfterMs = init.retryAfterMs;
  }

  /** `409 Conflict`: for task reports, the attempt was superseded and must be dropped. */
  get conflict(): boolean {
    return this.status === 409;
  }

  /** 5xx, 408 and 429: the server may accept the same request later. */
  override get retryable(): boolean {
    return this.status >= 500 || this.status === 408 || this.status === 429;
  }
}

/**
 * The request never produced an HTTP response: connection refused or reset, DNS failure,
 * or the client-side timeout. Always worth retrying: the server may be restarting.
 */
export class TransportError extends DistorchError {
  override name = "TransportError";
  readonly method: string;
  readonly url: string;

  constructor(method: string, url: string, cause: unknown) {
    super(`${method} ${url} failed: ${describe(cause)}`, { cause });
    this.method = method;
    this.url = url;
  }

  override get retryable(): boolean {
    return true;
  }
}

/**
 * A success response whose body did not have the documented shape: the SDK and the server
 * disagree on the protocol; retrying will not help.
 */
export class ProtocolError extends DistorchError {
  override name = "ProtocolError";
  readonly url: string;

  constructor(url: string, message: string) {
    super(`unexpected response from ${url}: ${message}`);
    this.url = url;
  }
}

/** An option given to a constructor is unusable. */
export class ConfigError extends DistorchError {
  override name = "ConfigError";

  constructor(message: string) {
    super(`invalid configuration: ${message}`);
  }
}

/** {@link Client.wait} gave up before the run ended. `workflow` is the last view read. */
export class WaitTimeoutError extends DistorchError {
  override name = "WaitTimeoutError";
  readonly workflowId: string;
  readonly workflow: unknown;

  constructor(workflowId: string, timeoutMs: number, workflow: unknown) {
    super(`run ${workflowId} did not end within ${timeoutMs} ms`);
    this.workflowId = workflowId;
    this.workflow = workflow;
  }
}

/** Options of a {@link TaskError}. */
export interface TaskErrorOptions {
  /**
   * `false` fails the step without further attempts, whatever its retry policy says.
   * Default `true`: the step's retry policy decides (its `non_retryable` list can still
   * name this error's type).
   */
  retryable?: boolean;
  /**
   * The earliest the next attempt may start, in milliseconds after the failure (a rate
   * limit's `Retry-After`, say). Sent with the report as `retry_after_ms`; the server waits
   * the longer of it and the step's backoff. It never adds an attempt: the retry policy
   * still decides whether there is one, and it is not sent when `retryable` is false.
   */
  retryAfterMs?: number;
  /** The underlying error, if any. */
  cause?: unknown;
}

/**
 * Thrown by a handler to fail its task with a machine-readable `type`. The server retries
 * the task per the step's retry policy when `retryable` (and `type` is not in the policy's
 * `non_retryable` list); otherwise the step fails and its `on_failure` policy applies
 * (compensate, park, fail or continue).
 *
 * Anything else a handler throws is reported as a retryable failure of type `panic`, as
 * the Rust SDK reports a handler panic.
 */
export class TaskError extends Error {
  override name = "TaskError";
  /** A stable category such as `card_declined`; retry policies match on it. */
  readonly type: string;
  /** Whether the server may try the task again. */
  readonly retryable: boolean;
  /** See {@link TaskErrorOptions.retryAfterMs}. */
  readonly retryAfterMs: number | undefined;

  constructor(type: string, message: string, options: TaskErrorOptions = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    if (typeof type !== "string" || type.trim() === "") {
      throw new TypeError("TaskError type must be a non-empty string");
    }
    this.type = type;
    const after = options.retryAfterMs;
    if (after !== undefined && (typeof after !== "number" || !Number.isFinite(after) || after < 0)) {
      throw new RangeError(`TaskError retryAfterMs must be a finite number >= 0, got ${String(after)}`);
    }
    this.retryable = options.retryable ?? true;
    this.retryAfterMs = after;
  }

  /** A failure that may succeed if tried again (a dependency was down, a lock was taken). */
  static retryable(type: string, message: string, options: Omit<TaskErrorOptions, "retryable"> = {}): TaskError {
    return new TaskError(type, message, { ...options, retryable: true });
  }

  /** A failure that will recur on every attempt (bad input, a business rule said no). */
  static fatal(type: string, message: string, options: Omit<TaskErrorOptions, "retryable"> = {}): TaskError {
    return new TaskError(type, message, { ...options, retryable: false });
  }
}

/** A short description of anything thrown, including `fetch`'s nested causes. */
export function describe(e: unknown): string {
  if (e instanceof Error) {
    const cause = (e as { cause?: unknown }).cause;
    const code = (e as { code?: unknown }).code;
    let text = e.message || e.name;
    if (typeof code === "string" && !text.includes(code)) text = `${text} (${code})`;
    if (cause !== undefined && cause !== e) text = `${text}: ${describe(cause)}`;
    return text;
  }
  return String(e);
}
