"""Antler serves every route both at the root (the SDK default) and under /api (DeerFlow's layout)."""

from __future__ import annotations

import pytest
from langgraph_sdk import get_client

from support import FAKE_REPLY, collect, core, human, msgs, of


@pytest.mark.antler_only
async def test_the_sdk_works_under_the_api_prefix(server_url, client):
    api = get_client(url=f"{server_url}/api", api_key=None)
    try:
        assistants = await api.assistants.search(metadata={"created_by": "system"}, limit=100)
        assert {a["graph_id"] for a in assistants} == {a["graph_id"] for a in await client.assistants.search(limit=100)}
        thread = await api.threads.create(metadata={"via": "api"})
        tid = thread["thread_id"]
        # one storage behind both prefixes
        assert (await client.threads.get(tid))["metadata"] == {"via": "api"}
        out = await api.runs.wait(tid, "echo", input=human("prefixed"))
        assert msgs(out["messages"]) == [("human", "prefixed"), ("ai", "echo: prefixed")]
        parts = await collect(api.runs.stream(tid, "chat", input=human("hi"), stream_mode=["values", "messages-tuple"]))
        assert "".join(c["content"] for c, _ in of(parts, "messages")) == FAKE_REPLY
        assert core(parts)[0].event == "metadata"
        state = await api.threads.get_state(tid)
        assert msgs(state["values"]["messages"])[-1] == ("ai", FAKE_REPLY)
        assert len(await api.threads.get_history(tid)) == len(await client.threads.get_history(tid))
        await api.store.put_item(["api-prefix"], key="k", value={"v": 1})
        assert (await client.store.get_item(["api-prefix"], key="k"))["value"] == {"v": 1}
        await api.threads.delete(tid)
    finally:
        await api.aclose()
