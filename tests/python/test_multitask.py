"""Multitask strategies on a busy thread: reject (409), interrupt, rollback, enqueue (the default)."""

from __future__ import annotations

import pytest
from langgraph_sdk.errors import ConflictError, NotFoundError

from support import collect, human, msgs, slow_config, wait_run, wait_state_messages


async def busy(client, thread_id, delay: float = 0.5) -> dict:
    """Start a `slow` run and return once its first step is saved (so the thread is surely busy)."""
    run = await client.runs.create(thread_id, "slow", input=human("go"), config=slow_config(delay))
    await wait_state_messages(client, thread_id, 2)
    return run


async def test_reject_is_409(client, thread_id):
    first = await busy(client, thread_id)
    with pytest.raises(ConflictError) as err:
        await client.runs.create(thread_id, "echo", input=human("second"), multitask_strategy="reject")
    assert err.value.response.status_code == 409
    with pytest.raises(ConflictError):
        await collect(client.runs.stream(thread_id, "echo", input=human("second"), multitask_strategy="reject"))
    out = await client.runs.join(thread_id, first["run_id"])
    assert msgs(out["messages"]) == [("human", "go"), ("ai", "step 1"), ("ai", "step 2"), ("ai", "step 3")]
    assert [r["run_id"] for r in await client.runs.list(thread_id)] == [first["run_id"]]
    # once idle, reject lets the run through
    out = await client.runs.wait(thread_id, "echo", input=human("later"), multitask_strategy="reject")
    assert msgs(out["messages"])[-1] == ("ai", "echo: later")


async def test_interrupt_stops_the_first_run_and_keeps_its_steps(client, thread_id):
    first = await busy(client, thread_id, delay=1.0)
    second = await client.runs.create(thread_id, "echo", input=human("second"), multitask_strategy="interrupt")
    out = await client.runs.join(thread_id, second["run_id"])
    assert (await client.runs.get(thread_id, first["run_id"]))["status"] == "interrupted"
    assert (await client.runs.get(thread_id, second["run_id"]))["status"] == "success"
    got = msgs(out["messages"])
    assert got[:2] == [("human", "go"), ("ai", "step 1")]
    assert got[-2:] == [("human", "second"), ("ai", "echo: second")]
    assert ("ai", "step 3") not in got


async def test_rollback_deletes_the_first_run(client, thread_id):
    first = await busy(client, thread_id, delay=1.0)
    second = await client.runs.create(thread_id, "echo", input=human("second"), multitask_strategy="rollback")
    out = await client.runs.join(thread_id, second["run_id"])
    assert msgs(out["messages"]) == [("human", "second"), ("ai", "echo: second")]
    assert out["title"] == "second"
    with pytest.raises(NotFoundError):
        await client.runs.get(thread_id, first["run_id"])
    assert [r["run_id"] for r in await client.runs.list(thread_id)] == [second["run_id"]]


async def test_enqueue_runs_in_order(client, thread_id):
    first = await busy(client, thread_id, delay=0.3)
    second = await client.runs.create(thread_id, "echo", input=human("second"))  # enqueue is the default
    third = await client.runs.create(thread_id, "echo", input=human("third"), multitask_strategy="enqueue")
    assert second["multitask_strategy"] == "enqueue"
    assert (await client.runs.get(thread_id, second["run_id"]))["status"] == "pending"
    out = await client.runs.join(thread_id, third["run_id"])
    assert msgs(out["messages"]) == [
        ("human", "go"),
        ("ai", "step 1"),
        ("ai", "step 2"),
        ("ai", "step 3"),
        ("human", "second"),
        ("ai", "echo: second"),
        ("human", "third"),
        ("ai", "echo: third"),
    ]
    for r in (first, second, third):
        assert (await wait_run(client, thread_id, r["run_id"]))["status"] == "success"
    listed = await client.runs.list(thread_id)
    assert [r["run_id"] for r in listed] == [third["run_id"], second["run_id"], first["run_id"]]
