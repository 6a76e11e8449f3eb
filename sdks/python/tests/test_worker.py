"""The worker against a real server: every test registers its own definition with its own
queue, runs real workers, and checks the outcome through the API."""

from __future__ import annotations

import asyncio
import json
import logging
import signal
import threading
import time
from pathlib import Path
from typing import Any

import pytest

import distorch
from conftest import Server, marker_lines, running, start_server, subprocess_worker, wait_for


def test_multi_step_run_completes_with_outputs_flowing_between_steps(
    client: distorch.Client, uid: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="distorch")
    q = f"q-{uid}"
    client.register_definition(
        f"""
name: order-{uid}
steps:
  - id: reserve
    task: reserve
    queue: {q}
    input: '{{order: .input.order_id, qty: .input.qty}}'
  - id: charge
    task: charge
    queue: {q}
    input: '{{reservation: .steps.reserve.output.reservation_id, amount: (.input.qty * 10)}}'
  - id: ship
    task: ship
    queue: {q}
    input: '{{charge: .steps.charge.output.charge_id, order: .input.order_id}}'
output: '{{tracking: .steps.ship.output.tracking, charged: .steps.charge.output.amount}}'
"""
    )
    seen: dict[str, Any] = {}
    worker = distorch.Worker(url=client.url, queue=q, concurrency=4, poll_wait=1)

    @worker.task("reserve")
    def reserve(ctx: distorch.TaskContext, input: dict[str, Any]) -> dict[str, Any]:
        seen["reserve"] = input
        ctx.logger.info("reserving")
        return {"reservation_id": f"r-{input['order']}"}

    @worker.task("charge")
    def charge(ctx: distorch.TaskContext, input: dict[str, Any]) -> dict[str, Any]:
        seen["charge"] = input
        return {"charge_id": "ch_1", "amount": input["amount"]}

    @worker.task("ship")
    async def ship(ctx: distorch.TaskContext, input: dict[str, Any]) -> dict[str, Any]:
        seen["ship"] = input
        return {"tracking": f"track-{input['charge']}"}

    with running(worker):
        run = client.start(f"order-{uid}", {"order_id": "o-7", "qty": 3})
        done = client.wait(run.workflow_id, timeout=30)

    assert done.status == "completed", done
    assert seen == {
        "reserve": {"order": "o-7", "qty": 3},
        "charge": {"reservation": "r-o-7", "amount": 30},
        "ship": {"charge": "ch_1", "order": "o-7"},
    }
    assert done.output == {"tracking": "track-ch_1", "charged": 30}
    assert [t.step_id for t in done.tasks] == ["reserve", "charge", "ship"]
    for t in done.tasks:
        assert t.status == "completed" and t.attempt == 1
        assert t.worker_id == worker.worker_id

    # Structured logging: the handler's and the SDK's records carry the attempt's ids.
    mine = [r for r in caplog.records if getattr(r, "workflow_id", None) == run.workflow_id]
    handler_records = [r for r in mine if r.getMessage() == "reserving"]
    assert handler_records and handler_records[0].name == "distorch.task"
    assert handler_records[0].attempt == 1  # type: ignore[attr-defined]
    assert handler_records[0].task_id == done.tasks[0].task_id  # type: ignore[attr-defined]
    assert any(r.getMessage().startswith("attempt completed") for r in mine)


def test_non_retryable_error_parks_the_task(client: distorch.Client, uid: str) -> None:
    q = f"q-{uid}"
    client.register_definition(
        f"""
name: park-{uid}
defaults:
  retry: {{max_attempts: 5, initial_interval: 100ms}}
  on_failure: park
steps:
  - id: charge
    task: charge
    queue: {q}
"""
    )
    calls: list[int] = []
    worker = distorch.Worker(url=client.url, queue=q, poll_wait=1)

    @worker.task("charge")
    def charge(ctx: distorch.TaskContext, input: dict[str, Any]) -> dict[str, Any]:
        calls.append(ctx.attempt)
        if input["amount"] > 10_000:
            raise distorch.TaskError("limit_exceeded", "amount too large", retryable=False)
        return {"charge_id": "ch_1"}

    with running(worker):
        run = client.start(f"park-{uid}", {"amount": 20_000})
        view = client.wait(run.workflow_id, timeout=20, until={"parked"})

    assert calls == [1], "a non-retryable error must not be retried"
    (task,) = view.tasks
    assert task.parked and task.status == "failed" and task.attempt == 1
    assert task.error == distorch.ErrorInfo("limit_exceeded", "amount too large", False)
    assert any(d["task_id"] == task.task_id for d in client.dead_letters())
    client.cancel(run.workflow_id)


