"""A small synchronous client for DisTorch's REST API: definitions, runs, signals, and the
worker protocol (poll, heartbeat, complete, fail) that :class:`distorch.Worker` is built on.

Every method is one HTTP request (``start`` and ``wait`` excepted, see their docs) and
raises :class:`~distorch.ApiError` for an error status (the server's problem+json ``title``
and ``detail`` included), :class:`~distorch.TransportError` when no response came.
"""

from __future__ import annotations

import json
import math
import random
import time
import urllib.parse
from typing import Any, Collection, Mapping

from ._http import Abort, Transport, segment
from .errors import ApiError, DistorchError, ProtocolError, WaitTimeout
from .models import (
    TERMINAL_STATUSES,
    DefinitionRef,
    HeartbeatAck,
    Metrics,
    PolledTask,
    StartedWorkflow,
    TaskInfo,
    Workflow,
)

__all__ = ["Client"]

#: Extra time a long-poll's socket waits beyond the server-side wait, so a slow-but-alive
#: server is not mistaken for a dead one (the Rust SDK's POLL_GRACE).
POLL_GRACE = 10.0
#: The longest ``wait_ms`` the server honours on a poll or a run read.
MAX_SERVER_WAIT = 60.0


class Client:
    """A client for one DisTorch server, e.g. ``Client("http://127.0.0.1:8000")``.

    Thread-safe; keep-alive connections are pooled and shared by every thread.

    :param url: the server's base URL.
    :param timeout: seconds a request (other than a long-poll) may take before it fails
        with :class:`~distorch.TransportError`.
    :param headers: extra headers for every request (e.g. an ``Authorization`` a proxy
        in front of the server wants).
    """

    def __init__(
        self,
        url: str,
        *,
        timeout: float = 30.0,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        self._http = Transport(url, headers=headers)
        self.timeout = timeout

    @property
    def url(self) -> str:
        """The server's base URL, without a trailing slash."""
        return self._http.base_url

    def close(self) -> None:
        """Closes pooled connections."""
        self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Client({self.url!r})"

    # -- definitions -------------------------------------------------------------------

    def register_definition(self, definition: str | Mapping[str, Any]) -> DefinitionRef:
        """Registers a workflow definition: YAML text (sent as ``application/yaml``) or a
        mapping (sent as JSON). Each registration of a changed document gets the next
        version; the latest document registered again answers its own version.

        :raises ApiError: 400 with a ``detail`` naming the offending path when the
            definition is invalid.
        """
        path = "/api/v1/definitions"
        if isinstance(definition, str):
            resp = self._http.request(
                "POST",
                path,
                body=definition.encode(),
                content_type="application/yaml",
                timeout=self.timeout,
            )
        else:
            resp = self._http.request(
                "POST", path, json_body=dict(definition), timeout=self.timeout
            )
        return DefinitionRef.from_json(self._object(resp.json("POST", path), "POST", path))

    # -- runs --------------------------------------------------------------------------

    def start(
        self,
        definition: str,
        input: Any = None,
        *,
        workflow_id: str | None = None,
        idempotency_key: str | None = None,
        version: int | None = None,
        retries: int = 3,
    ) -> StartedWorkflow:
        """Starts a run of the named definition (its latest version unless ``version``).

        The same ``workflow_id`` (a UUID you choose) or the same ``idempotency_key`` always
        names the same run: starting again returns it (``created=False``) instead of
        starting a second one. That makes a start safe to retry, so this method does, up
        to ``retries`` times with backoff: on a 503 whose problem names the ``workflow_id``
        the start will create (the server's documented recovery; the retry uses that id),
        and on network errors or 5xx when the request carries a ``workflow_id`` or an
        ``idempotency_key``. A start without either is sent once.
        """
        path = "/api/v1/workflows"
        body: dict[str, Any] = {"definition": definition, "input": input}
        if version is not None:
            body["version"] = version
        if idempotency_key is not None:
            body["idempotency_key"] = idempotency_key
        if workflow_id is not None:
            body["workflow_id"] = workflow_id
        attempt = 0
        while True:
            try:
                resp = self._http.request(
                    "POST", path, json_body=body, timeout=self.timeout
                )
                break
            except DistorchError as e:
                if attempt >= retries or not e.retryable:
                    raise
                named = e.workflow_id if isinstance(e, ApiError) else None
                if named and "workflow_id" not in body:
                    body["workflow_id"] = named
                elif "workflow_id" not in body and "idempotency_key" not in body:
                    raise
                time.sleep(_backoff(attempt))
                attempt += 1
        obj = self._object(resp.json("POST", path), "POST", path)
        status = obj.get("status")
        return StartedWorkflow(
            workflow_id=str(obj.get("workflow_id", "")),
            status=status if isinstance(status, str) else None,
            created=resp.status == 201,
        )

    def get(self, workflow_id: str) -> Workflow:
        """Reads a run: status, input, output, error, and its tasks (with each one's latest
        attempt, error and metrics)."""
        path = f"/api/v1/workflows/{segment(workflow_id)}"
        resp = self._http.request("GET", path, timeout=self.timeout)
        return Workflow.from_json(self._object(resp.json("GET", path), "GET", path))

    def wait(
        self,
        workflow_id: str,
        timeout: float = 60.0,
        *,
        until: Collection[str] | None = None,
    ) -> Workflow:
        """Waits until the run reaches one of the ``until`` statuses (default: any terminal
        one: completed, failed, compensated, cancelled) and returns it.

        Terminal statuses are awaited with the server's long-poll (``?wait_ms=``); a
        non-terminal one such as ``parked`` is awaited by reading the run every 100 ms.

        :raises WaitTimeout: (a :class:`TimeoutError`) when ``timeout`` seconds pass first;
            its ``workflow`` is the last view read.
        """
        wanted = frozenset(until) if until is not None else TERMINAL_STATUSES
        long_poll = wanted <= TERMINAL_STATUSES
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            wait = min(max(left, 0.0), MAX_SERVER_WAIT) if long_poll else 0.0
            path = f"/api/v1/workflows/{segment(workflow_id)}"
            if wait > 0:
                path += f"?wait_ms={int(wait * 1000)}"
            resp = self._http.request("GET", path, timeout=self.timeout + wait)
            view = Workflow.from_json(self._object(resp.json("GET", path), "GET", path))
            if view.status in wanted:
                return view
            left = deadline - time.monotonic()
            if left <= 0:
                raise WaitTimeout(workflow_id, timeout, view)
            if view.is_terminal:
                # It will never reach the wanted status.
                raise WaitTimeout(workflow_id, timeout, view)
            if not long_poll:
                time.sleep(min(0.1, left))

    def list_workflows(
        self,
        *,
        status: str | None = None,
        definition: str | None = None,
        limit: int = 1000,
    ) -> list[dict[str, Any]]:
        """Runs, newest first (``workflow_id``, ``definition``, ``version``, ``status``,
        ``created_at``, ``updated_at``), following the server's pages until ``limit``."""
        out: list[dict[str, Any]] = []
        cursor: str | None = None
        while len(out) < limit:
            query = {"limit": str(min(limit - len(out), 1000))}
            if status:
                query["status"] = status
            if definition:
                query["definition"] = definition
            if cursor:
                query["cursor"] = cursor
            path = "/api/v1/workflows?" + urllib.parse.urlencode(query)
            resp = self._http.request("GET", path, timeout=self.timeout)
            page = self._object(resp.json("GET", path), "GET", path)
            items = page.get("items")
            if isinstance(items, list):
                out.extend(i for i in items if isinstance(i, dict))
            next_cursor = page.get("next_cursor")
            if not isinstance(next_cursor, str) or not next_cursor:
                break
            cursor = next_cursor
        return out[:limit]

    def history(self, workflow_id: str) -> list[dict[str, Any]]:
        """The run's events in order (each with ``seq``, ``type`` and the event's fields)."""
        path = f"/api/v1/workflows/{segment(workflow_id)}/history"
        resp = self._http.request("GET", path, timeout=self.timeout)
        events = self._object(resp.json("GET", path), "GET", path).get("events")
        return [e for e in events if isinstance(e, dict)] if isinstance(events, list) else []

    def signal(self, workflow_id: str, name: str, payload: Any = None) -> None:
        """Sends signal ``name`` with ``payload`` (any JSON value) to a run. The run keeps it
        until a ``signal`` step of that name takes it."""
        path = f"/api/v1/workflows/{segment(workflow_id)}/signals/{segment(name)}"
        self._http.request(
            "POST",
            path,
            body=json.dumps(payload).encode(),
            content_type="application/json",
            timeout=self.timeout,
        )

    def cancel(
        self, workflow_id: str, *, compensate: bool = False, reason: str | None = None
    ) -> str | None:
        """Cancels a run, compensating its completed steps first when ``compensate``.
        Running attempts learn it from their next heartbeat (``ctx.cancelled``). Returns the
        run's status as the server saw it (``None`` when its read model lagged).

        :raises ApiError: 409 when the run's status does not allow it (it has ended).
        """
        body: dict[str, Any] = {"compensate": compensate}
        if reason is not None:
            body["reason"] = reason
        return self._verb(workflow_id, "cancel", body)

    def pause(self, workflow_id: str) -> str | None:
        """Pauses a run: nothing new is scheduled until :meth:`resume`."""
        return self._verb(workflow_id, "pause", None)

    def resume(self, workflow_id: str) -> str | None:
        """Resumes a paused run."""
        return self._verb(workflow_id, "resume", None)

    def get_task(self, task_id: str) -> TaskInfo:
        """Reads one task with its latest attempt."""
        path = f"/api/v1/tasks/{segment(task_id)}"
        resp = self._http.request("GET", path, timeout=self.timeout)
        return TaskInfo.from_json(self._object(resp.json("GET", path), "GET", path))

    def retry_task(self, task_id: str) -> None:
        """Runs a parked (dead-lettered) or failed task again with a fresh attempt budget."""
        self._http.request(
            "POST", f"/api/v1/tasks/{segment(task_id)}/retry", timeout=self.timeout
        )

    def skip_task(self, task_id: str, output: Any = None) -> None:
        """Treats a task as completed with ``output``."""
        self._http.request(
            "POST",
            f"/api/v1/tasks/{segment(task_id)}/skip",
            json_body={"output": output},
            timeout=self.timeout,
        )

    def dead_letters(self) -> list[dict[str, Any]]:
        """Tasks parked in the dead-letter queue, waiting for an operator."""
        path = "/api/v1/dlq"
        resp = self._http.request("GET", path, timeout=self.timeout)
        items = self._object(resp.json("GET", path), "GET", path).get("items")
        return [i for i in items if isinstance(i, dict)] if isinstance(items, list) else []

    # -- the worker protocol -----------------------------------------------------------

    def poll(
        self,
        queue: str,
        worker_id: str,
        *,
        max_tasks: int = 1,
        wait: float = 20.0,
        abort: Abort | None = None,
    ) -> list[PolledTask]:
        """Long-polls ``queue`` for up to ``max_tasks`` (at most 100) attempts, waiting at
        most ``wait`` seconds (at most 60) for the first. Every returned attempt has been
        started for ``worker_id``: run it and report it. An empty list means no work came."""
        path = f"/api/v1/queues/{segment(queue)}/poll"
        body = {"worker_id": worker_id, "max_tasks": max_tasks, "wait_ms": int(wait * 1000)}
        resp = self._http.request(
            "POST", path, json_body=body, timeout=wait + POLL_GRACE, abort=abort
        )
        tasks = self._object(resp.json("POST", path), "POST", path).get("tasks")
        if not isinstance(tasks, list):
            raise ProtocolError("POST", self._http.url(path), "no `tasks` array")
        return [PolledTask.from_json(t) for t in tasks if isinstance(t, dict)]

    def complete(
        self,
        task_id: str,
        attempt: int,
        output: Any,
        metrics: Metrics | None = None,
    ) -> None:
        """Reports an attempt's success.

        :raises ApiError: 409 (``is_conflict``) when the attempt was superseded.
        """
        body: dict[str, Any] = {"attempt": attempt, "output": output}
        if metrics is not None and metrics.to_json():
            body["metrics"] = metrics.to_json()
        self._http.request(
            "POST",
            f"/api/v1/tasks/{segment(task_id)}/complete",
            json_body=body,
            timeout=self.timeout,
        )

    def fail(
        self,
        task_id: str,
        attempt: int,
        type: str,
        message: str = "",
        *,
        retryable: bool = True,
        metrics: Metrics | None = None,
        retry_after: float | None = None,
    ) -> None:
        """Reports an attempt's failure; the step's retry policy decides what follows.

        ``retry_after`` (seconds, sent as ``retry_after_ms`` rounded up) makes the server
        wait at least that long before the next attempt; whether there is one is still the
        retry policy's call, and its backoff applies when longer.

        :raises ApiError: 409 (``is_conflict``) when the attempt was superseded.
        """
        if retry_after is not None and not retry_after >= 0:
            raise ValueError("retry_after must not be negative")
        body: dict[str, Any] = {
            "attempt": attempt,
            "error": {"type": type, "message": message, "retryable": retryable},
        }
        if metrics is not None and metrics.to_json():
            body["metrics"] = metrics.to_json()
        if retry_after is not None:
            # Rounded up, but 0.1 s is 100 ms, not the 101 its float product would give.
            body["retry_after_ms"] = math.ceil(round(retry_after * 1000, 6))
        self._http.request(
            "POST",
            f"/api/v1/tasks/{segment(task_id)}/fail",
            json_body=body,
            timeout=self.timeout,
        )

    def heartbeat(
        self, task_id: str, attempt: int, checkpoint: Any = None
    ) -> HeartbeatAck:
        """Extends an attempt's lease, saving ``checkpoint`` (when not ``None``) for a later
        attempt to resume from.

        :raises ApiError: 409 (``is_conflict``) when the attempt is no longer current: it
            timed out, another attempt finished, or the run was cancelled.
        """
        body: dict[str, Any] = {"attempt": attempt}
        if checkpoint is not None:
            body["checkpoint"] = checkpoint
        path = f"/api/v1/tasks/{segment(task_id)}/heartbeat"
        resp = self._http.request("POST", path, json_body=body, timeout=self.timeout)
        # The lease was extended whatever the body says; an unreadable ack means "carry on".
        try:
            ack = json.loads(resp.body) if resp.body else {}
        except ValueError:
            ack = {}
        return HeartbeatAck(
            cancel_requested=isinstance(ack, dict) and ack.get("cancel_requested") is True
        )

    # -- helpers -----------------------------------------------------------------------

    def _verb(self, workflow_id: str, verb: str, body: Any) -> str | None:
        path = f"/api/v1/workflows/{segment(workflow_id)}/{verb}"
        resp = self._http.request("POST", path, json_body=body, timeout=self.timeout)
        status = self._object(resp.json("POST", path), "POST", path).get("status")
        return status if isinstance(status, str) else None

    def _object(self, value: Any, method: str, path: str) -> dict[str, Any]:
        if not isinstance(value, dict):
            raise ProtocolError(method, self._http.url(path), "expected a JSON object")
        return value


def _backoff(retry: int, initial: float = 0.1, maximum: float = 5.0) -> float:
    """Exponential backoff with "equal jitter": uniform over the upper half of
    ``initial * 2**retry`` capped at ``maximum`` (the Rust SDK's ``Backoff::RETRY``)."""
    exp: float = min(initial * float(2 ** min(retry, 31)), maximum)
    return exp / 2 + random.random() * exp / 2
