"""runs.*: create, stream, wait, list, get, cancel (interrupt / rollback, wait), cancel_many, join,
join_stream, delete, create_batch, stateless runs, the `fail` graph."""

from __future__ import annotations

import asyncio
import uuid

import httpx
import pytest
from langgraph_sdk.errors import NotFoundError, UnprocessableEntityError

from support import (
    FAST,
    collect,
    events,
    human,
    msgs,
    of,
    seq_ids,
    sig,
    slow_config,
    wait_run,
    wait_state_messages,
    wait_thread,
)

SLOW_DONE = [("human", "go"), ("ai", "step 1"), ("ai", "step 2"), ("ai", "step 3")]


async def test_create_get_join(client, thread_id):
    run = await client.runs.create(thread_id, "slow", input=human("go"), config=FAST)
    assert run["thread_id"] == thread_id
    assert run["status"] in ("pending", "running")
    assert run["multitask_strategy"] == "enqueue"
    assert run["kwargs"]["input"] == human("go")
    got = await client.runs.get(thread_id, run["run_id"])
    assert got["run_id"] == run["run_id"]
    out = await client.runs.join(thread_id, run["run_id"])
    assert msgs(out["messages"]) == SLOW_DONE
    done = await client.runs.get(thread_id, run["run_id"])
    assert done["status"] == "success"
    assert (await client.threads.get(thread_id))["status"] == "idle"


async def test_wait_returns_final_values(client, thread_id):
    out = await client.runs.wait(thread_id, "echo", input=human("hello"))
    assert msgs(out["messages"]) == [("human", "hello"), ("ai", "echo: hello")]
    assert out["title"] == "hello"
    # a second run keeps the history and the first title
    out = await client.runs.wait(thread_id, "echo", input=human("again"))
    assert msgs(out["messages"])[-1] == ("ai", "echo: again")
    assert out["title"] == "hello"


async def test_stream_default_values(client, thread_id):
    created = []
    parts = await collect(
        client.runs.stream(thread_id, "echo", input=human("stream me"), on_run_created=created.append)
    )
    assert events(parts) == ["metadata", "values", "values"]
    meta = parts[0].data
    assert meta["run_id"] == created[0]["run_id"]
    assert created[0]["thread_id"] == thread_id
    values = of(parts, "values")
    assert msgs(values[0]["messages"]) == [("human", "stream me")]
    assert msgs(values[1]["messages"]) == [("human", "stream me"), ("ai", "echo: stream me")]
    assert values[1]["title"] == "stream me"
    run = await client.runs.get(thread_id, meta["run_id"])
    assert run["status"] == "success"


async def test_list_runs(client, thread_id):
    ids = []
    for text in ("a", "b", "c"):
        run = await client.runs.create(thread_id, "echo", input=human(text))
        ids.append(run["run_id"])
        await client.runs.join(thread_id, run["run_id"])
    listed = await client.runs.list(thread_id)
    assert [r["run_id"] for r in listed] == list(reversed(ids))
    assert {r["status"] for r in listed} == {"success"}
    page = await client.runs.list(thread_id, limit=1, offset=1)
    assert [r["run_id"] for r in page] == [ids[1]]
    assert await client.runs.list(thread_id, status="error") == []
    assert len(await client.runs.list(thread_id, status="success")) == 3
    other = (await client.threads.create())["thread_id"]
    assert await client.runs.list(other) == []


async def test_join_stream_of_a_running_run(client, thread_id):
    run = await client.runs.create(
        thread_id, "slow", input=human("go"), config=slow_config(0.3), stream_mode=["values", "custom"]
    )
    # no stream_mode: every mode the run was created with
    parts = await collect(client.runs.join_stream(thread_id, run["run_id"]))
    values = of(parts, "values")
    assert msgs(values[-1]["messages"]) == SLOW_DONE
    custom = of(parts, "custom")
    # a join may attach after the first custom events: what it saw is an ordered suffix
    everything = [{"step": n, "phase": ph} for n in (1, 2, 3) for ph in ("start", "end")]
    assert custom == everything[len(everything) - len(custom) :]
    assert custom[-1] == {"step": 3, "phase": "end"}
    assert (await client.runs.get(thread_id, run["run_id"]))["status"] == "success"


