/**
 * Wire shapes of the DisTorch REST API, as the server sends them (snake_case members).
 * Only what the SDK and its users commonly read is typed; views may carry more members.
 */

/** Run status. `completed`, `failed`, `compensated` and `cancelled` are terminal. */
export type WorkflowStatus =
  | "running"
  | "paused"
  | "parked"
  | "compensating"
  | "completed"
  | "failed"
  | "compensated"
  | "cancelled";

/** The statuses a run never leaves. */
export const TERMINAL_STATUSES: readonly WorkflowStatus[] = ["completed", "failed", "compensated", "cancelled"];

/** Whether a run in `status` has ended for good. */
export function isTerminal(status: string | null | undefined): boolean {
  return (TERMINAL_STATUSES as readonly string[]).includes(status ?? "");
}

/** Task status. A task waiting for its next attempt's backoff shows `scheduled` with its last `error`. */
export type TaskStatus = "scheduled" | "running" | "completed" | "failed" | "skipped" | "cancelled";

/** A failure: of a task attempt, a run, or as reported by a worker. */
export interface Failure {
  type: string;
  message: string;
  retryable: boolean;
}

/** A worker's failure report: a {@link Failure}, optionally with the delay it asks for. */
export interface FailureReport extends Failure {
  /**
   * Wait at least this many milliseconds before the next attempt (sent as
   * `retry_after_ms`). The step's retry policy still decides whether there is one, and its
   * backoff applies when longer.
   */
  retryAfterMs?: number;
}

/** Resource use of one attempt, as reported by the worker. */
export interface Metrics {
  /** CPU time (user + system) of the worker process during the attempt, in ms. */
  cpu_ms?: number;
  /** Peak resident memory of the worker process during the attempt, in bytes. */
  peak_memory_bytes?: number;
  /** HTTP steps only: time to the response. */
  latency_ms?: number;
  /** HTTP steps only: size of the response body. */
  response_bytes?: number;
}

/** The inbox side of a human task (`TaskView.human`). */
export interface HumanView {
  title: string;
  assignee?: string | null;
  group?: string | null;
  claimed_by?: string | null;
  /** JSON Schema the completion's output must satisfy. */
  form?: unknown;
  escalated?: boolean;
  completed_by?: string | null;
  /** When it times out (RFC 3339), if it has a timeout. */
  due_at?: string | null;
  [member: string]: unknown;
}

/**
 * One task of a run (a step's task or a compensation) with its latest attempt. The server
 * leaves out optional members that are empty; read `worker_id ?? null` and the like to
 * treat absent and `null` alike.
 */
export interface TaskView {
  task_id: string;
  workflow_id: string;
  step_id: string;
  step_key: string;
  kind: "step" | "compensation" | "human";
  task: string;
  queue: string;
  status: TaskStatus;
  attempt: number;
  input: unknown;
  output: unknown;
  error: Failure | null;
  /** Waiting in the dead-letter queue for an operator (retry or skip). */
  parked: boolean;
  /** Absent (or `null`) until a worker started an attempt. */
  worker_id?: string | null;
  /** Absent (or `null`) until a report carried metrics. */
  metrics?: Metrics | null;
  scheduled_at: string;
  /** Absent (or `null`) until an attempt started. */
  started_at?: string | null;
  /** Absent (or `null`) until the task ended. */
  finished_at?: string | null;
  /** The inbox side of a `human` task; absent for other kinds. */
  human?: HumanView | null;
  [member: string]: unknown;
}

/** A run as `GET /api/v1/workflows/{id}` shows it. */
export interface WorkflowView {
  workflow_id: string;
  definition: string;
  version: number;
  status: WorkflowStatus;
  input: unknown;
  output: unknown;
  error: Failure | null;
  created_at: string;
  updated_at: string;
  current_steps: string[];
  tasks: TaskView[];
  last_seq: number;
  /** Set on a child run; absent (or `null`) otherwise. */
  parent_workflow_id?: string | null;
  sla: unknown[];
  [member: string]: unknown;
}

/** One page of `GET /api/v1/workflows`. */
export interface WorkflowPage {
  items: Array<{
    workflow_id: string;
    definition: string;
    version: number;
    status: WorkflowStatus;
    created_at: string;
    updated_at: string;
  }>;
  next_cursor: string | null;
}

/** One event of a run's history (`type`, `seq`, `at_ms` and the event's own members). */
export interface HistoryEvent {
  workflow_id: string;
  seq: number;
  at_ms: number;
  type: string;
  [member: string]: unknown;
}

/** A parked task in the dead-letter queue. */
export interface DeadLetter {
  task_id: string;
  workflow_id: string;
  step_id: string;
  task: string;
  attempts: number;
  error: Failure | null;
  input: unknown;
}

/** One task attempt handed to a worker by a poll. */
export interface PolledTask {
  /** `<workflow id>.<n>`, the same for all attempts of the task. */
  task_id: string;
  workflow_id: string;
  step_id: string;
  /** Task type; selects the handler. */
  task: string;
  /** 1-based; every report echoes it so the server can reject stale attempts. */
  attempt: number;
  input: unknown;
  /** The last checkpoint a previous attempt saved with a heartbeat. */
  checkpoint: unknown;
  /** The server times the attempt out when no heartbeat arrives for this long. */
  heartbeat_timeout_ms: number | null;
}

/** The server's answer to a heartbeat. */
export interface HeartbeatAck {
  /** Someone asked to cancel the attempt: the work should stop. */
  cancel_requested: boolean;
}

/** The answer to a definition registration. */
export interface DefinitionRef {
  name: string;
  version: number;
  /** The document was identical to the latest version, which `version` names: nothing was registered. */
  unchanged: boolean;
}

/** The answer to a start. */
export interface Started {
  workflowId: string;
  /** `null` when the server's read model had not caught up with the start yet. */
  status: WorkflowStatus | null;
  /** The run already existed (same `workflowId` or `idempotencyKey`): HTTP 200, not 201. */
  existing: boolean;
}

/** The answer to an operator verb on a run (cancel, pause, resume). */
export interface RunStatus {
  workflow_id: string;
  /** `null` when the read model has not caught up yet (HTTP 202). */
  status: WorkflowStatus | null;
}

/** The answer to an operator verb on a task (retry, skip). */
export interface TaskAction {
  task_id: string;
  workflow_id: string;
  status: TaskStatus | null;
}
