"""The SDK's bodies against the server's own OpenAPI document (GET /api/v1/openapi.json):
every member the SDK sends is declared, every member it reads exists.

Schemas are reached from the paths by following ``$ref``s, so renaming a component does
not break this test; changing the wire format does.
"""

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


def resolve(doc: dict[str, Any], s: dict[str, Any]) -> dict[str, Any]:
    """Follows ``$ref``s, and takes the non-null branch of an ``Option``'s ``oneOf``."""
    while True:
        if "$ref" in s:
            name = s["$ref"].rsplit("/", 1)[-1]
            s = doc["components"]["schemas"][name]
        elif "oneOf" in s:
            (s,) = [b for b in s["oneOf"] if b.get("type") != "null"]
        else:
            return s


def request_schema(doc: dict[str, Any], path: str) -> dict[str, Any]:
    body = doc["paths"][path]["post"]["requestBody"]["content"]["application/json"]
    return resolve(doc, body["schema"])


def response_schema(
    doc: dict[str, Any], path: str, method: str, status: str, media: str = "application/json"
) -> dict[str, Any]:
    content = doc["paths"][path][method]["responses"][status]["content"][media]
    return resolve(doc, content["schema"])


def members(s: dict[str, Any]) -> set[str]:
    return set(s.get("properties", {}))


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
        lambda: client.fail(
            task_id, 1, "boom", "bad", retryable=True, metrics=metrics, retry_after=1.5
        ),
        lambda: client.heartbeat(task_id, 1, {"cursor": 3}),
        lambda: client.start(f"missing-{uuid.uuid4().hex[:8]}", {}, idempotency_key="k"),
    ):
        with pytest.raises(distorch.ApiError) as info:
            call()
        assert info.value.status == 404, info.value  # well-formed, unknown ids

    bodies = {
        "poll": "/api/v1/queues/{queue}/poll",
        "complete": "/api/v1/tasks/{task_id}/complete",
        "fail": "/api/v1/tasks/{task_id}/fail",
        "heartbeat": "/api/v1/tasks/{task_id}/heartbeat",
        "workflows": "/api/v1/workflows",
    }
    assert sent["fail"]["retry_after_ms"] == 1500
    for key, path in bodies.items():
        s = request_schema(openapi, path)
        assert set(sent[key]) <= members(s), (path, sent[key], members(s))
        assert set(s.get("required", [])) <= set(sent[key]), (path, s.get("required"))
    fail = request_schema(openapi, bodies["fail"])
    error = resolve(openapi, fail["properties"]["error"])
    assert set(sent["fail"]["error"]) <= members(error)
    complete = request_schema(openapi, bodies["complete"])
    declared_metrics = members(resolve(openapi, complete["properties"]["metrics"]))
    assert set(sent["complete"]["metrics"]) <= declared_metrics
    assert set(sent["fail"]["metrics"]) <= declared_metrics

    # retry_after (seconds) goes out as whole milliseconds, rounded up.
    for seconds, ms in ((0.1, 100), (0.0015, 2), (2, 2000), (0, 0)):
        with pytest.raises(distorch.ApiError):
            client.fail(task_id, 1, "boom", retry_after=seconds)
        assert sent["fail"]["retry_after_ms"] == ms, (seconds, sent["fail"])
    with pytest.raises(ValueError):
        client.fail(task_id, 1, "boom", retry_after=-1)


def test_response_members_the_sdk_reads_exist(openapi: dict[str, Any]) -> None:
    polled = response_schema(openapi, "/api/v1/queues/{queue}/poll", "post", "200")
    polled_task = resolve(openapi, polled["properties"]["tasks"]["items"])
    workflow = response_schema(openapi, "/api/v1/workflows/{id}", "get", "200")
    task = resolve(openapi, workflow["properties"]["tasks"]["items"])
    reads = {
        "PolledTask": (
            polled_task,
            {
                "task_id", "workflow_id", "step_id", "task", "attempt", "input",
                "checkpoint", "heartbeat_timeout_ms",
            },
        ),
        "HeartbeatAck": (
            response_schema(openapi, "/api/v1/tasks/{task_id}/heartbeat", "post", "200"),
            {"cancel_requested"},
        ),
        "RunStatus": (
            response_schema(openapi, "/api/v1/workflows", "post", "201"),
            {"workflow_id", "status"},
        ),
        "Registered": (
            response_schema(openapi, "/api/v1/definitions", "post", "201"),
            {"name", "version"},
        ),
        "Workflow": (
            workflow,
            {
                "workflow_id", "definition", "version", "status", "input", "output", "error",
                "tasks",
            },
        ),
        "Task": (
            task,
            {
                "task_id", "workflow_id", "step_id", "kind", "task", "queue", "status",
                "attempt", "input", "output", "error", "parked", "worker_id", "metrics",
            },
        ),
        "Task.metrics": (
            resolve(openapi, task["properties"]["metrics"]),
            {"cpu_ms", "peak_memory_bytes"},
        ),
        "Problem": (
            response_schema(
                openapi, "/api/v1/workflows", "post", "503", "application/problem+json"
            ),
            {"type", "title", "status", "detail", "workflow_id"},
        ),
    }
    for name, (s, wanted) in reads.items():
        assert wanted <= members(s), (name, wanted - members(s))
    for p in (
        "/api/v1/workflows/{id}/cancel",
        "/api/v1/workflows/{id}/signals/{name}",
        "/api/v1/workflows/{id}/history",
        "/api/v1/tasks/{task_id}",
        "/api/v1/dlq",
    ):
        assert p in openapi["paths"], p