async def test_cancel_interrupt_keeps_finished_steps(client, thread_id):
    run = await client.runs.create(thread_id, "slow", input=human("go"), config=slow_config(1.0))
    await wait_state_messages(client, thread_id, 2)  # step 1 is done
    result = await client.runs.cancel(thread_id, run["run_id"], wait=True)
    assert result in ({}, None)
    done = await client.runs.get(thread_id, run["run_id"])
    assert done["status"] == "interrupted"
    state = await client.threads.get_state(thread_id)
    got = msgs(state["values"]["messages"])
    assert got[:2] == [("human", "go"), ("ai", "step 1")]
    assert ("ai", "step 3") not in got
    thread = await client.threads.get(thread_id)
    assert thread["status"] in ("idle", "interrupted")


async def test_cancel_rollback_deletes_run_and_its_checkpoints(client, thread_id):
    await client.runs.wait(thread_id, "echo", input=human("before"))
    run = await client.runs.create(thread_id, "slow", input=human("go"), config=slow_config(1.0))
    await wait_state_messages(client, thread_id, 4)  # human "go" + step 1 on top of the echo run
    await client.runs.cancel(thread_id, run["run_id"], action="rollback", wait=True)
    with pytest.raises(NotFoundError):
        await wait_run(client, thread_id, run["run_id"], statuses=(), timeout=10)
    state = await client.threads.get_state(thread_id)
    assert msgs(state["values"]["messages"]) == [("human", "before"), ("ai", "echo: before")]
    assert [r["run_id"] for r in await client.runs.list(thread_id)] != [] and run["run_id"] not in {
        r["run_id"] for r in await client.runs.list(thread_id)
    }


async def test_cancel_without_wait(client, thread_id):
    run = await client.runs.create(thread_id, "slow", input=human("go"), config=slow_config(1.0))
    await wait_run(client, thread_id, run["run_id"], statuses=("running",))
    assert await client.runs.cancel(thread_id, run["run_id"]) is None
    done = await wait_run(client, thread_id, run["run_id"])
    assert done["status"] == "interrupted"


async def test_cancel_pending_run(client, thread_id):
    first = await client.runs.create(thread_id, "slow", input=human("go"), config=slow_config(0.5))
    queued = await client.runs.create(thread_id, "echo", input=human("queued"))
    assert (await client.runs.get(thread_id, queued["run_id"]))["status"] == "pending"
    await client.runs.cancel(thread_id, queued["run_id"], wait=True)
    assert (await client.runs.get(thread_id, queued["run_id"]))["status"] == "interrupted"
    await client.runs.join(thread_id, first["run_id"])
    state = await client.threads.get_state(thread_id)
    assert ("human", "queued") not in msgs(state["values"]["messages"])


async def test_cancel_many(client):
    t1 = (await client.threads.create())["thread_id"]
    r1 = await client.runs.create(t1, "slow", input=human("go"), config=slow_config(1.0))
    r2 = await client.runs.create(t1, "slow", input=human("go"), config=slow_config(1.0))
    await wait_run(client, t1, r1["run_id"], statuses=("running",))
    await client.runs.cancel_many(thread_id=t1, run_ids=[r1["run_id"], r2["run_id"]])
    for r in (r1, r2):
        assert (await wait_run(client, t1, r["run_id"]))["status"] == "interrupted"


async def test_delete_run(client, thread_id):
    run = await client.runs.create(thread_id, "echo", input=human("x"))
    await client.runs.join(thread_id, run["run_id"])
    await client.runs.delete(thread_id, run["run_id"])
    with pytest.raises(NotFoundError):
        await client.runs.get(thread_id, run["run_id"])
    assert await client.runs.list(thread_id) == []
    with pytest.raises(NotFoundError):
        await client.runs.delete(thread_id, run["run_id"])


