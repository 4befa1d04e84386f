"""Batch benchmarks against local engines, every figure a ratio measured in this run.

Run: ``.venv/bin/python -m bench.batch_throughput [--servers 1 2 4] [--rss-rows 100000]``.

GPU time is SIMULATED: jobs run the engine's test-only ``ComfyfnSleep`` node, which sleeps a
given number of milliseconds in steps (so two CPU cores can stand in for several GPUs).

1. Throughput on 1 and N servers against the server-bound limit (servers / job time), and
   against a seed-style client (submit one job, poll /history every second) on short jobs.
2. Client overhead per job: batch jobs/s on zero-length jobs against the server alone
   (every job posted at once, waiting only for the last).
3. Peak RSS of a ``comfyfn batch`` process over a large input (streamed rows; trivial jobs),
   sampled as it goes: flat means memory does not grow with the input.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
import warnings
from pathlib import Path

import httpx

from comfyfn.batch import Batch, BatchSettings, Row
from comfyfn.engine import Engine
from tests.support.graphs import sleep_graph

_colour = iter(range(int(time.time() * 1000) % 8_000_000, 2**24))


def rows(n: int, ms: int):
    for i in range(1, n + 1):
        yield Row(i, {"1.color": next(_colour), "2.milliseconds": ms})


async def run_batch(urls: list[str], n: int, ms: int, prime: int) -> float:
    wf = sleep_graph(0, milliseconds=ms, steps=2)
    batch = Batch(rows(n, ms), None, servers=urls, workflow=wf, settings=BatchSettings(prime=prime))
    start = time.perf_counter()
    done = 0
    async for result in batch.results():
        done += result.state == "done"
    assert done == n, f"only {done}/{n} done"
    return time.perf_counter() - start


async def seed_style(url: str, n: int, ms: int) -> float:
    """The seed project's loop: one job at a time, poll /history every second."""
    start = time.perf_counter()
    async with httpx.AsyncClient(base_url=url) as http:
        for _ in range(n):
            graph = sleep_graph(next(_colour), milliseconds=ms, steps=2)
            prompt_id = (await http.post("/prompt", json={"prompt": graph})).json()["prompt_id"]
            while True:
                await asyncio.sleep(1.0)
                if (await http.get(f"/history/{prompt_id}")).json().get(prompt_id):
                    break
    return time.perf_counter() - start


async def server_alone(url: str, n: int) -> float:
    """Post n zero-length jobs at once; time until the last is in /history."""
    start = time.perf_counter()
    async with httpx.AsyncClient(base_url=url) as http:
        ids = []
        for _ in range(n):
            graph = sleep_graph(next(_colour), milliseconds=0, steps=1)
            ids.append(
                (
                    await http.post(
                        "/prompt", json={"prompt": graph, "prompt_id": str(uuid.uuid4())}
                    )
                ).json()["prompt_id"]
            )
        while not (await http.get(f"/history/{ids[-1]}")).json():
            await asyncio.sleep(0.005)
    return time.perf_counter() - start


def rss_run(url: str, n: int) -> list[tuple[int, float]]:
    """Run ``comfyfn batch`` over n trivial rows; sample (rows done, RSS MB) as it goes."""
    work = Path(tempfile.mkdtemp(prefix="comfyfn-rss-"))
    wf = work / "wf.json"
    wf.write_text(json.dumps(sleep_graph(0, milliseconds=0, steps=1)))
    src = work / "rows.csv"
    with src.open("w") as fh:
        fh.write("1.color\n")
        for _ in range(n):
            fh.write(f"{next(_colour) % 2**24}\n")
    out = work / "out"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "comfyfn.cli",
            "batch",
            str(src),
            "-o",
            str(out),
            "-w",
            str(wf),
            "-s",
            url,
            "--prime",
            "4",
            "--json",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    samples = []
    import sqlite3

    while proc.poll() is None:
        time.sleep(2)
        try:
            status = Path(f"/proc/{proc.pid}/status").read_text()
            rss = (
                int(
                    next(
                        line.split()[1] for line in status.splitlines() if line.startswith("VmRSS")
                    )
                )
                / 1024
            )
            with sqlite3.connect(out / "manifest.sqlite") as db:
                (done,) = db.execute("SELECT COUNT(*) FROM jobs WHERE state='done'").fetchone()
            samples.append((done, rss))
        except (OSError, StopIteration, sqlite3.Error):
            continue
    return samples


def main() -> None:
    warnings.simplefilter("ignore")
    parser = argparse.ArgumentParser()
    parser.add_argument("--servers", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--jobs", type=int, default=40)
    parser.add_argument("--ms", type=int, default=200, help="simulated GPU ms per job")
    parser.add_argument("--rss-rows", type=int, default=100_000)
    args = parser.parse_args()
    engines = [Engine(f"bench-{i}") for i in range(max(args.servers))]
    urls = [e.up().url for e in engines]
    try:
        print(f"SIMULATED GPU time: {args.ms} ms per job (ComfyfnSleep), {args.jobs} jobs")
        for n in args.servers:
            seconds = asyncio.run(run_batch(urls[:n], args.jobs, args.ms, prime=1))
            rate, limit = args.jobs / seconds, n * 1000 / args.ms
            print(
                f"  {n} server(s): {rate:6.2f} jobs/s, server-bound limit {limit:6.2f} "
                f"→ {rate / limit:.2f} of the limit"
            )
        short = 8
        ours = asyncio.run(run_batch(urls[:1], short, args.ms, prime=1)) / short
        seed = asyncio.run(seed_style(urls[0], short, args.ms)) / short
        print(
            f"  seed-style client (poll /history 1 s): {1 / seed:.2f} jobs/s vs comfyfn "
            f"{1 / ours:.2f} jobs/s → comfyfn is {seed / ours:.1f}x faster (1 server)"
        )
        n0 = 300
        alone = asyncio.run(server_alone(urls[0], n0)) / n0
        batch = asyncio.run(run_batch(urls[:1], n0, 0, prime=4)) / n0
        print(
            f"zero-length jobs ({n0}, 1 server): server alone {alone * 1000:.2f} ms/job, "
            f"comfyfn batch {batch * 1000:.2f} ms/job → overhead "
            f"{(batch - alone) * 1000:+.2f} ms/job ({batch / alone:.2f}x)"
        )
        if args.rss_rows:
            samples = rss_run(urls[0], args.rss_rows)
            if samples:
                shown = samples[:: max(1, len(samples) // 8)] + samples[-1:]
                print(f"RSS of `comfyfn batch` over {args.rss_rows} rows (trivial jobs):")
                for done, rss in shown:
                    print(f"  {done:7d} done: {rss:6.1f} MB")
                first = next((r for d, r in samples if d >= 1000), samples[0][1])
                print(
                    f"  peak {max(r for _, r in samples):.1f} MB; last/at-1000-rows = "
                    f"{samples[-1][1] / first:.2f}x"
                )
    finally:
        for e in engines:
            e.down()


if __name__ == "__main__":
    os.environ.setdefault("PYTHONWARNINGS", "ignore")
    main()
