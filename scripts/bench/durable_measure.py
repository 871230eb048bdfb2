"""The measurements of `durable.sh`, each on a freshly started server:

- `throughput_session`: stateful `echo` `POST /threads/{id}/runs/wait` on THREADS threads made up
  front (oha, a random thread per request) at each concurrency, then stateless `POST /runs/wait`;
  per window: runs/s, p50/p99, server CPU per run and the database's counters per run.
- `growth_session`: the cost of a run as ONE thread grows (see `growth_session`).

Each returns a JSON-able dict; the caller writes it to the results directory.
"""

from __future__ import annotations

import functools
import json
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

from durable_lib import (
    ECHO_INPUT,
    BenchError,
    Http,
    MySql,
    Server,
    cpu_seconds,
    io_counters,
    load_average,
    log,
    oha,
    rss_kib,
)

STATEFUL_BODY = {"assistant_id": "echo", "input": ECHO_INPUT, "multitask_strategy": "enqueue"}
STATELESS_BODY = {"assistant_id": "echo", "input": ECHO_INPUT}
STREAM_BODY = dict(STATEFUL_BODY, stream_mode="updates")


@dataclass
class Knobs:
    oha: str
    duration: str = "8s"
    concurrencies: tuple = (1, 8, 32)
    stateless_c: int = 32
    threads: int = 64
    growth_runs: int = 1000
    growth_window: int = 100
    raw_dir: Optional[Path] = None


def create_threads(port: int, n: int) -> list[str]:
    h = Http(port)
    try:
        return [h.json("POST", "/threads", {})["thread_id"] for _ in range(n)]
    finally:
        h.close()


class Meter:
    """Server CPU and the database's counters around measurement windows. A reading is taken
    after letting the database's statistics settle (PostgreSQL's lag), and the reading after one
    window is the reading before the next, so back-to-back windows wait only once each.
    `with_db=False`: CPU and /proc I/O only (no settling)."""

    def __init__(self, server: Server, with_db: bool = True):
        self.server, self.with_db = server, with_db
        self.last: Optional[dict] = None

    def read(self) -> dict:
        srv = self.server
        out = {}
        if self.with_db:
            time.sleep(srv.db.settle_seconds)
            out = {f"db.{k}": v for k, v in srv.db.counters().items()}
        if srv.label != "reference":
            out.update({f"io.{k}": float(v) for k, v in io_counters(srv.pid).items()})
        self.last = out
        return out

    def window(self, name: str, work: Callable[[], dict], runs_of: Callable[[dict], int]) -> dict:
        srv, db = self.server, self.server.db
        before = self.last if self.last is not None else self.read()
        sampler = self.with_db and isinstance(db, MySql)
        if sampler:
            db.start_sampler()
        cpu0 = cpu_seconds(srv.pid)
        res = work()
        cpu1 = cpu_seconds(srv.pid)
        if sampler:
            res["mysql_sampler"] = db.stop_sampler()
        srv.check_alive()
        after = self.read()
        runs = runs_of(res)
        res.update(window=name, runs=runs, cpu_ms_per_run=(cpu1 - cpu0) * 1000 / runs, load=load_average(),
                   per_run={k: (after[k] - before[k]) / runs for k in after if k in before})
        return res


def _oha_window(meter: Meter, knobs: Knobs, name: str, url: str, body: dict, c: int, regex: bool) -> dict:
    server = meter.server

    def work() -> dict:
        r = oha(knobs.oha, url, body, c, knobs.duration, regex)
        if knobs.raw_dir:
            (knobs.raw_dir / f"{name}.oha.json").write_text(json.dumps(r.raw))
        return {"concurrency": c, "runs_per_s": r.runs / r.seconds, "p50_ms": r.p50_ms,
                "p99_ms": r.p99_ms, "seconds": r.seconds, "completed": r.runs}

    out = meter.window(name, work, lambda d: d["completed"])
    log(f"  {server.label} {server.backend} {name}: {out['runs_per_s']:.1f} runs/s "
        f"p50 {out['p50_ms']:.1f} ms p99 {out['p99_ms']:.1f} ms cpu {out['cpu_ms_per_run']:.2f} ms/run")
    return out


def throughput_session(server: Server, knobs: Knobs, prefix: str) -> dict:
    base = f"http://127.0.0.1:{server.port}"
    ids = create_threads(server.port, knobs.threads)
    alt = "|".join(ids)
    meter = Meter(server)
    windows = {}
    for c in knobs.concurrencies:
        name = f"stateful_c{c}"
        windows[name] = _oha_window(meter, knobs, f"{prefix}-{name}", f"{base}/threads/({alt})/runs/wait",
                                    STATEFUL_BODY, c, True)
    name = f"stateless_c{knobs.stateless_c}"
    windows[name] = _oha_window(meter, knobs, f"{prefix}-{name}", f"{base}/runs/wait",
                                STATELESS_BODY, knobs.stateless_c, False)
    return {"windows": windows, "rss_kib_end": rss_kib(server.pid)}


