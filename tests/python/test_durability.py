"""Crash recovery through the official SDK: a server running `slow` runs is killed with SIGKILL,
restarted on the same data directory, and the SDK's `runs.join` / `runs.join_stream` of the
interrupted runs end cleanly with every step applied exactly once (the run resumed from its last
checkpoint). Boots its own Antler (SQLite); skipped when ANTLER_TEST_URL points at another server.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from langgraph_sdk import get_client

from support import AntlerProcess, human

pytestmark = pytest.mark.antler_only


@pytest.fixture
def server() -> Iterator[AntlerProcess]:
    if os.environ.get("ANTLER_TEST_URL"):
        pytest.skip("needs its own Antler process")
    workdir = Path(tempfile.mkdtemp(prefix="antler-durability-"))
    s = AntlerProcess(workdir, ["--data-dir", str(workdir / "data")])
    try:
        yield s
    finally:
        s.stop()
        shutil.rmtree(workdir, ignore_errors=True)


def contents(values: dict) -> list[str]:
    return [m["content"] for m in values.get("messages", [])]


async def test_sdk_join_of_a_run_resumed_after_kill9(server: AntlerProcess) -> None:
    server.start()
    client = get_client(url=server.url)
    thread = await client.threads.create()
    tid = thread["thread_id"]
    run = await client.runs.create(
        tid, "slow", input=human("go"), config={"configurable": {"delay": 0.5}}
    )
    second = await client.threads.create()
    run2 = await client.runs.create(
        second["thread_id"], "slow", input=human("go"), config={"configurable": {"delay": 0.5}}
    )
    # wait until step 1 is committed, then kill the server without any warning
    for _ in range(200):
        state = await client.threads.get_state(tid)
        if "step 1" in contents(state["values"] or {}):
            break
        await asyncio.sleep(0.05)
    else:
        raise AssertionError("step 1 never committed")
    server.kill9()

    server.start()
    client = get_client(url=server.url)
    values = await client.runs.join(tid, run["run_id"])
    assert contents(values) == ["go", "step 1", "step 2", "step 3"], values
    got = await client.runs.get(tid, run["run_id"])
    assert got["status"] == "success"
    # a join stream of the other resumed run ends with its final values
    parts = [p async for p in client.runs.join_stream(second["thread_id"], run2["run_id"])]
    assert parts, "the join stream ended without events"
    final = await client.runs.join(second["thread_id"], run2["run_id"])
    assert contents(final) == ["go", "step 1", "step 2", "step 3"], final
    thread_now = await client.threads.get(tid)
    assert thread_now["status"] == "idle"
