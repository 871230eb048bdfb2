"""`auth.mode: api_key` through the official SDK: `api_key=` (and `LANGGRAPH_API_KEY`) works end to
end, no key or a wrong one is 401, and two users never see each other's threads, runs or store items.

Boots its own Antler (the session server runs with auth off): keys are made first with
`antler keys create --user NAME`, which prints the key once, then the server starts with a config
file saying `auth: {mode: api_key}`. Skipped when ANTLER_TEST_URL points at another server.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from langgraph_sdk import get_client

from support import human, msgs

pytestmark = pytest.mark.antler_only

REPO = Path(__file__).resolve().parents[2]
LISTEN_RE = re.compile(rb"antler listening on (http://[0-9A-Za-z.\[\]:-]+)")


class AuthServer:
    def __init__(self, url: str, keys: dict[str, str], binary: Path, data_dir: Path) -> None:
        self.url = url
        self.keys = keys
        self.binary = binary
        self.data_dir = data_dir


def _binary() -> Path:
    return Path(os.environ.get("ANTLER_BIN") or REPO / "target" / "debug" / "antler")


def _create_key(binary: Path, data_dir: Path, user: str) -> str:
    out = subprocess.run(
        [str(binary), "keys", "create", "--user", user, "--name", "pytest", "--data-dir", str(data_dir)],
        capture_output=True,
        check=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )
    key = out.stdout.decode().strip()
    assert key.startswith("ak_"), out
    return key


@pytest.fixture(scope="module")
def auth_server() -> Iterator[AuthServer]:
    if os.environ.get("ANTLER_TEST_URL"):
        pytest.skip("needs its own Antler with auth.mode api_key")
    binary = _binary()
    if not binary.is_file():
        pytest.fail(f"Antler binary not found at {binary}: run `cargo build -p antler`", pytrace=False)
    workdir = Path(tempfile.mkdtemp(prefix="antler-pytest-auth-"))
    data_dir = workdir / "data"
    data_dir.mkdir()
    keys = {user: _create_key(binary, data_dir, user) for user in ("alice", "bob")}
    cfg = workdir / "config.yaml"
    cfg.write_text("auth:\n  mode: api_key\n")
    log_path = workdir / "server.log"
    env = {k: v for k, v in os.environ.items() if not k.endswith("_API_KEY")}
    env.setdefault("NO_COLOR", "1")
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [
                str(binary),
                "serve",
                "--config",
                str(cfg),
                "--host",
                "127.0.0.1",
                "--port",
                "0",
                "--data-dir",
                str(data_dir),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            cwd=workdir,
            env=env,
        )
    try:
        url = None
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and proc.poll() is None:
            m = LISTEN_RE.search(log_path.read_bytes())
            if m:
                url = m.group(1).decode()
                break
            time.sleep(0.02)
        if url is None:
            pytest.fail(f"antler (api_key mode) did not start; log:\n{log_path.read_text()}", pytrace=False)
        yield AuthServer(url, keys, binary, data_dir)
        # The server log must never contain a key.
        text = log_path.read_text(errors="replace")
        for key in keys.values():
            assert key not in text
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=15)
        shutil.rmtree(workdir, ignore_errors=True)


async def test_sdk_with_api_key_works_end_to_end(auth_server: AuthServer):
    client = get_client(url=auth_server.url, api_key=auth_server.keys["alice"])
    try:
        thread = await client.threads.create(metadata={"who": "alice"})
        out = await client.runs.wait(thread["thread_id"], "echo", input=human("hello"))
        assert msgs(out["messages"]) == [("human", "hello"), ("ai", "echo: hello")]
        parts = [p async for p in client.runs.stream(thread["thread_id"], "echo", input=human("again"))]
        assert parts[0].event == "metadata"
        state = await client.threads.get_state(thread["thread_id"])
        assert msgs(state["values"]["messages"])[-1] == ("ai", "echo: again")
        await client.store.put_item(["notes"], key="k", value={"v": "alice"})
        assert (await client.store.get_item(["notes"], key="k"))["value"] == {"v": "alice"}
    finally:
        await client.aclose()


async def test_sdk_without_a_key_gets_401(auth_server: AuthServer):
    for api_key in (None, "ak_0123456789abcdef_wrong"):
        client = get_client(url=auth_server.url, api_key=api_key)
        try:
            with pytest.raises(httpx.HTTPStatusError) as err:
                await client.threads.create()
            assert err.value.response.status_code == 401
            with pytest.raises(httpx.HTTPStatusError) as err:
                await client.threads.search()
            assert err.value.response.status_code == 401
        finally:
            await client.aclose()


async def test_key_from_the_environment(auth_server: AuthServer, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("LANGGRAPH_API_KEY", auth_server.keys["bob"])
    client = get_client(url=auth_server.url)
    try:
        thread = await client.threads.create()
        assert (await client.threads.get(thread["thread_id"]))["thread_id"] == thread["thread_id"]
    finally:
        await client.aclose()


async def test_users_are_isolated(auth_server: AuthServer):
    alice = get_client(url=auth_server.url, api_key=auth_server.keys["alice"])
    bob = get_client(url=auth_server.url, api_key=auth_server.keys["bob"])
    try:
        thread = await alice.threads.create(metadata={"note": "alice-only"})
        tid = thread["thread_id"]
        await alice.runs.wait(tid, "echo", input=human("private"))
        run_id = (await alice.runs.list(tid))[0]["run_id"]
        await alice.store.put_item(["private"], key="k", value={"v": 1})
        before = await alice.threads.get(tid)

        for call in (
            bob.threads.get(tid),
            bob.threads.get_state(tid),
            bob.threads.get_history(tid),
            bob.threads.update(tid, metadata={"x": 1}),
            bob.threads.delete(tid),
            bob.runs.list(tid),
            bob.runs.get(tid, run_id),
            bob.runs.cancel(tid, run_id),
            bob.runs.create(tid, "echo", input=human("intrude")),
        ):
            with pytest.raises(httpx.HTTPStatusError) as err:
                await call
            assert err.value.response.status_code == 404
        assert all(t["thread_id"] != tid for t in await bob.threads.search(limit=100))
        assert await bob.store.get_item(["private"], key="k") is None
        assert (await bob.store.search_items(["private"]))["items"] == []

        # Alice's data is untouched.
        assert await alice.threads.get(tid) == before
        assert before["metadata"]["note"] == "alice-only"
        assert len(await alice.runs.list(tid)) == 1
        assert (await alice.store.get_item(["private"], key="k"))["value"] == {"v": 1}
    finally:
        await alice.aclose()
        await bob.aclose()


async def test_the_same_thread_id_is_two_threads(auth_server: AuthServer):
    """Thread ids are per user: Bob creating Alice's thread id gets a thread of his own (no 409
    that would confirm hers exists), runs on it see only his messages, and deleting it leaves
    hers alone."""
    alice = get_client(url=auth_server.url, api_key=auth_server.keys["alice"])
    bob = get_client(url=auth_server.url, api_key=auth_server.keys["bob"])
    try:
        tid = str(uuid.uuid4())
        await alice.threads.create(thread_id=tid, metadata={"note": "alice-only"})
        await alice.runs.wait(tid, "echo", input=human("alice's secret"))
        mine = await bob.threads.create(thread_id=tid)
        assert mine["thread_id"] == tid
        assert mine["metadata"] == {}
        out = await bob.runs.wait(tid, "echo", input=human("bob here"))
        assert msgs(out["messages"]) == [("human", "bob here"), ("ai", "echo: bob here")]
        assert len(await bob.runs.list(tid)) == 1
        history = await bob.threads.get_history(tid)
        assert all("alice's secret" not in str(h["values"]) for h in history)
        parts = [p async for p in bob.runs.stream(tid, "echo", input=human("again"), stream_mode="values")]
        assert "alice's secret" not in str([p.data for p in parts])

        # `if_not_exists="create"` on another of Alice's ids makes Bob's thread, not a 404
        other = (await alice.threads.create())["thread_id"]
        out = await bob.runs.wait(other, "echo", input=human("new"), if_not_exists="create")
        assert msgs(out["messages"])[-1] == ("ai", "echo: new")
        assert await alice.runs.list(other) == []

        await bob.threads.delete(tid)
        hers = await alice.threads.get(tid)
        assert hers["metadata"]["note"] == "alice-only"
        assert "bob" not in str(hers)
        state = await alice.threads.get_state(tid)
        assert msgs(state["values"]["messages"]) == [("human", "alice's secret"), ("ai", "echo: alice's secret")]
    finally:
        await alice.aclose()
        await bob.aclose()


def test_revoked_key_is_refused(auth_server: AuthServer):
    key = _create_key(auth_server.binary, auth_server.data_dir, "carol")
    headers = {"x-api-key": key}
    assert httpx.post(f"{auth_server.url}/threads/search", json={}, headers=headers).status_code == 200
    key_id = key.split("_")[1]
    listed = subprocess.run(
        [str(auth_server.binary), "keys", "list", "--data-dir", str(auth_server.data_dir)],
        capture_output=True,
        check=True,
        timeout=60,
    ).stdout.decode()
    assert key_id in listed and key not in listed
    subprocess.run(
        [str(auth_server.binary), "keys", "revoke", key_id, "--data-dir", str(auth_server.data_dir)],
        capture_output=True,
        check=True,
        timeout=60,
    )
    r = httpx.post(f"{auth_server.url}/threads/search", json={}, headers=headers)
    assert r.status_code == 401
    assert r.json()["detail"]["code"] == "invalid_credentials"