def test_non_retryable_type_in_the_definition_compensates(
    client: distorch.Client, uid: str
) -> None:
    q = f"q-{uid}"
    client.register_definition(
        f"""
name: saga-{uid}
defaults:
  retry: {{max_attempts: 4, initial_interval: 100ms, non_retryable: [card_declined]}}
steps:
  - id: reserve
    task: reserve
    queue: {q}
    compensate: release
  - id: charge
    task: charge
    queue: {q}
    input: '{{amount: .input.amount, reservation: .steps.reserve.output.reservation_id}}'
compensations:
  release: {{task: release, queue: {q}, input: '.steps.reserve.output'}}
"""
    )
    calls: list[tuple[str, int, Any]] = []
    worker = distorch.Worker(url=client.url, queue=q, poll_wait=1)

    @worker.task("reserve")
    def reserve(ctx: distorch.TaskContext, input: Any) -> Any:
        calls.append(("reserve", ctx.attempt, input))
        return {"reservation_id": "r-1"}

    @worker.task("charge")
    async def charge(ctx: distorch.TaskContext, input: Any) -> Any:
        calls.append(("charge", ctx.attempt, input))
        # Retryable by itself, but the step's policy names the type as non-retryable.
        raise distorch.TaskError("card_declined", "insufficient funds")

    @worker.task("release")
    def release(ctx: distorch.TaskContext, input: Any) -> Any:
        calls.append(("release", ctx.attempt, input))
        return {"released": input["reservation_id"]}

    with running(worker):
        run = client.start(f"saga-{uid}", {"amount": 5})
        view = client.wait(run.workflow_id, timeout=20)

    assert view.status == "compensated", view
    assert calls == [
        ("reserve", 1, {"amount": 5}),
        ("charge", 1, {"amount": 5, "reservation": "r-1"}),
        ("release", 1, {"reservation_id": "r-1"}),
    ]
    by_task = {t.task: t for t in view.tasks}
    assert by_task["charge"].status == "failed" and by_task["charge"].attempt == 1
    assert by_task["charge"].error is not None
    assert by_task["charge"].error.type == "card_declined"
    assert by_task["release"].kind == "compensation"
    assert by_task["release"].status == "completed"
    assert by_task["release"].output == {"released": "r-1"}


def test_heartbeat_timeout_hands_the_checkpoint_to_another_worker(
    server: Server, client: distorch.Client, uid: str, tmp_path: Path
) -> None:
    q = f"q-{uid}"
    client.register_definition(
        f"""
name: hb-{uid}
steps:
  - id: crunch
    task: crunch
    queue: {q}
    heartbeat_timeout: 2s
    retry: {{max_attempts: 3, initial_interval: 100ms}}
"""
    )
    marker = tmp_path / "a.log"
    run = client.start(f"hb-{uid}", {"checkpoint": {"rows_done": 300, "cursor": "c-42"}})
    # Worker A: saves a checkpoint, then dies (SIGKILL) mid-task.
    with subprocess_worker(server, q, "crunch", "stall", marker) as worker_a:
        wait_for(
            lambda: any(line.startswith("checkpointed") for line in marker_lines(marker)),
            timeout=20,
            what="worker A's checkpoint",
        )
        worker_a.process.send_signal(signal.SIGKILL)
        worker_a.process.wait(10)

    seen: list[tuple[int, Any]] = []
    worker_b = distorch.Worker(url=client.url, queue=q, poll_wait=1)

    @worker_b.task("crunch")
    def crunch(ctx: distorch.TaskContext, input: Any) -> Any:
        seen.append((ctx.attempt, ctx.checkpoint))
        return {"resumed_from": ctx.checkpoint["cursor"]}

    with running(worker_b):
        view = client.wait(run.workflow_id, timeout=30)

    assert view.status == "completed", view
    assert seen == [(2, {"rows_done": 300, "cursor": "c-42"})]
    (task,) = view.tasks
    assert task.attempt == 2 and task.worker_id == worker_b.worker_id
    assert task.output == {"resumed_from": "c-42"}
    failures = [e for e in client.history(run.workflow_id) if e.get("type") == "task_failed"]
    assert failures and failures[0]["error"]["type"] == "timeout.heartbeat", failures