async def test_stateless_wait_stream_create(client):
    out = await client.runs.wait(None, "echo", input=human("no thread"))
    assert msgs(out["messages"]) == [("human", "no thread"), ("ai", "echo: no thread")]

    parts = await collect(client.runs.stream(None, "echo", input=human("no thread"), stream_mode="updates"))
    assert events(parts) == ["metadata", "updates"]
    update = parts[1].data
    assert list(update) == ["echo"]
    assert msgs(update["echo"]["messages"]) == [("ai", "echo: no thread")]
    assert update["echo"]["title"] == "no thread"

    # by default the temporary thread (and the run with it) is deleted once the run completes, which
    # can be before a join arrives: see test_run_options for that; here only the run record
    run = await client.runs.create(None, "echo", input=human("background"))
    assert run["kwargs"]["temporary"] is True

    run = await client.runs.create(None, "echo", input=human("background"), on_completion="keep")
    out = await client.runs.join(run["thread_id"], run["run_id"])
    assert msgs(out["messages"])[-1] == ("ai", "echo: background")


async def test_create_batch(client):
    runs = await client.runs.create_batch(
        [
            {"assistant_id": "echo", "input": human("b1"), "on_completion": "keep"},
            {"assistant_id": "echo", "input": human("b2"), "on_completion": "keep"},
        ]
    )
    assert len(runs) == 2
    assert [r["kwargs"]["input"] for r in runs] == [human("b1"), human("b2")]
    assert runs[0]["thread_id"] != runs[1]["thread_id"]
    for r, text in zip(runs, ("b1", "b2"), strict=True):
        out = await client.runs.join(r["thread_id"], r["run_id"])
        assert msgs(out["messages"])[-1] == ("ai", f"echo: {text}")


async def test_if_not_exists_create(client):
    tid = str(uuid.uuid4())
    out = await client.runs.wait(tid, "echo", input=human("made on the fly"), if_not_exists="create")
    assert msgs(out["messages"])[-1] == ("ai", "echo: made on the fly")
    assert (await client.threads.get(tid))["thread_id"] == tid


async def test_fail_graph_wait_stream_join(client, thread_id):
    with pytest.raises(Exception, match="ValueError: boom"):
        await client.runs.wait(thread_id, "fail", input=human("x"))
    out = await client.runs.wait(thread_id, "fail", input=human("x"), raise_error=False)
    assert out["__error__"] == {"error": "ValueError", "message": "boom"}

    parts = await collect(client.runs.stream(thread_id, "fail", input=human("x")))
    assert parts[-1].event == "error"
    assert parts[-1].data == {"error": "ValueError", "message": "boom"}
    run_id = parts[0].data["run_id"]
    run = await client.runs.get(thread_id, run_id)
    assert run["status"] == "error"
    thread = await client.threads.get(thread_id)
    assert thread["status"] == "error"

    run = await client.runs.create(thread_id, "fail", input=human("x"))
    joined = await client.runs.join(thread_id, run["run_id"])
    assert joined["__error__"] == {"error": "ValueError", "message": "boom"}
    state = await client.threads.get_state(thread_id)
    assert state["tasks"][0]["name"] == "fail"
    assert "boom" in state["tasks"][0]["error"]


async def test_run_config_and_metadata(client, thread_id):
    run = await client.runs.create(
        thread_id, "echo", input=human("m"), metadata={"purpose": "test"}, config={"tags": ["py"]}
    )
    assert run["metadata"]["purpose"] == "test"
    await client.runs.join(thread_id, run["run_id"])
    got = await client.runs.get(thread_id, run["run_id"])
    assert got["metadata"]["purpose"] == "test"
    assert got["status"] == "success"


