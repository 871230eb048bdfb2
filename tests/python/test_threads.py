"""threads.*: create, get, update, delete, search, count, copy, prune, get_state, update_state,
get_history, join_stream."""

from __future__ import annotations

import asyncio
import uuid

import pytest
from langgraph_sdk.errors import ConflictError, NotFoundError

from support import human, msgs


def tag() -> dict[str, str]:
    """Metadata unique to one test, so searches and counts see only its threads."""
    return {"suite": "py", "tag": uuid.uuid4().hex}


async def test_create_and_get(client):
    t = await client.threads.create(metadata={"owner": "py"})
    assert t["status"] == "idle"
    assert t["metadata"] == {"owner": "py"}
    assert t["values"] is None
    got = await client.threads.get(t["thread_id"])
    assert got["thread_id"] == t["thread_id"]
    assert got["metadata"] == {"owner": "py"}
    assert got["status"] == "idle"


async def test_create_with_id_conflict_and_do_nothing(client):
    tid = str(uuid.uuid4())
    t = await client.threads.create(thread_id=tid, metadata={"n": 1})
    assert t["thread_id"] == tid
    with pytest.raises(ConflictError) as err:
        await client.threads.create(thread_id=tid)
    assert err.value.response.status_code == 409
    same = await client.threads.create(thread_id=tid, if_exists="do_nothing", metadata={"n": 2})
    assert same["thread_id"] == tid
    assert same["metadata"] == {"n": 1}


async def test_update_merges_metadata(client):
    t = await client.threads.create(metadata={"owner": "py"})
    u = await client.threads.update(t["thread_id"], metadata={"title": "x"})
    assert u["metadata"] == {"owner": "py", "title": "x"}
    assert (await client.threads.get(t["thread_id"]))["metadata"] == {"owner": "py", "title": "x"}


async def test_delete(client):
    t = await client.threads.create()
    await client.threads.delete(t["thread_id"])
    with pytest.raises(NotFoundError):
        await client.threads.get(t["thread_id"])


async def test_search_and_count(client):
    md = tag()
    ids = [(await client.threads.create(metadata=md))["thread_id"] for _ in range(3)]
    await client.threads.create(metadata={"suite": "py", "tag": "other"})
    found = await client.threads.search(metadata=md, limit=10)
    assert {t["thread_id"] for t in found} == set(ids)
    assert await client.threads.count(metadata=md) == 3
    assert await client.threads.count(metadata=md, status="busy") == 0
    # newest first by default; limit/offset page through the same order
    page1 = await client.threads.search(metadata=md, limit=2, offset=0)
    page2 = await client.threads.search(metadata=md, limit=2, offset=2)
    assert [t["thread_id"] for t in page1 + page2] == [t["thread_id"] for t in found]
    assert [t["thread_id"] for t in found] == list(reversed(ids))
    asc = await client.threads.search(metadata=md, sort_by="created_at", sort_order="asc")
    assert [t["thread_id"] for t in asc] == ids
    by_id = await client.threads.search(ids=[ids[1]])
    assert [t["thread_id"] for t in by_id] == [ids[1]]
    idle = await client.threads.search(metadata=md, status="idle")
    assert len(idle) == 3


async def test_thread_after_a_run(client, thread_id):
    await client.runs.wait(thread_id, "echo", input=human("hello there"))
    t = await client.threads.get(thread_id)
    assert t["status"] == "idle"
    assert msgs(t["values"]["messages"]) == [("human", "hello there"), ("ai", "echo: hello there")]
    assert t["values"]["title"] == "hello there"
    assert t["metadata"]["graph_id"] == "echo"
    # searching by values finds it
    found = await client.threads.search(values={"title": "hello there"}, metadata={"graph_id": "echo"})
    assert thread_id in {x["thread_id"] for x in found}


async def test_get_state_and_history(client, thread_id):
    empty = await client.threads.get_state(thread_id)
    assert empty["values"] == {} or empty["values"] is None
    assert empty["next"] == []

    await client.runs.wait(thread_id, "echo", input=human("one"))
    await client.runs.wait(thread_id, "echo", input=human("two"))

    state = await client.threads.get_state(thread_id)
    assert msgs(state["values"]["messages"]) == [
        ("human", "one"),
        ("ai", "echo: one"),
        ("human", "two"),
        ("ai", "echo: two"),
    ]
    assert state["values"]["title"] == "one"
    assert state["next"] == []
    assert state["tasks"] == []
    assert state["metadata"]["source"] == "loop"
    assert state["checkpoint"]["checkpoint_id"] == state["checkpoint_id"]
    assert state["parent_checkpoint"]["checkpoint_id"] == state["parent_checkpoint_id"]

    history = await client.threads.get_history(thread_id, limit=100)
    # two runs x (input checkpoint, step checkpoint, loop checkpoint); newest first
    assert len(history) == 6
    assert history[0]["checkpoint_id"] == state["checkpoint_id"]
    assert history[0]["values"] == state["values"]
    steps = [h["metadata"]["step"] for h in history]
    assert steps == sorted(steps, reverse=True)
    assert [h["metadata"]["source"] for h in history] == ["loop", "loop", "input", "loop", "loop", "input"]
    assert not (history[-1]["values"] or {}).get("messages")
    assert history[-1]["next"] == ["__start__"]
    for newer, older in zip(history, history[1:], strict=False):
        assert newer["parent_checkpoint_id"] == older["checkpoint_id"]

    limited = await client.threads.get_history(thread_id, limit=1)
    assert [h["checkpoint_id"] for h in limited] == [state["checkpoint_id"]]
    # `before` is a config, as the JS SDK sends it
    before_cfg = {"configurable": {"checkpoint_id": history[1]["checkpoint_id"]}}
    before = await client.threads.get_history(thread_id, limit=2, before=before_cfg)
    assert [h["checkpoint_id"] for h in before] == [history[2]["checkpoint_id"], history[3]["checkpoint_id"]]

    # the state at an older checkpoint (after the first run)
    first_run_end = history[3]
    old = await client.threads.get_state(thread_id, checkpoint_id=first_run_end["checkpoint_id"])
    assert msgs(old["values"]["messages"]) == [("human", "one"), ("ai", "echo: one")]
    old2 = await client.threads.get_state(thread_id, checkpoint={"checkpoint_id": first_run_end["checkpoint_id"]})
    assert old2["values"] == old["values"]


