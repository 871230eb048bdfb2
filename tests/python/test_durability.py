"""Crash recovery through the official SDK: a server running `slow` runs is killed with SIGKILL,
restarted on the same data directory, and the SDK's `runs.join` / `runs.join_stream` of the
interrupted runs end cleanly with every step applied exactly once (the run resumed from its last
checkpoint). Boots its own Antler (SQLite); skipped when ANTLER_TEST_URL points at another server.
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from langgraph_sdk import get_client

from support import human

pytestmark = pytest.mark.antler_only

REPO = Path(__file__).resolve().parents[2]
LISTEN_RE = re.compile(rb"antler listening on (http://[0-9A-Za-z.\[\]:-]+)")


class Server:
    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.proc: subprocess.Popen[bytes] | None = None
        self.url = ""

    def start(self) -> None:
        binary = Path(os.environ.get("ANTLER_BIN") or REPO / "target" / "debug" / "antler")
        log = open(self.workdir / "server.log", "ab")  # noqa: SIM115 (closed by the process)
        self.proc = subprocess.Popen(
            [str(binary), "serve", "--host", "127.0.0.1", "--port", "0", "--data-dir", str(self.workdir / "data")],
            stdout=subprocess.PIPE,
            stderr=log,
            stdin=subprocess.DEVNULL,
            cwd=self.workdir,
        )
        deadline = time.monotonic() + 30
        assert self.proc.stdout is not None
        while time.monotonic() < deadline:
            line = self.proc.stdout.readline()
            if not line:
                break
            m = LISTEN_RE.search(line)
            if m:
                self.url = m.group(1).decode()
                return
        raise AssertionError("antler did not start")

    def kill9(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=15)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=15)


@pytest.fixture
def server() -> Iterator[Server]:
    if os.environ.get("ANTLER_TEST_URL"):
        pytest.skip("needs its own Antler process")
    workdir = Path(tempfile.mkdtemp(prefix="antler-durability-"))
    s = Server(workdir)
    try:
        yield s
    finally:
        s.stop()
        shutil.rmtree(workdir, ignore_errors=True)


def contents(values: dict) -> list[str]:
    return [m["content"] for m in values.get("messages", [])]


async def test_sdk_join_of_a_run_resumed_after_kill9(server: Server) -> None:
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
