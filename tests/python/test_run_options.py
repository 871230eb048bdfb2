"""Run-create options: checkpoint_id (fork), after_seconds, on_disconnect=cancel, webhook,
on_completion for stateless runs."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from langgraph_sdk.errors import NotFoundError

from support import human, msgs, slow_config, wait_run


async def test_run_from_an_earlier_checkpoint_forks(client, thread_id):
    await client.runs.wait(thread_id, "echo", input=human("one"))
    await client.runs.wait(thread_id, "echo", input=human("two"))
    history = await client.threads.get_history(thread_id, limit=100)
    after_first = next(
        h for h in history if msgs(h["values"].get("messages") or []) == [("human", "one"), ("ai", "echo: one")]
    )
    out = await client.runs.wait(thread_id, "echo", input=human("branch"), checkpoint_id=after_first["checkpoint_id"])
    assert msgs(out["messages"]) == [
        ("human", "one"),
        ("ai", "echo: one"),
        ("human", "branch"),
        ("ai", "echo: branch"),
    ]
    state = await client.threads.get_state(thread_id)
    assert state["values"] == out


async def test_after_seconds_delays_the_start(client, thread_id):
    t0 = time.monotonic()
    run = await client.runs.create(thread_id, "echo", input=human("later"), after_seconds=1)
    assert (await client.runs.get(thread_id, run["run_id"]))["status"] == "pending"
    out = await client.runs.join(thread_id, run["run_id"])
    assert time.monotonic() - t0 >= 1.0
    assert msgs(out["messages"])[-1] == ("ai", "echo: later")


async def test_on_disconnect_cancel_stops_the_run(client, thread_id):
    stream = client.runs.stream(
        thread_id,
        "slow",
        input=human("go"),
        config=slow_config(1.0),
        stream_mode="custom",
        on_disconnect="cancel",
    )
    first = []
    async for part in stream:
        first.append(part)
        if part.event == "custom":
            break
    await stream.aclose()
    run_id = first[0].data["run_id"]
    run = await wait_run(client, thread_id, run_id, timeout=20)
    assert run["status"] == "interrupted"
    state = await client.threads.get_state(thread_id)
    assert ("ai", "step 3") not in msgs((state["values"] or {}).get("messages") or [])


async def test_on_disconnect_continue_finishes_the_run(client, thread_id):
    stream = client.runs.stream(
        thread_id,
        "slow",
        input=human("go"),
        config=slow_config(0.2),
        stream_mode="custom",
        on_disconnect="continue",
    )
    first = []
    async for part in stream:
        first.append(part)
        if part.event == "custom":
            break
    await stream.aclose()
    run = await wait_run(client, thread_id, first[0].data["run_id"], timeout=20)
    assert run["status"] == "success"


async def test_stateless_run_deletes_its_thread_by_default(client):
    created = []
    out = await client.runs.wait(None, "echo", input=human("temp"), on_run_created=created.append)
    assert msgs(out["messages"])[-1] == ("ai", "echo: temp")
    (run,) = created
    deadline = time.monotonic() + 10
    while True:
        try:
            await client.threads.get(run["thread_id"])
        except NotFoundError:
            break
        assert time.monotonic() < deadline, "the temporary thread was not deleted"
        await asyncio.sleep(0.1)

    kept = await client.runs.create(None, "echo", input=human("kept"), on_completion="keep")
    await client.runs.join(kept["thread_id"], kept["run_id"])
    thread = await client.threads.get(kept["thread_id"])
    assert msgs(thread["values"]["messages"])[-1] == ("ai", "echo: kept")


class _Hook(BaseHTTPRequestHandler):
    received: list = []

    def do_POST(self) -> None:  # noqa: N802 (http.server naming)
        body = self.rfile.read(int(self.headers.get("content-length") or 0))
        type(self).received.append(json.loads(body or b"null"))
        self.send_response(200)
        self.send_header("content-length", "0")
        self.end_headers()

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def webhook_url():
    _Hook.received = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Hook)
    t = threading.Thread(target=server.serve_forever, daemon=True)
    t.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/hook"
    finally:
        server.shutdown()
        server.server_close()


# The reference refuses loopback webhook hosts ("Webhook host blocked: loopback IP range", 422), and a test
# here can only reach loopback; Antler accepts them (they are how its own tests see webhooks).
@pytest.mark.antler_only
async def test_webhook_receives_the_finished_run(client, thread_id, webhook_url):
    run = await client.runs.create(thread_id, "echo", input=human("hook"), webhook=webhook_url)
    await client.runs.join(thread_id, run["run_id"])
    deadline = time.monotonic() + 15
    while not _Hook.received:
        assert time.monotonic() < deadline, "no webhook call"
        await asyncio.sleep(0.1)
    (payload,) = _Hook.received
    assert payload["run_id"] == run["run_id"]
    assert payload["thread_id"] == thread_id
    assert payload["status"] == "success"
