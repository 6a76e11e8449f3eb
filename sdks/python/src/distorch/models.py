"""Typed views of the API's bodies.

Only the members every client needs are typed; each view keeps the whole JSON object in
``raw``, so the SDK need not track every addition to the server's views.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

__all__ = [
    "TERMINAL_STATUSES",
    "DefinitionRef",
    "ErrorInfo",
    "HeartbeatAck",
    "Metrics",
    "PolledTask",
    "StartedWorkflow",
    "TaskInfo",
    "Workflow",
]

#: Run statuses that never change again.
TERMINAL_STATUSES = frozenset({"completed", "failed", "compensated", "cancelled"})


def _str(obj: Mapping[str, Any], key: str, default: str = "") -> str:
    value = obj.get(key)
    return value if isinstance(value, str) else default


def _opt_str(obj: Mapping[str, Any], key: str) -> str | None:
    value = obj.get(key)
    return value if isinstance(value, str) else None


def _int(obj: Mapping[str, Any], key: str, default: int = 0) -> int:
    value = obj.get(key)
    return value if isinstance(value, int) and not isinstance(value, bool) else default


def _opt_int(obj: Mapping[str, Any], key: str) -> int | None:
    value = obj.get(key)
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _opt_float(obj: Mapping[str, Any], key: str) -> float | None:
    value = obj.get(key)
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    return None


@dataclass(frozen=True)
class DefinitionRef:
    """Answer to a definition registration: the name and the version it was stored as.
    ``unchanged`` means the document was identical to the latest version, which ``version``
    names: nothing was registered."""

    name: str
    version: int
    unchanged: bool = False

    @classmethod
    def from_json(cls, obj: Mapping[str, Any]) -> DefinitionRef:
        return cls(
            name=_str(obj, "name"),
            version=_int(obj, "version"),
            unchanged=obj.get("unchanged") is True,
        )


@dataclass(frozen=True)
class StartedWorkflow:
    """Answer to a start.

    ``created`` is false when the ``workflow_id`` or ``idempotency_key`` had already started
    this run (HTTP 200 instead of 201). ``status`` is ``None`` when the server's read model
    had not caught up with the start yet.
    """

    workflow_id: str
    status: str | None
    created: bool


@dataclass(frozen=True)
class ErrorInfo:
    """A failure: of a task attempt or of a run."""

    type: str
    message: str
    retryable: bool

    @classmethod
    def from_json(cls, obj: Any) -> ErrorInfo | None:
        if not isinstance(obj, Mapping):
            return None
        retryable = obj.get("retryable")
        return cls(
            type=_str(obj, "type"),
            message=_str(obj, "message"),
            retryable=retryable if isinstance(retryable, bool) else True,
        )


@dataclass(frozen=True)
class Metrics:
    """Resource use of one attempt, as its worker reported it."""

    cpu_ms: float | None = None
    peak_memory_bytes: int | None = None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.cpu_ms is not None:
            out["cpu_ms"] = self.cpu_ms
        if self.peak_memory_bytes is not None:
            out["peak_memory_bytes"] = self.peak_memory_bytes
        return out

    @classmethod
    def from_json(cls, obj: Any) -> Metrics | None:
        if not isinstance(obj, Mapping):
            return None
        return cls(
            cpu_ms=_opt_float(obj, "cpu_ms"),
            peak_memory_bytes=_opt_int(obj, "peak_memory_bytes"),
        )


@dataclass(frozen=True)
class TaskInfo:
    """One task of a run (a step's task or a compensation) with its latest attempt."""

    task_id: str
    workflow_id: str
    step_id: str
    kind: str
    task: str
    queue: str
    status: str
    attempt: int
    input: Any
    output: Any
    error: ErrorInfo | None
    parked: bool
    worker_id: str | None
    metrics: Metrics | None
    raw: dict[str, Any] = field(repr=False, compare=False)

    @classmethod
    def from_json(cls, obj: Mapping[str, Any]) -> TaskInfo:
        return cls(
            task_id=_str(obj, "task_id"),
            workflow_id=_str(obj, "workflow_id"),
            step_id=_str(obj, "step_id"),
            kind=_str(obj, "kind", "step"),
            task=_str(obj, "task"),
            queue=_str(obj, "queue"),
            status=_str(obj, "status"),
            attempt=_int(obj, "attempt"),
            input=obj.get("input"),
            output=obj.get("output"),
            error=ErrorInfo.from_json(obj.get("error")),
            parked=obj.get("parked") is True,
            worker_id=_opt_str(obj, "worker_id"),
            metrics=Metrics.from_json(obj.get("metrics")),
            raw=dict(obj),
        )


@dataclass(frozen=True)
class Workflow:
    """A run as ``GET /api/v1/workflows/{id}`` shows it."""

    workflow_id: str
    definition: str
    version: int
    status: str
    input: Any
    output: Any
    error: ErrorInfo | None
    tasks: list[TaskInfo]
    raw: dict[str, Any] = field(repr=False, compare=False)

    @property
    def is_terminal(self) -> bool:
        """A run in a terminal status never changes again."""
        return self.status in TERMINAL_STATUSES

    def tasks_of_step(self, step_id: str) -> list[TaskInfo]:
        """The tasks a step (by its ``id`` in the definition) created, oldest first."""
        return [t for t in self.tasks if t.step_id == step_id]

    @classmethod
    def from_json(cls, obj: Mapping[str, Any]) -> Workflow:
        tasks = obj.get("tasks")
        return cls(
            workflow_id=_str(obj, "workflow_id"),
            definition=_str(obj, "definition"),
            version=_int(obj, "version"),
            status=_str(obj, "status"),
            input=obj.get("input"),
            output=obj.get("output"),
            error=ErrorInfo.from_json(obj.get("error")),
            tasks=[
                TaskInfo.from_json(t)
                for t in (tasks if isinstance(tasks, list) else [])
                if isinstance(t, Mapping)
            ],
            raw=dict(obj),
        )


@dataclass(frozen=True)
class PolledTask:
    """One task attempt handed to a worker by a poll."""

    task_id: str
    workflow_id: str
    step_id: str
    task: str
    attempt: int
    input: Any
    checkpoint: Any
    heartbeat_timeout_ms: int | None

    @classmethod
    def from_json(cls, obj: Mapping[str, Any]) -> PolledTask:
        return cls(
            task_id=_str(obj, "task_id"),
            workflow_id=_str(obj, "workflow_id"),
            step_id=_str(obj, "step_id"),
            task=_str(obj, "task"),
            attempt=_int(obj, "attempt", 1),
            input=obj.get("input"),
            checkpoint=obj.get("checkpoint"),
            heartbeat_timeout_ms=_opt_int(obj, "heartbeat_timeout_ms"),
        )


@dataclass(frozen=True)
class HeartbeatAck:
    """The server's answer to a heartbeat."""

    cancel_requested: bool = False
