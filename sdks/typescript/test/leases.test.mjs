// Leases against a real `distorch standalone`: a heartbeat timeout hands the task and its
// checkpoint to another worker, a stale attempt's completion is dropped (409) without
// harm, and cancellation reaches the handler through ctx.cancelled and ctx.signal.

import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { CancelledError, Client, Worker } from "@distorch/sdk";
import { captureLogs, deferred, startServer, unique, waitFor, waitForStatus } from "./helpers.mjs";

let server;
let client;

before(async () => {
  server = await startServer();
  client = new Client(server.url);
});

after(async () => {
  await server?.close();
});

function worker(queue, options = {}) {
  const logs = captureLogs();
  const w = new Worker({ url: server.url, queue, handleSignals: false, logger: logs.logger, logLevel: "debug", ...options });
  w.logs = logs.records;
  return w;
}

/** A one-step definition whose attempts time out after 1 s without a heartbeat. */
async function registerLeased(queue) {
  const name = unique("lease");
  await client.registerDefinition(`
name: ${name}
steps:
  - id: crunch
    task: crunch
    queue: ${queue}
    heartbeat_timeout: 1s
    retry: {max_attempts: 3, initial_interval: 50ms}
`);
  return name;
}

test("a heartbeat timeout hands the task, with its checkpoint, to another worker", async () => {
  const queue = unique("q");
  const name = await registerLeased(queue);

  // Worker A saves a checkpoint, then goes silent (automatic heartbeats effectively off),
  // like a worker that hung.
  const a = worker(queue, { concurrency: 1, heartbeatIntervalMs: 3_600_000, workerId: "worker-a" });
  const aSaved = deferred();
  const releaseA = deferred();
  a.task("crunch", async (ctx) => {
    assert.equal(ctx.checkpoint, undefined, "a first attempt has no checkpoint");
    assert.equal(await ctx.heartbeat({ done: 3, of: 10 }), true);
    aSaved.resolve(ctx.attempt);
    await releaseA.promise;
    return { from: "a" };
  });
  const aDone = a.run();

  const b = worker(queue, { concurrency: 1, workerId: "worker-b" });
  let bSaw;
  b.task("crunch", async (ctx) => {
    bSaw = { attempt: ctx.attempt, checkpoint: ctx.checkpoint };
    return { from: "b", resumedAt: ctx.checkpoint.done };
  });

  let bDone;
  try {
    const { workflowId } = await client.start(name, {});
    assert.equal(await aSaved.promise, 1);
    bDone = b.run(); // only now, so attempt 1 surely went to A
    const run = await client.wait(workflowId, { timeoutMs: 20_000 });
    assert.equal(run.status, "completed");
    assert.deepEqual(run.output, { crunch: { from: "b", resumedAt: 3 } });
    assert.deepEqual(bSaw, { attempt: 2, checkpoint: { done: 3, of: 10 } });
    const task = run.tasks[0];
    assert.equal(task.attempt, 2);
    assert.equal(task.worker_id, "worker-b");
    const history = await client.history(workflowId);
    const timedOut = history.find((e) => e.type === "task_failed" && e.attempt === 1);
    assert.match(timedOut?.error?.type ?? "", /^timeout\.heartbeat/, JSON.stringify(timedOut));
  } finally {
    releaseA.resolve();
    await Promise.all([a.stop(), b.stop(), aDone, bDone]);
  }
});