# ---------------------------------------------------------------- growth


def _check_stream(raw: bytes) -> None:
    if b"event: error" in raw:
        raise BenchError(f"stream run ended with an error event: {raw[-300:]!r}")


def _check_wait(raw: bytes) -> None:
    body = json.loads(raw)
    if not isinstance(body, dict) or "__error__" in body or "messages" not in body:
        raise BenchError(f"runs/wait answered without the state: {raw[:300]!r}")


def _request_loop(server: Server, n: int, method: str, path: str, body: Optional[dict],
                  check: Callable[[bytes], None]) -> dict:
    h = Http(server.port)
    lat, nbytes = [], 0
    try:
        for _ in range(n):
            t0 = time.monotonic()
            raw = h.request(method, path, body)
            lat.append(time.monotonic() - t0)
            check(raw)
            nbytes += len(raw)
    finally:
        h.close()
    lat.sort()
    return {"requests": n, "bytes_per_request": nbytes / n, "p50_ms": lat[n // 2] * 1000,
            "p99_ms": lat[min(n - 1, int(n * 0.99))] * 1000}


def messages_in(port: int, thread_id: str) -> int:
    h = Http(port)
    try:
        return len(h.json("GET", f"/threads/{thread_id}/state")["values"].get("messages", []))
    finally:
        h.close()


def _growth_windows(server: Server, knobs: Knobs, s_id: str, w_id: str, phase: str) -> dict:
    """The three measured windows of one phase: stream runs on S, wait runs on W, state reads of W."""
    n = knobs.growth_window
    specs = {
        "stream": ("POST", f"/threads/{s_id}/runs/stream", STREAM_BODY, _check_stream, s_id),
        "wait": ("POST", f"/threads/{w_id}/runs/wait", STATEFUL_BODY, _check_wait, w_id),
        "state_get": ("GET", f"/threads/{w_id}/state", None, lambda raw: None, w_id),
    }
    meter, out = Meter(server, with_db=False), {}
    for kind, (method, path, body, check, tid) in specs.items():
        msgs = messages_in(server.port, tid)
        meter.read()
        loop = functools.partial(_request_loop, server, n, method, path, body, check)
        res = meter.window(f"growth_{phase}_{kind}", loop, lambda d: d["requests"])
        res["messages_before"] = msgs
        out[kind] = res
        log(f"  {server.label} {server.backend} growth {phase} {kind}: {msgs} msgs before, "
            f"cpu {res['cpu_ms_per_run']:.2f} ms/req, {res['bytes_per_request']:.0f} B/req")
    return out


def _grow(server: Server, thread_ids: list[str], runs: int) -> None:
    """`runs` unmeasured stream runs on each thread, the threads in parallel: real runs (the same
    checkpoints, run rows and events as measured ones), only cheaper for the client."""
    if runs <= 0:
        return
    errors: list[BaseException] = []

    def one(tid: str) -> None:
        try:
            _request_loop(server, runs, "POST", f"/threads/{tid}/runs/stream", STREAM_BODY, _check_stream)
        except BaseException as e:  # noqa: BLE001 - re-raised below, in the caller's thread
            errors.append(e)

    ts = [threading.Thread(target=one, args=(t,)) for t in thread_ids]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    if errors:
        raise errors[0]


def growth_session(server: Server, knobs: Knobs) -> dict:
    """Two fresh threads, S (`runs/stream`, stream_mode updates) and W (`runs/wait`, plus GET
    state on W). Runs 1..WINDOW of each are measured (the thread holds 2..2*WINDOW messages), then
    both threads are grown with unmeasured runs to GROWTH_RUNS - WINDOW, then runs
    GROWTH_RUNS-WINDOW+1..GROWTH_RUNS are measured (about 2*GROWTH_RUNS messages)."""
    n, w = knobs.growth_runs, knobs.growth_window
    s_id, w_id = create_threads(server.port, 2)
    early = _growth_windows(server, knobs, s_id, w_id, "early")
    t0 = time.monotonic()
    _grow(server, [s_id, w_id], n - 2 * w)
    grow_s = time.monotonic() - t0
    log(f"  {server.label} {server.backend} grew 2 threads by {n - 2 * w} runs in {grow_s:.0f} s")
    late = _growth_windows(server, knobs, s_id, w_id, "late")
    final = {"stream": messages_in(server.port, s_id), "wait": messages_in(server.port, w_id)}
    if final["stream"] != 2 * n or final["wait"] != 2 * n:
        raise BenchError(f"growth threads hold {final} messages, expected {2 * n} each")
    return {"runs": n, "window": w, "early": early, "late": late, "grow_seconds": grow_s,
            "messages_end": final, "rss_kib_end": rss_kib(server.pid)}