def test_a_stale_attempts_completion_is_dropped_without_crashing(
    client: distorch.Client, uid: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="distorch")
    q = f"q-{uid}"
    client.register_definition(
        f"""
name: stale-{uid}
steps:
  - id: work
    task: work
    queue: {q}
    heartbeat_timeout: 2s
    retry: {{max_attempts: 3, initial_interval: 100ms}}
"""
    )
    release_a = threading.Event()
    a_started = threading.Event()
    a_calls: list[str] = []
    # Worker A never heartbeats on its own (a huge interval): its handler stalls, the lease
    # lapses, and B takes attempt 2.
    worker_a = distorch.Worker(
        url=client.url, queue=q, poll_wait=1, heartbeat_interval=3600, concurrency=1
    )

    @worker_a.task("work")
    def work_a(ctx: distorch.TaskContext, input: Any) -> Any:
        a_calls.append(ctx.task_id)
        if input.get("stall"):
            a_started.set()
            release_a.wait(30)
        return {"by": "A", "attempt": ctx.attempt}

    worker_b = distorch.Worker(url=client.url, queue=q, poll_wait=1)

    @worker_b.task("work")
    def work_b(ctx: distorch.TaskContext, input: Any) -> Any:
        return {"by": "B", "attempt": ctx.attempt}

    with running(worker_a):
        run = client.start(f"stale-{uid}", {"stall": True})
        assert a_started.wait(15)
        with running(worker_b):
            view = client.wait(run.workflow_id, timeout=30)
        assert view.status == "completed"
        assert view.output == {"work": {"by": "B", "attempt": 2}}
        # Now A finishes attempt 1: the server answers 409 and A drops the result.
        release_a.set()
        wait_for(
            lambda: any("409" in r.getMessage() for r in caplog.records),
            timeout=10,
            what="A's completion to be refused",
        )
        # A is still alive and takes new work.
        second = client.start(f"stale-{uid}", {"stall": False})
        assert client.wait(second.workflow_id, timeout=20).output == {
            "work": {"by": "A", "attempt": 1}
        }
    assert client.get(run.workflow_id).output == {"work": {"by": "B", "attempt": 2}}
    assert len(a_calls) == 2


@pytest.mark.parametrize("style", ["sync", "async"])
def test_cancellation_is_seen_by_the_handler(
    client: distorch.Client, uid: str, style: str
) -> None:
    q = f"q-{uid}"
    client.register_definition(
        f"""
name: cancel-{uid}
steps:
  - id: loop
    task: loop
    queue: {q}
    heartbeat_timeout: 3s
"""
    )
    started = threading.Event()
    saw_cancel = threading.Event()
    worker = distorch.Worker(url=client.url, queue=q, poll_wait=1)

    if style == "sync":

        @worker.task("loop")
        def loop_sync(ctx: distorch.TaskContext, input: Any) -> Any:
            started.set()
            deadline = time.monotonic() + 20
            while not ctx.cancelled and time.monotonic() < deadline:
                time.sleep(0.05)
            if ctx.cancelled:
                saw_cancel.set()
            return "finished anyway"

    else:

        @worker.task("loop")
        async def loop_async(ctx: distorch.TaskContext, input: Any) -> Any:
            started.set()
            try:
                for _ in range(400):
                    if ctx.cancelled:
                        saw_cancel.set()
                        return "saw the flag"
                    await asyncio.sleep(0.05)
            except asyncio.CancelledError:
                assert ctx.cancelled
                saw_cancel.set()
                raise
            return "finished anyway"

    with running(worker):
        run = client.start(f"cancel-{uid}", {})
        assert started.wait(15)
        client.cancel(run.workflow_id, reason="test")
        # Automatic heartbeats every 1s (a third of 3s) bring the news.
        assert saw_cancel.wait(10), "the handler never saw the cancellation"
        view = client.wait(run.workflow_id, timeout=10)
    assert view.status == "cancelled"
    (task,) = view.tasks
    assert task.status == "cancelled"


