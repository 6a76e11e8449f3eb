"""The SDK's bodies against the server's own OpenAPI document (GET /api/v1/openapi.json):
every member the SDK sends is declared, every member it reads exists."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

import distorch
from distorch import _http


@pytest.fixture(scope="module")
def openapi(server: Any) -> dict[str, Any]:
    with distorch.Client(server.url) as c:
        doc = c._http.request("GET", "/api/v1/openapi.json").json("GET", "openapi")
    assert isinstance(doc, dict)
    return doc


def schema(doc: dict[str, Any], name: str) -> dict[str, Any]:
    found = doc["components"]["schemas"][name]
    assert isinstance(found, dict)
    return found


def test_request_bodies_only_use_declared_members(
    openapi: dict[str, Any], client: distorch.Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    sent: dict[str, Any] = {}
    original = _http.Transport.request

    def recording(self: _http.Transport, method: str, path: str, **kw: Any) -> Any:
        if kw.get("json_body") is not None:
            sent[path.split("?")[0].rsplit("/", 1)[-1]] = kw["json_body"]
        return original(self, method, path, **kw)

    monkeypatch.setattr(_http.Transport, "request", recording)
    task_id = f"{uuid.uuid4()}.1"
    metrics = distorch.Metrics(cpu_ms=1.5, peak_memory_bytes=1024)
    client.poll(f"q-{uuid.uuid4().hex[:8]}", "w-1", max_tasks=3, wait=0)
    for call in (
        lambda: client.complete(task_id, 1, {"ok": True}, metrics),
        lambda: client.fail(task_id, 1, "boom", "bad", retryable=False, metrics=metrics),
        lambda: client.heartbeat(task_id, 1, {"cursor": 3}),
        lambda: client.start(f"missing-{uuid.uuid4().hex[:8]}", {}, idempotency_key="k"),
    ):
        with pytest.raises(distorch.ApiError) as info:
            call()
        assert info.value.status == 404, info.value  # well-formed, unknown ids

    for path, name in (
        ("poll", "Poll"),
        ("complete", "Complete"),
        ("fail", "Fail"),
        ("heartbeat", "Heartbeat"),
        ("workflows", "StartWorkflow"),
    ):
        declared = set(schema(openapi, name)["properties"])
        assert set(sent[path]) <= declared, (name, sent[path], declared)
        assert set(schema(openapi, name).get("required", [])) <= set(sent[path])
    assert set(sent["fail"]["error"]) <= set(schema(openapi, "Failure")["properties"])
    assert set(sent["complete"]["metrics"]) <= set(schema(openapi, "Metrics")["properties"])


def test_response_members_the_sdk_reads_exist(openapi: dict[str, Any]) -> None:
    reads = {
        "PolledTask": {
            "task_id", "workflow_id", "step_id", "task", "attempt", "input", "checkpoint",
            "heartbeat_timeout_ms",
        },
        "HeartbeatAck": {"cancel_requested"},
        "RunStatus": {"workflow_id", "status"},
        "Registered": {"name", "version"},
        "Workflow": {
            "workflow_id", "definition", "version", "status", "input", "output", "error",
            "tasks",
        },
        "Task": {
            "task_id", "workflow_id", "step_id", "kind", "task", "queue", "status", "attempt",
            "input", "output", "error", "parked", "worker_id", "metrics",
        },
        "Problem": {"type", "title", "status", "detail", "workflow_id"},
    }
    for name, members in reads.items():
        declared = set(schema(openapi, name)["properties"])
        assert members <= declared, (name, members - declared)
    paths = openapi["paths"]
    for p in (
        "/api/v1/queues/{queue}/poll",
        "/api/v1/tasks/{task_id}/complete",
        "/api/v1/tasks/{task_id}/fail",
        "/api/v1/tasks/{task_id}/heartbeat",
        "/api/v1/workflows",
        "/api/v1/workflows/{id}",
        "/api/v1/workflows/{id}/cancel",
        "/api/v1/workflows/{id}/signals/{name}",
        "/api/v1/definitions",
    ):
        assert p in paths, p
