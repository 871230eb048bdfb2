"""Summary of a `durable.sh` results directory: one table per backend, medians over rounds (with
[min-max] when there are several), ratios per round (Antler / reference and stateful / stateless
are taken within a round, then their median is shown), as markdown.

    python3 scripts/bench/durable_report.py RESULTS_DIR      (re-renders summary.md from raw/)
"""

from __future__ import annotations

import json
import statistics
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

Session = dict  # kind ("throughput" / "growth") -> that session's result, for one server and round
Getter = Callable[[Session, Optional[Session]], Optional[float]]


def load(raw_dir: Path) -> tuple[dict, dict]:
    """-> ({(label, backend): {round: Session}}, {round: load averages})."""
    servers: dict = {}
    loads: dict = {}
    for f in sorted(raw_dir.glob("*.session.json")):
        d = json.loads(f.read_text())
        servers.setdefault((d["label"], d["backend"]), {}).setdefault(d["round"], {})[d["kind"]] = d["result"]
        loads.setdefault(d["round"], []).extend([d["load_start"], d["load_end"]])
    return servers, loads


def _get(s: Optional[Session], *path):
    cur = s
    for p in path:
        if not isinstance(cur, dict) or p not in cur:
            return None
        cur = cur[p]
    return cur


def win(name: str, *keys: str) -> Getter:
    return lambda s, ref: _get(s, "throughput", "windows", name, *keys)


def per_run(name: str, *keys: str) -> Getter:
    def g(s: Session, ref) -> Optional[float]:
        vals = [_get(s, "throughput", "windows", name, "per_run", k) for k in keys]
        return None if any(v is None for v in vals) else sum(vals)
    return g


def ratio(num: Getter, den: Getter) -> Getter:
    def g(s: Session, ref) -> Optional[float]:
        a, b = num(s, ref), den(s, ref)
        return None if a is None or not b else a / b
    return g


def vs_ref(get: Getter) -> Getter:
    def g(s: Session, ref) -> Optional[float]:
        a, b = get(s, ref), (get(ref, None) if ref else None)
        return None if a is None or not b else a / b
    return g


def grow(phase: str, kind: str, key: str) -> Getter:
    return lambda s, ref: _get(s, "growth", phase, kind, key)


def wait_minus_get(phase: str) -> Getter:
    def g(s: Session, ref) -> Optional[float]:
        a, b = grow(phase, "wait", "cpu_ms_per_run")(s, ref), grow(phase, "state_get", "cpu_ms_per_run")(s, ref)
        return None if a is None or b is None else a - b
    return g


@dataclass
class Row:
    title: str
    get: Getter
    fmt: str = "{:,.1f}"
    target: str = ""
    ref: bool = True  # shown for the reference too


def throughput_rows(concs: list[int], sc: int) -> list[Row]:
    rows, stateless = [], f"stateless_c{sc}"
    for c in concs:
        w = f"stateful_c{c}"
        rows += [Row(f"stateful runs/s, c={c}", win(w, "runs_per_s")),
                 Row(f"stateful p50 ms, c={c}", win(w, "p50_ms"), "{:,.2f}"),
                 Row(f"stateful p99 ms, c={c}", win(w, "p99_ms"), "{:,.2f}"),
                 Row(f"server CPU ms / stateful run, c={c}", win(w, "cpu_ms_per_run"), "{:,.2f}")]
    top = f"stateful_c{max(concs)}"
    rows += [Row(f"stateless `/runs/wait` runs/s, c={sc}", win(stateless, "runs_per_s")),
             Row(f"server CPU ms / stateless run, c={sc}", win(stateless, "cpu_ms_per_run"), "{:,.3f}"),
             Row(f"stateful c={max(concs)} ÷ stateless c={sc}",
                 ratio(win(top, "runs_per_s"), win(stateless, "runs_per_s")), "{:.1%}", "≥ 50%"),
             Row(f"Antler ÷ reference, stateful c={max(concs)}", vs_ref(win(top, "runs_per_s")), "{:.1f}x",
                 "≥ 10x (goal 25x)", ref=False)]
    return rows


