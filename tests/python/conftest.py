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
import shutil
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from langgraph_sdk import get_client
from langgraph_sdk.client import LangGraphClient

from support import AntlerProcess


@pytest.fixture(scope="session")
def server_url(request: pytest.FixtureRequest) -> Iterator[str]:
    external = os.environ.get("ANTLER_TEST_URL")
    if external:
        yield external.rstrip("/")
        return

    workdir = Path(tempfile.mkdtemp(prefix="antler-pytest-"))
    data_dir = workdir / "data"
    data_dir.mkdir()
    server = AntlerProcess(workdir, ["--data-dir", str(data_dir)])
    try:
        yield server.start()
    finally:
        server.stop()
        if request.session.testsfailed:
            print(f"\n----- antler server log (last 200 lines of {server.log_path}) -----\n{server.tail()}")
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