test("a stale attempt's completion is dropped (409) and the worker carries on", async () => {
  const queue = unique("q");
  const name = await registerLeased(queue);
  const stale = worker(queue, { concurrency: 1, heartbeatIntervalMs: 3_600_000 });
  const staleStarted = deferred();
  const releaseStale = deferred();
  let staleCalls = 0;
  stale.task("crunch", async (ctx) => {
    staleCalls++;
    if (staleCalls === 1) {
      staleStarted.resolve(ctx.taskId);
      await releaseStale.promise;
      return { from: "stale" };
    }
    return { from: "stale-worker", attempt: ctx.attempt };
  });
  const staleDone = stale.run();
  const fresh = worker(queue, { concurrency: 1 });
  fresh.task("crunch", (ctx) => ({ from: "fresh", attempt: ctx.attempt }));
  let freshDone;
  try {
    const { workflowId } = await client.start(name, {});
    const taskId = await staleStarted.promise;
    freshDone = fresh.run();
    const run = await client.wait(workflowId, { timeoutMs: 20_000 });
    assert.deepEqual(run.output, { crunch: { from: "fresh", attempt: 2 } });
    await fresh.stop();
    await freshDone;

    // Now the first attempt finishes: its completion is refused and dropped.
    releaseStale.resolve();
    const dropped = await waitFor(
      () => stale.logs.find((r) => r.msg.startsWith("report rejected: attempt superseded") && r.taskId === taskId),
      { what: "the stale completion to be dropped" },
    );
    assert.equal(dropped.attempt, 1);
    assert.equal(dropped.level, "info");
    const after = await client.get(workflowId);
    assert.deepEqual(after.output, run.output, "the stale result changed nothing");
    assert.equal(after.tasks[0].attempt, 2);

    // The worker is unharmed: it takes and completes the next run.
    const next = await client.start(name, {});
    const nextRun = await client.wait(next.workflowId, { timeoutMs: 20_000 });
    assert.deepEqual(nextRun.output, { crunch: { from: "stale-worker", attempt: 1 } });
    assert.ok(!stale.logs.some((r) => r.level === "error"), "no error was logged");
  } finally {
    releaseStale.resolve();
    await Promise.all([stale.stop(), fresh.stop(), staleDone, freshDone]);
  }
});

test("cancelling the run is seen by the handler: ctx.cancelled, ctx.signal, nothing reported", async () => {
  const queue = unique("q");
  const name = unique("cancel");
  await client.registerDefinition(`
name: ${name}
steps:
  - {id: long, task: long, queue: ${queue}, heartbeat_timeout: 900ms}
`);
  const w = worker(queue, { concurrency: 1 });
  const started = deferred();
  const saw = deferred();
  w.task("long", async (ctx) => {
    assert.equal(ctx.cancelled, false);
    started.resolve();
    const aborted = await new Promise((resolve) => {
      const timer = setTimeout(() => resolve(false), 15_000);
      ctx.signal.addEventListener("abort", () => {
        clearTimeout(timer);
        resolve(true);
      });
    });
    saw.resolve({
      aborted,
      cancelled: ctx.cancelled,
      reason: ctx.signal.reason,
      heartbeat: await ctx.heartbeat({ late: true }),
    });
    ctx.throwIfCancelled();
    return { finished: "anyway" };
  });
  const done = w.run();
  try {
    const { workflowId } = await client.start(name, {});
    await started.promise;
    const t0 = Date.now();
    const cancelled = await client.cancel(workflowId, { reason: "customer changed their mind" });
    assert.equal(cancelled.workflow_id, workflowId);
    const seen = await saw.promise;
    assert.equal(seen.aborted, true, "ctx.signal aborted");
    assert.equal(seen.cancelled, true, "ctx.cancelled is true");
    assert.ok(seen.reason instanceof CancelledError, `the abort reason is a CancelledError: ${seen.reason}`);
    assert.equal(seen.heartbeat, false, "a heartbeat after cancellation says stop");
    assert.ok(Date.now() - t0 < 5_000, "seen within a few heartbeat intervals (300 ms each)");
    await waitFor(() => w.logs.find((r) => r.msg.startsWith("attempt cancelled or superseded")), {
      what: "the attempt to be dropped",
    });
    const run = await waitForStatus(client, workflowId, "cancelled");
    assert.notEqual(run.tasks[0].status, "completed");
    assert.ok(!w.logs.some((r) => r.msg === "reported"), "nothing was reported for the cancelled attempt");
  } finally {
    await w.stop();
    await done;
  }
});
