"""Every stream mode (values, updates, messages-tuple, messages, custom, tasks, checkpoints, debug,
events), several modes at once, and stream_subgraphs on `parent`."""

from __future__ import annotations

import pytest

from support import FAKE_REPLY, FAST, collect, events, human, msgs, of

STEP_EVENTS = [{"step": n, "phase": ph} for n in (1, 2, 3) for ph in ("start", "end")]


async def stream(client, thread_id, graph, mode, **kw):
    return await collect(client.runs.stream(thread_id, graph, input=human("hi"), stream_mode=mode, **kw))


async def test_values(client, thread_id):
    parts = await stream(client, thread_id, "slow", "values", config=FAST)
    assert events(parts) == ["metadata"] + ["values"] * 4
    assert [msgs(v["messages"]) for v in of(parts, "values")] == [
        [("human", "hi")],
        [("human", "hi"), ("ai", "step 1")],
        [("human", "hi"), ("ai", "step 1"), ("ai", "step 2")],
        [("human", "hi"), ("ai", "step 1"), ("ai", "step 2"), ("ai", "step 3")],
    ]


async def test_updates(client, thread_id):
    parts = await stream(client, thread_id, "slow", "updates", config=FAST)
    assert events(parts) == ["metadata"] + ["updates"] * 3
    updates = of(parts, "updates")
    assert [list(u) for u in updates] == [["step1"], ["step2"], ["step3"]]
    assert [msgs(u[f"step{n}"]["messages"]) for n, u in zip((1, 2, 3), updates, strict=True)] == [
        [("ai", "step 1")],
        [("ai", "step 2")],
        [("ai", "step 3")],
    ]
    parts = await stream(client, thread_id, "echo", "updates")
    (update,) = of(parts, "updates")
    assert list(update) == ["echo"]
    assert msgs(update["echo"]["messages"]) == [("ai", "echo: hi")]
    assert update["echo"]["title"] == "hi"


async def test_messages_tuple_streams_tokens_with_metadata(client, thread_id):
    parts = await stream(client, thread_id, "chat", "messages-tuple")
    names = set(events(parts))
    assert names == {"metadata", "messages"}  # the tuple mode is sent as `messages`
    tuples = of(parts, "messages")
    assert len(tuples) > 1
    for chunk, meta in tuples:
        assert chunk["type"] in ("AIMessageChunk", "ai")
        assert meta["langgraph_node"] == "chat"
        assert meta["graph_id"] == "chat"
        assert meta["thread_id"] == thread_id
    assert "".join(chunk["content"] for chunk, _ in tuples) == FAKE_REPLY
    assert len({chunk["id"] for chunk, _ in tuples}) == 1
    # a node that returns a whole message: one complete message
    parts = await stream(client, thread_id, "echo", "messages-tuple")
    ((msg, meta),) = of(parts, "messages")
    assert msg["content"] == "echo: hi"
    assert meta["langgraph_node"] == "echo"


async def test_messages_streams_partials(client, thread_id):
    parts = await stream(client, thread_id, "chat", "messages")
    names = events(parts)
    assert names[0] == "metadata"
    assert names[1] == "messages/metadata"
    assert set(names[2:]) == {"messages/partial"} or set(names[2:]) == {"messages/partial", "messages/complete"}
    partials = of(parts, "messages/partial")
    contents = [p[0]["content"] for p in partials]
    assert contents[-1] == FAKE_REPLY
    assert all(FAKE_REPLY.startswith(c) for c in contents)
    assert contents == sorted(contents, key=len)
    (meta,) = of(parts, "messages/metadata")
    (msg_id,) = meta.keys()
    assert meta[msg_id]["metadata"]["langgraph_node"] == "chat"
    assert {p[0]["id"] for p in partials} == {msg_id}

    parts = await stream(client, thread_id, "echo", "messages")
    assert events(parts) == ["metadata", "messages/metadata", "messages/complete"]
    ((complete,),) = of(parts, "messages/complete")
    assert complete["type"] == "ai"
    assert complete["content"] == "echo: hi"


async def test_custom(client, thread_id):
    parts = await stream(client, thread_id, "slow", "custom", config=FAST)
    assert events(parts) == ["metadata"] + ["custom"] * 6
    assert of(parts, "custom") == STEP_EVENTS
    parts = await stream(client, thread_id, "chat", "custom")
    assert of(parts, "custom") == [{"type": "task_running", "task_id": "t1", "note": "calling fake llm"}]
    parts = await stream(client, thread_id, "echo", "custom")
    assert events(parts) == ["metadata"]


async def test_tasks(client, thread_id):
    parts = await stream(client, thread_id, "slow", "tasks", config=FAST)
    tasks = of(parts, "tasks")
    assert len(tasks) == 6
    starts, results = tasks[0::2], tasks[1::2]
    assert [t["name"] for t in starts] == ["step1", "step2", "step3"]
    assert [t["name"] for t in results] == ["step1", "step2", "step3"]
    for start, result in zip(starts, results, strict=True):
        assert start["id"] == result["id"]
        assert "input" in start and "triggers" in start
        assert result["error"] is None
        assert result["interrupts"] == []
    assert [msgs(r["result"]["messages"]) for r in results] == [
        [("ai", "step 1")],
        [("ai", "step 2")],
        [("ai", "step 3")],
    ]


