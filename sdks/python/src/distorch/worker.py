"""The poll / execute / report loop: :class:`Worker`.

The loop runs on an asyncio event loop. HTTP calls (blocking, on :mod:`http.client`) run on
a pool of daemon I/O threads; synchronous handlers run on a pool of ``concurrency`` daemon
threads; ``async`` handlers run as tasks on the loop itself. See the README for the
delivery guarantees, which are the Rust SDK's.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import inspect
import itertools
import json
import logging
import os
import queue as queue_mod
import re
import signal
import socket
import threading
import time
from dataclasses import dataclass
from typing import Any, Awaitable, Callable, TypeVar, Union

from ._http import Abort
from ._usage import AttemptUsage, MeteredCoroutine
from .client import Client, _backoff
from .context import Lease, TaskContext
from .errors import ApiError, DistorchError, TaskError
from .models import Metrics, PolledTask

__all__ = ["Handler", "Worker"]

_log = logging.getLogger("distorch.worker")

#: A handler: ``(ctx, input) -> output``, plain or ``async``. The output must be
#: JSON-serialisable.
Handler = Union[
    Callable[[TaskContext, Any], Any],
    Callable[[TaskContext, Any], Awaitable[Any]],
]
H = TypeVar("H", bound=Callable[..., Any])

#: Heartbeat cadence when neither the worker nor the task says otherwise.
DEFAULT_HEARTBEAT_INTERVAL = 10.0
#: Floor for intervals derived from tiny ``heartbeat_timeout_ms`` values.
MIN_HEARTBEAT_INTERVAL = 0.01
#: The server's limits on a poll.
MAX_TASKS_PER_POLL = 100
MAX_POLL_WAIT = 60.0

_QUEUE_RE = re.compile(r"^[A-Za-z0-9_.-]{1,200}$")
_worker_ids = itertools.count(1)


def heartbeat_interval_for(heartbeat_timeout_ms: int | None) -> float:
    """Default heartbeat interval for a task: a third of its heartbeat timeout (so two
    heartbeats can be lost before the lease lapses), else 10 s; never under 10 ms."""
    if heartbeat_timeout_ms is not None and heartbeat_timeout_ms > 0:
        return max(heartbeat_timeout_ms / 1000.0 / 3.0, MIN_HEARTBEAT_INTERVAL)
    return DEFAULT_HEARTBEAT_INTERVAL


def default_worker_id() -> str:
    """``<hostname>-<pid>-<n>``, unique per worker in the process."""
    host = socket.gethostname() or os.environ.get("HOSTNAME") or "worker"
    return f"{host}-{os.getpid()}-{next(_worker_ids)}"


def _is_async(fn: Callable[..., Any]) -> bool:
    return inspect.iscoroutinefunction(fn) or inspect.iscoroutinefunction(
        getattr(fn, "__call__", None)
    )


class Worker:
    """Runs task handlers for one queue of a DisTorch server.

    ::

        worker = distorch.Worker(url="http://127.0.0.1:8000", queue="payments", concurrency=16)

        @worker.task("charge-card")
        def charge(ctx: distorch.TaskContext, input: dict) -> dict:
            ...

        worker.run()   # until SIGINT/SIGTERM, then drains in-flight attempts

    :param url: the server's base URL (or pass ``client``).
    :param queue: the queue to take tasks from (a step's ``queue``, which defaults to its
        task type).
    :param concurrency: most attempts running at once. Polls ask only for free slots, so a
        busy worker leaves tasks to its peers. Default 10.
    :param max_tasks_per_poll: most tasks one poll asks for (the server allows 100).
        Default 10.
    :param poll_wait: seconds one long-poll may wait for work (the server allows 60).
        Default 20.
    :param pollers: concurrent poll loops. Default 1.
    :param heartbeat_interval: seconds between automatic heartbeats. Default: a third of
        the task's ``heartbeat_timeout``, or 10 s when its step has none.
    :param worker_id: how this worker is shown on tasks. Default ``<host>-<pid>-<n>``.
    :param metrics: whether reports carry ``metrics`` (``cpu_ms``,
        ``peak_memory_bytes``). Default on.
    :param client: a :class:`Client` to use instead of one built from ``url``.
    """

    def __init__(
        self,
        url: str | None = None,
        queue: str = "",
        *,
        concurrency: int = 10,
        max_tasks_per_poll: int = 10,
        poll_wait: float = 20.0,
        pollers: int = 1,
        heartbeat_interval: float | None = None,
        worker_id: str | None = None,
        metrics: bool = True,
        client: Client | None = None,
    ) -> None:
        if client is None:
            if url is None:
                raise ValueError("give the server's `url` or a `client`")
            client = Client(url)
        if not _QUEUE_RE.match(queue):
            raise ValueError(
                f"queue {queue!r} must be 1 to 200 characters of A-Z, a-z, 0-9, '-', '_' or '.'"
            )
        if concurrency < 1 or max_tasks_per_poll < 1 or pollers < 1:
            raise ValueError("concurrency, max_tasks_per_poll and pollers must be at least 1")
        if max_tasks_per_poll > MAX_TASKS_PER_POLL:
            raise ValueError(f"max_tasks_per_poll must be at most {MAX_TASKS_PER_POLL}")
        if not 0 <= poll_wait <= MAX_POLL_WAIT:
            raise ValueError(f"poll_wait must be from 0 to {MAX_POLL_WAIT:g} seconds")
        if heartbeat_interval is not None and heartbeat_interval <= 0:
            raise ValueError("heartbeat_interval must be positive")
        self.client = client
        self.queue = queue
        self.concurrency = concurrency
        self.max_tasks_per_poll = max_tasks_per_poll
        self.poll_wait = poll_wait
        self.pollers = pollers
        self.heartbeat_interval = heartbeat_interval
        self.worker_id = worker_id or default_worker_id()
        self.metrics = metrics
        self._handlers: dict[str, Callable[..., Any]] = {}
        self._lock = threading.Lock()
        self._run: _Run | None = None
        self._stop_requested = False

    def __repr__(self) -> str:
        return f"Worker(queue={self.queue!r}, worker_id={self.worker_id!r})"

    @property
    def handlers(self) -> list[str]:
        """The task types this worker has handlers for."""
        return sorted(self._handlers)

    def task(self, name: str) -> Callable[[H], H]:
        """Decorator: runs the function for tasks of type ``name``. The function takes
        ``(ctx: TaskContext, input)`` and returns the step's output (any JSON value); it may
        be ``async``. Registering a type twice keeps the last."""

        def register(fn: H) -> H:
            self.register(name, fn)
            return fn

        return register

    def register(self, name: str, handler: Handler) -> None:
        """Like :meth:`task`, without the decorator."""
        if not name:
            raise ValueError("task type must not be empty")
        if not callable(handler):
            raise TypeError("handler must be callable")
        self._handlers[name] = handler

    # -- running -----------------------------------------------------------------------

    def run(self, *, handle_signals: bool = True) -> None:
        """Polls and runs tasks until SIGINT/SIGTERM (or :meth:`stop`), then stops polling
        and returns once every in-flight attempt has finished and been reported.

        A second SIGINT/SIGTERM during the drain exits at once (the default signal action);
        the attempts still running then time out on the server and are retried.
        ``handle_signals=False`` leaves signals alone (e.g. in a thread, or when the
        application handles them and calls :meth:`stop`).
        """
        asyncio.run(self.run_async(handle_signals=handle_signals))

    async def run_async(self, *, handle_signals: bool = True) -> None:
        """:meth:`run` on the running event loop: ``await worker.run_async()``. Signal
        handlers are installed only in the main thread."""
        loop = asyncio.get_running_loop()
        run = _Run(self, loop)
        with self._lock:
            if self._run is not None:
                raise RuntimeError("this worker is already running")
            self._run = run
            stop_early = self._stop_requested
        restore = self._install_signals(loop, run) if handle_signals else []
        try:
            if stop_early:
                run.request_stop()
            await run.main()
        finally:
            for undo in restore:
                undo()
            with self._lock:
                self._run = None
                self._stop_requested = False

    def stop(self) -> None:
        """Asks a running worker to stop polling and drain; returns at once. Thread-safe. A
        worker not yet running stops as soon as it starts."""
        with self._lock:
            run = self._run
            self._stop_requested = True
        if run is not None:
            try:
                run.loop.call_soon_threadsafe(run.request_stop)
            except RuntimeError:  # loop already closed
                pass

    def _install_signals(
        self, loop: asyncio.AbstractEventLoop, run: _Run
    ) -> list[Callable[[], None]]:
        if threading.current_thread() is not threading.main_thread():
            return []
        undo: list[Callable[[], None]] = []
        sigs = [signal.SIGINT, signal.SIGTERM]

        def on_signal(sig: int) -> None:
            _log.info(
                "received %s (send it again to exit at once)",
                signal.Signals(sig).name,
                extra={"queue": self.queue, "worker_id": self.worker_id},
            )
            # A second signal gets the default action.
            for u in undo:
                u()
            undo.clear()
            run.request_stop()

        for sig in sigs:
            try:
                loop.add_signal_handler(sig, on_signal, sig)
                undo.append(_remover(loop, sig))
            except (NotImplementedError, RuntimeError, ValueError):
                # No add_signal_handler (Windows): a plain handler that hops to the loop.
                try:
                    previous = signal.getsignal(sig)

                    def plain(signum: int, frame: object) -> None:
                        loop.call_soon_threadsafe(on_signal, signum)

                    signal.signal(sig, plain)
                    undo.append(_restorer(sig, previous))
                except (ValueError, OSError):
                    pass
        return undo


def _remover(loop: asyncio.AbstractEventLoop, sig: int) -> Callable[[], None]:
    def undo() -> None:
        try:
            loop.remove_signal_handler(sig)
        except (RuntimeError, ValueError):
            pass

    return undo


def _restorer(sig: int, previous: Any) -> Callable[[], None]:
    def undo() -> None:
        try:
            signal.signal(sig, previous)
        except (ValueError, OSError):
            pass

    return undo


class _DaemonPool(concurrent.futures.Executor):
    """A thread pool of daemon threads: a handler stuck in a blocking call cannot keep the
    process alive after a second SIGINT/SIGTERM (``ThreadPoolExecutor`` joins its threads
    at exit)."""

    def __init__(self, max_workers: int, name: str) -> None:
        self._max = max_workers
        self._name = name
        self._queue: queue_mod.SimpleQueue[Any] = queue_mod.SimpleQueue()
        self._idle = threading.Semaphore(0)
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()
        self._shutdown = False

    def submit(
        self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any
    ) -> concurrent.futures.Future[Any]:
        future: concurrent.futures.Future[Any] = concurrent.futures.Future()
        with self._lock:
            if self._shutdown:
                raise RuntimeError("cannot schedule new work after shutdown")
            self._queue.put((future, fn, args, kwargs))
            if not self._idle.acquire(timeout=0) and len(self._threads) < self._max:
                t = threading.Thread(
                    target=self._work,
                    name=f"{self._name}-{len(self._threads) + 1}",
                    daemon=True,
                )
                self._threads.append(t)
                t.start()
        return future

    def _work(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            future, fn, args, kwargs = item
            if future.set_running_or_notify_cancel():
                try:
                    future.set_result(fn(*args, **kwargs))
                except BaseException as e:
                    future.set_exception(e)
            del item, future, fn, args, kwargs
            self._idle.release()

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        with self._lock:
            self._shutdown = True
            threads = list(self._threads)
        for _ in threads:
            self._queue.put(None)
        if wait:
            for t in threads:
                t.join()


class _Slots:
    """The concurrency bound: one slot per attempt from its poll to its report."""

    def __init__(self, total: int) -> None:
        self.total = total
        self.free = total
        self.changed = asyncio.Event()

    def release(self, n: int = 1) -> None:
        self.free += n
        self.changed.set()

    async def acquire_batch(self, maximum: int, stopping: Callable[[], bool]) -> int:
        """Waits for one free slot, then takes up to ``maximum`` without waiting: asking
        for slots we do not have would make the server lease tasks we cannot start.
        Returns 0 once stopping."""
        while self.free == 0 and not stopping():
            self.changed.clear()
            await self.changed.wait()
        if stopping():
            return 0
        n = min(self.free, maximum)
        self.free -= n
        return n

    async def acquire_one(self) -> None:
        while self.free == 0:
            self.changed.clear()
            await self.changed.wait()
        self.free -= 1

    async def all_free(self) -> None:
        while self.free < self.total:
            self.changed.clear()
            await self.changed.wait()


@dataclass
class _Completed:
    output: Any


@dataclass
class _Failed:
    type: str
    message: str
    retryable: bool
    retry_after: float | None = None


_Outcome = Union[_Completed, _Failed]


class _Run:
    """The state of one :meth:`Worker.run_async`."""

    def __init__(self, worker: Worker, loop: asyncio.AbstractEventLoop) -> None:
        self.w = worker
        self.loop = loop
        self.client = worker.client
        self.stopping = False
        self.stop_event = asyncio.Event()
        self.slots = _Slots(worker.concurrency)
        self.aborts: set[Abort] = set()
        self.in_flight = 0
        self.io = _DaemonPool(2 * worker.concurrency + 4, "distorch-io")
        self.poll_io = _DaemonPool(worker.pollers, "distorch-poll")
        self.handler_pool = _DaemonPool(worker.concurrency, "distorch-handler")
        self.base_extra = {"queue": worker.queue, "worker_id": worker.worker_id}

    def request_stop(self) -> None:
        if self.stopping:
            return
        self.stopping = True
        self.stop_event.set()
        self.slots.changed.set()
        # Abandon outstanding long-polls; should the server have handed them tasks in that
        # instant, those are redelivered after their timeout (as with the Rust SDK).
        for abort in list(self.aborts):
            abort.abort()
        _log.info(
            "worker stopping: no more polls; draining %d in-flight attempt(s)",
            self.in_flight,
            extra=self.base_extra,
        )

    def io_call(self, fn: Callable[[], Any], pool: _DaemonPool | None = None) -> asyncio.Future[Any]:
        return self.loop.run_in_executor(pool or self.io, fn)

    async def sleep_or_stop(self, delay: float) -> None:
        try:
            await asyncio.wait_for(self.stop_event.wait(), timeout=delay)
        except asyncio.TimeoutError:
            pass

    async def main(self) -> None:
        w = self.w
        _log.info(
            "worker started on queue %s with handlers %s",
            w.queue,
            ", ".join(w.handlers) or "(none)",
            extra=self.base_extra,
        )
        pollers = [self.loop.create_task(self.poll_loop()) for _ in range(w.pollers)]
        stop_wait = self.loop.create_task(self.stop_event.wait())
        failure: BaseException | None = None
        try:
            done, _ = await asyncio.wait(
                [*pollers, stop_wait], return_when=asyncio.FIRST_COMPLETED
            )
            for p in pollers:
                if p in done and not p.cancelled() and p.exception() is not None:
                    failure = p.exception()
                    _log.error("poll loop failed", exc_info=failure, extra=self.base_extra)
            self.request_stop()
            await asyncio.gather(*pollers, return_exceptions=True)
            # Every attempt holds a slot until it is reported: all free means drained.
            await self.slots.all_free()
        finally:
            stop_wait.cancel()
            for p in pollers:
                p.cancel()
            for pool in (self.io, self.poll_io, self.handler_pool):
                pool.shutdown(wait=False)
        _log.info("worker stopped", extra=self.base_extra)
        if failure is not None:
            raise failure

    async def poll_loop(self) -> None:
        w = self.w
        failures = 0
        while not self.stopping:
            n = await self.slots.acquire_batch(w.max_tasks_per_poll, lambda: self.stopping)
            if n == 0:
                return
            abort = Abort()
            self.aborts.add(abort)
            try:
                tasks: list[PolledTask] = await self.io_call(
                    lambda: self.client.poll(
                        w.queue, w.worker_id, max_tasks=n, wait=w.poll_wait, abort=abort
                    ),
                    self.poll_io,
                )
            except DistorchError as e:
                self.slots.release(n)
                if self.stopping:
                    return
                delay = _backoff(failures)
                failures += 1
                if e.retryable:
                    _log.warning("poll failed: %s; retrying in %.2fs", e, delay, extra=self.base_extra)
                else:
                    # Retrying will not fix a rejected poll, but stopping silently would be
                    # worse: keep trying, loudly.
                    _log.error("poll rejected: %s; retrying in %.2fs", e, delay, extra=self.base_extra)
                await self.sleep_or_stop(delay)
                continue
            finally:
                self.aborts.discard(abort)
            failures = 0
            for i, task in enumerate(tasks):
                if i >= n:
                    # More than asked for: it is leased to us, so run it, but only once a
                    # slot frees up, keeping the concurrency promise.
                    _log.warning("poll returned more tasks than requested (%d)", n, extra=self.base_extra)
                    await self.slots.acquire_one()
                self.loop.create_task(self.execute(task))
            if len(tasks) < n:
                self.slots.release(n - len(tasks))

    async def execute(self, task: PolledTask) -> None:
        extra = {
            **self.base_extra,
            "task_id": task.task_id,
            "workflow_id": task.workflow_id,
            "attempt": task.attempt,
            "task": task.task,
            "step_id": task.step_id,
        }
        self.in_flight += 1
        try:
            await self._execute(task, extra)
        except Exception:
            _log.exception("internal error running an attempt", extra=extra)
        finally:
            self.in_flight -= 1
            self.slots.release(1)

    async def _execute(self, task: PolledTask, extra: dict[str, Any]) -> None:
        w = self.w
        handler = w._handlers.get(task.task)
        if handler is None:
            _log.warning("no handler for task type %r; failing it", task.task, extra=extra)
            unknown = _Failed(
                "unknown_task",
                f"worker {w.worker_id} on queue {w.queue} has no handler for task type "
                f"`{task.task}`",
                retryable=False,
            )
            await self.report(task, unknown, None, extra)
            return

        interval = w.heartbeat_interval or heartbeat_interval_for(task.heartbeat_timeout_ms)
        lease = Lease(
            self.client,
            task.task_id,
            task.attempt,
            self.loop,
            lambda fn: self.io_call(fn),
            extra,
        )
        ctx = TaskContext(
            task_id=task.task_id,
            workflow_id=task.workflow_id,
            step_id=task.step_id,
            task=task.task,
            attempt=task.attempt,
            input=task.input,
            checkpoint=task.checkpoint,
            heartbeat_timeout=(
                task.heartbeat_timeout_ms / 1000.0 if task.heartbeat_timeout_ms else None
            ),
            queue=w.queue,
            worker_id=w.worker_id,
            lease=lease,
            logger=logging.LoggerAdapter(logging.getLogger("distorch.task"), extra),
        )
        usage = AttemptUsage() if w.metrics else None
        keep_alive = self.loop.create_task(self.keep_alive(lease, interval, usage))
        started = time.monotonic()
        _log.debug("attempt started", extra=extra)
        try:
            if _is_async(handler):
                result, cpu = await self._run_async_handler(handler, ctx, task.input, lease)
            else:
                result, cpu = await self.io_call(
                    lambda: _call_sync(handler, ctx, task.input, self.loop), self.handler_pool
                )
            elapsed = time.monotonic() - started
            if lease.cancelled:
                _log.info(
                    "attempt superseded or cancelled after %.3fs; result dropped",
                    elapsed,
                    extra=extra,
                )
                return
            outcome = self._outcome(result, extra, elapsed)
        finally:
            keep_alive.cancel()
        metrics = usage.finish(cpu) if usage is not None else None
        await self.report(task, outcome, metrics, extra)

    async def _run_async_handler(
        self,
        handler: Callable[..., Any],
        ctx: TaskContext,
        input: Any,
        lease: Lease,
    ) -> tuple[Any, float | None]:
        try:
            coro = handler(ctx, input)
        except BaseException as e:
            return _Raised(e), 0.0
        if not inspect.iscoroutine(coro):
            try:
                return await coro, None
            except BaseException as e:
                return _Raised(e), None
        metered = MeteredCoroutine(coro)

        async def drive() -> Any:
            return await metered

        running = self.loop.create_task(drive())
        cancelled = self.loop.create_task(lease.cancelled_async.wait())
        try:
            await asyncio.wait([running, cancelled], return_when=asyncio.FIRST_COMPLETED)
        finally:
            cancelled.cancel()
        if not running.done():
            # Superseded: stop the handler at its next await, and keep its slot until it
            # has really stopped.
            running.cancel()
            await asyncio.wait([running])
        if running.cancelled():
            return _Raised(asyncio.CancelledError()), metered.cpu_seconds
        exc = running.exception()
        if exc is not None:
            return _Raised(exc), metered.cpu_seconds
        return running.result(), metered.cpu_seconds

    def _outcome(self, result: Any, extra: dict[str, Any], elapsed: float) -> _Outcome:
        if isinstance(result, _Raised):
            e = result.exc
            if isinstance(e, TaskError):
                _log.warning(
                    "attempt failed after %.3fs: %s (retryable=%s)", elapsed, e, e.retryable,
                    extra=extra,
                )
                return _Failed(e.type, e.message, e.retryable, e.retry_after)
            kind = type(e).__name__
            _log.error(
                "handler raised %s after %.3fs", kind, elapsed, exc_info=e, extra=extra
            )
            return _Failed(kind, str(e) or repr(e), retryable=True)
        try:
            json.dumps(result)
        except (TypeError, ValueError) as e:
            _log.error("handler output is not JSON-serialisable: %s", e, extra=extra)
            return _Failed(
                "invalid_output", f"handler output is not JSON-serialisable: {e}", False
            )
        _log.info("attempt completed in %.3fs", elapsed, extra=extra)
        return _Completed(result)

    async def keep_alive(
        self, lease: Lease, interval: float, usage: AttemptUsage | None
    ) -> None:
        """Heartbeats every ``interval`` after the last heartbeat (automatic or the
        handler's own) until cancelled or the attempt is no longer current."""
        while not lease.cancelled:
            delay = lease.last_beat + interval - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
                continue
            if usage is not None:
                usage.observe()
            if not await self.io_call(lambda: lease.beat()):
                return

    async def report(
        self,
        task: PolledTask,
        outcome: _Outcome,
        metrics: Metrics | None,
        extra: dict[str, Any],
    ) -> None:
        """Sends the outcome, retrying network failures and 5xx with backoff so a result
        survives a server restart. Stops on success, on 409 (superseded: dropped), on any
        other 4xx (logged), and on a retryable failure once shutdown has begun: the attempt
        then times out on the server and is retried there (at-least-once)."""
        def send() -> None:
            if isinstance(outcome, _Completed):
                self.client.complete(task.task_id, task.attempt, outcome.output, metrics)
            else:
                self.client.fail(
                    task.task_id,
                    task.attempt,
                    outcome.type,
                    outcome.message,
                    retryable=outcome.retryable,
                    metrics=metrics,
                    retry_after=outcome.retry_after if outcome.retryable else None,
                )

        retry = 0
        while True:
            try:
                await self.io_call(send)
                _log.debug("reported", extra=extra)
                return
            except ApiError as e:
                if e.is_conflict:
                    _log.info("report refused (409): attempt superseded; result dropped", extra=extra)
                    return
                if not e.retryable:
                    _log.error("report rejected; result dropped: %s", e, extra=extra)
                    return
                error: DistorchError = e
            except DistorchError as e:
                if not e.retryable:
                    _log.error("report failed; result dropped: %s", e, extra=extra)
                    return
                error = e
            if self.stopping:
                _log.warning(
                    "report failed during shutdown (%s); the server will retry the task "
                    "after its timeout",
                    error,
                    extra=extra,
                )
                return
            delay = _backoff(retry)
            retry += 1
            _log.warning("report failed: %s; retrying in %.2fs", error, delay, extra=extra)
            # Shutdown cuts the wait short for one last try rather than abandoning at once.
            await self.sleep_or_stop(delay)


@dataclass
class _Raised:
    exc: BaseException


def _call_sync(
    handler: Callable[..., Any],
    ctx: TaskContext,
    input: Any,
    loop: asyncio.AbstractEventLoop,
) -> tuple[Any, float]:
    """Runs a sync handler on its own thread, measuring that thread's CPU time."""
    t0 = time.thread_time()
    try:
        value = handler(ctx, input)
        if inspect.isawaitable(value):
            # A plain callable that returned an awaitable: run it on the worker's loop.
            value = asyncio.run_coroutine_threadsafe(_awaited(value), loop).result()
        return value, time.thread_time() - t0
    except BaseException as e:
        return _Raised(e), time.thread_time() - t0


async def _awaited(aw: Awaitable[Any]) -> Any:
    return await aw
