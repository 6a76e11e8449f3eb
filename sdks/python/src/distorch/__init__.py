"""DisTorch's Python worker SDK.

Run task handlers for a queue of a DisTorch server, and drive runs with a small client::

    import distorch

    worker = distorch.Worker(url="http://127.0.0.1:8000", queue="payments", concurrency=16)

    @worker.task("charge-card")
    def charge(ctx: distorch.TaskContext, input: dict) -> dict:
        ctx.heartbeat({"progress": 0.5})
        if input["amount"] > 10_000:
            raise distorch.TaskError("limit_exceeded", "amount too large", retryable=False)
        return {"charge_id": "ch_1"}

    worker.run()

See the README for the full guide.
"""

from __future__ import annotations

from .client import Client
from .context import TaskContext
from .errors import (
    ApiError,
    DistorchError,
    ProtocolError,
    TaskError,
    TransportError,
    WaitTimeout,
)
from .models import (
    TERMINAL_STATUSES,
    DefinitionRef,
    ErrorInfo,
    HeartbeatAck,
    Metrics,
    PolledTask,
    StartedWorkflow,
    TaskInfo,
    Workflow,
)
from .worker import Handler, Worker

__version__ = "0.1.0"

__all__ = [
    "TERMINAL_STATUSES",
    "ApiError",
    "Client",
    "DefinitionRef",
    "DistorchError",
    "ErrorInfo",
    "Handler",
    "HeartbeatAck",
    "Metrics",
    "PolledTask",
    "ProtocolError",
    "StartedWorkflow",
    "TaskContext",
    "TaskError",
    "TaskInfo",
    "TransportError",
    "WaitTimeout",
    "Workflow",
    "Worker",
    "__version__",
]
