"""A small HTTP/1.1 client on :mod:`http.client`: keep-alive connection pooling, per-request
timeouts, problem+json errors, and requests another thread can abort (a worker abandons its
long-poll at shutdown).

The standard library is enough for what the SDK needs (JSON over HTTP/1.1 to one server),
so the SDK has no third-party dependency; see the README for why.
"""

from __future__ import annotations

import http.client
import json
import socket
import threading
import time
import urllib.parse
from dataclasses import dataclass
from typing import Any, Mapping

from .errors import ApiError, ProtocolError, TransportError

__all__ = ["Abort", "Response", "Transport"]

#: Connections idle longer than this are closed instead of reused: a server or a proxy may
#: have dropped them, and a fresh handshake on loopback or a LAN is cheap.
IDLE_TTL = 30.0

#: Errors that mean a *reused* keep-alive connection had been closed by the server before
#: our request reached it. Such a request is sent again, once, on a fresh connection.
_STALE_ERRORS = (
    http.client.RemoteDisconnected,
    ConnectionResetError,
    BrokenPipeError,
    ConnectionAbortedError,
)


@dataclass(frozen=True)
class Response:
    """A successful (2xx) response."""

    status: int
    body: bytes

    def json(self, method: str, url: str) -> Any:
        """The body decoded as JSON; :class:`ProtocolError` when it is not."""
        try:
            return json.loads(self.body) if self.body else None
        except ValueError as e:
            raise ProtocolError(method, url, f"invalid JSON: {e}") from None


class Abort:
    """Lets another thread abort one in-flight request (by shutting its socket down).

    An aborted request raises :class:`TransportError`. Aborting before the request starts
    makes it fail at once.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._conn: http.client.HTTPConnection | None = None
        self._aborted = False

    @property
    def aborted(self) -> bool:
        return self._aborted

    def abort(self) -> None:
        with self._lock:
            self._aborted = True
            conn = self._conn
        if conn is not None and conn.sock is not None:
            try:
                conn.sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def _attach(self, conn: http.client.HTTPConnection | None) -> bool:
        with self._lock:
            if self._aborted:
                return False
            self._conn = conn
            return True


class Transport:
    """Sends requests to one server, reusing keep-alive connections. Thread-safe."""

    def __init__(
        self,
        base_url: str,
        *,
        connect_timeout: float = 5.0,
        max_idle: int = 32,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        base = base_url.rstrip("/")
        parsed = urllib.parse.urlsplit(base)
        if parsed.scheme not in ("http", "https") or not parsed.hostname:
            raise ValueError(f"base url {base_url!r} must start with http:// or https://")
        self.base_url = base
        self._scheme = parsed.scheme
        self._host = parsed.hostname
        self._port = parsed.port
        self._prefix = parsed.path.rstrip("/")
        self._connect_timeout = connect_timeout
        self._max_idle = max_idle
        self._headers = {"User-Agent": "distorch-python", **dict(headers or {})}
        self._idle: list[tuple[http.client.HTTPConnection, float]] = []
        self._lock = threading.Lock()
        self._closed = False

    def close(self) -> None:
        """Closes idle connections; requests in flight finish on theirs."""
        with self._lock:
            idle, self._idle = self._idle, []
            self._closed = True
        for conn, _ in idle:
            conn.close()

    def url(self, path: str) -> str:
        return self.base_url + path

    def request(
        self,
        method: str,
        path: str,
        *,
        json_body: Any = None,
        body: bytes | None = None,
        content_type: str | None = None,
        timeout: float = 30.0,
        abort: Abort | None = None,
    ) -> Response:
        """Sends one request; returns the 2xx response or raises.

        :raises ApiError: the server answered with another status.
        :raises TransportError: no response (refused, reset, timed out, aborted).
        """
        url = self.url(path)
        headers = dict(self._headers)
        headers["Accept"] = "application/json, application/problem+json"
        if json_body is not None:
            body = json.dumps(json_body, separators=(",", ":")).encode()
            content_type = "application/json"
        if content_type is not None:
            headers["Content-Type"] = content_type
        if body is None and method in ("POST", "PUT", "PATCH"):
            body = b""

        for reused_try in (True, False):
            conn, reused = self._checkout(timeout, fresh=not reused_try)
            if abort is not None and not abort._attach(conn):
                conn.close()
                raise TransportError(method, url, ConnectionAbortedError("aborted"))
            try:
                conn.timeout = timeout
                if conn.sock is not None:
                    conn.sock.settimeout(timeout)
                else:
                    # Connect with the short timeout, then read with the request's.
                    conn.timeout = self._connect_timeout
                    conn.connect()
                    assert conn.sock is not None
                    conn.sock.settimeout(timeout)
                    conn.timeout = timeout
                if abort is not None and abort.aborted:
                    raise ConnectionAbortedError("aborted")
                conn.request(method, self._prefix + path, body=body, headers=headers)
                resp = conn.getresponse()
                data = resp.read()
            except _STALE_ERRORS as e:
                conn.close()
                if reused and not (abort is not None and abort.aborted):
                    continue
                raise TransportError(method, url, e) from None
            except (OSError, http.client.HTTPException) as e:
                conn.close()
                raise TransportError(method, url, e) from None
            finally:
                if abort is not None:
                    abort._attach(None)
            if resp.will_close:
                conn.close()
            else:
                self._checkin(conn)
            if 200 <= resp.status < 300:
                return Response(resp.status, data)
            raise _api_error(method, url, resp.status, resp.reason, data)
        raise AssertionError("unreachable")  # pragma: no cover

    def _checkout(
        self, timeout: float, *, fresh: bool
    ) -> tuple[http.client.HTTPConnection, bool]:
        now = time.monotonic()
        stale: list[http.client.HTTPConnection] = []
        found: http.client.HTTPConnection | None = None
        if not fresh:
            with self._lock:
                while self._idle:
                    conn, since = self._idle.pop()
                    if now - since < IDLE_TTL:
                        found = conn
                        break
                    stale.append(conn)
        for conn in stale:
            conn.close()
        if found is not None:
            return found, True
        cls = (
            http.client.HTTPSConnection
            if self._scheme == "https"
            else http.client.HTTPConnection
        )
        conn = cls(self._host, self._port, timeout=timeout)
        return conn, False

    def _checkin(self, conn: http.client.HTTPConnection) -> None:
        with self._lock:
            if not self._closed and len(self._idle) < self._max_idle:
                self._idle.append((conn, time.monotonic()))
                return
        conn.close()


def _api_error(method: str, url: str, status: int, reason: str, data: bytes) -> ApiError:
    problem: dict[str, Any] = {}
    try:
        parsed = json.loads(data) if data else None
        if isinstance(parsed, dict):
            problem = parsed
    except ValueError:
        pass
    title = problem.get("title")
    detail = problem.get("detail")
    if not isinstance(title, str):
        title = reason or ""
    if not isinstance(detail, str):
        text = data.decode("utf-8", "replace").strip()
        detail = text if (text and len(text) <= 512 and not problem) else ""
    return ApiError(method, url, status, title, detail, problem)


def segment(value: str) -> str:
    """Percent-encodes one path segment, so ids and names with ``/``, ``?`` or spaces address
    the intended resource."""
    return urllib.parse.quote(value, safe="-_.~")
