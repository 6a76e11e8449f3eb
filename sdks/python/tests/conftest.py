"""Fixtures: one real `distorch standalone` server for the session, clients, and helpers to
run workers in a thread or in a subprocess.

The server binary comes from ``DISTORCH_BIN``; the tests fail (never skip) without it.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import os
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, TypeVar

import pytest

import distorch

HERE = Path(__file__).resolve().parent
T = TypeVar("T")


def pytest_configure(config: pytest.Config) -> None:
    binary = os.environ.get("DISTORCH_BIN")
    if not binary:
        raise pytest.UsageError(
            "DISTORCH_BIN is not set: point it at the distorch server binary "
            "(build it with `cargo build -p distorch --offline`; it is target/debug/distorch)"
        )
    if not (os.path.isfile(binary) and os.access(binary, os.X_OK)):
        raise pytest.UsageError(f"DISTORCH_BIN={binary} is not an executable file")


@dataclass
class Server:
    url: str
    process: subprocess.Popen[str]
    output: collections.deque[str]

    def tail(self, n: int = 40) -> str:
        return "".join(list(self.output)[-n:])

    def stop(self) -> None:
        """SIGTERM, then SIGKILL if it lingers."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def start_server(data_dir: Path, listen: str = "127.0.0.1:0") -> Server:
    """Starts `distorch standalone` on ``data_dir`` and waits until it is ready."""
    binary = os.environ["DISTORCH_BIN"]
    data_dir.mkdir(parents=True, exist_ok=True)
    log_path = data_dir.parent / f"{data_dir.name}-server.log"
    proc = subprocess.Popen(
        [binary, "standalone", "--listen", listen, "--data-dir", str(data_dir)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        text=True,
        bufsize=1,
        # No stray ./distorch.toml: the server runs with its defaults.
        cwd=str(data_dir.parent),
    )
    output: collections.deque[str] = collections.deque(maxlen=2000)
    ready = threading.Event()
    found: list[str] = []
    marker = "distorch standalone listening on "

    def pump() -> None:
        assert proc.stdout is not None
        with open(log_path, "a") as log:
            for line in proc.stdout:
                output.append(line)
                log.write(line)
                log.flush()
                if not ready.is_set() and line.startswith(marker):
                    found.append(line[len(marker):].strip())
                    ready.set()
        ready.set()

    threading.Thread(target=pump, name="server-output", daemon=True).start()
    if not ready.wait(60) or not found:
        proc.kill()
        raise RuntimeError(
            "distorch standalone did not print its address within 60s; output:\n"
            + "".join(output)
        )
    srv = Server(url=found[0], process=proc, output=output)
    client = distorch.Client(srv.url)
    try:
        wait_for(lambda: _ready(client), timeout=30, what="the server to be ready")
    except AssertionError:
        srv.stop()
        raise AssertionError("the server never became ready; output:\n" + srv.tail()) from None
    return srv


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    srv = start_server(tmp_path_factory.mktemp("server") / "data")
    try:
        yield srv
    finally:
        srv.stop()


def _ready(client: distorch.Client) -> bool:
    try:
        client._http.request("GET", "/readyz", timeout=5)
        return True
    except distorch.DistorchError:
        return False


@pytest.fixture
def client(server: Server) -> Iterator[distorch.Client]:
    with distorch.Client(server.url) as c:
        yield c


@pytest.fixture
def uid() -> str:
    """A short unique suffix for definition, task and queue names, so tests never see
    each other's tasks."""
    return uuid.uuid4().hex[:10]


def wait_for(
    predicate: Callable[[], T | None | bool],
    timeout: float = 15.0,
    interval: float = 0.05,
    what: str = "condition",
) -> T:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value  # type: ignore[return-value]
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


@contextlib.contextmanager
def running(
    worker: distorch.Worker, stop_timeout: float = 20.0, use_async: bool = False
) -> Iterator[distorch.Worker]:
    """Runs ``worker`` in a thread for the duration of the block (with ``run``, or
    ``asyncio.run(run_async())``), then stops it and checks that it drained and exited
    cleanly."""
    errors: list[BaseException] = []

    def target() -> None:
        try:
            if use_async:
                asyncio.run(worker.run_async(handle_signals=False))
            else:
                worker.run(handle_signals=False)
        except BaseException as e:  # surfaced in the test's thread
            errors.append(e)

    thread = threading.Thread(target=target, name=f"worker-{worker.queue}", daemon=True)
    thread.start()
    try:
        yield worker
    finally:
        worker.stop()
        thread.join(stop_timeout)
    assert not thread.is_alive(), f"worker {worker.worker_id} did not stop in {stop_timeout}s"
    if errors:
        raise errors[0]


@dataclass
class WorkerProcess:
    process: subprocess.Popen[str]
    output: list[str]

    def text(self) -> str:
        return "".join(self.output)


@contextlib.contextmanager
def subprocess_worker(
    server: Server, queue: str, task: str, mode: str, marker: Path, concurrency: int = 1
) -> Iterator[WorkerProcess]:
    """Runs tests/worker_app.py as its own process (for signals and crashes); its log
    output is collected as it comes."""
    env = dict(os.environ)
    env["PYTHONUNBUFFERED"] = "1"
    proc = subprocess.Popen(
        [
            sys.executable,
            str(HERE / "worker_app.py"),
            server.url,
            queue,
            task,
            mode,
            str(marker),
            str(concurrency),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        text=True,
        env=env,
    )
    output: list[str] = []

    def pump() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            output.append(line)

    reader = threading.Thread(target=pump, name="worker-output", daemon=True)
    reader.start()
    try:
        yield WorkerProcess(proc, output)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        reader.join(5)


def marker_lines(path: Path) -> list[str]:
    try:
        return [line for line in path.read_text().splitlines() if line]
    except FileNotFoundError:
        return []
