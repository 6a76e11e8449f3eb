"""The SDK's exceptions.

Two families:

- :class:`DistorchError` and its subclasses say what went wrong talking to the server:
  :class:`ApiError` (the server answered with an error status and a problem+json body),
  :class:`TransportError` (no HTTP response at all), :class:`ProtocolError` (a success
  response without the documented shape) and :class:`WaitTimeout` (``Client.wait`` ran out
  of time).
- :class:`TaskError` is what a handler raises to fail its attempt with a type the
  definition's retry policy can match.
"""

from __future__ import annotations

from typing import Any, Mapping

__all__ = [
    "ApiError",
    "DistorchError",
    "ProtocolError",
    "TaskError",
    "TransportError",
    "WaitTimeout",
]


class DistorchError(Exception):
    """Base class of every error the SDK raises about the server or the network."""

    @property
    def retryable(self) -> bool:
        """Whether sending the same request again may succeed."""
        return False


class TransportError(DistorchError):
    """The request never produced an HTTP response (refused, reset, timed out).

    Always worth retrying: the server may be restarting.
    """

    def __init__(self, method: str, url: str, cause: BaseException) -> None:
        super().__init__(f"{method} {url} failed: {cause!r}")
        self.method = method
        self.url = url
        self.cause = cause

    @property
    def retryable(self) -> bool:
        return True


class ApiError(DistorchError):
    """The server answered with a non-success status.

    Every DisTorch error body is ``application/problem+json`` (RFC 9457): ``title``,
    ``detail`` and ``type`` come from it. ``problem`` keeps the whole body (empty when it was
    not JSON).
    """

    def __init__(
        self,
        method: str,
        url: str,
        status: int,
        title: str,
        detail: str,
        problem: Mapping[str, Any] | None = None,
    ) -> None:
        self.method = method
        self.url = url
        self.status = status
        self.title = title
        self.detail = detail
        self.problem: dict[str, Any] = dict(problem or {})
        text = f"{method} {url} returned {status} {title}".rstrip()
        if detail:
            text += f": {detail}"
        super().__init__(text)

    @property
    def type(self) -> str:
        """The problem's machine-readable type, e.g. ``urn:distorch:problem:conflict``."""
        value = self.problem.get("type")
        return value if isinstance(value, str) else "about:blank"

    @property
    def workflow_id(self) -> str | None:
        """For a start answered 503: the run the start will create; retry with it."""
        value = self.problem.get("workflow_id")
        return value if isinstance(value, str) else None

    @property
    def is_conflict(self) -> bool:
        """409: for task reports, the attempt was superseded (timed out, cancelled, done)."""
        return self.status == 409

    @property
    def is_not_found(self) -> bool:
        """404: the id names nothing the server knows."""
        return self.status == 404

    @property
    def retryable(self) -> bool:
        """5xx, 408 and 429 may succeed later; other 4xx mean the request itself is wrong."""
        return self.status >= 500 or self.status in (408, 429)


class ProtocolError(DistorchError):
    """A success response whose body does not have the documented shape: the SDK and the
    server disagree on the protocol, and retrying will not help."""

    def __init__(self, method: str, url: str, message: str) -> None:
        super().__init__(f"unexpected response from {method} {url}: {message}")
        self.method = method
        self.url = url


class WaitTimeout(DistorchError, TimeoutError):
    """``Client.wait`` gave up before the run reached a wanted status.

    ``workflow`` is the last view read (a :class:`distorch.Workflow`).
    """

    def __init__(self, workflow_id: str, timeout: float, workflow: Any) -> None:
        status = getattr(workflow, "status", None)
        super().__init__(
            f"workflow {workflow_id} still {status} after waiting {timeout:g}s"
        )
        self.workflow_id = workflow_id
        self.workflow = workflow


class TaskError(Exception):
    """Raise from a handler to fail the attempt with a typed error.

    :param type: stable, machine-matchable category such as ``card_declined``; a step's
        ``retry.non_retryable`` list matches on it.
    :param message: human-readable description, shown in the run's history.
    :param retryable: ``False`` fails the step without further attempts, whatever the retry
        policy says.
    :param retry_after: seconds the next attempt must not start before (e.g. a rate limit's
        ``Retry-After``), sent with the failure report as ``retry_after_ms``. The server
        waits the longer of it and the step's backoff; the retry policy still decides
        whether there is a next attempt. Ignored when ``retryable`` is false.
    """

    def __init__(
        self,
        type: str,
        message: str = "",
        *,
        retryable: bool = True,
        retry_after: float | None = None,
    ) -> None:
        if not type or not type.strip():
            raise ValueError("TaskError type must not be empty")
        if retry_after is not None and retry_after < 0:
            raise ValueError("retry_after must not be negative")
        super().__init__(f"{type}: {message}" if message else type)
        self.type = type
        self.message = message
        self.retryable = retryable
        self.retry_after = retry_after

    def __repr__(self) -> str:
        return (
            f"TaskError({self.type!r}, {self.message!r}, retryable={self.retryable!r}, "
            f"retry_after={self.retry_after!r})"
        )
