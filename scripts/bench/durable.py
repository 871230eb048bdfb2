"""Driver of `durable.sh` (run that: it installs oha and the reference peer when missing).

    python3 scripts/bench/durable.py [--rounds N] [--backends sqlite,postgres,mysql] [--skip-ref] BIN [BIN2 ...]

Each round measures every server in turn, each session on a fresh start (fresh data dir, fresh
database): the reference (throughput only), then per backend each binary (throughput, then
growth); binaries alternate order from round to round (A B, B A, ...). Raw JSON goes to
RESULTS/durable-<stamp>/raw/, the summary to summary.md there (and stdout).
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import signal
import socket
import sys
import time
from pathlib import Path

from durable_lib import (
    AntlerServer,
    BenchError,
    Database,
    MySql,
    Postgres,
    ReferenceServer,
    Server,
    load_average,
    log,
    scratch_dir,
)
from durable_measure import Knobs, growth_session, throughput_session
from durable_report import render

HERE = Path(__file__).resolve().parent
BACKENDS = ("sqlite", "postgres", "mysql")


def parse_args() -> argparse.Namespace:
    env = os.environ.get
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("bins", nargs="+", metavar="BIN", help="antler binaries (labelled by file name)")
    ap.add_argument("--rounds", type=int, default=int(env("ROUNDS", "3")))
    ap.add_argument("--backends", default=env("BACKENDS", ",".join(BACKENDS)))
    ap.add_argument("--skip-ref", action="store_true", default=env("SKIP_REF", "0") == "1")
    ap.add_argument("--duration", default=env("DURATION", "8s"), help="oha window per concurrency")
    ap.add_argument("--concurrencies", default=env("CONCURRENCIES", "1 8 32"))
    ap.add_argument("--stateless-c", type=int, default=int(env("STATELESS_C", "32")))
    ap.add_argument("--threads", type=int, default=int(env("THREADS", "64")))
    ap.add_argument("--growth-runs", type=int, default=int(env("GROWTH_RUNS", "1000")), help="0: no growth")
    ap.add_argument("--growth-window", type=int, default=int(env("GROWTH_WINDOW", "100")))
    ap.add_argument("--growth-rounds", type=int, default=int(env("GROWTH_ROUNDS", "0")),
                    help="measure growth in the first K rounds only (0: every round)")
    ap.add_argument("--results", default=env("RESULTS", str(HERE / "results")))
    a = ap.parse_args()
    a.backends = [b.strip() for b in a.backends.split(",") if b.strip()]
    a.concurrencies = [int(c) for c in a.concurrencies.replace(",", " ").split()]
    if any(b not in BACKENDS for b in a.backends):
        ap.error(f"--backends: one of {BACKENDS}")
    if a.growth_runs and a.growth_runs < 2 * a.growth_window:
        ap.error("--growth-runs must be 0 or at least twice --growth-window")
    return a


def labels_for(bins: list[Path]) -> list[str]:
    """The file name; the last two path parts where names clash; then a #n suffix."""
    names = [b.name for b in bins]
    if len(set(names)) < len(names):
        names = [f"{b.parent.name}/{b.name}" for b in bins]
    if len(set(names)) < len(names):
        names = [f"{n}#{i + 1}" for i, n in enumerate(names)]
    return names


