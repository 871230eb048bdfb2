"""SSE chaos: clients that drop their streams at random points and rejoin with `Last-Event-ID`.

200 `lead_agent` runs, each streaming over 100 events (a fake OpenAI-compatible provider sends a
100-token answer, a few ms per token), are joined by 1,000 clients (5 per run). Every client
reads a random number of events, drops the connection, rejoins with the id of the last event it
saw, and so on until the stream ends. Afterwards each run's stream is read once more from its
start (the reference). Every client must have seen exactly the reference, in order: events
lost 0, duplicated 0. Once with the in-memory bridge, once with the Redis bridge
(``ANTLER_TEST_REDIS_URL``), and with the Redis bridge across two replicas on one PostgreSQL
database (``ANTLER_TEST_POSTGRES_URL``), each rejoin going to either replica. With ``CI=true`` a
service that is not reachable fails the test.
The figures are printed (`pytest -s` / `-rA`) and written in docs/RELIABILITY.md.
"""

from __future__ import annotations

import asyncio
import os
import random
import shutil
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from support import (
    REDIS,
    AntlerProcess,
    completion_chunk,
    drop_database,
    human,
    private_database,
    reachable,
    unavailable,
)

pytestmark = pytest.mark.antler_only

RUNS = 200
CLIENTS_PER_RUN = 5
TOKENS = 100
TOKEN_DELAY_S = 0.003
Event = tuple[str, str, str]  # (id, event, data)


class TokenProvider:
    """Every chat completion is the same streamed answer of TOKENS pieces."""

    def __init__(self) -> None:
        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:  # noqa: N802
                self.rfile.read(int(self.headers.get("content-length") or 0))
                self.send_response(200)
                self.send_header("content-type", "text/event-stream")
                self.end_headers()

                def send(delta: dict[str, Any], finish: str | None = None) -> None:
                    self.wfile.write(completion_chunk(delta, finish))
                    self.wfile.flush()

                send({"role": "assistant", "content": ""})
                for i in range(TOKENS):
                    send({"content": f"t{i} "})
                    time.sleep(TOKEN_DELAY_S)
                send({}, "stop")
                self.wfile.write(b"data: [DONE]\n\n")
                self.wfile.flush()
                self.close_connection = True

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def base_url(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host}:{port}/v1"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def provider() -> Iterator[TokenProvider]:
    p = TokenProvider()
    try:
        yield p
    finally:
        p.close()


async def read_stream(
    http: httpx.AsyncClient, path: str, last: str | None, limit: int | None
) -> tuple[list[Event], bool]:
    """Events of one connection (at most `limit`, then the client hangs up); True when the server
    ended the stream."""
    headers = {"Last-Event-ID": last} if last else {}
    got: list[Event] = []
    frame: dict[str, str] = {}
    async with http.stream("GET", path, headers=headers) as r:
        assert r.status_code == 200, await r.aread()
        async for line in r.aiter_lines():
            if line == "":
                if "event" in frame:
                    if frame["event"] == "end":
                        return got, True
                    got.append((frame.get("id", ""), frame["event"], frame.get("data", "")))
                    if limit is not None and len(got) >= limit:
                        return got, False
                frame = {}
            elif not line.startswith(":"):
                name, _, value = line.partition(": ")
                frame[name] = value
    return got, True


async def chaos_client(
    http: httpx.AsyncClient, bases: list[str], path: str, rng: random.Random
) -> tuple[list[Event], int]:
    """Reads a stream to its end, hanging up after a random number of events each time and
    rejoining (on any of the replicas `bases`) after the last id seen; returns what it saw and
    how many times it rejoined."""
    seen: list[Event] = []
    rejoins = 0
    while True:
        last = seen[-1][0] if seen else None
        got, ended = await read_stream(http, rng.choice(bases) + path, last, rng.randint(1, 60))
        seen.extend(got)
        if ended:
            return seen, rejoins
        rejoins += 1
        await asyncio.sleep(rng.random() * 0.05)


