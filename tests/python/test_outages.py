"""Outages while runs go on: PostgreSQL, MySQL (MariaDB) and the Redis stream bridge, each stopped
under the server and started again.

Each test runs its own server (PostgreSQL by ``initdb`` as the ``postgres`` user when run as
root, MariaDB by ``mariadb-install-db``, Redis; scratch directories, free ports) so that stopping
it touches nothing else, and an Antler on it.
While the database is down, requests that need it must answer a JSON 503 within a bound (not hang
for the pool's 30 s, not 500 with a driver message) and stateless runs, which need no database,
keep working; when it is back the server recovers by itself, every run acknowledged before the
outage is there exactly once, and a run caught in flight ends (`error`: its writes could not
commit) instead of staying `running`. With Redis (the stream bridge) down, a streamed run is a
JSON 503, a run waited for still runs and is stored (its events cannot be streamed), and
streaming works again once Redis is back. Outside CI a machine without PostgreSQL's or Redis'
server binaries skips; with ``CI=true`` it fails.
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from support import AntlerProcess, free_port, human, unavailable, wait_for_port

pytestmark = pytest.mark.antler_only

DOWN_BOUND_S = 10.0  # a request while the database is down answers within this
RECOVERY_S = 60.0


class PrivatePostgres:
    """One PostgreSQL cluster in `root`, started and stopped with pg_ctl."""

    def __init__(self, root: Path) -> None:
        bins = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
        initdb = shutil.which("initdb") or (bins[-1] if bins else None)
        if initdb is None:
            unavailable("PostgreSQL's initdb is not installed")
        self.bin = Path(initdb).parent
        self.root = root
        self.data = root / "data"
        self.port = free_port()
        self.as_user = ["su", "postgres", "-c"] if os.geteuid() == 0 else None
        if self.as_user:
            shutil.chown(root, "postgres")
        self._run(f"{self.bin}/initdb -D {self.data} -A trust -U postgres")
        self.url = f"postgres://postgres@127.0.0.1:{self.port}/postgres"

    def _run(self, command: str) -> None:
        argv = [*self.as_user, command] if self.as_user else ["sh", "-c", command]
        subprocess.run(argv, check=True, capture_output=True, timeout=120, stdin=subprocess.DEVNULL)

    def start(self) -> None:
        opts = f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1"
        self._run(f"{self.bin}/pg_ctl -D {self.data} -o '{opts}' -l {self.root}/pg.log -w start")

    def stop(self) -> None:
        self._run(f"{self.bin}/pg_ctl -D {self.data} -m fast -w stop")


class PrivateMariaDB:
    """One MariaDB server in `root` (mariadb-install-db, then mariadbd on a free port)."""

    def __init__(self, root: Path) -> None:
        install = shutil.which("mariadb-install-db") or shutil.which("mysql_install_db")
        self.exe = shutil.which("mariadbd") or shutil.which("mysqld") or "/usr/sbin/mariadbd"
        if install is None or not Path(self.exe).exists():
            unavailable("MariaDB's server binaries are not installed")
        self.root = root
        self.port = free_port()
        user = ["--user=root"] if os.geteuid() == 0 else []
        subprocess.run(
            [
                install,
                "--no-defaults",
                f"--datadir={root / 'data'}",
                "--auth-root-authentication-method=normal",
                "--skip-test-db",
                *user,
            ],
            check=True,
            capture_output=True,
            timeout=120,
            stdin=subprocess.DEVNULL,
        )
        self.user = user
        self.proc: subprocess.Popen[bytes] | None = None
        self.url = f"mysql://root@127.0.0.1:{self.port}/antler"
        self.created = False

    def start(self) -> None:
        log = open(self.root / "mariadb.log", "ab")  # noqa: SIM115 (kept open by the child)
        self.proc = subprocess.Popen(
            [
                self.exe,
                "--no-defaults",
                f"--datadir={self.root / 'data'}",
                f"--port={self.port}",
                f"--socket={self.root / 'sock'}",
                "--bind-address=127.0.0.1",
                *self.user,
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
        wait_for_port(self.port, "mariadbd")
        if not self.created:
            client = shutil.which("mariadb") or shutil.which("mysql") or "mysql"
            sql = "CREATE DATABASE IF NOT EXISTS antler"
            subprocess.run(
                [client, "-h127.0.0.1", f"-P{self.port}", "-uroot", "-e", sql], check=True, capture_output=True
            )
            self.created = True

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=60)


@pytest.fixture(params=["postgres", "mysql"])
def database(request: pytest.FixtureRequest) -> Iterator[PrivatePostgres | PrivateMariaDB]:
    if os.environ.get("ANTLER_TEST_URL"):
        pytest.skip("needs its own Antler and database")
    root = Path(tempfile.mkdtemp(prefix=f"antler-outage-{request.param}-"))
    db = PrivatePostgres(root) if request.param == "postgres" else PrivateMariaDB(root)
    db.start()
    try:
        yield db
    finally:
        try:
            db.stop()
        except subprocess.CalledProcessError:
            pass
        shutil.rmtree(root, ignore_errors=True)


def stream_events(url: str, path: str, out: list[str]) -> None:
    """The SSE event names of a join stream until the server ends it (`<closed>` if it ends
    without a final event)."""
    with httpx.stream("GET", url + path, timeout=httpx.Timeout(120, read=60)) as r:
        for line in r.iter_lines():
            if line.startswith("event: "):
                out.append(line[7:])
                if out[-1] in ("error", "end"):
                    return
    out.append("<closed>")


def wait_body(text: str = "hi") -> dict:
    return {"assistant_id": "echo", "input": human(text)}


def test_database_outage_answers_503_then_recovers_without_losing_runs(
    database: PrivatePostgres | PrivateMariaDB,
) -> None:
    workdir = Path(tempfile.mkdtemp(prefix="antler-outage-"))
    config = workdir / "config.yaml"
    kind = "postgres" if isinstance(database, PrivatePostgres) else "mysql"
    config.write_text(f'database:\n  backend: {kind}\n  {kind}_url: "{database.url}"\n')
    server = AntlerProcess(workdir, ["--config", str(config), "--data-dir", str(workdir / "data")])
    try:
        url = server.start()
        http = httpx.Client(base_url=url, timeout=60)
        # acknowledged before the outage
        done = []
        for i in range(10):
            tid = http.post("/threads", json={}).json()["thread_id"]
            r = http.post(f"/threads/{tid}/runs/wait", json=wait_body(f"m{i}"))
            assert r.status_code == 200, r.text
            done.append(tid)
        slow = {"assistant_id": "slow", "input": human("long"), "config": {"configurable": {"delay": 1.0}}}
        caught = []
        for _ in range(3):
            tid = http.post("/threads", json={}).json()["thread_id"]
            run = http.post(f"/threads/{tid}/runs", json=slow)
            assert run.status_code == 200, run.text
            caught.append((tid, run.json()["run_id"]))
        # clients stream the runs caught by the outage
        streams: list[list[str]] = [[] for _ in caught]
        readers = [
            threading.Thread(target=stream_events, args=(url, f"/threads/{tid}/runs/{rid}/stream", out))
            for (tid, rid), out in zip(caught, streams, strict=True)
        ]
        for reader in readers:
            reader.start()
        time.sleep(0.5)

        database.stop()
        for method, path, body in [
            ("GET", f"/threads/{done[0]}", None),
            ("POST", "/threads", {}),
            ("POST", "/threads/search", {}),
            ("POST", f"/threads/{done[0]}/runs/wait", wait_body("during")),
            ("GET", f"/threads/{done[0]}/state", None),
        ]:
            started = time.monotonic()
            r = http.request(method, path, json=body)
            took = time.monotonic() - started
            assert r.status_code == 503, f"{method} {path}: {r.status_code} {r.text}"
            assert "unavailable" in r.json()["detail"], r.text
            assert r.headers.get("retry-after") == "1"
            assert took < DOWN_BOUND_S, f"{method} {path} took {took:.1f} s"
        # a stateless run needs no database
        r = http.post("/runs/wait", json=wait_body("stateless"))
        assert r.status_code == 200, r.text
        # every stream of a run caught by the outage ends, with the run's error, while the
        # database is still down: no client hangs on it
        for reader, events in zip(readers, streams, strict=True):
            reader.join(timeout=RECOVERY_S)
            assert not reader.is_alive(), f"a stream hung through the outage: {events}"
            assert events[:1] == ["metadata"] and events[-1] in ("error", "end"), events

        database.start()
        deadline = time.monotonic() + RECOVERY_S
        while http.post("/threads/search", json={}).status_code != 200:
            assert time.monotonic() < deadline, "the server did not recover"
            time.sleep(0.2)

        for i, tid in enumerate(done):
            runs = http.get(f"/threads/{tid}/runs").json()
            assert [r["status"] for r in runs] == ["success"], runs
            messages = http.get(f"/threads/{tid}/state").json()["values"]["messages"]
            assert [m["content"] for m in messages] == [f"m{i}", f"echo: m{i}"]
        for tid, run_id in caught:
            while (status := http.get(f"/threads/{tid}/runs/{run_id}").json()["status"]) in ("pending", "running"):
                assert time.monotonic() < deadline, f"run {run_id} still {status}"
                time.sleep(0.2)
            assert status in ("success", "error"), status
            assert http.get(f"/threads/{tid}").json()["status"] in ("idle", "error")
        # the threads go on
        r = http.post(f"/threads/{done[0]}/runs/wait", json=wait_body("after"))
        assert r.status_code == 200, r.text
        assert [m["content"] for m in r.json()["messages"]][-2:] == ["after", "echo: after"]
        log = server.log_path.read_text(errors="replace")
        assert "status=500" not in log, "a 500 was answered"
    finally:
        server.stop()
        shutil.rmtree(workdir, ignore_errors=True)


class PrivateRedis:
    """One redis-server on a free port, keeping nothing on disk."""

    def __init__(self, root: Path) -> None:
        self.exe = shutil.which("redis-server")
        if self.exe is None:
            unavailable("redis-server is not installed")
        self.root = root
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [
                str(self.exe),
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.root),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            stdin=subprocess.DEVNULL,
        )
        wait_for_port(self.port, "redis-server", timeout=20)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=20)


@pytest.fixture
def redis() -> Iterator[PrivateRedis]:
    if os.environ.get("ANTLER_TEST_URL"):
        pytest.skip("needs its own Antler and Redis")
    root = Path(tempfile.mkdtemp(prefix="antler-outage-redis-"))
    server = PrivateRedis(root)
    server.start()
    try:
        yield server
    finally:
        server.stop()
        shutil.rmtree(root, ignore_errors=True)


def test_redis_outage_refuses_streams_keeps_runs_and_recovers(redis: PrivateRedis) -> None:
    workdir = Path(tempfile.mkdtemp(prefix="antler-outage-"))
    config = workdir / "config.yaml"
    config.write_text(f'stream_bridge:\n  type: redis\n  redis_url: "{redis.url}"\n')
    server = AntlerProcess(workdir, ["--config", str(config), "--data-dir", str(workdir / "data")])
    try:
        url = server.start()
        http = httpx.Client(base_url=url, timeout=60)
        tid = http.post("/threads", json={}).json()["thread_id"]
        assert http.post(f"/threads/{tid}/runs/wait", json=wait_body("before")).status_code == 200

        redis.stop()
        started = time.monotonic()
        r = http.post(f"/threads/{tid}/runs/stream", json=wait_body("streamed"))
        assert r.status_code == 503, r.text
        assert r.json()["detail"].startswith("Stream bridge unavailable"), r.text
        assert time.monotonic() - started < DOWN_BOUND_S
        r = http.post(f"/threads/{tid}/runs/wait", json=wait_body("waited"))
        assert r.status_code == 200, r.text
        assert [m["content"] for m in r.json()["messages"]][-2:] == ["waited", "echo: waited"]
        assert http.post("/threads/search", json={}).status_code == 200

        redis.start()
        deadline = time.monotonic() + RECOVERY_S
        while True:
            with http.stream("POST", f"/threads/{tid}/runs/stream", json=wait_body("after")) as r:
                if r.status_code == 200:
                    events = [line[7:] for line in r.iter_lines() if line.startswith("event: ")]
                    break
            assert time.monotonic() < deadline, "streaming did not come back"
            time.sleep(0.2)
        assert events[0] == "metadata" and "values" in events, events
        messages = http.get(f"/threads/{tid}/state").json()["values"]["messages"]
        assert [m["content"] for m in messages] == [
            "before",
            "echo: before",
            "waited",
            "echo: waited",
            "after",
            "echo: after",
        ]
        assert "status=500" not in server.log_path.read_text(errors="replace"), "a 500 was answered"
    finally:
        server.stop()
        shutil.rmtree(workdir, ignore_errors=True)
