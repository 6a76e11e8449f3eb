/**
 * DisTorch's SDK for Node.js: a {@link Worker} that runs task handlers for a queue over
 * the HTTP worker protocol, and a {@link Client} for the REST API.
 *
 * @packageDocumentation
 */

export { Worker, heartbeatIntervalFor, DEFAULT_HEARTBEAT_INTERVAL_MS, MIN_HEARTBEAT_INTERVAL_MS } from "./worker.js";
export type { WorkerOptions, TaskHandler } from "./worker.js";
export { TaskContext, CancelledError } from "./context.js";
export { Client, REQUEST_TIMEOUT_MS, POLL_GRACE_MS, MAX_WAIT_MS, uuidv7 } from "./client.js";
export type { ClientOptions, StartOptions, WaitOptions, ListOptions } from "./client.js";
export {
  DistorchError,
  ApiError,
  TransportError,
  ProtocolError,
  ConfigError,
  WaitTimeoutError,
  TaskError,
} from "./errors.js";
export type { Problem, TaskErrorOptions } from "./errors.js";
export { consoleLogger, silentLogger } from "./log.js";
export type { Logger, LogLevel, LogRecord, TaskLog } from "./log.js";
export { backoffDelay, RETRY } from "./backoff.js";
export type { Backoff } from "./backoff.js";
export { isTerminal, TERMINAL_STATUSES } from "./types.js";
export type {
  WorkflowStatus,
  TaskStatus,
  Failure,
  FailureReport,
  HumanView,
  Metrics,
  TaskView,
  WorkflowView,
  WorkflowPage,
  HistoryEvent,
  DeadLetter,
  PolledTask,
  HeartbeatAck,
  DefinitionRef,
  Started,
  RunStatus,
  TaskAction,
} from "./types.js";
