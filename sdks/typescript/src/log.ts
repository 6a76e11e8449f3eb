/**
 * Structured logging: every record is one object with `time`, `level`, `msg` and fields
 * (`queue`, `workerId`, and for an attempt `taskId`, `workflowId`, `stepId`, `task`,
 * `attempt`). The default sink writes each record as one JSON line to the console.
 */

/** Severity, lowest first. */
export type LogLevel = "debug" | "info" | "warn" | "error";

/** One log record as handed to a {@link Logger}. */
export interface LogRecord {
  /** RFC 3339 timestamp. */
  time: string;
  level: LogLevel;
  msg: string;
  [field: string]: unknown;
}

/** A log sink: receives every record at or above the worker's `logLevel`. */
export type Logger = (record: LogRecord) => void;

const RANK: Record<LogLevel, number> = { debug: 10, info: 20, warn: 30, error: 40 };

/** Whether `level` is a valid {@link LogLevel}. */
export function isLogLevel(level: unknown): level is LogLevel {
  return typeof level === "string" && Object.prototype.hasOwnProperty.call(RANK, level);
}

/**
 * The default sink: one JSON line per record, through `console.log` for `debug` and `info`
 * and `console.error` for `warn` and `error`.
 */
export const consoleLogger: Logger = (record) => {
  const line = safeStringify(record);
  if (record.level === "warn" || record.level === "error") console.error(line);
  else console.log(line);
};

/** A logger that drops everything. */
export const silentLogger: Logger = () => {};

/** What handlers get as `ctx.log`: leveled methods that add the attempt's fields. */
export interface TaskLog {
  debug(msg: string, fields?: Record<string, unknown>): void;
  info(msg: string, fields?: Record<string, unknown>): void;
  warn(msg: string, fields?: Record<string, unknown>): void;
  error(msg: string, fields?: Record<string, unknown>): void;
}

/** A logger bound to a sink, a minimum level and a set of fields. */
export class Log implements TaskLog {
  constructor(
    private readonly sink: Logger,
    private readonly min: LogLevel,
    private readonly fields: Record<string, unknown> = {},
  ) {}

  /** A logger with `fields` added to every record. */
  child(fields: Record<string, unknown>): Log {
    return new Log(this.sink, this.min, { ...this.fields, ...fields });
  }

  enabled(level: LogLevel): boolean {
    return RANK[level] >= RANK[this.min];
  }

  log(level: LogLevel, msg: string, fields?: Record<string, unknown>): void {
    if (!this.enabled(level)) return;
    const record: LogRecord = { time: new Date().toISOString(), level, msg, ...this.fields };
    if (fields) {
      for (const [k, v] of Object.entries(fields)) {
        record[k] = v instanceof Error ? errorFields(v) : v;
      }
    }
    try {
      this.sink(record);
    } catch {
      // A broken sink must never take a worker down.
    }
  }

  debug(msg: string, fields?: Record<string, unknown>): void {
    this.log("debug", msg, fields);
  }
  info(msg: string, fields?: Record<string, unknown>): void {
    this.log("info", msg, fields);
  }
  warn(msg: string, fields?: Record<string, unknown>): void {
    this.log("warn", msg, fields);
  }
  error(msg: string, fields?: Record<string, unknown>): void {
    this.log("error", msg, fields);
  }
}

function errorFields(e: Error): string {
  return e.message ? `${e.name}: ${e.message}` : e.name;
}

function safeStringify(record: LogRecord): string {
  try {
    return JSON.stringify(record, (_k, v) => (typeof v === "bigint" ? v.toString() : v));
  } catch {
    return JSON.stringify({ time: record.time, level: record.level, msg: record.msg, note: "fields not serialisable" });
  }
}