def test_async_handlers_run_concurrently_and_checkpoint(
    client: distorch.Client, uid: str
) -> None:
    q = f"q-{uid}"
    client.register_definition(
        f"""
name: fanout-{uid}
steps:
  - id: each
    foreach:
      items: '.input.items'
      steps: [{{id: fetch, task: fetch, queue: {q}, input: '.item'}}]
"""
    )
    in_flight = 0
    peak = 0
    acks: list[bool] = []
    worker = distorch.Worker(url=client.url, queue=q, concurrency=8, poll_wait=1)

    @worker.task("fetch")
    async def fetch(ctx: distorch.TaskContext, input: int) -> dict[str, int]:
        nonlocal in_flight, peak
        in_flight += 1
        peak = max(peak, in_flight)
        try:
            acks.append(await ctx.aheartbeat({"item": input}))
            assert ctx.heartbeat({"item": input, "more": True})  # non-blocking on the loop
            await asyncio.sleep(0.5)
            return {"item": input, "squared": input * input}
        finally:
            in_flight -= 1

    items = list(range(8))
    with running(worker, use_async=True):  # `await worker.run_async()` on its own loop
        start = time.monotonic()
        run = client.start(f"fanout-{uid}", {"items": items})
        view = client.wait(run.workflow_id, timeout=30)
        elapsed = time.monotonic() - start
    assert view.status == "completed", view
    assert view.output == {"each": [{"item": i, "squared": i * i} for i in items]}
    assert acks == [True] * len(items)
    assert peak > 1, "async handlers did not overlap"
    assert elapsed < 0.5 * len(items), f"took {elapsed:.1f}s: not concurrent"
    for t in view.tasks:
        assert t.metrics is not None and t.metrics.cpu_ms is not None


def test_cpu_time_and_memory_arrive_with_the_task(client: distorch.Client, uid: str) -> None:
    q = f"q-{uid}"
    client.register_definition(
        f"""
name: burn-{uid}
steps:
  - id: spin
    task: spin
    queue: {q}
  - id: spin-async
    task: spin-async
    queue: {q}
"""
    )
    worker = distorch.Worker(url=client.url, queue=q, poll_wait=1)

    def burn(seconds: float) -> int:
        end = time.thread_time() + seconds
        n = 0
        while time.thread_time() < end:
            n += 1
        return n

    @worker.task("spin")
    def spin(ctx: distorch.TaskContext, input: Any) -> Any:
        blob = bytearray(32 * 1024 * 1024)  # touched: counts in RSS
        burn(0.15)
        time.sleep(0.2)  # waiting costs no CPU
        return {"len": len(blob)}

    @worker.task("spin-async")
    async def spin_async(ctx: distorch.TaskContext, input: Any) -> Any:
        burn(0.1)
        await asyncio.sleep(0.3)  # other work on the loop meanwhile is not charged
        burn(0.1)
        return {}

    with running(worker):
        run = client.start(f"burn-{uid}", {})
        view = client.wait(run.workflow_id, timeout=30)
    assert view.status == "completed", view
    sync_task, async_task = view.tasks
    for t, low, high in ((sync_task, 140, 300), (async_task, 190, 400)):
        assert t.metrics is not None, t
        assert t.metrics.cpu_ms is not None and low <= t.metrics.cpu_ms <= high, t.metrics
        assert t.metrics.peak_memory_bytes is not None
        assert t.metrics.peak_memory_bytes > 10 * 1024 * 1024, t.metrics
    assert sync_task.metrics is not None and sync_task.metrics.peak_memory_bytes is not None
    assert sync_task.metrics.peak_memory_bytes >= 32 * 1024 * 1024


