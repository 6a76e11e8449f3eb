"""The client against a real server: registration, idempotent starts, problem+json errors."""

from __future__ import annotations

import time
import uuid

import pytest

import distorch


def one_step(uid: str) -> str:
    return f"""
name: idem-{uid}
steps:
  - id: only
    task: noop-{uid}
    queue: q-{uid}
"""


def test_start_with_the_same_key_or_id_never_creates_a_second_run(
    client: distorch.Client, uid: str
) -> None:
    ref = client.register_definition(one_step(uid))
    assert ref == distorch.DefinitionRef(name=f"idem-{uid}", version=1)
    # The same document again is that version, and registers nothing.
    again_ref = client.register_definition(one_step(uid))
    assert again_ref == distorch.DefinitionRef(name=ref.name, version=1, unchanged=True)

    first = client.start(ref.name, {"n": 1}, idempotency_key=f"key-{uid}")
    again = client.start(ref.name, {"n": 1}, idempotency_key=f"key-{uid}")
    assert first.created and not again.created
    assert again.workflow_id == first.workflow_id

    chosen = str(uuid.uuid4())
    by_id = client.start(ref.name, {"n": 2}, workflow_id=chosen)
    by_id_again = client.start(ref.name, {"n": 2}, workflow_id=chosen)
    assert by_id.workflow_id == chosen and by_id.created
    assert by_id_again.workflow_id == chosen and not by_id_again.created

    runs = client.list_workflows(definition=ref.name)
    assert sorted(r["workflow_id"] for r in runs) == sorted([first.workflow_id, chosen])
    view = client.get(first.workflow_id)
    assert view.definition == ref.name and view.input == {"n": 1}
    assert view.status == "running"
    for wf in (first.workflow_id, chosen):
        assert client.cancel(wf, reason="test over") in ("cancelled", None)
    assert client.wait(chosen, timeout=10).status == "cancelled"


def test_api_errors_carry_the_problem(client: distorch.Client, uid: str) -> None:
    missing = str(uuid.uuid4())
    with pytest.raises(distorch.ApiError) as info:
        client.get(missing)
    e = info.value
    assert e.status == 404 and e.is_not_found and not e.retryable
    assert e.title == "Not Found"
    assert missing in e.detail
    assert e.type == "urn:distorch:problem:not-found"

    with pytest.raises(distorch.ApiError) as info:
        client.register_definition(
            {"name": f"bad-{uid}", "steps": [{"id": "a", "task": "t", "when": "(("}]}
        )
    assert info.value.status == 400
    assert "steps[0].when" in info.value.detail

    with pytest.raises(distorch.ApiError) as info:
        client.start(f"no-such-definition-{uid}", {})
    assert info.value.status == 404


def test_transport_errors_are_typed() -> None:
    with distorch.Client("http://127.0.0.1:9", timeout=2) as c:
        with pytest.raises(distorch.TransportError) as info:
            c.get(str(uuid.uuid4()))
    assert info.value.retryable


def test_wait_times_out_with_the_last_view(client: distorch.Client, uid: str) -> None:
    ref = client.register_definition(one_step(uid))
    run = client.start(ref.name, {})
    with pytest.raises(distorch.WaitTimeout) as info:
        client.wait(run.workflow_id, timeout=0.3)
    assert isinstance(info.value, TimeoutError)
    assert info.value.workflow.status == "running"
    client.cancel(run.workflow_id)


def test_a_fresh_run_omits_empty_optional_members_and_the_views_read_them_as_none(
    client: distorch.Client, uid: str
) -> None:
    """The server leaves out empty optional members (``worker_id``, ``metrics``,
    ``started_at``, ``finished_at``, ``human``, ``parent_workflow_id``); the typed views
    read an absent member and a ``null`` one alike."""
    ref = client.register_definition(one_step(uid))
    run = client.start(ref.name, {})
    view = client.wait(run.workflow_id, timeout=10, until={"running"})
    if not view.tasks:  # the read model may lag the first task by a moment
        time.sleep(0.5)
        view = client.get(run.workflow_id)
    assert "parent_workflow_id" not in view.raw, view.raw
    (task,) = view.tasks
    for member in ("worker_id", "metrics", "started_at", "finished_at", "human"):
        assert member not in task.raw, (member, task.raw)
    assert task.worker_id is None and task.metrics is None
    as_null = distorch.TaskInfo.from_json({**task.raw, "worker_id": None, "metrics": None})
    assert as_null == task
    client.cancel(run.workflow_id)
