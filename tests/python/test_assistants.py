"""assistants.*: search, count, get, get_graph, get_schemas, get_subgraphs, create, update, delete,
get_versions, set_latest."""

from __future__ import annotations

import uuid

import pytest
from langgraph_sdk.errors import ConflictError, NotFoundError

from support import FAST, GRAPHS, human, msgs, system_assistant

# The reference derives system assistant ids from the graph name (uuid5 in this namespace).
SYSTEM_NS = uuid.UUID("6ba7b821-9dad-11d1-80b4-00c04fd430c8")


async def test_search_lists_one_system_assistant_per_graph(client):
    found = await client.assistants.search(metadata={"created_by": "system"}, limit=100)
    assert {a["graph_id"] for a in found} == GRAPHS
    assert len(found) == len(GRAPHS)
    for a in found:
        assert a["assistant_id"] == str(uuid.uuid5(SYSTEM_NS, a["graph_id"]))
        assert a["name"] == a["graph_id"]
        assert a["version"] == 1
        assert a["metadata"] == {"created_by": "system"}
        assert a["config"] == {}


async def test_search_filters_and_paginates(client):
    one = await client.assistants.search(graph_id="parent", limit=1)
    assert [a["graph_id"] for a in one] == ["parent"]
    page1 = await client.assistants.search(metadata={"created_by": "system"}, limit=2, offset=0)
    page2 = await client.assistants.search(metadata={"created_by": "system"}, limit=2, offset=2)
    assert len(page1) == 2 and len(page2) == 2
    assert not {a["assistant_id"] for a in page1} & {a["assistant_id"] for a in page2}
    obj = await client.assistants.search(metadata={"created_by": "system"}, limit=2, response_format="object")
    assert len(obj["assistants"]) == 2
    assert obj["next"] is not None


async def test_count(client):
    assert await client.assistants.count(metadata={"created_by": "system"}) == len(GRAPHS)
    assert await client.assistants.count(graph_id="interrupt", metadata={"created_by": "system"}) == 1
    assert await client.assistants.count() >= len(GRAPHS)


async def test_get_returns_what_search_returns(client):
    a = await system_assistant(client, "echo")
    got = await client.assistants.get(a["assistant_id"])
    assert got == a


async def test_get_graph(client):
    echo = await system_assistant(client, "echo")
    g = await client.assistants.get_graph(echo["assistant_id"])
    assert {n["id"] for n in g["nodes"]} == {"__start__", "echo", "__end__"}
    assert {(e["source"], e["target"]) for e in g["edges"]} == {("__start__", "echo"), ("echo", "__end__")}

    slow = await system_assistant(client, "slow")
    g = await client.assistants.get_graph(slow["assistant_id"])
    assert {(e["source"], e["target"]) for e in g["edges"]} == {
        ("__start__", "step1"),
        ("step1", "step2"),
        ("step2", "step3"),
        ("step3", "__end__"),
    }

    parent = await system_assistant(client, "parent")
    g = await client.assistants.get_graph(parent["assistant_id"])
    assert {n["id"] for n in g["nodes"]} == {"__start__", "child", "__end__"}
    gx = await client.assistants.get_graph(parent["assistant_id"], xray=True)
    assert {n["id"] for n in gx["nodes"]} == {"__start__", "child:chat", "__end__"}


async def test_get_schemas(client):
    echo = await system_assistant(client, "echo")
    s = await client.assistants.get_schemas(echo["assistant_id"])
    assert s["graph_id"] == "echo"
    for key in ("input_schema", "output_schema", "state_schema", "config_schema"):
        assert key in s
    assert {"messages", "title"} <= set(s["state_schema"]["properties"])


async def test_get_subgraphs(client):
    parent = await system_assistant(client, "parent")
    subs = await client.assistants.get_subgraphs(parent["assistant_id"])
    assert list(subs) == ["child"]
    assert {"messages", "title"} <= set(subs["child"]["state_schema"]["properties"])
    assert list(await client.assistants.get_subgraphs(parent["assistant_id"], recurse=True)) == ["child"]
    echo = await system_assistant(client, "echo")
    assert await client.assistants.get_subgraphs(echo["assistant_id"]) == {}


async def test_create_update_versions_latest_delete(client):
    a = await client.assistants.create(graph_id="slow", config=FAST, name="py-slow", metadata={"suite": "py"})
    aid = a["assistant_id"]
    assert a["graph_id"] == "slow"
    assert a["name"] == "py-slow"
    assert a["version"] == 1
    assert a["config"]["configurable"] == {"delay": 0.05}
    assert a["metadata"] == {"suite": "py"}
    assert await client.assistants.get(aid) == a

    b = await client.assistants.update(aid, metadata={"x": 1}, name="py-slow-2")
    assert b["version"] == 2
    assert b["name"] == "py-slow-2"
    assert b["metadata"] == {"suite": "py", "x": 1}
    assert b["config"]["configurable"] == {"delay": 0.05}

    versions = await client.assistants.get_versions(aid)
    assert [v["version"] for v in versions] == [2, 1]
    assert [v["metadata"] for v in versions] == [{"suite": "py", "x": 1}, {"suite": "py"}]

    c = await client.assistants.set_latest(aid, 1)
    assert c["version"] == 1
    assert c["metadata"] == {"suite": "py"}
    assert c["name"] == "py-slow"
    assert (await client.assistants.get(aid))["version"] == 1

    # a run through the created assistant uses its config (3 fast steps)
    out = await client.runs.wait(None, aid, input=human("go"))
    assert msgs(out["messages"]) == [("human", "go"), ("ai", "step 1"), ("ai", "step 2"), ("ai", "step 3")]

    assert await client.assistants.count(metadata={"suite": "py"}) == 1
    await client.assistants.delete(aid)
    with pytest.raises(NotFoundError):
        await client.assistants.get(aid)
    assert await client.assistants.count(metadata={"suite": "py"}) == 0


async def test_create_with_explicit_id_and_if_exists(client):
    aid = str(uuid.uuid4())
    a = await client.assistants.create(graph_id="echo", assistant_id=aid, name="fixed")
    assert a["assistant_id"] == aid
    with pytest.raises(ConflictError):
        await client.assistants.create(graph_id="echo", assistant_id=aid)
    same = await client.assistants.create(graph_id="echo", assistant_id=aid, if_exists="do_nothing", name="other")
    assert same["name"] == "fixed"
    await client.assistants.delete(aid)


async def test_unknown_assistant_and_graph(client):
    with pytest.raises(NotFoundError):
        await client.assistants.get(str(uuid.uuid4()))
    with pytest.raises(NotFoundError):
        await client.assistants.create(graph_id="nope")


@pytest.mark.antler_only
async def test_graph_name_works_on_every_assistant_route(client):
    echo = await system_assistant(client, "echo")
    assert await client.assistants.get("echo") == echo
    g = await client.assistants.get_graph("echo")
    assert {n["id"] for n in g["nodes"]} == {"__start__", "echo", "__end__"}
    assert (await client.assistants.get_schemas("echo"))["graph_id"] == "echo"
    assert list(await client.assistants.get_subgraphs("parent")) == ["child"]
    assert [v["version"] for v in await client.assistants.get_versions("echo")] == [1]