@pytest.mark.timeout(900)
@pytest.mark.parametrize("bridge", ["memory", "redis", "redis-2-replicas"])
async def test_rejoining_clients_see_every_event_exactly_once(bridge: str, provider: TokenProvider) -> None:
    if os.environ.get("ANTLER_TEST_URL"):
        pytest.skip("boots its own Antler")
    if bridge.startswith("redis") and not reachable(REDIS, 6379):
        unavailable(f"Redis unreachable at {REDIS}")
    workdir = Path(tempfile.mkdtemp(prefix="antler-chaos-"))
    config = workdir / "config.yaml"
    text = (
        "models:\n  - name: fake\n    use: langchain_openai:ChatOpenAI\n    model: fake\n"
        f"    api_key: sk-fake\n    base_url: {provider.base_url}\n    max_retries: 0\n"
        "title:\n  enabled: false\n"
    )
    database = None
    if bridge == "redis-2-replicas":
        database = private_database("postgres", "antler_chaos")
        text += f'database:\n  backend: postgres\n  postgres_url: "{database[0]}"\n'
    if bridge.startswith("redis"):
        prefix = f"antler-chaos-{uuid.uuid4().hex[:8]}:"
        text += f'stream_bridge:\n  type: redis\n  redis_url: "{REDIS}"\n  key_prefix: "{prefix}"\n'
    config.write_text(text)
    names = ["a", "b"] if database else ["a"]
    servers = [AntlerProcess(workdir, ["--config", str(config), "--data-dir", str(workdir / n)], name=n) for n in names]
    try:
        bases = [s.start() for s in servers]
        url = bases[0]
        limits = httpx.Limits(max_connections=300, max_keepalive_connections=50)
        async with httpx.AsyncClient(base_url=url, timeout=httpx.Timeout(120), limits=limits) as http:
            gate = asyncio.Semaphore(16)

            async def start_run() -> str:
                async with gate:
                    tid = (await http.post("/threads", json={})).json()["thread_id"]
                    body = {
                        "assistant_id": "lead_agent",
                        "input": human("go"),
                        "stream_mode": ["messages-tuple", "values", "updates"],
                    }
                    r = await http.post(f"/threads/{tid}/runs", json=body)
                    assert r.status_code == 200, r.text
                    return f"/threads/{tid}/runs/{r.json()['run_id']}/stream"

            rng = random.Random(20261207)
            clients = asyncio.Semaphore(250)

            async def client(path: str, seed: int) -> tuple[str, list[Event], int]:
                async with clients:
                    seen, rejoins = await chaos_client(http, bases, path, random.Random(seed))
                    return path, seen, rejoins

            started = time.monotonic()
            paths = await asyncio.gather(*(start_run() for _ in range(RUNS)))
            results = await asyncio.gather(
                *(client(p, rng.randrange(1 << 30)) for p in paths for _ in range(CLIENTS_PER_RUN))
            )
            took = time.monotonic() - started
            reference = {p: (await read_stream(http, url + p, None, None))[0] for p in paths}

        lost = duplicated = misordered = rejoins = events = 0
        for path, seen, n in results:
            ref = reference[path]
            assert len(ref) > TOKENS, f"{path}: only {len(ref)} events"
            rejoins += n
            events += len(seen)
            ids = [e[0] for e in seen]
            duplicated += len(ids) - len(set(ids))
            lost += len(set(e[0] for e in ref) - set(ids))
            misordered += seen != ref and len(ids) == len(set(ids)) and set(ids) == {e[0] for e in ref}
        print(
            f"sse chaos ({bridge} bridge, {len(bases)} servers): {RUNS} runs, {len(results)} clients, "
            f"{rejoins} rejoins, "
            f"{events} events delivered in {took:.1f} s; lost {lost}, duplicated {duplicated}, "
            f"out of order {misordered}"
        )
        assert (lost, duplicated, misordered) == (0, 0, 0)
        assert all(seen == reference[path] for path, seen, _ in results)
        assert rejoins >= len(results), "clients hung up and rejoined"
    finally:
        for s in servers:
            s.stop()
        if database:
            drop_database("postgres", database[1])
        shutil.rmtree(workdir, ignore_errors=True)