class Plan:
    """What one run measures, and where it writes."""

    def __init__(self, a: argparse.Namespace):
        self.a = a
        self.stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
        self.out = Path(a.results) / f"durable-{self.stamp}"
        self.raw = self.out / "raw"
        self.raw.mkdir(parents=True)
        self.work = scratch_dir(Path(os.environ.get("TMPDIR", "/tmp")), f"durable-{self.stamp}")
        self.bins = [Path(b).resolve() for b in a.bins]
        for b in self.bins:
            if not os.access(b, os.X_OK):
                raise BenchError(f"not an executable: {b}")
        self.labels = labels_for(self.bins)
        self.knobs = Knobs(oha=os.environ.get("OHA", "oha"), duration=a.duration,
                           concurrencies=tuple(a.concurrencies), stateless_c=a.stateless_c, threads=a.threads,
                           growth_runs=a.growth_runs, growth_window=a.growth_window, raw_dir=self.raw)
        self.port = int(os.environ.get("DURABLE_PORT", "2061"))
        self.ref_port = int(os.environ.get("DURABLE_REF_PORT", "2062"))
        self.pg_base = os.environ.get("PG_BASE", "postgres://postgres@127.0.0.1:5432")
        self.my_base = os.environ.get("MYSQL_BASE", "mysql://root@127.0.0.1:3306")
        self.pg_settle = float(os.environ.get("PG_SETTLE", "11"))
        self.n_db = 0
        self.pg_statements = False
        self.current: Server | None = None

    def meta(self) -> dict:
        a = self.a
        return {"stamp": self.stamp, "labels": self.labels, "bins": [str(b) for b in self.bins],
                "backends": a.backends, "rounds": a.rounds, "duration": a.duration,
                "concurrencies": a.concurrencies, "stateless_c": a.stateless_c, "threads": a.threads,
                "growth_runs": a.growth_runs, "growth_window": a.growth_window, "growth_rounds": a.growth_rounds,
                "skip_ref": a.skip_ref,
                "pg_statements": self.pg_statements, "host": socket.gethostname(),
                "command": "scripts/bench/durable.sh " + " ".join(shlex.quote(x) for x in sys.argv[1:])}

    def database(self, backend: str) -> Database:
        self.n_db += 1
        name = f"antler_bench_{os.getpid()}_{self.n_db}"
        if backend == "postgres":
            return Postgres(name, self.pg_base, self.pg_settle)
        if backend == "mysql":
            return MySql(name, self.my_base)
        return Database()

    def antler(self, i: int, backend: str) -> Server:
        work = scratch_dir(self.work, f"{i}-{backend}")
        return AntlerServer(self.bins[i], self.labels[i], self.port, work, self.database(backend))

    def reference(self) -> Server:
        harness = Path(os.environ.get("BENCH_HARNESS", HERE.parent.parent.parent / "shared" / "bench"))
        venv = Path(os.environ.get("LG_VENV", "/work/peers/lg"))
        return ReferenceServer(harness, venv, self.ref_port, scratch_dir(self.work, "reference"))


def run_session(plan: Plan, server: Server, rnd: int, kind: str) -> None:
    """Starts the server fresh, measures one session, stops it, writes its raw JSON."""
    log(f"round {rnd}: {server.label} on {server.backend}: {kind} (load {load_average()})")
    load_start = load_average()
    plan.current = server
    server.start()
    if isinstance(server.db, Postgres):
        plan.pg_statements = server.db.statements
    try:
        prefix = f"r{rnd}-{server.label.replace('/', '_')}-{server.backend}"
        if kind == "throughput":
            result = throughput_session(server, plan.knobs, prefix)
        else:
            result = growth_session(server, plan.knobs)
    finally:
        server.stop()
        plan.current = None
    record = {"round": rnd, "label": server.label, "backend": server.backend, "kind": kind,
              "load_start": load_start, "load_end": load_average(), "startup_s": server.startup_s,
              "result": result}
    (plan.raw / f"{prefix}-{kind}.session.json").write_text(json.dumps(record, indent=1))


def run_round(plan: Plan, rnd: int) -> None:
    a = plan.a
    if not a.skip_ref:
        run_session(plan, plan.reference(), rnd, "throughput")
    order = list(range(len(plan.bins)))
    if rnd % 2 == 0:
        order.reverse()
    for backend in a.backends:
        for i in order:
            run_session(plan, plan.antler(i, backend), rnd, "throughput")
            if a.growth_runs and (a.growth_rounds == 0 or rnd <= a.growth_rounds):
                run_session(plan, plan.antler(i, backend), rnd, "growth")


def main() -> int:
    a = parse_args()
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, lambda *_: sys.exit(143))
    plan = Plan(a)
    log(f"results: {plan.out}")
    (plan.out / "meta.json").write_text(json.dumps(plan.meta(), indent=1))
    try:
        for rnd in range(1, a.rounds + 1):
            run_round(plan, rnd)
    except BenchError as e:
        log(f"FAILED: {e} (server logs kept in {plan.work})")
        return 1
    except (KeyboardInterrupt, SystemExit):
        log(f"interrupted (server logs kept in {plan.work})")
        return 130
    finally:
        if plan.current:
            plan.current.stop()
        (plan.out / "meta.json").write_text(json.dumps(plan.meta(), indent=1))
    if os.environ.get("KEEP_WORK") != "1":
        shutil.rmtree(plan.work, ignore_errors=True)
    text = render(plan.out, plan.meta())
    (plan.out / "summary.md").write_text(text + "\n")
    print(text)
    log(f"summary: {plan.out / 'summary.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
