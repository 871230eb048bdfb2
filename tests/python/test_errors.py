"""Error statuses as the SDK sees them: 404 unknown thread / run / assistant, 409 duplicate thread,
422 unknown assistant and invalid bodies; and real pagination totals."""

from __future__ import annotations

import uuid

import pytest
from langgraph_sdk.errors import ConflictError, NotFoundError, UnprocessableEntityError

from support import GRAPHS, collect, human


async def test_404_unknown_thread(client):
    missing = str(uuid.uuid4())
    for call in (
        lambda: client.threads.get(missing),
        lambda: client.threads.update_state(missing, {"title": "x"}),
        lambda: client.runs.list(missing),
        lambda: client.runs.create(missing, "echo", input=human()),
    ):
        with pytest.raises(NotFoundError) as err:
            await call()
        assert err.value.response.status_code == 404


async def test_404_unknown_run(client, thread_id):
    missing = str(uuid.uuid4())
    for call in (
        lambda: client.runs.get(thread_id, missing),
        lambda: client.runs.delete(thread_id, missing),
        lambda: client.runs.cancel(thread_id, missing),
    ):
        with pytest.raises(NotFoundError) as err:
            await call()
        assert err.value.response.status_code == 404


async def test_404_unknown_assistant(client):
    missing = str(uuid.uuid4())
    for call in (
        lambda: client.assistants.get(missing),
        lambda: client.assistants.update(missing, metadata={"a": 1}),
        lambda: client.assistants.delete(missing),
    ):
        with pytest.raises(NotFoundError) as err:
            await call()
        assert err.value.response.status_code == 404


async def test_409_duplicate_thread(client, thread_id):
    with pytest.raises(ConflictError) as err:
        await client.threads.create(thread_id=thread_id)
    assert err.value.response.status_code == 409


async def test_422_unknown_assistant_on_run_create(client, thread_id):
    with pytest.raises(UnprocessableEntityError) as err:
        await client.runs.create(thread_id, "no-such-graph", input=human())
    assert err.value.response.status_code == 422
    # a well-formed but unknown assistant id is "Thread or assistant not found."
    with pytest.raises(NotFoundError):
        await client.runs.create(thread_id, str(uuid.uuid4()), input=human())


async def test_422_invalid_bodies(client, thread_id):
    with pytest.raises(UnprocessableEntityError):
        await client.runs.create(thread_id, "echo", input=human(), multitask_strategy="bogus")
    with pytest.raises(UnprocessableEntityError):
        await client.runs.create(thread_id, "echo", input=human(), stream_mode="bogus")
    with pytest.raises(UnprocessableEntityError):
        await client.threads.search(limit=-1)
    # nothing was created or changed
    assert await client.runs.list(thread_id) == []
    assert (await client.threads.get(thread_id))["status"] == "idle"


@pytest.mark.antler_only
async def test_pagination_total_is_a_real_total(client):
    tag = {"suite": "py", "tag": uuid.uuid4().hex}
    for _ in range(5):
        await client.threads.create(metadata=tag)
    headers: dict[str, str] = {}
    page = await client.http.post(
        "/threads/search",
        json={"metadata": tag, "limit": 2, "offset": 2},
        on_response=lambda r: headers.update(r.headers),
    )
    assert len(page) == 2
    assert headers["x-pagination-total"] == "5"
    headers.clear()
    page = await client.http.post(
        "/assistants/search",
        json={"metadata": {"created_by": "system"}, "limit": 1},
        on_response=lambda r: headers.update(r.headers),
    )
    assert len(page) == 1
    assert headers["x-pagination-total"] == str(len(GRAPHS))


async def test_cancel_of_a_finished_run_is_404(client, thread_id):
    run = await client.runs.create(thread_id, "echo", input=human())
    await client.runs.join(thread_id, run["run_id"])
    with pytest.raises(NotFoundError):
        await client.runs.cancel(thread_id, run["run_id"])
    assert (await client.runs.get(thread_id, run["run_id"]))["status"] == "success"


async def test_join_stream_of_an_unknown_run_is_an_error_event(client, thread_id):
    parts = await collect(client.runs.join_stream(thread_id, str(uuid.uuid4())))
    assert [p.event for p in parts] == ["error"]
    assert parts[0].data == {"error": "HTTPException", "message": "404: Run not found"}


@pytest.mark.antler_only
async def test_copy_of_an_unknown_thread_is_404(client):
    # the reference answers 409 Conflict here
    with pytest.raises(NotFoundError):
        await client.threads.copy(str(uuid.uuid4()))