async def test_update_state(client, thread_id):
    await client.runs.wait(thread_id, "echo", input=human("hello"))
    before = await client.threads.get_state(thread_id)
    res = await client.threads.update_state(thread_id, {"title": "Renamed"})
    assert res["checkpoint"]["checkpoint_id"] == res["checkpoint_id"]
    after = await client.threads.get_state(thread_id)
    assert after["checkpoint_id"] == res["checkpoint_id"]
    assert after["parent_checkpoint_id"] == before["checkpoint_id"]
    assert after["values"]["title"] == "Renamed"
    assert after["values"]["messages"] == before["values"]["messages"]
    assert after["metadata"]["source"] == "update"

    # as_node + add_messages reducer: a new message is appended
    await client.threads.update_state(
        thread_id, {"messages": [{"type": "ai", "content": "added by hand"}]}, as_node="echo"
    )
    s = await client.threads.get_state(thread_id)
    assert msgs(s["values"]["messages"])[-1] == ("ai", "added by hand")
    assert len(s["values"]["messages"]) == 3
    assert s["next"] == []
    assert (await client.threads.get(thread_id))["values"]["title"] == "Renamed"


async def test_copy(client, thread_id):
    await client.runs.wait(thread_id, "echo", input=human("copy me"))
    copied = await client.threads.copy(thread_id)
    new_id = copied["thread_id"]
    assert new_id != thread_id
    original = await client.threads.get_state(thread_id)
    state = await client.threads.get_state(new_id)
    assert state["values"] == original["values"]
    assert len(await client.threads.get_history(new_id)) == len(await client.threads.get_history(thread_id))
    # the copy is independent
    await client.runs.wait(new_id, "echo", input=human("only in copy"))
    assert len((await client.threads.get_state(thread_id))["values"]["messages"]) == 2
    assert len((await client.threads.get_state(new_id))["values"]["messages"]) == 4


async def test_prune(client):
    a = (await client.threads.create())["thread_id"]
    b = (await client.threads.create())["thread_id"]
    keep = (await client.threads.create())["thread_id"]
    res = await client.threads.prune([a, b])
    assert res == {"pruned_count": 2}
    for tid in (a, b):
        with pytest.raises(NotFoundError):
            await client.threads.get(tid)
    assert (await client.threads.get(keep))["thread_id"] == keep


async def test_thread_join_stream_sees_a_background_run(client, thread_id):
    async def first_run() -> list:
        got = []
        async for p in await client.threads.join_stream(thread_id):
            got.append(p)
            if p.event == "metadata" and isinstance(p.data, dict) and p.data.get("status") == "run_done":
                break
        return got

    listener = asyncio.create_task(asyncio.wait_for(first_run(), 30))
    await asyncio.sleep(0.3)
    run = await client.runs.create(thread_id, "echo", input=human("through the thread stream"))
    parts = await listener
    names = [p.event for p in parts]
    assert names[-1] == "metadata"
    assert parts[-1].data["run_id"] == run["run_id"]
    values = [p.data for p in parts if p.event == "values"]
    assert msgs(values[-1]["messages"]) == [
        ("human", "through the thread stream"),
        ("ai", "echo: through the thread stream"),
    ]
    # the thread stream always carries event ids
    assert all(p.id for p in parts)


async def test_unknown_thread_is_404(client):
    missing = str(uuid.uuid4())
    with pytest.raises(NotFoundError) as err:
        await client.threads.get(missing)
    assert err.value.response.status_code == 404
    with pytest.raises(NotFoundError):
        await client.threads.update(missing, metadata={"a": 1})
    with pytest.raises(NotFoundError):
        await client.threads.delete(missing)
    with pytest.raises(NotFoundError):
        await client.threads.get_state(missing)
    with pytest.raises(NotFoundError):
        await client.threads.get_history(missing)


@pytest.mark.antler_only
async def test_non_uuid_thread_ids_are_accepted(client):
    tid = f"my-thread_{uuid.uuid4().hex[:8]}"
    t = await client.threads.create(thread_id=tid)
    assert t["thread_id"] == tid
    out = await client.runs.wait(tid, "echo", input=human("named"))
    assert msgs(out["messages"])[-1] == ("ai", "echo: named")
    assert (await client.threads.get(tid))["thread_id"] == tid
    await client.threads.delete(tid)
