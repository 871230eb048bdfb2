"""Fixtures for the end-to-end suite.

The server under test is, in order:
- ``ANTLER_TEST_URL`` if set (any LangGraph-Platform-API server, e.g. the reference peer);
- otherwise the Antler binary ``$ANTLER_BIN`` (default ``<repo>/target/debug/antler``), started once per
  session as ``serve --host 127.0.0.1 --port 0 --data-dir <tmp>``; its stdout line
  ``antler listening on http://127.0.0.1:<port>`` gives the URL (30 s timeout). It is stopped (SIGTERM,
  then SIGKILL) at the end of the session, and its log is printed if any test failed.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from langgraph_sdk import get_client
from langgraph_sdk.client import LangGraphClient

REPO = Path(__file__).resolve().parents[2]
LISTEN_RE = re.compile(rb"antler listening on (http://[0-9A-Za-z.\[\]:-]+)")
START_TIMEOUT_S = 30.0


def _tail(path: Path, n: int = 200) -> str:
    try:
        lines = path.read_bytes().decode("utf-8", "replace").splitlines()
    except OSError:
        return "<no log>"
    return "\n".join(lines[-n:])


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=15)


@pytest.fixture(scope="session")
def server_url(request: pytest.FixtureRequest) -> Iterator[str]:
    external = os.environ.get("ANTLER_TEST_URL")
    if external:
        yield external.rstrip("/")
        return

    binary = Path(os.environ.get("ANTLER_BIN") or REPO / "target" / "debug" / "antler")
    if not binary.is_file():
        pytest.fail(
            f"Antler binary not found at {binary}: run `cargo build -p antler`, set ANTLER_BIN, "
            "or point ANTLER_TEST_URL at a running server",
            pytrace=False,
        )
    workdir = Path(tempfile.mkdtemp(prefix="antler-pytest-"))
    log_path = workdir / "server.log"
    data_dir = workdir / "data"
    data_dir.mkdir()
    env = dict(os.environ)
    env.setdefault("RUST_LOG", "info")
    env.setdefault("NO_COLOR", "1")
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [str(binary), "serve", "--host", "127.0.0.1", "--port", "0", "--data-dir", str(data_dir)],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            cwd=workdir,
            env=env,
        )
    try:
        url = None
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            m = LISTEN_RE.search(log_path.read_bytes())
            if m:
                url = m.group(1).decode()
                break
            if proc.poll() is not None:
                pytest.fail(
                    f"antler exited with {proc.returncode} before listening; log:\n{_tail(log_path)}",
                    pytrace=False,
                )
            time.sleep(0.02)
        if url is None:
            pytest.fail(
                f"antler did not print 'antler listening on ...' within {START_TIMEOUT_S:.0f} s; "
                f"log:\n{_tail(log_path)}",
                pytrace=False,
            )
        yield url.rstrip("/")
    finally:
        _stop(proc)
        if request.session.testsfailed:
            print(f"\n----- antler server log (last 200 lines of {log_path}) -----\n{_tail(log_path)}")
        if os.environ.get("ANTLER_TEST_KEEP_DATA"):
            print(f"antler test data kept in {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)


@pytest.fixture
async def client(server_url: str) -> AsyncIterator[LangGraphClient]:
    c = get_client(url=server_url, api_key=None)
    try:
        yield c
    finally:
        await c.aclose()


@pytest.fixture
async def thread_id(client: LangGraphClient) -> str:
    """A fresh, empty thread."""
    return (await client.threads.create())["thread_id"]
