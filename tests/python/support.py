"""Helpers shared by the test modules: inputs, stream collection, polling, message extraction."""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import time
import uuid
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pytest
from langgraph_sdk.client import LangGraphClient
from langgraph_sdk.schema import StreamPart

# `slow` sleeps `configurable.delay` seconds in each of its three steps.
FAST = {"configurable": {"delay": 0.05}}
EXAMPLE_GRAPHS = {"echo", "slow", "interrupt", "fail", "chat", "parent"}
# Antler also serves `lead_agent` (the assistant DeerFlow's frontend runs); the reference peer
# (ANTLER_TEST_URL) serves only the six example graphs.
GRAPHS = EXAMPLE_GRAPHS | (set() if os.environ.get("ANTLER_TEST_URL") else {"lead_agent"})
FAKE_REPLY = "hello from the fake model"
TERMINAL = {"success", "error", "interrupted", "timeout"}


def human(text: str = "hi") -> dict[str, Any]:
    return {"messages": [{"role": "human", "content": text}]}


def slow_config(delay: float = 0.05) -> dict[str, Any]:
    return {"configurable": {"delay": delay}}


async def collect(stream: AsyncIterator[StreamPart], limit: float = 60.0) -> list[StreamPart]:
    """Every part of a stream, until the server ends it (bounded by `limit` seconds)."""

    async def run() -> list[StreamPart]:
        return [p async for p in stream]

    return await asyncio.wait_for(run(), limit)


def core(parts: Iterable[StreamPart]) -> list[StreamPart]:
    """The parts both servers send: drops Antler's final `end` event (the reference has none)."""
    return [p for p in parts if p.event != "end"]


def sig(parts: Iterable[StreamPart]) -> list[tuple[str, Any, str | None]]:
    """(event, data, id) of each part, for exact comparisons of Antler streams. The final `end` frame
    has no `id:` line, and the SDK reports the last id it saw for it, so its id is left out."""
    return [(p.event, p.data, None if p.event == "end" else p.id) for p in parts]


def seq_ids(parts: Iterable[StreamPart]) -> list[tuple[int, int]]:
    """Antler's `<unix_ms>-<seq>` ids of every part but `end`, as (ms, seq)."""
    out = []
    for p in core(parts):
        assert p.id, f"event {p.event!r} has no id"
        ms, seq = p.id.split("-")
        out.append((int(ms), int(seq)))
    return out


def events(parts: Iterable[StreamPart]) -> list[str]:
    return [p.event for p in core(parts)]


def of(parts: Iterable[StreamPart], event: str) -> list[Any]:
    """The data of every part named `event`."""
    return [p.data for p in parts if p.event == event]


def msgs(messages: Iterable[dict[str, Any]]) -> list[tuple[str, Any]]:
    """(type, content) of each LangChain message dict; `role: human` input counts as `human`."""
    out = []
    for m in messages:
        kind = m.get("type") or {"user": "human", "assistant": "ai"}.get(m.get("role", ""), m.get("role"))
        out.append((kind, m.get("content")))
    return out


def contents(messages: Iterable[dict[str, Any]]) -> list[Any]:
    return [m.get("content") for m in messages]


async def wait_run(
    client: LangGraphClient, thread_id: str, run_id: str, statuses: Iterable[str] = TERMINAL, timeout: float = 30.0
) -> dict[str, Any]:
    """Poll runs.get until the run's status is one of `statuses`."""
    wanted = set(statuses)
    deadline = time.monotonic() + timeout
    while True:
        run = await client.runs.get(thread_id, run_id)
        if run["status"] in wanted:
            return run
        if time.monotonic() > deadline:
            raise AssertionError(f"run {run_id} still {run['status']!r} after {timeout}s (wanted {sorted(wanted)})")
        await asyncio.sleep(0.05)


async def wait_thread(
    client: LangGraphClient, thread_id: str, statuses: Iterable[str], timeout: float = 30.0
) -> dict[str, Any]:
    wanted = set(statuses)
    deadline = time.monotonic() + timeout
    while True:
        thread = await client.threads.get(thread_id)
        if thread["status"] in wanted:
            return thread
        if time.monotonic() > deadline:
            raise AssertionError(f"thread {thread_id} still {thread['status']!r} after {timeout}s")
        await asyncio.sleep(0.05)


async def wait_state_messages(client: LangGraphClient, thread_id: str, n: int, timeout: float = 30.0) -> dict[str, Any]:
    """Poll the thread state until it holds at least `n` messages."""
    deadline = time.monotonic() + timeout
    while True:
        state = await client.threads.get_state(thread_id)
        if len((state.get("values") or {}).get("messages") or []) >= n:
            return state
        if time.monotonic() > deadline:
            raise AssertionError(f"thread {thread_id} never reached {n} messages: {state.get('values')}")
        await asyncio.sleep(0.05)


async def system_assistant(client: LangGraphClient, graph_id: str) -> dict[str, Any]:
    found = await client.assistants.search(graph_id=graph_id, metadata={"created_by": "system"}, limit=10)
    assert len(found) == 1, found
    return found[0]


REPO = Path(__file__).resolve().parents[2]
LISTEN_RE = re.compile(rb"antler listening on (http://[0-9A-Za-z.\[\]:-]+)")
START_TIMEOUT_S = 30.0


def antler_binary() -> Path:
    """``$ANTLER_BIN``, else ``<repo>/target/debug/antler`` (a test failure when missing)."""
    binary = Path(os.environ.get("ANTLER_BIN") or REPO / "target" / "debug" / "antler").resolve()
    if not binary.is_file():
        pytest.fail(
            f"Antler binary not found at {binary}: run `cargo build -p antler`, set ANTLER_BIN, "
            "or point ANTLER_TEST_URL at a running server",
            pytrace=False,
        )
    return binary