async def test_checkpoints(client, thread_id):
    parts = await stream(client, thread_id, "echo", "checkpoints")
    cps = of(parts, "checkpoints")
    assert [c["metadata"]["source"] for c in cps] == ["input", "loop", "loop"]
    assert [c["next"] for c in cps] == [["__start__"], ["echo"], []]
    assert msgs(cps[-1]["values"]["messages"]) == [("human", "hi"), ("ai", "echo: hi")]
    steps = [c["metadata"]["step"] for c in cps]
    assert steps == [-1, 0, 1]
    for c in cps:
        assert c["config"]["configurable"]["checkpoint_id"]
    final = await client.threads.get_state(thread_id)
    assert cps[-1]["config"]["configurable"]["checkpoint_id"] == final["checkpoint_id"]


async def test_debug(client, thread_id):
    parts = await stream(client, thread_id, "echo", "debug")
    dbg = of(parts, "debug")
    assert [d["type"] for d in dbg] == ["checkpoint", "checkpoint", "task", "task_result", "checkpoint"]
    task = dbg[2]["payload"]
    result = dbg[3]["payload"]
    assert task["name"] == result["name"] == "echo"
    assert msgs(result["result"]["messages"]) == [("ai", "echo: hi")]
    for d in dbg:
        assert {"step", "timestamp", "type", "payload"} <= set(d)
    assert msgs(dbg[-1]["payload"]["values"]["messages"]) == [("human", "hi"), ("ai", "echo: hi")]


async def test_events(client, thread_id):
    parts = await stream(client, thread_id, "chat", "events")
    evs = of(parts, "events")
    kinds = [e["event"] for e in evs]
    assert kinds[0] == "on_chain_start"
    assert kinds[-1] == "on_chain_end"
    assert "on_chat_model_start" in kinds and "on_chat_model_end" in kinds
    tokens = [e["data"]["chunk"]["content"] for e in evs if e["event"] == "on_chat_model_stream"]
    assert "".join(tokens) == FAKE_REPLY
    assert msgs(evs[-1]["data"]["output"]["messages"])[-1] == ("ai", FAKE_REPLY)


async def test_several_modes_at_once(client, thread_id):
    parts = await stream(client, thread_id, "chat", ["values", "messages-tuple", "custom", "updates"])
    names = events(parts)
    assert names[0] == "metadata"
    assert set(names[1:]) == {"values", "messages", "custom", "updates"}
    assert of(parts, "custom") == [{"type": "task_running", "task_id": "t1", "note": "calling fake llm"}]
    assert msgs(of(parts, "values")[-1]["messages"]) == [("human", "hi"), ("ai", FAKE_REPLY)]
    assert "".join(c["content"] for c, _ in of(parts, "messages")) == FAKE_REPLY
    # the custom event comes before the first token, the final values after the last
    assert names.index("custom") < names.index("messages")
    assert max(i for i, n in enumerate(names) if n == "messages") < max(i for i, n in enumerate(names) if n == "values")


async def test_messages_and_tuple_together_send_only_tuples(client, thread_id):
    parts = await stream(client, thread_id, "chat", ["messages", "messages-tuple"])
    assert set(events(parts)) == {"metadata", "messages"}


async def test_stream_subgraphs_on_parent(client, thread_id):
    parts = await stream(
        client, thread_id, "parent", ["values", "updates", "messages-tuple", "custom"], stream_subgraphs=True
    )
    names = events(parts)
    sub = [n for n in names if "|" in n]
    top = [n for n in names if "|" not in n]
    assert top[0] == "metadata"
    assert set(top[1:]) == {"values", "updates"}
    namespaces = {n.split("|", 1)[1] for n in sub}
    assert len(namespaces) == 1
    (ns,) = namespaces
    assert ns.startswith("child:")
    assert {n.split("|", 1)[0] for n in sub} == {"values", "updates", "messages", "custom"}
    by = lambda mode: [p.data for p in parts if p.event == f"{mode}|{ns}"]  # noqa: E731
    assert by("custom") == [{"type": "task_running", "task_id": "t1", "note": "calling fake llm"}]
    assert "".join(c["content"] for c, _ in by("messages")) == FAKE_REPLY
    assert [list(u) for u in by("updates")] == [["chat"]]
    assert msgs(by("values")[-1]["messages"]) == [("human", "hi"), ("ai", FAKE_REPLY)]
    top_updates = [p.data for p in parts if p.event == "updates"]
    assert [list(u) for u in top_updates] == [["child"]]
    assert msgs(of(parts, "values")[-1]["messages"]) == [("human", "hi"), ("ai", FAKE_REPLY)]


async def test_without_stream_subgraphs_parent_hides_child_events(client, thread_id):
    parts = await stream(client, thread_id, "parent", ["values", "updates", "custom"])
    names = events(parts)
    assert all("|" not in n for n in names)
    # without stream_subgraphs nothing from inside the child is streamed, custom events included
    assert of(parts, "custom") == []
    assert msgs(of(parts, "values")[-1]["messages"]) == [("human", "hi"), ("ai", FAKE_REPLY)]
    assert [list(u) for u in of(parts, "updates")] == [["child"]]


@pytest.mark.parametrize("mode", ["values", "updates", "custom", "tasks", "checkpoints", "debug", "events"])
async def test_each_mode_on_slow_ends_cleanly(client, thread_id, mode):
    parts = await stream(client, thread_id, "slow", mode, config=FAST)
    names = events(parts)
    assert names[0] == "metadata"
    assert len(names) > 1
    run = await client.runs.get(thread_id, parts[0].data["run_id"])
    assert run["status"] == "success"
    assert run["kwargs"]["stream_mode"] == [mode]