def growth_rows(runs: int, window: int) -> list[Row]:
    early, late = f"runs 1-{window}", f"runs {runs - window + 1}-{runs}"
    rows = []
    for kind, what in (("stream", "`runs/stream` (updates)"), ("wait", "`runs/wait`")):
        rows += [Row(f"{what} CPU ms / run, {early}", grow("early", kind, "cpu_ms_per_run"), "{:,.2f}", ref=False),
                 Row(f"{what} CPU ms / run, {late}", grow("late", kind, "cpu_ms_per_run"), "{:,.2f}", ref=False),
                 Row(f"{what} CPU late ÷ early",
                     ratio(grow("late", kind, "cpu_ms_per_run"), grow("early", kind, "cpu_ms_per_run")),
                     "{:.2f}x", "≤ 1.3x (goal 1.2x)" if kind == "stream" else "", ref=False),
                 Row(f"{what} response bytes / run, {early} · {late}", _pair(
                     grow("early", kind, "bytes_per_request"), grow("late", kind, "bytes_per_request")),
                     "{}", ref=False)]
    rows += [Row(f"`GET /threads/{{id}}/state` CPU ms, after {early} · {late}",
                 _pair(grow("early", "state_get", "cpu_ms_per_run"), grow("late", "state_get", "cpu_ms_per_run"),
                       "{:,.2f}"), "{}", ref=False),
             Row(f"`runs/wait` minus GET state CPU ms / run, {early}", wait_minus_get("early"), "{:,.2f}", ref=False),
             Row(f"`runs/wait` minus GET state CPU ms / run, {late}", wait_minus_get("late"), "{:,.2f}", ref=False),
             Row("`runs/wait` minus GET state, late ÷ early", ratio(wait_minus_get("late"), wait_minus_get("early")),
                 "{:.2f}x", "≤ 1.3x", ref=False)]
    return rows


def _pair(a: Getter, b: Getter, fmt: str = "{:,.0f}") -> Getter:
    """Two figures in one cell: formatted here (the median is taken per figure by `_cell_pair`)."""
    def g(s: Session, ref):
        x, y = a(s, ref), b(s, ref)
        return None if x is None or y is None else (x, y, fmt)
    return g


def counter_rows(backend: str, concs: list[int], pg_statements: bool) -> list[Row]:
    rows = []
    for c in sorted({min(concs), max(concs)}):
        w = f"stateful_c{c}"
        if backend == "postgres":
            rows.append(Row(f"commits / run, c={c} (pg xact_commit)", per_run(w, "db.xact_commit"), "{:.2f}",
                            "≤ 2" if c == max(concs) else "", ref=False))
            if pg_statements:
                rows.append(Row(f"statements / run, c={c} (pg_stat_statements)", per_run(w, "db.statements"),
                                "{:.1f}", ref=False))
            else:
                rows.append(Row(f"rows written / run, c={c} (tup_inserted+updated+deleted; proxy)",
                                per_run(w, "db.tup_inserted", "db.tup_updated", "db.tup_deleted"), "{:.1f}", ref=False))
        elif backend == "mysql":
            rows += [Row(f"commits / run, c={c} (Com_commit)", per_run(w, "db.Com_commit"), "{:.2f}",
                         "≤ 2" if c == max(concs) else "", ref=False),
                     Row(f"engine commits / run, c={c} (Handler_commit)", per_run(w, "db.Handler_commit"), "{:.1f}",
                         ref=False),
                     Row(f"statements / run, c={c} (Questions)", per_run(w, "db.Questions"), "{:.1f}", ref=False),
                     Row(f"DML + SELECT / run, c={c} (Com_insert/update/delete/select/replace)",
                         per_run(w, "db.Com_insert", "db.Com_update", "db.Com_delete", "db.Com_select",
                                 "db.Com_replace", "db.Com_insert_select"), "{:.1f}", ref=False),
                     Row(f"other clients busy on the server during c={c}: samples busy · taken",
                         _pair(win(w, "mysql_sampler", "foreign_busy"), win(w, "mysql_sampler", "samples")),
                         "{}", "0", ref=False)]
        else:
            rows.append(Row(f"storage bytes written / run, c={c} (/proc io write_bytes)",
                            per_run(w, "io.write_bytes"), "{:,.0f}", ref=False))
    return rows