def test_sigterm_drains_in_flight_tasks_and_takes_no_new_ones(
    server: Server, client: distorch.Client, uid: str, tmp_path: Path
) -> None:
    q = f"q-{uid}"
    client.register_definition(
        f"""
name: drain-{uid}
steps:
  - id: slow
    task: slow
    queue: {q}
"""
    )
    marker = tmp_path / "worker.log"
    # Concurrency 2: while the first task runs, a long-poll for a second one is open.
    with subprocess_worker(server, q, "slow", "slow", marker, concurrency=2) as worker:
        wait_for(lambda: "ready" in marker_lines(marker), timeout=20, what="the worker")
        first = client.start(f"drain-{uid}", {"sleep": 2.0})
        wait_for(
            lambda: any(line.startswith("started") for line in marker_lines(marker)),
            timeout=20,
            what="the first task to start",
        )
        worker.process.send_signal(signal.SIGTERM)
        wait_for(
            lambda: "worker stopping" in worker.text(), timeout=10, what="the signal's effect"
        )
        # Started after the worker acted on the signal: it must leave this one alone.
        second = client.start(f"drain-{uid}", {"sleep": 0.1})
        code = worker.process.wait(20)
    output = worker.text()
    assert code == 0, output
    lines = marker_lines(marker)
    assert lines[-1] == "exited", lines
    assert [line.split()[0] for line in lines] == ["ready", "started", "finished", "exited"]
    done = client.wait(first.workflow_id, timeout=10)
    assert done.status == "completed" and done.output == {"slow": {"slept": 2.0}}
    # Give a wrongly taken task time to show up, then check nobody took it.
    time.sleep(0.5)
    pending = client.get(second.workflow_id)
    assert pending.status == "running"
    (task,) = pending.tasks
    assert task.status == "scheduled" and task.worker_id is None, task
    assert "received SIGTERM" in output and "worker stopped" in output, output
    client.cancel(second.workflow_id)


def test_unknown_task_types_and_exceptions_are_reported(
    client: distorch.Client, uid: str
) -> None:
    q = f"q-{uid}"
    client.register_definition(
        f"""
name: errs-{uid}
defaults:
  retry: {{max_attempts: 3, initial_interval: 100ms}}
steps:
  - id: flaky
    task: flaky
    queue: {q}
  - id: nobody
    task: nobody-handles-this
    queue: {q}
"""
    )
    worker = distorch.Worker(url=client.url, queue=q, poll_wait=1)

    @worker.task("flaky")
    def flaky(ctx: distorch.TaskContext, input: Any) -> Any:
        if ctx.attempt == 1:
            raise KeyError("first time")
        return {"attempt": ctx.attempt}

    with running(worker):
        run = client.start(f"errs-{uid}", {})
        view = client.wait(run.workflow_id, timeout=20)
    assert view.status == "failed", view
    flaky_task, nobody = view.tasks
    assert flaky_task.status == "completed" and flaky_task.attempt == 2
    assert flaky_task.output == {"attempt": 2}
    events = client.history(run.workflow_id)
    failed = [e for e in events if e.get("type") == "task_failed"]
    assert failed[0]["error"]["type"] == "KeyError"
    assert nobody.status == "failed" and nobody.attempt == 1
    assert nobody.error is not None and nobody.error.type == "unknown_task"
    assert not nobody.error.retryable


def test_events_are_plain_json() -> None:
    # TaskError carries its fields, and is an Exception users can raise anywhere.
    e = distorch.TaskError("rate_limited", "slow down", retry_after=1.5)
    assert (e.type, e.message, e.retryable, e.retry_after) == (
        "rate_limited",
        "slow down",
        True,
        1.5,
    )
    assert json.loads(json.dumps({"error": str(e)})) == {"error": "rate_limited: slow down"}
    with pytest.raises(ValueError):
        distorch.TaskError("")


def test_retry_after_delays_the_next_attempt(client: distorch.Client, uid: str) -> None:
    """``retry_after`` travels with the failure report (``retry_after_ms``): the report goes
    out at once and the engine schedules the next attempt no earlier than that."""
    q = f"q-{uid}"
    client.register_definition(
        f"""
name: later-{uid}
steps:
  - id: call
    task: call
    queue: {q}
    retry: {{max_attempts: 3, initial_interval: 50ms}}
"""
    )
    starts: list[float] = []
    raised: list[float] = []
    worker = distorch.Worker(url=client.url, queue=q, poll_wait=1)

    @worker.task("call")
    def call(ctx: distorch.TaskContext, input: Any) -> Any:
        starts.append(time.monotonic())
        if ctx.attempt == 1:
            raised.append(time.monotonic())
            raise distorch.TaskError("rate_limited", "429 from upstream", retry_after=2.0)
        return {"attempt": ctx.attempt}

    with running(worker):
        run = client.start(f"later-{uid}", {})
        view = client.wait(run.workflow_id, timeout=20)
    assert view.status == "completed" and view.output == {"call": {"attempt": 2}}
    assert starts[1] - starts[0] >= 2.0

    events = client.history(run.workflow_id)
    (failed,) = [e for e in events if e.get("type") == "task_failed"]
    assert failed["error"]["type"] == "rate_limited"
    # The engine honoured the worker's delay, not the step's 50 ms backoff.
    assert failed["retry_at_ms"] - failed["at_ms"] >= 2000, failed
    second = [e for e in events if e.get("type") == "task_started" and e.get("attempt") == 2]
    assert second and second[0]["at_ms"] >= failed["retry_at_ms"], (second, failed)
    # The report was not held back: the failure was recorded well before the delay ran out.
    started1 = [e for e in events if e.get("type") == "task_started" and e.get("attempt") == 1]
    assert failed["at_ms"] - started1[0]["at_ms"] < 1500, (started1, failed)
    (task,) = view.tasks
    assert task.status == "completed" and task.attempt == 2, task


