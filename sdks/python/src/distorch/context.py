"""What a handler receives: :class:`TaskContext`, and the attempt's lease behind it."""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
from typing import Any, Callable

from .client import Client
from .errors import DistorchError

__all__ = ["TaskContext"]

_log = logging.getLogger("distorch.worker")

_UNSET: Any = object()


class Lease:
    """The server-side lease of one attempt, shared by its handler and the worker's
    automatic heartbeats. Thread-safe: heartbeats are sent from I/O threads, from a sync
    handler's own thread, and scheduled from the event loop."""

    def __init__(
        self,
        client: Client,
        task_id: str,
        attempt: int,
        loop: asyncio.AbstractEventLoop,
        run_io: Callable[[Callable[[], bool]], asyncio.Future[bool]],
        log_extra: dict[str, Any],
    ) -> None:
        self._client = client
        self.task_id = task_id
        self.attempt = attempt
        self._loop = loop
        self._run_io = run_io
        self._extra = log_extra
        self._send_lock = threading.Lock()
        self._pending_lock = threading.Lock()
        self._pending: Any = _UNSET
        self._cancelled = threading.Event()
        self.cancelled_async = asyncio.Event()
        #: monotonic time of the last heartbeat sent (successfully or not): automatic ones
        #: are due an interval after it, so a handler that heartbeats often causes no
        #: extra requests, and an outage does not become a tight retry loop.
        self.last_beat = time.monotonic()
        self._background: set[asyncio.Future[bool]] = set()

    @property
    def cancelled(self) -> bool:
        return self._cancelled.is_set()

    def wait_cancelled(self, timeout: float | None) -> bool:
        return self._cancelled.wait(timeout)

    def mark_cancelled(self, why: str) -> None:
        if self._cancelled.is_set():
            return
        self._cancelled.set()
        _log.info("attempt no longer current (%s); the handler should stop", why, extra=self._extra)
        try:
            self._loop.call_soon_threadsafe(self.cancelled_async.set)
        except RuntimeError:  # the loop has closed
            pass

    def beat(self, checkpoint: Any = None) -> bool:
        """Sends a heartbeat now (blocking), saving ``checkpoint`` unless it is ``None``.
        Returns whether the attempt is still current."""
        if checkpoint is not None:
            self._put(checkpoint)
            return self._send(flush_only=True)
        return self._send(flush_only=False)

    def beat_in_background(self, checkpoint: Any) -> bool:
        """From the event loop: schedules :meth:`beat` on an I/O thread and returns at once
        whether the attempt is still current as far as is known."""
        if self.cancelled:
            return False
        if checkpoint is not None:
            self._put(checkpoint)
            fut = self._run_io(lambda: self._send(flush_only=True))
        else:
            fut = self._run_io(lambda: self._send(flush_only=False))
        self._background.add(fut)
        fut.add_done_callback(self._background.discard)
        return True

    async def abeat(self, checkpoint: Any) -> bool:
        """:meth:`beat` on an I/O thread, awaited (on any event loop)."""
        if self.cancelled:
            return False
        if checkpoint is not None:
            self._put(checkpoint)
        flush_only = checkpoint is not None

        def send() -> bool:
            return self._send(flush_only=flush_only)

        if asyncio.get_running_loop() is self._loop:
            return await self._run_io(send)
        # Another loop (e.g. the handler's own): a thread of that loop's default executor.
        return await asyncio.get_running_loop().run_in_executor(None, send)

    def on_worker_loop(self) -> bool:
        """Whether the caller runs on the worker's event loop (an ``async`` handler)."""
        try:
            return asyncio.get_running_loop() is self._loop
        except RuntimeError:
            return False

    def _put(self, checkpoint: Any) -> None:
        # Fail on the caller's thread, not in a background send nobody awaits.
        json.dumps(checkpoint)
        # Checkpoints go through one slot, so when heartbeats race the newest checkpoint is
        # always the last one sent.
        with self._pending_lock:
            self._pending = checkpoint

    def _send(self, *, flush_only: bool) -> bool:
        if self.cancelled:
            return False
        with self._send_lock:
            with self._pending_lock:
                pending, self._pending = self._pending, _UNSET
            if flush_only and pending is _UNSET:
                # A concurrent heartbeat already sent our checkpoint (or a newer one).
                return not self.cancelled
            if self.cancelled:
                return False
            self.last_beat = time.monotonic()
            try:
                ack = self._client.heartbeat(
                    self.task_id, self.attempt, None if pending is _UNSET else pending
                )
            except DistorchError as e:
                status = getattr(e, "status", None)
                if status == 409:
                    self.mark_cancelled("heartbeat answered 409: superseded or cancelled")
                    return False
                _log.warning("heartbeat failed: %s", e, extra=self._extra)
                return True
        if ack.cancel_requested:
            self.mark_cancelled("cancellation requested")
            return False
        return True


