"""Infrastructure of `durable.sh`: the servers under test (the reference peer, Antler on a
backend), their fresh databases and the database's own counters, server CPU from /proc, a
keep-alive HTTP client and the oha load generator.

Standard library only (python3 3.10+). Nothing here measures on its own: durable_measure.py does.
"""

from __future__ import annotations

import http.client
import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

HZ = os.sysconf("SC_CLK_TCK")
ECHO_INPUT = {"messages": [{"role": "human", "content": "hi"}]}


class BenchError(RuntimeError):
    """A measurement that cannot be trusted (non-200 answer, server died, ...): stops the run."""


def log(msg: str) -> None:
    print(f"[durable {time.strftime('%H:%M:%S', time.gmtime())}] {msg}", flush=True)


def load_average() -> str:
    """`uptime`'s load averages, as recorded with every round and session."""
    with open("/proc/loadavg") as f:
        return " ".join(f.read().split()[:3])


# ---------------------------------------------------------------- /proc


def _children(pid: int) -> list[int]:
    out = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            out += [int(c) for c in (task / "children").read_text().split()]
        except OSError:
            pass
    return out


def process_tree(pid: int) -> list[int]:
    """The pid and all its live descendants."""
    seen, todo = [], [pid]
    while todo:
        p = todo.pop()
        seen.append(p)
        todo += _children(p)
    return seen


def cpu_seconds(pid: int) -> float:
    """utime + stime of the process tree, in seconds (dead threads included, 1/HZ resolution)."""
    ticks = 0
    for p in process_tree(pid):
        try:
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        ticks += int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15 of stat)
    return ticks / HZ


def io_counters(pid: int) -> dict[str, int]:
    """/proc/PID/io of the server process: write_bytes = bytes it sent to storage."""
    out = {}
    for line in Path(f"/proc/{pid}/io").read_text().splitlines():
        k, v = line.split(":")
        out[k.strip()] = int(v)
    return {"write_bytes": out["write_bytes"], "syscw": out["syscw"]}


def rss_kib(pid: int) -> int:
    total = 0
    for p in process_tree(pid):
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except OSError:
            pass
    return total


def port_free(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) != 0


# ---------------------------------------------------------------- HTTP


class Http:
    """One keep-alive connection; every answer other than 200 raises BenchError."""

    def __init__(self, port: int, timeout: float = 120.0):
        self.port, self.timeout = port, timeout
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)

    def request(self, method: str, path: str, body: Optional[dict] = None) -> bytes:
        data = None if body is None else json.dumps(body).encode()
        headers = {"content-type": "application/json"} if data is not None else {}
        try:
            self.conn.request(method, path, body=data, headers=headers)
            resp = self.conn.getresponse()
            raw = resp.read()
        except (OSError, http.client.HTTPException) as e:
            self.conn.close()
            raise BenchError(f"{method} {path}: {e!r}") from e
        if resp.status != 200:
            raise BenchError(f"{method} {path}: HTTP {resp.status}: {raw[:300]!r}")
        return raw

    def json(self, method: str, path: str, body: Optional[dict] = None):
        return json.loads(self.request(method, path, body))

    def close(self) -> None:
        self.conn.close()


