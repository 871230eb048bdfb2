"""Graceful shutdown under load: SIGTERM while 100 runs are in flight and clients stream them.

While the server shuts down, a new run is refused with a JSON 503 (or the connection is refused
once the listener has closed); every SSE stream ends instead of hanging; the process exits within
`shutdown_grace_seconds` plus its drain bound. After a restart on the same data directory every
one of the 100 acknowledged runs is there exactly once and reaches `success` (resumed from its
last checkpoint), each thread holding its input and the three steps once.
"""

from __future__ import annotations

import shutil
import signal
import tempfile
import threading
import time
from pathlib import Path

import httpx
import pytest
from support import AntlerProcess, human

pytestmark = pytest.mark.antler_only

RUNS = 100
GRACE_S = 1


def stream_events(url: str, path: str, out: list[str]) -> None:
    """Every SSE event name of a join stream, until the server ends it."""
    try:
        with httpx.stream("GET", url + path, timeout=httpx.Timeout(60, read=30)) as r:
            for line in r.iter_lines():
                if line.startswith("event: "):
                    out.append(line[7:])
        out.append("<closed>")
    except httpx.HTTPError as e:
        out.append(f"<{type(e).__name__}>")


@pytest.mark.timeout(240)
def test_sigterm_under_load_loses_no_acknowledged_run() -> None:
    workdir = Path(tempfile.mkdtemp(prefix="antler-shutdown-"))
    config = workdir / "config.yaml"
    config.write_text(f"runs:\n  shutdown_grace_seconds: {GRACE_S}\n")
    args = ["--config", str(config), "--data-dir", str(workdir / "data")]
    server = AntlerProcess(workdir, args)
    try:
        url = server.start()
        http = httpx.Client(base_url=url, timeout=60)
        slow = {"assistant_id": "slow", "input": human("go"), "config": {"configurable": {"delay": 0.5}}}
        runs = []
        for _ in range(RUNS):
            tid = http.post("/threads", json={}).json()["thread_id"]
            r = http.post(f"/threads/{tid}/runs", json=slow)
            assert r.status_code == 200, r.text
            runs.append((tid, r.json()["run_id"]))
        streams: list[list[str]] = [[] for _ in range(5)]
        readers = [
            threading.Thread(target=stream_events, args=(url, f"/threads/{tid}/runs/{rid}/stream", out))
            for (tid, rid), out in zip(runs, streams, strict=False)
        ]
        for reader in readers:
            reader.start()
        time.sleep(0.3)

        assert server.proc is not None
        started = time.monotonic()
        server.proc.send_signal(signal.SIGTERM)
        time.sleep(0.1)
        try:
            late = http.post(f"/threads/{runs[0][0]}/runs", json=slow)
            assert late.status_code == 503, late.text
            assert "shutting down" in late.json()["detail"].lower()
        except httpx.TransportError:
            pass  # the listener already closed
        server.proc.wait(timeout=GRACE_S + 30)
        exited = time.monotonic() - started
        assert exited < GRACE_S + 10, f"exit took {exited:.1f} s"
        for reader in readers:
            reader.join(timeout=30)
            assert not reader.is_alive(), "a stream did not end at shutdown"
        for events in streams:
            assert events and events[-1] in ("<closed>", "<RemoteProtocolError>", "<ReadError>"), events

        url = server.start()
        http = httpx.Client(base_url=url, timeout=60)
        deadline = time.monotonic() + 120
        statuses: dict[str, str] = {}
        for tid, rid in runs:
            while (status := http.get(f"/threads/{tid}/runs/{rid}").json()["status"]) in ("pending", "running"):
                assert time.monotonic() < deadline, f"run {rid} still {status}"
                time.sleep(0.1)
            statuses[rid] = status
            listed = http.get(f"/threads/{tid}/runs").json()
            assert [r["run_id"] for r in listed] == [rid], listed
            messages = http.get(f"/threads/{tid}/state").json()["values"]["messages"]
            assert [m["content"] for m in messages] == ["go", "step 1", "step 2", "step 3"], messages
        assert set(statuses.values()) == {"success"}, statuses
    finally:
        server.stop()
        shutil.rmtree(workdir, ignore_errors=True)