async def test_unknown_run_and_thread(client, thread_id):
    with pytest.raises(NotFoundError):
        await client.runs.get(thread_id, str(uuid.uuid4()))
    with pytest.raises(NotFoundError):
        await client.runs.cancel(thread_id, str(uuid.uuid4()))
    with pytest.raises(httpx.HTTPStatusError) as err:  # wait raises plain httpx errors
        await client.runs.wait(str(uuid.uuid4()), "echo", input=human("x"))
    assert err.value.response.status_code == 404
    with pytest.raises(NotFoundError):
        await collect(client.runs.stream(str(uuid.uuid4()), "echo", input=human("x")))


async def test_unknown_assistant_is_422(client, thread_id):
    with pytest.raises(UnprocessableEntityError) as err:
        await client.runs.create(thread_id, "nope", input=human("x"))
    assert err.value.response.status_code == 422
    with pytest.raises(httpx.HTTPStatusError) as err:
        await client.runs.wait(thread_id, "nope", input=human("x"))
    assert err.value.response.status_code == 422
    with pytest.raises(UnprocessableEntityError):
        await collect(client.runs.stream(thread_id, "nope", input=human("x")))
    with pytest.raises(httpx.HTTPStatusError) as err:
        await client.runs.wait(None, "nope", input=human("x"))
    assert err.value.response.status_code == 422
    assert await client.runs.list(thread_id) == []
    assert (await client.threads.get(thread_id))["status"] == "idle"


@pytest.mark.antler_only
async def test_every_stream_event_has_an_increasing_id_and_ends_with_end(client, thread_id):
    parts = await collect(
        client.runs.stream(thread_id, "slow", input=human("go"), config=FAST, stream_mode=["values", "custom"])
    )
    assert parts[-1].event == "end"
    assert parts[-1].data is None
    assert [p.event for p in parts].count("end") == 1
    keys = seq_ids(parts)  # every event but `end` has an id
    assert len(set(keys)) == len(keys)
    assert keys == sorted(keys)
    assert [seq for _, seq in keys] == sorted({seq for _, seq in keys})
    # the join of a finished run replays the same events with the same ids
    replay = await collect(client.runs.join_stream(thread_id, parts[0].data["run_id"], last_event_id="-1"))
    assert sig(replay) == sig(parts)


@pytest.mark.antler_only
async def test_error_stream_is_final(client, thread_id):
    parts = await collect(client.runs.stream(thread_id, "fail", input=human("x")))
    assert [p.event for p in parts][-1] == "error"
    assert parts[-1].data == {"error": "ValueError", "message": "boom"}
    assert "end" not in [p.event for p in parts]
    seq_ids(parts)  # ids on every event


async def test_wait_then_thread_status_idle(client, thread_id):
    await client.runs.wait(thread_id, "slow", input=human("go"), config=FAST)
    thread = await wait_thread(client, thread_id, ("idle",))
    assert msgs(thread["values"]["messages"]) == SLOW_DONE


async def test_thread_is_busy_while_a_run_is_active(client, thread_id):
    run = await client.runs.create(thread_id, "slow", input=human("go"), config=slow_config(0.3))
    await wait_run(client, thread_id, run["run_id"], statuses=("running",))
    assert (await client.threads.get(thread_id))["status"] == "busy"
    busy = await client.threads.search(status="busy", limit=100)
    assert thread_id in {t["thread_id"] for t in busy}
    await client.runs.join(thread_id, run["run_id"])
    assert (await client.threads.get(thread_id))["status"] == "idle"
    assert thread_id not in {t["thread_id"] for t in await client.threads.search(status="busy", limit=100)}


async def test_concurrent_runs_on_separate_threads(client):
    async def one(i: int) -> tuple[str, list]:
        tid = (await client.threads.create())["thread_id"]
        out = await client.runs.wait(tid, "echo", input=human(f"n{i}"))
        return tid, msgs(out["messages"])

    results = await asyncio.gather(*(one(i) for i in range(20)))
    assert [m for _, m in results] == [[("human", f"n{i}"), ("ai", f"echo: n{i}")] for i in range(20)]
    for i, (tid, _) in enumerate(results):
        assert (await client.threads.get(tid))["values"]["title"] == f"n{i}"
