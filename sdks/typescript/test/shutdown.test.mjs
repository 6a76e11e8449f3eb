// Shutdown and resilience against a real `distorch standalone`: SIGTERM drains a worker
// process (the running task completes, exit code 0, no task taken after the signal), and
// a result is re-sent with backoff until a restarted server takes it.

import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { fileURLToPath } from "node:url";
import { Client, Worker } from "@distorch/sdk";
import { captureLogs, deferred, startServer, unique, waitFor } from "./helpers.mjs";

let server;
let client;

before(async () => {
  server = await startServer();
  client = new Client(server.url);
});

after(async () => {
  await server?.close();
});

const fixture = fileURLToPath(new URL("./fixtures/drain-worker.mjs", import.meta.url));

test("SIGTERM drains: the running task completes, the process exits 0, no new task is taken", async () => {
  const queue = unique("drain");
  const name = unique("drain");
  await client.registerDefinition(`
name: ${name}
steps:
  - {id: work, task: slow, queue: ${queue}, input: '{ms: .input.ms}'}
`);
  const child = spawn(process.execPath, [fixture, server.url, queue], { stdio: ["ignore", "pipe", "pipe"] });
  let stdout = "";
  let stderr = "";
  const lines = [];
  child.stdout.on("data", (chunk) => {
    stdout += chunk;
    for (const line of chunk.toString().split("\n")) {
      if (line.trim().startsWith("{")) {
        try {
          lines.push(JSON.parse(line));
        } catch {
          // a partial line; the test only looks for whole markers
        }
      }
    }
  });
  child.stderr.on("data", (chunk) => (stderr += chunk));
  const exited = new Promise((resolve) => child.once("exit", (code, signal) => resolve({ code, signal })));
  try {
    await waitFor(() => lines.some((l) => l.msg === "worker started"), { what: "the worker process to start" });
    const a = await client.start(name, { ms: 2500 });
    await waitFor(() => lines.some((l) => l.event === "task-started"), { what: "task A to start" });
    // B is queued while the only slot is busy; the worker must not take it after SIGTERM.
    const b = await client.start(name, { ms: 10 });
    await new Promise((r) => setTimeout(r, 200));
    assert.ok(!lines.some((l) => l.event === "task-finished"), "the signal arrives while A runs");
    child.kill("SIGTERM");
    const t0 = Date.now();
    const { code, signal } = await exited;
    assert.equal(signal, null, `exited by itself, not killed; stderr:\n${stderr}`);
    assert.equal(code, 0, `exit code 0; stderr:\n${stderr}`);
    assert.ok(Date.now() - t0 < 10_000, "exited soon after draining");

    const started = lines.filter((l) => l.event === "task-started");
    assert.equal(started.length, 1, `exactly one task ran: ${stdout}`);
    assert.ok(lines.some((l) => l.event === "task-finished"), "A finished");
    assert.ok(lines.some((l) => l.msg === "signal received; draining in-flight tasks" && l.signal === "SIGTERM"));
    assert.ok(lines.some((l) => l.event === "run-returned"), "worker.run() resolved");

    const runA = await client.wait(a.workflowId, { timeoutMs: 10_000 });
    assert.equal(runA.status, "completed");
    assert.deepEqual(runA.output, { work: { slept: 2500 } });
    assert.equal(runA.tasks[0].worker_id, "drain-worker");

    const runB = await client.get(b.workflowId);
    assert.equal(runB.status, "running");
    assert.equal(runB.tasks[0].status, "scheduled", `B was not taken: ${JSON.stringify(runB.tasks[0])}`);
    assert.equal(runB.tasks[0].worker_id ?? null, null, "absent or null: no worker took it");

    // B is intact: another worker takes it.
    const other = new Worker({ url: server.url, queue, handleSignals: false, logger: () => {} });
    other.task("slow", (_ctx, input) => ({ slept: input.ms }));
    const done = other.run();
    try {
      const runB2 = await client.wait(b.workflowId, { timeoutMs: 10_000 });
      assert.equal(runB2.status, "completed");
      assert.equal(runB2.tasks[0].attempt, 1);
    } finally {
      await other.stop();
      await done;
    }
  } finally {
    if (child.exitCode === null && child.signalCode === null) child.kill("SIGKILL");
  }
});

test("a result is re-sent with backoff across a server crash and restart", async () => {
  // Its own server, so restarting it disturbs no other test.
  let own = await startServer();
  const ownClient = new Client(own.url);
  const queue = unique("restart");
  const name = unique("restart");
  await ownClient.registerDefinition(`
name: ${name}
steps:
  - {id: work, task: work, queue: ${queue}}
`);
  const logs = captureLogs();
  const w = new Worker({ url: own.url, queue, handleSignals: false, logger: logs.logger, logLevel: "debug" });
  const started = deferred();
  const release = deferred();
  w.task("work", async (ctx) => {
    started.resolve();
    await release.promise;
    return { done: ctx.attempt };
  });
  const done = w.run();
  try {
    const { workflowId } = await ownClient.start(name, {});
    await started.promise;
    // A crash, not a graceful stop: the worker sees refused connections.
    await own.kill();
    release.resolve();
    // The completion cannot get through while the server is down.
    await waitFor(() => logs.records.find((r) => r.msg === "report failed; retrying"), { what: "a failed report" });
    await new Promise((r) => setTimeout(r, 500));
    own = await startServer({ port: own.port, dataDir: own.dataDir });
    const run = await ownClient.wait(workflowId, { timeoutMs: 30_000 });
    assert.equal(run.status, "completed");
    assert.deepEqual(run.output, { work: { done: 1 } });
    const retried = logs.records.filter((r) => r.msg === "report failed; retrying");
    assert.ok(retried.length >= 1);
    assert.ok(retried.every((r) => r.taskId === run.tasks[0].task_id && r.retryInMs >= 50));
    assert.ok(logs.records.some((r) => r.msg === "reported" && r.outcome === "completed"));
  } finally {
    release.resolve();
    await w.stop();
    await done;
    await own.close();
  }
});
