// The Client against a real `distorch standalone`: idempotent starts, problem+json errors,
// signals, waiting, and definitions registered as YAML or as objects.

import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { ApiError, Client, ConfigError, TransportError, WaitTimeoutError, uuidv7 } from "@distorch/sdk";
import { startServer, unique } from "./helpers.mjs";

let server;
let client;

before(async () => {
  server = await startServer();
  client = new Client(server.url + "/");
});

after(async () => {
  await server?.close();
});

/** A definition that waits for signal `go` and outputs its payload. */
async function registerSignalled() {
  const name = unique("sig");
  const ref = await client.registerDefinition({
    name,
    steps: [{ id: "go", signal: { name: "go" } }],
    output: ".steps.go.output",
  });
  assert.deepEqual(ref, { name, version: 1, unchanged: false });
  // The same document again is that version, unchanged.
  const again = await client.registerDefinition({
    name,
    steps: [{ id: "go", signal: { name: "go" } }],
    output: ".steps.go.output",
  });
  assert.deepEqual(again, { name, version: 1, unchanged: true });
  return name;
}

test("starting with the same workflowId twice never creates a second run", async () => {
  const name = await registerSignalled();
  const workflowId = uuidv7();
  const first = await client.start(name, { a: 1 }, { workflowId });
  assert.deepEqual(first, { workflowId, status: "running", existing: false });
  const second = await client.start(name, { a: 2 }, { workflowId });
  assert.equal(second.workflowId, workflowId);
  assert.equal(second.existing, true);
  const third = await client.start(name, { a: 3 }, { workflowId });
  assert.equal(third.existing, true);

  const page = await client.list({ definition: name });
  assert.deepEqual(
    page.items.map((r) => r.workflow_id),
    [workflowId],
    "exactly one run of the definition",
  );
  const run = await client.get(workflowId);
  assert.deepEqual(run.input, { a: 1 }, "the first start's input stands");
});

test("starting with the same idempotencyKey twice returns the first run", async () => {
  const name = await registerSignalled();
  const key = unique("order");
  const first = await client.start(name, { n: 1 }, { idempotencyKey: key });
  const second = await client.start(name, { n: 2 }, { idempotencyKey: key });
  assert.equal(first.existing, false);
  assert.equal(second.existing, true);
  assert.equal(second.workflowId, first.workflowId);
  // A start with neither gets a fresh id each time (the client names the run itself).
  const a = await client.start(name, {});
  const b = await client.start(name, {});
  assert.notEqual(a.workflowId, b.workflowId);
  const page = await client.list({ definition: name, limit: 10 });
  assert.equal(page.items.length, 3);
  await assert.rejects(client.start(name, {}, { workflowId: uuidv7(), idempotencyKey: "k" }), ConfigError);
});

test("signals reach the run; wait() returns the ended run or throws WaitTimeoutError", async () => {
  const name = await registerSignalled();
  const { workflowId } = await client.start(name, {});
  const err = await client.wait(workflowId, { timeoutMs: 300 }).catch((e) => e);
  assert.ok(err instanceof WaitTimeoutError, `got ${err}`);
  assert.equal(err.workflow.status, "running");

  const sent = await client.signal(workflowId, "go", { approved: true });
  assert.deepEqual(sent, { workflow_id: workflowId, signal: "go" });
  const run = await client.wait(workflowId, { timeoutMs: 10_000 });
  assert.equal(run.status, "completed");
  assert.deepEqual(run.output, { approved: true });
});

test("API errors are ApiErrors carrying the problem's status, title and detail", async () => {
  const missing = await client.get(uuidv7()).catch((e) => e);
  assert.ok(missing instanceof ApiError, `got ${missing}`);
  assert.equal(missing.status, 404);
  assert.equal(missing.title, "Not Found");
  assert.match(missing.detail, /no workflow run/);
  assert.equal(missing.type, "urn:distorch:problem:not-found");
  assert.equal(missing.retryable, false);

  const malformed = await client.get("not-a-uuid").catch((e) => e);
  assert.equal(malformed.status, 400);
  assert.match(malformed.detail, /not a workflow id/);

  const bad = await client.registerDefinition("name: broken\nsteps:\n  - {id: x, task: t, when: '.input |||'}\n").catch((e) => e);
  assert.ok(bad instanceof ApiError);
  assert.equal(bad.status, 400);
  assert.match(bad.detail, /steps\[0\]/, "the detail names the offending path");

  const unknown = await client.start(unique("nope"), {}).catch((e) => e);
  assert.equal(unknown.status, 404);

  // A verb the run's status does not allow: 409.
  const name = await registerSignalled();
  const { workflowId } = await client.start(name, {});
  const cancelled = await client.cancel(workflowId);
  assert.equal(cancelled.status, "cancelled");
  const again = await client.cancel(workflowId).catch((e) => e);
  assert.ok(again instanceof ApiError);
  assert.equal(again.status, 409);
  assert.equal(again.conflict, true);
  const late = await client.signal(workflowId, "go", {}).catch((e) => e);
  assert.equal(late.status, 409);
});

test("transport failures are TransportErrors; bad URLs are ConfigErrors", async () => {
  assert.throws(() => new Client("localhost:8000"), ConfigError);
  // A port nothing listens on: the server's own port after closing a throwaway listener.
  const { createServer } = await import("node:net");
  const port = await new Promise((resolve) => {
    const s = createServer().listen(0, "127.0.0.1", () => {
      const p = s.address().port;
      s.close(() => resolve(p));
    });
  });
  const dead = new Client(`http://127.0.0.1:${port}`);
  const err = await dead.get(uuidv7()).catch((e) => e);
  assert.ok(err instanceof TransportError, `got ${err}`);
  assert.equal(err.retryable, true);
});
