// Test helpers: a real `distorch standalone` server per test file, unique names, and
// small waiting utilities. No fakes: everything talks HTTP to the real binary.

import { spawn } from "node:child_process";
import { existsSync, mkdtempSync, rmSync, statSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { randomBytes } from "node:crypto";

/** The server binary from `DISTORCH_BIN`; throws (never skips) when it is unusable. */
export function serverBinary() {
  const bin = process.env.DISTORCH_BIN;
  if (!bin) {
    throw new Error(
      "DISTORCH_BIN is not set: point it at the distorch binary (cargo build -p distorch --offline; target/debug/distorch)",
    );
  }
  if (!existsSync(bin) || !statSync(bin).isFile()) {
    throw new Error(`DISTORCH_BIN=${bin} does not exist or is not a file`);
  }
  return bin;
}

const live = new Set();
process.on("exit", () => {
  for (const child of live) {
    try {
      child.kill("SIGKILL");
    } catch {
      // already gone
    }
  }
});

/**
 * Starts `distorch standalone --listen 127.0.0.1:<port> --data-dir <dir>` and resolves once
 * it prints its URL. `port` 0 picks a free one; `dataDir` reuses a directory (restart).
 */
export async function startServer({ port = 0, dataDir } = {}) {
  const bin = serverBinary();
  const dir = dataDir ?? mkdtempSync(join(tmpdir(), "distorch-ts-"));
  const child = spawn(bin, ["standalone", "--listen", `127.0.0.1:${port}`, "--data-dir", dir], {
    stdio: ["ignore", "pipe", "pipe"],
    // Its own directory as the working directory, so no stray ./distorch.toml applies.
    cwd: dir,
    env: { ...process.env, RUST_LOG: process.env.RUST_LOG ?? "warn" },
  });
  live.add(child);
  let output = "";
  const keep = (chunk) => {
    output = (output + chunk.toString()).slice(-20_000);
  };
  child.stderr.on("data", keep);
  const url = await new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      child.kill("SIGKILL");
      reject(new Error(`distorch did not start within 60 s; its output:\n${output}`));
    }, 60_000);
    let buffered = "";
    child.stdout.on("data", (chunk) => {
      keep(chunk);
      buffered += chunk.toString();
      const m = /listening on (https?:\/\/\S+)/.exec(buffered);
      if (m) {
        clearTimeout(timer);
        resolve(m[1]);
      }
    });
    child.once("exit", (code, signal) => {
      clearTimeout(timer);
      reject(new Error(`distorch exited (code ${code}, signal ${signal}) before listening; its output:\n${output}`));
    });
  });
  const exited = new Promise((resolve) => child.once("exit", (code, signal) => resolve({ code, signal })));
  exited.then(() => live.delete(child));
  const server = {
    url,
    port: Number(new URL(url).port),
    dataDir: dir,
    child,
    exited,
    output: () => output,
    /** Stops the server (SIGTERM, then SIGKILL after 10 s); keeps its data dir. */
    async stop() {
      if (child.exitCode !== null || child.signalCode !== null) return;
      child.kill("SIGTERM");
      const timer = setTimeout(() => child.kill("SIGKILL"), 10_000);
      await exited;
      clearTimeout(timer);
    },
    /** Kills the server at once (SIGKILL), as a crash would; keeps its data dir. */
    async kill() {
      if (child.exitCode !== null || child.signalCode !== null) return;
      child.kill("SIGKILL");
      await exited;
    },
    /** Stops the server and removes its data dir. */
    async close() {
      await server.stop();
      rmSync(dir, { recursive: true, force: true });
    },
  };
  return server;
}

/** A short random suffix for definition and queue names, so tests never collide. */
export function unique(prefix) {
  return `${prefix}-${randomBytes(4).toString("hex")}`;
}

/** A promise with its resolve function exposed. */
export function deferred() {
  let resolve;
  let reject;
  const promise = new Promise((res, rej) => {
    resolve = res;
    reject = rej;
  });
  return { promise, resolve, reject };
}

/** Resolves `fn()`'s first truthy result, polling every 50 ms; throws after `timeoutMs`. */
export async function waitFor(fn, { timeoutMs = 15_000, what = "condition" } = {}) {
  const deadline = Date.now() + timeoutMs;
  let last;
  for (;;) {
    try {
      last = await fn();
      if (last) return last;
    } catch (e) {
      last = e;
    }
    if (Date.now() > deadline) {
      throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}; last: ${describe(last)}`);
    }
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** Waits until the run is in `status` (any status, terminal or not). */
export async function waitForStatus(client, workflowId, status, timeoutMs = 15_000) {
  return waitFor(
    async () => {
      const run = await client.get(workflowId);
      return run.status === status ? run : undefined;
    },
    { timeoutMs, what: `run ${workflowId} to be ${status}` },
  );
}

/** A logger that keeps every record (and prints nothing unless DEBUG_SDK_LOGS is set). */
export function captureLogs() {
  const records = [];
  const logger = (record) => {
    records.push(record);
    if (process.env.DEBUG_SDK_LOGS) console.error(JSON.stringify(record));
  };
  return { records, logger };
}

function describe(v) {
  if (v instanceof Error) return v.message;
  try {
    return JSON.stringify(v)?.slice(0, 500);
  } catch {
    return String(v);
  }
}
