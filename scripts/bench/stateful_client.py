"""Stateful `/threads/{id}/runs/wait` load from Python, reporting how busy the client kept its
workers: a cross-check of oha's figures on a machine where the load generator competes with the
server for CPU (see docs/BENCHMARKS.md §1).

    python3 scripts/bench/stateful_client.py URL [--threads 64] [--concurrency 8] [--rounds 6] [--seconds 5]

Needs httpx (`.ci/.venv/bin/python` has it). Creates its threads, then per round prints runs/s,
p50 and max latency, and `busy` = the share of the round each worker spent waiting on a request
(1.00: the client never idled, so runs/s = concurrency / latency).
"""

from __future__ import annotations

import argparse
import asyncio
import random
import time

import httpx

BODY = {"assistant_id": "echo", "input": {"messages": [{"role": "human", "content": "hi"}]}}


async def worker(client: httpx.AsyncClient, url: str, ids: list[str], lat: list[float], end: float) -> None:
    while time.monotonic() < end:
        t0 = time.monotonic()
        r = await client.post(f"{url}/threads/{random.choice(ids)}/runs/wait", json=BODY)
        if r.status_code != 200:
            raise SystemExit(f"HTTP {r.status_code}: {r.text[:200]}")
        lat.append(time.monotonic() - t0)


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("url")
    ap.add_argument("--threads", type=int, default=64)
    ap.add_argument("--concurrency", type=int, default=8)
    ap.add_argument("--rounds", type=int, default=6)
    ap.add_argument("--seconds", type=float, default=5.0)
    a = ap.parse_args()
    async with httpx.AsyncClient(timeout=60) as client:
        ids = [(await client.post(f"{a.url}/threads", json={})).json()["thread_id"] for _ in range(a.threads)]
        print(f"{'round':<6} {'runs/s':>8} {'p50_ms':>8} {'max_ms':>8} {'busy':>6}")
        for rnd in range(1, a.rounds + 1):
            lat: list[float] = []
            start = time.monotonic()
            end = start + a.seconds
            await asyncio.gather(*(worker(client, a.url, ids, lat, end) for _ in range(a.concurrency)))
            elapsed = time.monotonic() - start
            lat.sort()
            busy = sum(lat) / a.concurrency / elapsed
            print(f"{rnd:<6} {len(lat) / elapsed:8.1f} {lat[len(lat) // 2] * 1000:8.1f} {lat[-1] * 1000:8.0f} {busy:6.2f}")


if __name__ == "__main__":
    asyncio.run(main())
