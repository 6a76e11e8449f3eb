"""The inventory service's worker (Python SDK): reserves stock and releases it again when
the saga compensates.

    DISTORCH_URL=http://127.0.0.1:8000 python inventory.py
"""

from __future__ import annotations

import logging
import os
from typing import Any

import distorch

URL = os.environ.get("DISTORCH_URL", "http://127.0.0.1:8000")

worker = distorch.Worker(
    url=URL,
    queue="inventory",
    worker_id=f"python-inventory-{os.getpid()}",
    poll_wait=5,
)


@worker.task("reserve-stock")
def reserve_stock(ctx: distorch.TaskContext, input: dict[str, Any]) -> dict[str, Any]:
    # A real service would write the reservation keyed by ctx.task_id, so a retried
    # attempt finds the one it made before instead of reserving twice.
    units = sum(item["qty"] for item in input["items"])
    ctx.logger.info("reserved %d unit(s) for %s", units, input["order_id"])
    return {"reservation_id": f"res-{input['order_id']}", "units": units, "served_by": "python"}


@worker.task("release-stock")
def release_stock(ctx: distorch.TaskContext, reservation: dict[str, Any]) -> dict[str, Any]:
    ctx.logger.info("released %s", reservation["reservation_id"])
    return {"released": reservation["reservation_id"], "served_by": "python"}


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="[python] %(levelname)s %(message)s")
    worker.run()  # until SIGINT/SIGTERM, then drains
