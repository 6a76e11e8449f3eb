"""A worker process for the tests that need a real process: signals and crashes.

    python worker_app.py URL QUEUE TASK MODE MARKER_FILE CONCURRENCY

Modes:
- ``slow``: each task appends ``started <task_id>`` to MARKER_FILE, sleeps
  ``input["sleep"]`` seconds, appends ``finished <task_id>`` and returns ``{"slept": s}``.
- ``stall``: each task saves the checkpoint ``input["checkpoint"]`` with a heartbeat,
  appends ``checkpointed <task_id>``, then hangs (the test kills the process).
"""

from __future__ import annotations

import logging
import sys
import time
from typing import Any

import distorch


def main() -> None:
    url, queue, task, mode, marker, concurrency = sys.argv[1:7]
    logging.basicConfig(
        level=logging.INFO,
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
    )
    worker = distorch.Worker(url=url, queue=queue, concurrency=int(concurrency))

    def note(line: str) -> None:
        with open(marker, "a") as f:
            f.write(line + "\n")

    @worker.task(task)
    def handle(ctx: distorch.TaskContext, input: Any) -> Any:
        if mode == "slow":
            note(f"started {ctx.task_id}")
            seconds = float(input.get("sleep", 2.0))
            time.sleep(seconds)
            note(f"finished {ctx.task_id}")
            return {"slept": seconds}
        if mode == "stall":
            assert ctx.heartbeat(input["checkpoint"]), "checkpoint heartbeat refused"
            note(f"checkpointed {ctx.task_id}")
            time.sleep(3600)
            return None
        raise ValueError(f"unknown mode {mode}")

    note("ready")
    worker.run()
    note("exited")


if __name__ == "__main__":
    main()
