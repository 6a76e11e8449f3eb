// Pure functions and option validation; no server needed.

import { test } from "node:test";
import assert from "node:assert/strict";
import {
  ApiError,
  Client,
  ConfigError,
  RETRY,
  TaskError,
  Worker,
  backoffDelay,
  heartbeatIntervalFor,
  isTerminal,
  uuidv7,
} from "@distorch/sdk";

test("backoff doubles from 100 ms to a 5 s cap, jittered over the upper half", () => {
  assert.equal(backoffDelay(RETRY, 0, 1), 100);
  assert.equal(backoffDelay(RETRY, 1, 1), 200);
  assert.equal(backoffDelay(RETRY, 5, 1), 3200);
  assert.equal(backoffDelay(RETRY, 6, 1), 5000);
  assert.equal(backoffDelay(RETRY, 1e9, 1), 5000);
  assert.equal(backoffDelay(RETRY, 2, 0), 200);
  assert.equal(backoffDelay(RETRY, 2, 0.5), 300);
  assert.equal(backoffDelay(RETRY, 2, 7), 400);
  for (let i = 0; i < 10; i++) {
    const d = backoffDelay(RETRY, i);
    assert.ok(d >= backoffDelay(RETRY, i, 0) && d <= backoffDelay(RETRY, i, 1));
  }
});

test("heartbeats default to a third of the task's timeout, with a floor, else 10 s", () => {
  assert.equal(heartbeatIntervalFor(30_000), 10_000);
  assert.equal(heartbeatIntervalFor(900), 300);
  assert.equal(heartbeatIntervalFor(3), 10);
  assert.equal(heartbeatIntervalFor(0), 10_000);
  assert.equal(heartbeatIntervalFor(null), 10_000);
});

test("uuidv7 ids are UUIDs of version 7, unique and time-ordered", () => {
  const a = uuidv7();
  const b = uuidv7();
  assert.match(a, /^[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/);
  assert.notEqual(a, b);
  assert.ok(a.slice(0, 13) <= b.slice(0, 13));
});

test("TaskError defaults to retryable and validates its type", () => {
  const e = new TaskError("limit_exceeded", "too large", { retryable: false, retryAfterMs: 5000 });
  assert.equal(e.type, "limit_exceeded");
  assert.equal(e.retryable, false);
  assert.equal(e.retryAfterMs, 5000);
  assert.ok(e instanceof Error);
  assert.equal(new TaskError("x", "y").retryable, true);
  assert.equal(TaskError.fatal("x", "y").retryable, false);
  assert.equal(TaskError.retryable("x", "y").retryable, true);
  assert.throws(() => new TaskError("", "y"), TypeError);
  assert.throws(() => new TaskError("x", "y", { retryAfterMs: -1 }), RangeError);
  assert.throws(() => new TaskError("x", "y", { retryAfterMs: Number.NaN }), RangeError);
  assert.equal(new TaskError("x", "y", { retryAfterMs: 0 }).retryAfterMs, 0);
});

test("ApiError classifies statuses like the Rust SDK", () => {
  const err = (status) => new ApiError({ status, title: "t", method: "GET", url: "u" });
  for (const s of [500, 502, 503, 504, 408, 429]) assert.equal(err(s).retryable, true, String(s));
  for (const s of [400, 401, 404, 409, 413, 422]) assert.equal(err(s).retryable, false, String(s));
  assert.equal(err(409).conflict, true);
  assert.match(new ApiError({ status: 404, title: "Not Found", detail: "no run x", method: "GET", url: "http://h/x" }).message, /GET http:\/\/h\/x returned 404 Not Found: no run x/);
});

test("Worker options are validated", () => {
  const ok = { url: "http://127.0.0.1:1", queue: "q" };
  assert.throws(() => new Worker({ ...ok, queue: "" }), ConfigError);
  assert.throws(() => new Worker({ ...ok, queue: "a/b" }), ConfigError);
  assert.throws(() => new Worker({ ...ok, concurrency: 0 }), ConfigError);
  assert.throws(() => new Worker({ ...ok, maxTasksPerPoll: 101 }), ConfigError);
  assert.throws(() => new Worker({ ...ok, pollWaitMs: 60_001 }), ConfigError);
  assert.throws(() => new Worker({ ...ok, heartbeatIntervalMs: 0 }), ConfigError);
  assert.throws(() => new Worker({ ...ok, logLevel: "loud" }), ConfigError);
  assert.throws(() => new Worker({ queue: "q" }), ConfigError);
  assert.throws(() => new Worker({ ...ok, url: "127.0.0.1:1" }), ConfigError);
  const w = new Worker(ok);
  assert.match(w.workerId, /^.+-\d+-\d+$/);
  assert.notEqual(w.workerId, new Worker(ok).workerId);
  assert.equal(w.task("a", () => 1), w, "task() chains");
});

test("terminal statuses", () => {
  for (const s of ["completed", "failed", "compensated", "cancelled"]) assert.equal(isTerminal(s), true);
  for (const s of ["running", "paused", "parked", "compensating", null]) assert.equal(isTerminal(s), false);
});

test("Client.fail sends retryAfterMs as retry_after_ms (rounded up) and nothing when absent", async () => {
  const bodies = [];
  const fakeFetch = async (_url, init) => {
    bodies.push(JSON.parse(init.body));
    return new Response("{}", { status: 200, headers: { "content-type": "application/json" } });
  };
  const client = new Client("http://127.0.0.1:1", { fetch: fakeFetch });
  await client.fail("t.1", 1, { type: "rate_limited", message: "m", retryable: true, retryAfterMs: 1500.2 });
  await client.fail("t.1", 2, { type: "boom", message: "m", retryable: true });
  assert.deepEqual(bodies[0], {
    attempt: 1,
    error: { type: "rate_limited", message: "m", retryable: true },
    retry_after_ms: 1501,
  });
  assert.equal("retry_after_ms" in bodies[1], false);
  await assert.rejects(client.fail("t.1", 3, { type: "x", message: "", retryable: true, retryAfterMs: -5 }), RangeError);
  assert.equal(bodies.length, 2, "an invalid delay is not sent");
});