def _cell(vals: list, fmt: str) -> str:
    vals = [v for v in vals if v is not None]
    if not vals:
        return "—"
    if isinstance(vals[0], tuple):
        f = vals[0][2]
        return " · ".join(_cell([v[i] for v in vals], f) for i in (0, 1))
    med = fmt.format(statistics.median(vals))
    if len(vals) == 1:
        return med
    return f"{med} [{fmt.format(min(vals))}–{fmt.format(max(vals))}]"


def _median(vals: list) -> Optional[float]:
    vals = [v for v in vals if v is not None and not isinstance(v, tuple)]
    return statistics.median(vals) if vals else None


def backend_table(backend: str, servers: dict, labels: list[str], rows: list[Row]) -> str:
    ref = servers.get(("reference", "memory"), {})
    cols = (["reference"] if ref else []) + labels
    ab = len(labels) > 1
    head = ["figure"] + cols + ([f"{labels[-1]} ÷ {labels[0]}"] if ab else []) + ["target"]
    out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in rows:
        cells, meds = [], {}
        for label in cols:
            sess = ref if label == "reference" else servers.get((label, backend), {})
            if label == "reference" and not row.ref:
                cells.append("—")
                continue
            vals = [row.get(s, ref.get(r)) for r, s in sorted(sess.items())]
            cells.append(_cell(vals, row.fmt))
            meds[label] = _median(vals)
        if ab:
            a, b = meds.get(labels[0]), meds.get(labels[-1])
            cells.append("—" if not a or b is None else f"{b / a:.2f}")
        out.append("| " + " | ".join([row.title] + cells + [row.target]) + " |")
    return "\n".join(out)


def _lo_hi(loads: list[str]) -> str:
    by_1min = sorted(loads, key=lambda x: float(x.split()[0]))
    return f"{by_1min[0]} … {by_1min[-1]}"


def render(results: Path, meta: dict) -> str:
    servers, loads = load(results / "raw")
    labels = meta["labels"]
    concs = meta["concurrencies"]
    vs = "" if meta.get("skip_ref") else " vs the reference"
    parts = [f"# Durable path: {', '.join(labels)}{vs} ({meta['stamp']})", "",
             f"Command: `{meta['command']}`", "",
             f"Rounds: {meta['rounds']} · window {meta['duration']} per concurrency · {meta['threads']} threads · "
             f"growth: {meta['growth_runs']} runs per thread, windows of {meta['growth_window']} · "
             f"host {meta['host']}", "",
             "Load average (1/5/15 min) per round, at each session's start and end: " + "; ".join(
                 f"round {r}: {_lo_hi(v)}" for r, v in sorted(loads.items())), ""]
    for backend in meta["backends"]:
        rows = throughput_rows(concs, meta["stateless_c"])
        if meta["growth_runs"]:
            rows += growth_rows(meta["growth_runs"], meta["growth_window"])
        rows += counter_rows(backend, concs, meta.get("pg_statements", False))
        parts += [f"## {backend}", "", backend_table(backend, servers, labels, rows), ""]
    parts += [NOTES]
    return "\n".join(parts)


NOTES = """Notes: medians over rounds, [min–max] across rounds. Ratios with the reference are taken
within each round, then their median is shown. The reference is langgraph-api in-memory (not
durable), the same figures in every backend's table. CPU is utime+stime of the server's process
tree from /proc. Growth: two fresh threads per session, one driven by `runs/stream`
(`stream_mode: updates`), one by `runs/wait` (and read with `GET /threads/{id}/state`, whose cost
is the O(state) read + serialisation of the response a `runs/wait` also pays: "wait minus GET
state" estimates a run's cost without its response); runs between the two windows are real
`runs/stream` runs, unmeasured. PostgreSQL counters come from pg_stat_database of the fresh
database (`xact_commit` counts every transaction, read-only ones and connection start-ups
included); MariaDB's are server-wide `SHOW GLOBAL STATUS` deltas, minus this harness's own
statements; a sampler (once a second) counts the windows' moments when another database's session
was busy (the "other clients" row: the figures are only clean when it is 0). SQLite's statements
are not visible from outside the process: its table gives the bytes the server wrote to storage.
"""


def main() -> None:
    results = Path(sys.argv[1])
    meta = json.loads((results / "meta.json").read_text())
    text = render(results, meta)
    (results / "summary.md").write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
