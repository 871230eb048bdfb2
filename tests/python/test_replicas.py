"""Three Antler replicas on one PostgreSQL database and the Redis stream bridge, driven only through
the official SDK, a client per replica: a run created on A is streamed from B (dropped mid-way and
rejoined with Last-Event-ID: nothing lost, nothing repeated) and cancelled from C; a `reject` run
created on B while A runs the thread is refused with 409.

Needs PostgreSQL (``ANTLER_TEST_POSTGRES_URL``, default postgres://postgres@127.0.0.1:5432/test, with
``psql`` to make a private database) and Redis (``ANTLER_TEST_REDIS_URL``, default
redis://127.0.0.1:6379). Skipped when they are missing, except with ``CI=true`` (a failure).
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from langgraph_sdk import get_client
from langgraph_sdk.errors import ConflictError
from support import AntlerProcess, collect, human, reachable, unavailable

pytestmark = pytest.mark.antler_only

PG = os.environ.get("ANTLER_TEST_POSTGRES_URL") or "postgres://postgres@127.0.0.1:5432/test"
REDIS = os.environ.get("ANTLER_TEST_REDIS_URL") or "redis://127.0.0.1:6379"


@pytest.fixture
def cluster() -> Iterator[list[str]]:
    if os.environ.get("ANTLER_TEST_URL"):
        pytest.skip("needs its own Antler processes")
    if not reachable(PG, 5432):
        unavailable(f"PostgreSQL unreachable at {PG}")
    if not reachable(REDIS, 6379):
        unavailable(f"Redis unreachable at {REDIS}")
    if shutil.which("psql") is None:
        unavailable("psql is not installed")
    db = f"antler_sdk_{os.getpid()}_{uuid.uuid4().hex[:8]}"
    subprocess.run(["psql", "-q", PG, "-c", f"CREATE DATABASE {db}"], check=True, capture_output=True)
    base = PG.rsplit("/", 1)[0]
    workdir = Path(tempfile.mkdtemp(prefix="antler-replicas-"))
    config = workdir / "config.yaml"
    config.write_text(
        "database:\n"
        "  backend: postgres\n"
        f'  postgres_url: "{base}/{db}"\n'
        "stream_bridge:\n"
        "  type: redis\n"
        f'  redis_url: "{REDIS}"\n'
        f'  key_prefix: "antler-sdk-{db}:"\n'
    )
    nodes = [
        AntlerProcess(workdir, ["--config", str(config), "--data-dir", str(workdir / name)], name=name)
        for name in "abc"
    ]
    try:
        yield [node.start() for node in nodes]
    finally:
        for node in nodes:
            node.stop()
        subprocess.run(["psql", "-q", PG, "-c", f"DROP DATABASE IF EXISTS {db} WITH (FORCE)"], capture_output=True)
        shutil.rmtree(workdir, ignore_errors=True)


def contents(values: dict) -> list[str]:
    return [m["content"] for m in values.get("messages", [])]


async def test_create_on_a_stream_from_b_rejoin_and_cancel_from_c(cluster: list[str]) -> None:
    a, b, c = (get_client(url=u) for u in cluster)
    thread = await a.threads.create()
    tid = thread["thread_id"]
    run = await a.runs.create(
        tid,
        "slow",
        input=human("go"),
        stream_mode=["values", "custom"],
        stream_resumable=True,
        config={"configurable": {"delay": 0.6}},
    )
    rid = run["run_id"]

    # B reads the first events of A's run, drops the connection, then rejoins after the last id
    first = []
    async for part in b.runs.join_stream(tid, rid, last_event_id="-1"):
        first.append(part)
        if len(first) == 3:
            break
    assert first[0].event == "metadata"
    assert all(p.id for p in first)
    # the thread is busy on A: `reject` from B is refused
    with pytest.raises(ConflictError) as refused:
        await b.runs.create(tid, "slow", input=human("no"), multitask_strategy="reject")
    assert refused.value.response.status_code == 409

    rest_task = asyncio.create_task(collect(b.runs.join_stream(tid, rid, last_event_id=first[-1].id)))
    # C cancels once step 1 has started, and waits until it stopped
    for _ in range(200):
        state = await c.threads.get_state(tid)
        if "step 1" in contents(state["values"] or {}):
            break
        await asyncio.sleep(0.05)
    await c.runs.cancel(tid, rid, wait=True, action="interrupt")
    assert (await c.runs.get(tid, rid))["status"] == "interrupted"

    rest = await rest_task
    seen = first + [p for p in rest if p.event != "end"]
    ids = [p.id for p in seen]
    assert len(ids) == len(set(ids)), "no event twice"
    full = await collect(a.runs.join_stream(tid, rid, last_event_id="-1"))
    assert ids == [p.id for p in full if p.event != "end"], "nothing lost across the rejoin"
    final = await a.runs.join(tid, rid)
    assert "step 3" not in contents(final), final
    for client in (a, b, c):
        await client.aclose()
