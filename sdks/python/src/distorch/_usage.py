"""Per-attempt resource usage: CPU time of the handler itself, and the process's peak memory.

**CPU** (``cpu_ms``) is measured with :func:`time.thread_time` (``CLOCK_THREAD_CPUTIME_ID``
on Linux: user + system time of the calling OS thread, nanosecond resolution):

- a synchronous handler runs in a thread of its own for the whole call, so its CPU time is
  the change in that thread's clock across the call;
- an ``async`` handler shares the event loop's thread with everything else, so the SDK
  drives its coroutine through :class:`MeteredCoroutine`, which adds up the thread clock
  only while *this* coroutine's code runs (each step between two suspensions). Other
  handlers, heartbeats and the SDK's own I/O are not counted.

Either way, CPU spent in *other* threads or processes the handler starts (a thread pool,
``asyncio.to_thread``, a subprocess, a BLAS library's threads) is not included; nor is the
CPU time of blocking I/O waits (there is none: waiting costs no CPU).

**Memory** (``peak_memory_bytes``) cannot be attributed to one handler in Python (all
threads share one heap; ``tracemalloc`` is process-wide and costly). Like the Rust SDK it is
the **process's** peak resident set during the attempt: on Linux, the high-water mark
``VmHWM`` of ``/proc/self/status`` if it rose during the attempt (the process reached a new
peak while the attempt ran, so that peak is exact), else the largest ``VmRSS`` sampled at
the start, at each automatic heartbeat and at the end (a lower bound). Elsewhere,
``resource.getrusage(RUSAGE_SELF).ru_maxrss`` (the lifetime peak) when available. With
several attempts in flight each one's figure includes the others'.
"""

from __future__ import annotations

import sys
import threading
import time
from dataclasses import dataclass
from typing import Any, Awaitable, Coroutine, Generator, TypeVar

from .models import Metrics

T = TypeVar("T")

#: How long one /proc sample is shared by every attempt that asks for one.
SAMPLE_TTL = 0.01


@dataclass(frozen=True)
class MemorySample:
    rss_bytes: int
    hwm_bytes: int


def _parse_status(text: str) -> MemorySample | None:
    rss = hwm = None
    for line in text.splitlines():
        if line.startswith("VmRSS:"):
            rss = _kib(line)
        elif line.startswith("VmHWM:"):
            hwm = _kib(line)
    if rss is None or hwm is None:
        return None
    return MemorySample(rss_bytes=rss, hwm_bytes=hwm)


def _kib(line: str) -> int | None:
    parts = line.split()
    if len(parts) >= 3 and parts[2] == "kB" and parts[1].isdigit():
        return int(parts[1]) * 1024
    return None


def _read_proc() -> MemorySample | None:
    try:
        with open("/proc/self/status", encoding="ascii", errors="replace") as f:
            return _parse_status(f.read())
    except OSError:
        return None


def _read_rusage() -> MemorySample | None:
    try:
        import resource
    except ImportError:  # Windows
        return None
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    # Linux and the BSDs report KiB, macOS bytes.
    peak_bytes = peak if sys.platform == "darwin" else peak * 1024
    return MemorySample(rss_bytes=peak_bytes, hwm_bytes=peak_bytes)


_lock = threading.Lock()
_last: tuple[float, MemorySample] | None = None
_has_proc = sys.platform.startswith("linux")


def sample_memory() -> MemorySample | None:
    """The process's memory figures as of at most :data:`SAMPLE_TTL` ago."""
    global _last
    now = time.monotonic()
    with _lock:
        cached = _last
    if cached is not None and now - cached[0] < SAMPLE_TTL:
        return cached[1]
    fresh = _read_proc() if _has_proc else None
    if fresh is None:
        fresh = _read_rusage()
    if fresh is not None:
        with _lock:
            _last = (now, fresh)
    return fresh


class AttemptUsage:
    """Tracks one attempt's memory from its start to its report; the CPU figure is handed
    in by whoever ran the handler (see the module docs)."""

    def __init__(self) -> None:
        self._start = sample_memory()
        self._max_rss = self._start.rss_bytes if self._start else 0

    def observe(self) -> None:
        """Samples RSS (at heartbeats) so long attempts get a better peak."""
        if self._start is None:
            return
        s = sample_memory()
        if s is not None:
            self._max_rss = max(self._max_rss, s.rss_bytes)

    def finish(self, cpu_seconds: float | None) -> Metrics:
        peak: int | None = None
        if self._start is not None:
            end = sample_memory()
            if end is not None:
                if end.hwm_bytes > self._start.hwm_bytes:
                    peak = end.hwm_bytes
                else:
                    peak = max(self._max_rss, self._start.rss_bytes, end.rss_bytes)
        cpu_ms = round(cpu_seconds * 1000.0, 3) if cpu_seconds is not None else None
        return Metrics(cpu_ms=cpu_ms, peak_memory_bytes=peak)


class MeteredCoroutine(Awaitable[T]):
    """Awaits a coroutine, adding up the calling thread's CPU time spent inside it.

    ``cpu_seconds`` counts only the coroutine's own steps (from each resumption to the next
    suspension), so other tasks on the same event loop are not charged to it.
    """

    def __init__(self, coro: Coroutine[Any, Any, T]) -> None:
        self._coro = coro
        self.cpu_seconds = 0.0

    def __await__(self) -> Generator[Any, Any, T]:
        it = self._coro.__await__()
        to_send: Any = None
        to_throw: BaseException | None = None
        while True:
            t0 = time.thread_time()
            try:
                if to_throw is not None:
                    exc, to_throw = to_throw, None
                    yielded = it.throw(exc)
                else:
                    yielded = it.send(to_send)
            except StopIteration as stop:
                self.cpu_seconds += time.thread_time() - t0
                result: T = stop.value
                return result
            except BaseException:
                self.cpu_seconds += time.thread_time() - t0
                raise
            self.cpu_seconds += time.thread_time() - t0
            try:
                to_send = yield yielded
            except GeneratorExit:
                self._coro.close()
                raise
            except BaseException as e:  # e.g. CancelledError thrown in by the task
                to_throw = e
                to_send = None
