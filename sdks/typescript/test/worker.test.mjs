// The Worker against a real `distorch standalone`: multi-step runs with outputs flowing
// between steps, the concurrency bound, typed failures (compensate, park), unknown task
// types, thrown errors, and per-attempt metrics in the read model.

import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { Client, TaskError, Worker } from "@distorch/sdk";
import { captureLogs, startServer, unique, waitFor, waitForStatus } from "./helpers.mjs";

let server;
let client;

before(async () => {
  server = await startServer();
  client = new Client(server.url);
});

after(async () => {
  await server?.close();
});

/** A worker on `queue` with test defaults (no signal handlers, logs captured). */
function worker(queue, options = {}) {
  const logs = captureLogs();
  const w = new Worker({ url: server.url, queue, handleSignals: false, logger: logs.logger, logLevel: "debug", ...options });
  w.logs = logs.records;
  return w;
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

test("a multi-step run completes with outputs flowing between steps, within the concurrency bound", async () => {
  const name = unique("multi");
  const queue = unique("q");
  await client.registerDefinition(`
name: ${name}
steps:
  - id: fetch
    task: fetch
    queue: ${queue}
    input: '{n: .input.n}'
  - id: fan
    foreach:
      items: '.steps.fetch.output.items'
      max_concurrency: 6
      steps: [{id: square, task: square, queue: ${queue}, input: '.item'}]
  - id: total
    task: sum
    queue: ${queue}
    input: '{values: .steps.fan.output}'
output: '{total: .steps.total.output.sum, n: .input.n}'
`);
  const w = worker(queue, { concurrency: 2, maxTasksPerPoll: 10 });
  let running = 0;
  let maxRunning = 0;
  const seen = [];
  w.task("fetch", async (ctx, input) => {
    seen.push({ task: ctx.task, step: ctx.stepId, attempt: ctx.attempt, workflowId: ctx.workflowId });
    return { items: Array.from({ length: input.n }, (_, i) => i + 1) };
  })
    .task("square", async (_ctx, x) => {
      running++;
      maxRunning = Math.max(maxRunning, running);
      await sleep(150);
      running--;
      return x * x;
    })
    .task("sum", (_ctx, input) => ({ sum: input.values.reduce((a, b) => a + b, 0) }));
  const done = w.run();
  try {
    const { workflowId, existing } = await client.start(name, { n: 6 });
    assert.equal(existing, false);
    const run = await client.wait(workflowId, { timeoutMs: 20_000 });
    assert.equal(run.status, "completed", JSON.stringify(run.error));
    assert.deepEqual(run.output, { total: 91, n: 6 });
    const squares = run.tasks.filter((t) => t.task === "square");
    assert.equal(squares.length, 6);
    assert.deepEqual(squares.map((t) => t.output).sort((a, b) => a - b), [1, 4, 9, 16, 25, 36]);
    assert.ok(run.tasks.every((t) => t.worker_id === w.workerId), "every task ran on this worker");
    assert.deepEqual(seen, [{ task: "fetch", step: "fetch", attempt: 1, workflowId }]);
    assert.equal(maxRunning, 2, "at most `concurrency` handlers ran at once, and the bound was reached");
  } finally {
    await w.stop();
    await done;
  }
  const records = w.logs;
  assert.ok(records.some((r) => r.msg === "worker started" && r.queue === queue && r.workerId === w.workerId));
  const started = records.find((r) => r.msg === "attempt started");
  assert.ok(started.taskId && started.workflowId && started.attempt === 1, "attempt logs carry taskId, workflowId, attempt");
});

test("a non-retryable TaskError compensates the completed steps, as the definition says", async () => {
  const name = unique("comp");
  const queue = unique("q");
  await client.registerDefinition(`
name: ${name}
defaults:
  retry: {max_attempts: 3, initial_interval: 50ms}
steps:
  - {id: reserve, task: reserve, queue: ${queue}, compensate: release}
  - {id: charge, task: charge-card, queue: ${queue}, input: '{amount: .input.amount}'}
compensations:
  release: {task: release, queue: ${queue}, input: '.steps.reserve.output'}
`);
  const w = worker(queue);
  let charges = 0;
  let released;
  w.task("reserve", () => ({ reservation: "r-1" }))
    .task("charge-card", (_ctx, input) => {
      charges++;
      if (input.amount > 1000) {
        throw new TaskError("limit_exceeded", `amount ${input.amount} is too large`, { retryable: false });
      }
      return { charged: input.amount };
    })
    .task("release", (_ctx, input) => {
      released = input;
      return { released: true };
    });
  const done = w.run();
  try {
    const { workflowId } = await client.start(name, { amount: 5000 });
    const run = await client.wait(workflowId, { timeoutMs: 20_000 });
    assert.equal(run.status, "compensated");
    assert.equal(charges, 1, "a non-retryable failure is not retried despite max_attempts 3");
    const charge = run.tasks.find((t) => t.step_id === "charge");
    assert.equal(charge.status, "failed");
    assert.equal(charge.attempt, 1);
    assert.deepEqual(charge.error, { type: "limit_exceeded", message: "amount 5000 is too large", retryable: false });
    const comp = run.tasks.find((t) => t.kind === "compensation");
    assert.ok(comp, "a compensation task ran");
    assert.equal(comp.task, "release");
    assert.equal(comp.status, "completed");
    assert.deepEqual(released, { reservation: "r-1" }, "the compensation got the reserve step's output");
  } finally {
    await w.stop();
    await done;
  }
});

test("a failure whose type the policy lists as non_retryable parks the task; an operator retry completes it", async () => {
  const name = unique("park");
  const queue = unique("q");
  await client.registerDefinition(`
name: ${name}
defaults:
  retry: {max_attempts: 3, initial_interval: 50ms, non_retryable: [card_declined]}
  on_failure: park
steps:
  - {id: charge, task: charge-card, queue: ${queue}}
`);
  const w = worker(queue);
  let calls = 0;
  w.task("charge-card", () => {
    calls++;
    // Retryable as thrown, but the step's policy names the type: no second attempt.
    if (calls === 1) throw TaskError.retryable("card_declined", "the bank said no");
    return { charged: true };
  });
  const done = w.run();
  try {
    const { workflowId } = await client.start(name, {});
    const parked = await waitForStatus(client, workflowId, "parked");
    const task = parked.tasks[0];
    assert.equal(task.parked, true);
    assert.equal(task.attempt, 1);
    assert.equal(task.error.type, "card_declined");
    const dlq = await client.deadLetters();
    const item = dlq.find((d) => d.task_id === task.task_id);
    assert.ok(item, "the task is in the dead-letter queue");
    assert.equal(item.attempts, 1);
    assert.equal(item.error.type, "card_declined");
    assert.equal(calls, 1);

    await client.retryTask(task.task_id);
    const run = await client.wait(workflowId, { timeoutMs: 20_000 });
    assert.equal(run.status, "completed");
    assert.deepEqual(run.output, { charge: { charged: true } });
    assert.equal(calls, 2);
  } finally {
    await w.stop();
    await done;
  }
});

test("a thrown Error is a retryable `panic`; an unknown task type fails non-retryably", async () => {
  const name = unique("panic");
  const queue = unique("q");
  await client.registerDefinition({
    name,
    defaults: { retry: { max_attempts: 2, initial_interval: "50ms" } },
    steps: [
      { id: "flaky", task: "flaky", queue },
      { id: "mystery", task: "no-such-handler", queue },
    ],
  });
  const w = worker(queue);
  let calls = 0;
  w.task("flaky", (ctx) => {
    calls++;
    if (ctx.attempt === 1) throw new RangeError("index out of range");
    return { ok: ctx.attempt };
  });
  const done = w.run();
  try {
    const { workflowId } = await client.start(name, null);
    const run = await client.wait(workflowId, { timeoutMs: 20_000 });
    assert.equal(run.status, "failed");
    const flakyTask = run.tasks.find((t) => t.step_id === "flaky");
    assert.equal(flakyTask.status, "completed");
    assert.equal(flakyTask.attempt, 2);
    assert.deepEqual(flakyTask.output, { ok: 2 });
    const history = await client.history(workflowId);
    const failed = history.find((e) => e.type === "task_failed" && e.task_id === flakyTask.task_id);
    assert.equal(failed?.error?.type, "panic", JSON.stringify(failed));
    assert.match(failed.error.message, /RangeError: index out of range/);
    const mystery = run.tasks.find((t) => t.step_id === "mystery");
    assert.equal(mystery.status, "failed");
    assert.equal(mystery.attempt, 1, "not retried");
    assert.equal(mystery.error.type, "unknown_task");
    assert.equal(mystery.error.retryable, false);
    assert.ok(w.logs.some((r) => r.msg === "handler threw" && r.level === "error" && r.taskId === flakyTask.task_id));
  } finally {
    await w.stop();
    await done;
  }
});

test("TaskError.retryAfterMs is sent as retry_after_ms: the next attempt waits for it, not for the step's backoff", async () => {
  const name = unique("later");
  const queue = unique("q");
  await client.registerDefinition(`
name: ${name}
steps:
  - {id: call, task: call, queue: ${queue}, retry: {max_attempts: 3, initial_interval: 50ms}}
`);
  const w = worker(queue, { pollWaitMs: 1_000 });
  const starts = [];
  w.task("call", (ctx) => {
    starts.push(Date.now());
    if (ctx.attempt === 1) throw TaskError.retryable("rate_limited", "429 from upstream", { retryAfterMs: 2_000 });
    return { attempt: ctx.attempt };
  });
  const done = w.run();
  try {
    const { workflowId } = await client.start(name, {});
    const run = await client.wait(workflowId, { timeoutMs: 20_000 });
    assert.equal(run.status, "completed", JSON.stringify(run.error));
    assert.deepEqual(run.output, { call: { attempt: 2 } });
    assert.ok(starts[1] - starts[0] >= 2_000, `the second attempt started ${starts[1] - starts[0]} ms after the first`);
    const history = await client.history(workflowId);
    const failed = history.filter((e) => e.type === "task_failed");
    assert.equal(failed.length, 1);
    assert.equal(failed[0].error.type, "rate_limited");
    assert.ok(failed[0].retry_at_ms - failed[0].at_ms >= 2_000, `retry_at_ms is 2 s after the failure: ${JSON.stringify(failed[0])}`);
    const second = history.find((e) => e.type === "task_started" && e.attempt === 2);
    assert.ok(second && second.at_ms >= failed[0].retry_at_ms, `attempt 2 started at its retry_at_ms: ${JSON.stringify(second)}`);
    const first = history.find((e) => e.type === "task_started" && e.attempt === 1);
    assert.ok(failed[0].at_ms - first.at_ms < 1_500, "the failure was reported at once, not held back");
  } finally {
    await w.stop();
    await done;
  }
});

test("retryAfterMs does not make a non-retryable TaskError retry", async () => {
  const name = unique("fatal-later");
  const queue = unique("q");
  await client.registerDefinition(`
name: ${name}
steps:
  - {id: call, task: call, queue: ${queue}, retry: {max_attempts: 3, initial_interval: 50ms}}
`);
  const w = worker(queue, { pollWaitMs: 1_000 });
  let calls = 0;
  w.task("call", () => {
    calls++;
    throw TaskError.fatal("gone", "410 from upstream", { retryAfterMs: 5_000 });
  });
  const done = w.run();
  try {
    const { workflowId } = await client.start(name, {});
    const run = await client.wait(workflowId, { timeoutMs: 20_000 });
    assert.equal(run.status, "failed");
    assert.equal(calls, 1);
    const failed = (await client.history(workflowId)).filter((e) => e.type === "task_failed");
    assert.equal(failed.length, 1);
    assert.equal(failed[0].retry_at_ms ?? null, null, "no next attempt");
  } finally {
    await w.stop();
    await done;
  }
});

test("a task no worker took yet leaves its empty optional members out of the view", async () => {
  const name = unique("fresh");
  const queue = unique("q");
  await client.registerDefinition(`
name: ${name}
steps:
  - {id: only, task: only, queue: ${queue}}
`);
  const { workflowId } = await client.start(name, {});
  const run = await waitFor(async () => {
    const r = await client.get(workflowId);
    return r.tasks.length > 0 ? r : undefined;
  });
  assert.equal("parent_workflow_id" in run, false, JSON.stringify(run));
  const task = run.tasks[0];
  for (const member of ["worker_id", "metrics", "started_at", "finished_at", "human"]) {
    assert.equal(member in task, false, `${member} is left out: ${JSON.stringify(task)}`);
  }
  // Typed as optional: `?? null` reads absent and null alike.
  assert.equal(task.worker_id ?? null, null);
  assert.equal(task.metrics ?? null, null);
  await client.cancel(workflowId);
});

test("cpu_ms and peak_memory_bytes arrive on the task in the read model", async () => {
  const name = unique("metrics");
  const queue = unique("q");
  await client.registerDefinition(`
name: ${name}
steps:
  - {id: burn, task: burn, queue: ${queue}}
`);
  const w = worker(queue, { concurrency: 1 });
  w.task("burn", () => {
    // Burn 80 ms of CPU time (not wall time, which a loaded machine would stretch).
    const start = process.cpuUsage();
    let x = 0;
    for (;;) {
      for (let i = 0; i < 10_000; i++) x += Math.sqrt(x + 1);
      const used = process.cpuUsage(start);
      if (used.user + used.system >= 80_000) break;
    }
    const block = Buffer.alloc(16 * 1024 * 1024, 1);
    return { x: x > 0, bytes: block.length };
  });
  const done = w.run();
  try {
    const { workflowId } = await client.start(name, {});
    const run = await client.wait(workflowId, { timeoutMs: 20_000 });
    assert.equal(run.status, "completed");
    const metrics = run.tasks[0].metrics;
    assert.ok(metrics, `the task view has metrics: ${JSON.stringify(run.tasks[0])}`);
    assert.equal(typeof metrics.cpu_ms, "number");
    assert.ok(metrics.cpu_ms >= 80, `cpu_ms ${metrics.cpu_ms} covers the 80 ms of CPU burnt`);
    assert.ok(metrics.cpu_ms < 10_000, `cpu_ms ${metrics.cpu_ms} is milliseconds`);
    assert.ok(metrics.peak_memory_bytes > 16 * 1024 * 1024, `peak_memory_bytes ${metrics.peak_memory_bytes}`);
    const task = await client.getTask(run.tasks[0].task_id);
    assert.deepEqual(task.metrics, metrics);
  } finally {
    await w.stop();
    await done;
  }
});

test("stop() on an idle worker abandons its long-poll and resolves promptly", async () => {
  const w = worker(unique("idle"), { pollWaitMs: 20_000 });
  w.task("never", () => null);
  const done = w.run();
  await sleep(300);
  const t0 = Date.now();
  await w.stop();
  await done;
  assert.ok(Date.now() - t0 < 2_000, `stopped in ${Date.now() - t0} ms, not after the 20 s poll`);
  assert.ok(w.logs.some((r) => r.msg === "worker stopped"));
  await assert.rejects(w.run(), /already running or has run/);
});