def wait_ok(port: int, proc: subprocess.Popen, timeout: float, what: str) -> float:
    """Polls GET /ok until it answers 200; returns the seconds it took."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if proc.poll() is not None:
            raise BenchError(f"{what} exited with {proc.returncode} before /ok")
        try:
            c = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            c.request("GET", "/ok")
            if c.getresponse().status == 200:
                c.close()
                return time.monotonic() - t0
        except OSError:
            pass
        time.sleep(0.05)
    raise BenchError(f"{what} did not answer /ok within {timeout:.0f} s")


# ---------------------------------------------------------------- databases


def _run(cmd: list[str], **kw) -> str:
    r = subprocess.run(cmd, capture_output=True, text=True, **kw)
    if r.returncode != 0:
        raise BenchError(f"{' '.join(cmd[:3])} ...: {r.stderr.strip()[:400]}")
    return r.stdout


class Database:
    """A fresh database per server start. `counters()` is read around a measurement window."""

    backend = "sqlite"
    settle_seconds = 0.0  # how long the database's statistics may lag behind its work

    def create(self) -> None: ...

    def drop(self) -> None: ...

    def config(self) -> str:
        return "database:\n  backend: sqlite\n"

    def counters(self) -> dict[str, float]:
        return {}


class Postgres(Database):
    """PostgreSQL: pg_stat_database of the fresh database (read from another database, so the
    reading itself is not counted). PostgreSQL 15 flushes an idle backend's statistics up to 10 s
    late (PGSTAT_IDLE_INTERVAL), hence settle_seconds. When the server preloads
    pg_stat_statements, its calls in the fresh database are added as `statements`; that view is
    read inside the fresh database, so each earlier reading (two transactions: the session's
    startup and the query; one call) is subtracted from `xact_commit` and `statements`."""

    backend = "postgres"

    def __init__(self, name: str, base: str, settle: float):
        self.name, self.base, self.settle_seconds = name, base.rstrip("/"), settle
        self.statements = False
        self.statement_reads = 0

    def url(self) -> str:
        return f"{self.base}/{self.name}"

    def _psql(self, sql: str, db: str = "postgres") -> str:
        return _run(["psql", "-qAtX", f"{self.base}/{db}", "-c", sql])

    def create(self) -> None:
        self._psql(f"DROP DATABASE IF EXISTS {self.name} WITH (FORCE)")
        self._psql(f"CREATE DATABASE {self.name}")
        if "pg_stat_statements" in self._psql("SHOW shared_preload_libraries"):
            self._psql("CREATE EXTENSION IF NOT EXISTS pg_stat_statements", db=self.name)
            self.statements = True

    def drop(self) -> None:
        self._psql(f"DROP DATABASE IF EXISTS {self.name} WITH (FORCE)")

    def config(self) -> str:
        return f'database:\n  backend: postgres\n  postgres_url: "{self.url()}"\n'

    def counters(self) -> dict[str, float]:
        cols = "xact_commit, xact_rollback, tup_inserted, tup_updated, tup_deleted, tup_returned, tup_fetched"
        row = self._psql(f"SELECT {cols} FROM pg_stat_database WHERE datname = '{self.name}'").split("|")
        out = dict(zip([c.strip() for c in cols.split(",")], map(float, row), strict=True))
        if self.statements:
            calls = self._psql("SELECT coalesce(sum(calls), 0) FROM pg_stat_statements s JOIN pg_database d "
                               f"ON d.oid = s.dbid WHERE d.datname = '{self.name}'", db=self.name)
            out["statements"] = float(calls) - self.statement_reads
            out["xact_commit"] -= 2 * self.statement_reads  # a psql session: startup + statement
            self.statement_reads += 1
        return out


MYSQL_STATUS = (
    "Com_commit", "Com_rollback", "Com_begin", "Handler_commit", "Questions",
    "Com_insert", "Com_update", "Com_delete", "Com_select", "Com_insert_select", "Com_replace",
)


class MySql(Database):
    """MariaDB / MySQL: SHOW GLOBAL STATUS deltas. They are server-wide, so (1) the statements
    this harness sends itself (2 `Questions` per mysql CLI call, 1 `Com_select` per sample) are
    subtracted, and (2) a sampler counts how often a session on another database was busy during
    the window (`foreign_busy` of `samples`: if not 0, other clients inflated the deltas)."""

    backend = "mysql"

    def __init__(self, name: str, base: str, sample_every: float = 1.0):
        self.name, self.base, self.sample_every = name, base.rstrip("/"), sample_every
        user, hostport = self.base.split("://", 1)[1].split("@", 1)
        user, _, password = user.partition(":")
        host, _, port = hostport.partition(":")
        self.cli = ["mysql", "--protocol=tcp", "-h", host, "-P", port or "3306", "-u", user, "-N", "-B"]
        if password:
            self.cli.append(f"-p{password}")
        self._sampler: Optional[threading.Thread] = None
        self._stop = threading.Event()
        self.own = {"Questions": 0.0, "Com_select": 0.0}  # what this harness sent so far
        self.samples = [0, 0]  # [samples, samples with a foreign busy session]

    def url(self) -> str:
        return f"{self.base}/{self.name}"

    def _sql(self, sql: str) -> str:
        out = _run(self.cli + ["-e", sql])
        self.own["Questions"] += 2
        return out

    def create(self) -> None:
        self._sql(f"DROP DATABASE IF EXISTS {self.name}")
        self._sql(f"CREATE DATABASE {self.name} CHARACTER SET utf8mb4 COLLATE utf8mb4_bin")

    def drop(self) -> None:
        self._sql(f"DROP DATABASE IF EXISTS {self.name}")

    def config(self) -> str:
        return f'database:\n  backend: mysql\n  mysql_url: "{self.url()}"\n'

    def counters(self) -> dict[str, float]:
        names = ",".join(f"'{n}'" for n in MYSQL_STATUS)
        own = dict(self.own)
        out = {}
        for line in self._sql(f"SHOW GLOBAL STATUS WHERE Variable_name IN ({names})").splitlines():
            k, v = line.split("\t")
            out[k] = float(v) - own.get(k, 0.0)
        out["Questions"] -= 2  # this read itself
        return out

    def _sample(self) -> None:
        q = ("SELECT count(*) FROM information_schema.PROCESSLIST WHERE command <> 'Sleep' "
             f"AND db IS NOT NULL AND db <> '{self.name}' AND id <> connection_id()")
        while not self._stop.wait(self.sample_every):
            try:
                busy = int(self._sql(q).strip() or 0)
            except BenchError:
                continue
            self.own["Com_select"] += 1
            self.samples[0] += 1
            self.samples[1] += busy > 0

    def start_sampler(self) -> None:
        self.samples = [0, 0]
        self._stop.clear()
        self._sampler = threading.Thread(target=self._sample, daemon=True)
        self._sampler.start()

    def stop_sampler(self) -> dict:
        """-> how many samples were taken since start_sampler, and in how many another database's
        session was busy."""
        self._stop.set()
        if self._sampler:
            self._sampler.join()
        return {"samples": self.samples[0], "foreign_busy": self.samples[1]}


# ---------------------------------------------------------------- servers


@dataclass
class Server:
    """One server under test. `label` names it in the tables (the binary's file name, or
    `reference`); `backend` is where its data lives (`memory` for the reference)."""

    label: str
    backend: str
    port: int
    work: Path
    db: Database = field(default_factory=Database)
    proc: Optional[subprocess.Popen] = None
    startup_s: float = 0.0

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def _spawn(self, cmd: list[str], env: Optional[dict] = None) -> None:
        if not port_free(self.port):
            raise BenchError(f"port {self.port} is taken: set DURABLE_PORT")
        out = open(self.work / "server.out", "ab")
        err = open(self.work / "server.err", "ab")
        self.proc = subprocess.Popen(cmd, stdout=out, stderr=err, env=env, start_new_session=True)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self.proc = None

    def check_alive(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            tail = (self.work / "server.err").read_text(errors="replace")[-600:]
            raise BenchError(f"{self.label} ({self.backend}) is not running: {tail}")


class AntlerServer(Server):
    def __init__(self, binary: Path, label: str, port: int, work: Path, db: Database):
        super().__init__(label, db.backend, port, work, db)
        self.binary = binary

    def start(self) -> None:
        data = self.work / "data"
        shutil.rmtree(data, ignore_errors=True)
        data.mkdir(parents=True)
        self.db.create()
        cfg = self.work / "config.yaml"
        cfg.write_text(self.db.config())
        self._spawn([str(self.binary), "serve", "--host", "127.0.0.1", "--port", str(self.port),
                     "--data-dir", str(data), "--config", str(cfg)])
        self.startup_s = wait_ok(self.port, self.proc, 30, f"{self.label} ({self.backend})")

    def stop(self) -> None:
        super().stop()
        self.db.drop()


class ReferenceServer(Server):
    """langgraph-api in-memory through ../shared/bench/servers/start-lg.sh (it execs
    `langgraph dev`, so the pid is the server's), from a fresh copy of the peer's graphs."""

    def __init__(self, harness: Path, venv: Path, port: int, work: Path):
        super().__init__("reference", "memory", port, work)
        self.harness, self.venv = harness, venv

    def start(self) -> None:
        app = self.work / "app"
        shutil.rmtree(app, ignore_errors=True)
        env = dict(os.environ, PORT=str(self.port), LG_VENV=str(self.venv), APP_DIR=str(app))
        self._spawn(["bash", str(self.harness / "servers" / "start-lg.sh")], env=env)
        self.startup_s = wait_ok(self.port, self.proc, 90, "reference")


def scratch_dir(parent: Path, name: str) -> Path:
    parent.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=f"{name}-", dir=parent))


# ---------------------------------------------------------------- oha


@dataclass
class OhaResult:
    raw: dict
    runs: int
    seconds: float
    p50_ms: float
    p99_ms: float


def oha(oha_bin: str, url: str, body: dict, conc: int, duration: str, regex: bool) -> OhaResult:
    """One oha window of POSTs; waits for the requests in flight at the deadline, so every run
    started is counted (and finished) inside the window. Any non-200 answer or error raises."""
    cmd = [oha_bin, "-z", duration, "-c", str(conc), "--no-tui", "--output-format", "json",
           "--wait-ongoing-requests-after-deadline", "-m", "POST",
           "-H", "content-type: application/json", "-d", json.dumps(body)]
    cmd += ["--rand-regex-url", url] if regex else [url]
    raw = json.loads(_run(cmd))
    codes = raw.get("statusCodeDistribution") or {}
    errors = raw.get("errorDistribution") or {}
    bad = {k: v for k, v in codes.items() if k != "200"}
    if bad or errors:
        raise BenchError(f"oha c={conc} {url[:60]}: non-200 {bad} errors {errors}")
    runs = int(codes.get("200", 0))
    if runs == 0:
        raise BenchError(f"oha c={conc} {url[:60]}: no run completed")
    pct = raw["latencyPercentiles"]
    return OhaResult(raw, runs, float(raw["summary"]["total"]), pct["p50"] * 1000, pct["p99"] * 1000)