def test_retry_after_does_not_make_a_non_retryable_error_retry(
    client: distorch.Client, uid: str
) -> None:
    q = f"q-{uid}"
    client.register_definition(
        f"""
name: fatal-later-{uid}
steps:
  - id: call
    task: call
    queue: {q}
    retry: {{max_attempts: 3, initial_interval: 50ms}}
"""
    )
    worker = distorch.Worker(url=client.url, queue=q, poll_wait=1)

    @worker.task("call")
    def call(ctx: distorch.TaskContext, input: Any) -> Any:
        raise distorch.TaskError("gone", "410", retryable=False, retry_after=5.0)

    with running(worker):
        run = client.start(f"fatal-later-{uid}", {})
        view = client.wait(run.workflow_id, timeout=20)
    assert view.status == "failed", view
    (failed,) = [e for e in client.history(run.workflow_id) if e.get("type") == "task_failed"]
    assert failed.get("retry_at_ms") is None, failed


def test_a_result_is_resent_until_the_server_is_back(tmp_path: Path, uid: str) -> None:
    """The server goes down while a handler runs: the completion fails (connection
    refused), is retried with backoff, and lands once the server is back."""
    data = tmp_path / "data"
    srv = start_server(data)
    port = srv.url.rsplit(":", 1)[1]
    q = f"q-{uid}"
    try:
        client = distorch.Client(srv.url)
        client.register_definition(
            {"name": f"restart-{uid}", "steps": [{"id": "work", "task": "work", "queue": q}]}
        )
        started = threading.Event()
        release = threading.Event()
        calls: list[int] = []
        worker = distorch.Worker(url=srv.url, queue=q, poll_wait=1)

        @worker.task("work")
        def work(ctx: distorch.TaskContext, input: Any) -> Any:
            calls.append(ctx.attempt)
            started.set()
            assert release.wait(30)
            return {"survived": True}

        with running(worker):
            run = client.start(f"restart-{uid}", {})
            assert started.wait(15)
            srv.stop()
            release.set()
            time.sleep(1.0)  # several failed reports (and polls) meanwhile
            srv = start_server(data, listen=f"127.0.0.1:{port}")
            view = client.wait(run.workflow_id, timeout=30)
        assert view.status == "completed", view
        assert view.output == {"work": {"survived": True}}
        assert calls == [1], "the attempt must not have been run again"
    finally:
        srv.stop()


def test_a_signal_feeds_the_next_step(client: distorch.Client, uid: str) -> None:
    q = f"q-{uid}"
    client.register_definition(
        f"""
name: signal-{uid}
steps:
  - id: paid
    signal: {{name: payment-received, timeout: 1m}}
  - id: ship
    task: ship
    queue: {q}
    input: '{{payment: .steps.paid.output, order: .input.order}}'
"""
    )
    worker = distorch.Worker(url=client.url, queue=q, poll_wait=1)

    @worker.task("ship")
    def ship(ctx: distorch.TaskContext, input: Any) -> Any:
        return {"shipped": input["order"], "paid": input["payment"]["amount"]}

    with running(worker):
        run = client.start(f"signal-{uid}", {"order": "o-9"})
        client.signal(run.workflow_id, "payment-received", {"amount": 42})
        view = client.wait(run.workflow_id, timeout=20)
    assert view.status == "completed", view
    assert view.output == {"paid": {"amount": 42}, "ship": {"shipped": "o-9", "paid": 42}}