class TaskContext:
    """One task attempt, as handed to a handler (its first argument).

    Attributes: ``task_id`` (the same for every attempt of the task: a good idempotency key
    for side effects), ``workflow_id``, ``step_id``, ``task`` (the type), ``attempt``
    (1-based; > 1 means an earlier attempt failed or timed out), ``input``, ``checkpoint``
    (what an earlier attempt last saved with :meth:`heartbeat`, else ``None``),
    ``heartbeat_timeout`` (seconds, when the step has one), ``queue``, ``worker_id`` and
    ``logger`` (a :class:`logging.LoggerAdapter` whose records carry task_id, workflow_id
    and attempt in ``extra``).
    """

    def __init__(
        self,
        *,
        task_id: str,
        workflow_id: str,
        step_id: str,
        task: str,
        attempt: int,
        input: Any,
        checkpoint: Any,
        heartbeat_timeout: float | None,
        queue: str,
        worker_id: str,
        lease: Lease,
        logger: logging.LoggerAdapter[logging.Logger],
    ) -> None:
        self.task_id = task_id
        self.workflow_id = workflow_id
        self.step_id = step_id
        self.task = task
        self.attempt = attempt
        self.input = input
        self.checkpoint = checkpoint
        self.heartbeat_timeout = heartbeat_timeout
        self.queue = queue
        self.worker_id = worker_id
        self.logger = logger
        self._lease = lease

    def __repr__(self) -> str:
        return (
            f"TaskContext(task_id={self.task_id!r}, workflow_id={self.workflow_id!r}, "
            f"step_id={self.step_id!r}, task={self.task!r}, attempt={self.attempt}, "
            f"checkpoint={self.checkpoint!r})"
        )

    @property
    def cancelled(self) -> bool:
        """Whether this attempt should stop: the run was cancelled, or the attempt was
        superseded (it timed out and was handed to another worker, or another attempt
        finished). Learnt from heartbeat replies (HTTP 409, or ``cancel_requested``), so it
        turns true within one heartbeat interval. Whatever the handler returns afterwards is
        discarded. An ``async`` handler is also cancelled (``asyncio.CancelledError``) at
        its next ``await``; a sync one must check this flag, or :meth:`wait_cancelled`."""
        return self._lease.cancelled

    def wait_cancelled(self, timeout: float | None = None) -> bool:
        """Blocks up to ``timeout`` seconds until the attempt is cancelled; returns
        :attr:`cancelled`. A sync handler's cancellable ``sleep``."""
        return self._lease.wait_cancelled(timeout)

    def heartbeat(self, checkpoint: Any = None) -> bool:
        """Heartbeats now, saving ``checkpoint`` (any JSON value; ``None`` saves nothing)
        for the next attempt should this one fail or time out. Returns ``False`` when the
        attempt should stop (see :attr:`cancelled`).

        From a sync handler this blocks until the server answers. From an ``async``
        handler (on the event loop) it never blocks: the heartbeat is sent in the
        background and the answer reflects what is known so far; ``await``
        :meth:`aheartbeat` for the server's answer. Automatic heartbeats keep the lease
        alive anyway: call this to save progress, or to learn sooner that work should
        stop. A network failure is logged and counts as "carry on".
        """
        if self._lease.on_worker_loop():
            return self._lease.beat_in_background(checkpoint)
        return self._lease.beat(checkpoint)

    async def aheartbeat(self, checkpoint: Any = None) -> bool:
        """:meth:`heartbeat` for ``async`` handlers: awaits the server's answer."""
        return await self._lease.abeat(checkpoint)