class AntlerProcess:
    """One ``antler serve --host 127.0.0.1 --port 0 <args>`` child run from ``workdir``; its stdout
    and stderr go to ``<workdir>/<name>.log`` (kept across restarts), whose
    ``antler listening on <url>`` line gives the URL."""

    def __init__(
        self,
        workdir: Path,
        args: Sequence[str] = (),
        env: Mapping[str, str] | None = None,
        name: str = "server",
    ) -> None:
        self.workdir = workdir
        self.args = list(args)
        self.env = dict(env if env is not None else os.environ)
        self.env.setdefault("RUST_LOG", "info")
        self.env.setdefault("NO_COLOR", "1")
        self.log_path = workdir / f"{name}.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.url = ""

    def start(self) -> str:
        offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [str(antler_binary()), "serve", "--host", "127.0.0.1", "--port", "0", *self.args],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                cwd=self.workdir,
                env=self.env,
            )
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            m = LISTEN_RE.search(self.log_path.read_bytes()[offset:])
            if m:
                self.url = m.group(1).decode().rstrip("/")
                return self.url
            if self.proc.poll() is not None:
                pytest.fail(
                    f"antler exited with {self.proc.returncode} before listening; log:\n{self.tail()}",
                    pytrace=False,
                )
            time.sleep(0.02)
        pytest.fail(
            f"antler did not print 'antler listening on ...' within {START_TIMEOUT_S:.0f} s; "
            f"log:\n{self.tail()}",
            pytrace=False,
        )

    def kill9(self) -> None:
        """SIGKILL: no shutdown at all (a crash)."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=15)

    def stop(self) -> None:
        """SIGTERM (graceful shutdown), SIGKILL after 15 s."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=15)

    def tail(self, n: int = 200) -> str:
        try:
            lines = self.log_path.read_bytes().decode("utf-8", "replace").splitlines()
        except OSError:
            return "<no log>"
        return "\n".join(lines[-n:])



# ---------------------------------------------------------------- services the tests start or use

PG = os.environ.get("ANTLER_TEST_POSTGRES_URL") or "postgres://postgres@127.0.0.1:5432/test"
MYSQL = os.environ.get("ANTLER_TEST_MYSQL_URL") or "mysql://root@127.0.0.1:3306/test"
REDIS = os.environ.get("ANTLER_TEST_REDIS_URL") or "redis://127.0.0.1:6379"


def unavailable(why: str) -> None:
    """Skips the test; with ``CI=true`` fails it instead (CI has every service)."""
    if os.environ.get("CI") == "true":
        pytest.fail(f"{why} and CI=true: this test must run in CI", pytrace=False)
    pytest.skip(why)


def reachable(url: str, port: int) -> bool:
    """Whether the server of `url` (`port` when the URL names none) accepts a connection."""
    u = urlparse(url)
    try:
        with socket.create_connection((u.hostname or "127.0.0.1", u.port or port), timeout=2):
            return True
    except OSError:
        return False


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_port(port: int, what: str, timeout: float = 60.0) -> None:
    """Waits until something listens on 127.0.0.1:`port` (a test failure after `timeout`)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            assert time.monotonic() < deadline, f"{what} did not start"
            time.sleep(0.05)


def _mysql_login() -> list[str]:
    u = urlparse(MYSQL)
    client = shutil.which("mariadb") or shutil.which("mysql") or "mysql"
    login = [client, "-h", u.hostname or "127.0.0.1", "-P", str(u.port or 3306), "-u", u.username or "root"]
    if u.password:
        login.append(f"-p{u.password}")
    return login


def private_database(backend: str, prefix: str) -> tuple[str, str]:
    """(url, name) of a new database `<prefix>_<pid>_<random>` on the test server of `backend`
    (`postgres`: ANTLER_TEST_POSTGRES_URL, `mysql`: ANTLER_TEST_MYSQL_URL); drop it with
    [`drop_database`]."""
    name = f"{prefix}_{os.getpid()}_{uuid.uuid4().hex[:8]}"
    if backend == "postgres":
        if not reachable(PG, 5432) or shutil.which("psql") is None:
            unavailable(f"PostgreSQL (and psql) unavailable at {PG}")
        subprocess.run(["psql", "-q", PG, "-c", f"CREATE DATABASE {name}"], check=True, capture_output=True)
        return f"{PG.rsplit('/', 1)[0]}/{name}", name
    if not reachable(MYSQL, 3306) or not (shutil.which("mariadb") or shutil.which("mysql")):
        unavailable(f"MySQL (and its client) unavailable at {MYSQL}")
    subprocess.run([*_mysql_login(), "-e", f"CREATE DATABASE {name}"], check=True, capture_output=True)
    return f"{MYSQL.rsplit('/', 1)[0]}/{name}", name


def drop_database(backend: str, name: str) -> None:
    if backend == "postgres":
        subprocess.run(["psql", "-q", PG, "-c", f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"], capture_output=True)
    else:
        subprocess.run([*_mysql_login(), "-e", f"DROP DATABASE IF EXISTS {name}"], capture_output=True)


def completion_chunk(delta: dict[str, Any], finish: str | None = None) -> bytes:
    """One SSE frame of an OpenAI Chat Completions stream (for fake providers)."""
    chunk = {
        "id": "chatcmpl-fake",
        "object": "chat.completion.chunk",
        "created": 0,
        "model": "fake",
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
    }
    return f"data: {json.dumps(chunk)}\n\n".encode()
