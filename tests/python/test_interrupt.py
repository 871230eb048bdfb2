"""Human in the loop: interrupt() + resume with Command(resume=...), interrupt_before / interrupt_after
+ resume with None input."""

from __future__ import annotations

from langgraph_sdk.schema import Command

from support import collect, events, human, msgs, of

QUESTION = {"question": "approve?"}


async def test_interrupt_then_resume_with_command(client, thread_id):
    parts = await collect(
        client.runs.stream(thread_id, "interrupt", input=human("please"), stream_mode=["values", "updates"])
    )
    updates = of(parts, "updates")
    assert len(updates[-1]["__interrupt__"]) == 1
    intr = updates[-1]["__interrupt__"][0]
    assert intr["value"] == QUESTION
    assert intr["id"]
    values = of(parts, "values")
    assert values[-1]["__interrupt__"][0]["value"] == QUESTION
    run = await client.runs.get(thread_id, parts[0].data["run_id"])
    assert run["status"] == "success"  # a run stopped by interrupt() ends as success

    thread = await client.threads.get(thread_id)
    assert thread["status"] == "interrupted"
    (task_interrupts,) = thread["interrupts"].values()
    assert [i["value"] for i in task_interrupts] == [QUESTION]

    state = await client.threads.get_state(thread_id)
    assert state["next"] == ["ask"]
    assert [t["name"] for t in state["tasks"]] == ["ask"]
    assert [i["value"] for i in state["tasks"][0]["interrupts"]] == [QUESTION]
    assert [i["value"] for i in state["interrupts"]] == [QUESTION]
    assert msgs(state["values"]["messages"]) == [("human", "please")]

    parts = await collect(
        client.runs.stream(thread_id, "interrupt", command=Command(resume="ok"), stream_mode="values")
    )
    assert events(parts)[0] == "metadata"
    final = of(parts, "values")[-1]
    assert msgs(final["messages"]) == [("human", "please"), ("ai", "resumed with: ok")]
    assert "__interrupt__" not in final
    thread = await client.threads.get(thread_id)
    assert thread["status"] == "idle"
    state = await client.threads.get_state(thread_id)
    assert state["next"] == []
    assert state["interrupts"] == []


async def test_interrupt_in_wait_and_resume_with_json(client, thread_id):
    out = await client.runs.wait(thread_id, "interrupt", input=human("please"))
    assert [i["value"] for i in out["__interrupt__"]] == [QUESTION]
    assert msgs(out["messages"]) == [("human", "please")]
    out = await client.runs.wait(thread_id, "interrupt", command={"resume": {"approved": True}})
    assert msgs(out["messages"])[-1] == ("ai", "resumed with: {'approved': True}")
    assert (await client.threads.get(thread_id))["status"] == "idle"


async def test_interrupt_before_then_resume_with_none(client, thread_id):
    out = await client.runs.wait(thread_id, "echo", input=human("held"), interrupt_before=["echo"])
    assert msgs(out["messages"]) == [("human", "held")]
    thread = await client.threads.get(thread_id)
    assert thread["status"] == "interrupted"
    state = await client.threads.get_state(thread_id)
    assert state["next"] == ["echo"]
    assert msgs(state["values"]["messages"]) == [("human", "held")]

    out = await client.runs.wait(thread_id, "echo", input=None)
    assert msgs(out["messages"]) == [("human", "held"), ("ai", "echo: held")]
    assert out["title"] == "held"
    assert (await client.threads.get(thread_id))["status"] == "idle"
    assert (await client.threads.get_state(thread_id))["next"] == []


async def test_interrupt_before_stream_shows_empty_interrupt(client, thread_id):
    parts = await collect(
        client.runs.stream(
            thread_id,
            "slow",
            input=human("go"),
            config={"configurable": {"delay": 0.05}},
            stream_mode="updates",
            interrupt_before=["step2"],
        )
    )
    updates = of(parts, "updates")
    assert [list(u) for u in updates] == [["step1"], ["__interrupt__"]]
    assert updates[-1] == {"__interrupt__": []}
    state = await client.threads.get_state(thread_id)
    assert state["next"] == ["step2"]
    out = await client.runs.wait(thread_id, "slow", input=None, config={"configurable": {"delay": 0.05}})
    assert msgs(out["messages"]) == [("human", "go"), ("ai", "step 1"), ("ai", "step 2"), ("ai", "step 3")]


async def test_interrupt_after(client, thread_id):
    out = await client.runs.wait(
        thread_id, "slow", input=human("go"), config={"configurable": {"delay": 0.05}}, interrupt_after=["step1"]
    )
    assert msgs(out["messages"]) == [("human", "go"), ("ai", "step 1")]
    assert (await client.threads.get_state(thread_id))["next"] == ["step2"]
    assert (await client.threads.get(thread_id))["status"] == "interrupted"
    out = await client.runs.wait(thread_id, "slow", input=None, config={"configurable": {"delay": 0.05}})
    assert msgs(out["messages"])[-1] == ("ai", "step 3")
