"""One runner driving many servers: how close to their combined limit, at what cost per job.

Run: ``.venv/bin/python -m bench.scale [--servers 1 4 16 32 64] [--ms 200 50]``.

The servers are SIMULATED (tests/support/simcomfy.py, in a process of their own): each runs one job
at a time, sleeping ``--ms`` per job. The runner is ``comfyfn.batch.Batch`` with its default
settings, in another process, so its CPU time and resident memory are its own; it writes
the images and the manifest to a temporary folder, as ``comfyfn batch`` does. For each
number of servers M, ``--jobs-per-server`` jobs per server (default 20):

- efficiency: jobs/s from the runner's start to its last result, against the servers'
  combined limit (M × 1000 / ms jobs/s);
- HTTP requests per job, counted by the servers (every route, ``/object_info`` included),
  and the websocket connections opened;
- runner CPU seconds per job (the process's, over the whole run; the share of it spent in
  the kernel, and in the garbage collector) and its peak RSS (with the RSS per server over
  that of one server: what each added server costs).

Goals (issue 21): ≥ 0.9 at 64 servers, ≤ 4 requests per job, ≤ 2 ms CPU per job, ≤ 2 MB
per server.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
import warnings
from collections import Counter
from pathlib import Path
from typing import Any

import httpx

from tests.support.checkout import module_env


def _rows(n: int) -> Any:
    from comfyfn.batch import Row

    for i in range(1, n + 1):
        yield Row(i, {"prompt": f"a lighthouse, number {i}", "width": 64, "height": 64, "steps": 2})


async def _drive(urls: list[str], jobs: int, output: str) -> dict[str, float]:
    from comfyfn.batch import Batch

    batch = Batch(_rows(jobs), output, servers=urls)
    collecting = _GcClock()
    before = resource.getrusage(resource.RUSAGE_SELF)
    cpu, start, done = time.process_time(), time.perf_counter(), 0
    async for result in batch.results():
        done += result.state == "done"
    after = resource.getrusage(resource.RUSAGE_SELF)
    return {
        "seconds": time.perf_counter() - start,
        "cpu": time.process_time() - cpu,
        "sys": after.ru_stime - before.ru_stime,
        "gc": collecting.seconds,
        "done": done,
        "rss_mb": after.ru_maxrss / 1024,
    }


class _GcClock:
    """The time the garbage collector takes, from its start and stop callbacks."""

    def __init__(self) -> None:
        self.seconds, self.started = 0.0, 0.0
        gc.callbacks.append(self)

    def __call__(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self.started = time.process_time()
        else:
            self.seconds += time.process_time() - self.started


def runner(urls: list[str], jobs: int) -> None:
    """The runner process: run the batch, print its figures as one JSON line."""
    warnings.simplefilter("ignore")
    where = os.environ.get("COMFYFN_SCALE_OUTPUT") or None
    with tempfile.TemporaryDirectory(prefix="comfyfn-scale-", dir=where) as output:
        figures = asyncio.run(_drive(urls, jobs, output))
    print(json.dumps(figures))


class Servers:
    """``count`` simulated servers in a process of their own."""

    def __init__(self, count: int, ms: int) -> None:
        from tests.support.simulated import SIMCOMFY  # the runner process does without it

        self.process = subprocess.Popen(
            [
                *SIMCOMFY,
                "--ports",
                str(count),
                "--job-ms",
                str(ms),
                "--load-ms",
                "0",
            ],
            stdout=subprocess.PIPE,
            text=True,
            env=module_env(),
        )
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        if not line:
            raise RuntimeError("the simulated servers did not start")
        self.urls: list[str] = json.loads(line)["urls"]

    def counters(self) -> tuple[Counter[str], float]:
        """Requests per route over every server, and the servers' CPU seconds."""
        total: Counter[str] = Counter()
        cpu = 0.0
        with httpx.Client(timeout=30) as http:
            for url in self.urls:
                answer = http.get(f"{url}/simcomfy/counters").json()
                total.update(answer["requests"])
                cpu = answer["cpu_s"]
        total["GET /simcomfy/counters"] -= len(self.urls)
        return total, cpu

    def close(self) -> None:
        self.process.terminate()
        self.process.wait(10)


def _profiler(count: int, ms: int) -> list[str]:
    """With ``--profile DIR``: py-spy records the runner (its CPU samples, collapsed stacks,
    one file per run: ``DIR/runner-M-MSms.txt``); else nothing."""
    folder = os.environ.get("COMFYFN_SCALE_PROFILE")
    if not folder:
        return []
    spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    out = Path(folder) / f"runner-{count}-{ms}ms.txt"
    return [spy, "record", "--format", "raw", "--threads", "--gil", "-o", str(out), "--"]


def measure(count: int, ms: int, per_server: int) -> dict[str, Any]:
    servers = Servers(count, ms)
    try:
        jobs = count * per_server
        _, cpu_before = servers.counters()
        done = subprocess.run(
            [
                *_profiler(count, ms),
                sys.executable,
                "-m",
                "bench.scale",
                "--runner",
                str(jobs),
                *servers.urls,
            ],
            capture_output=True,
            text=True,
            check=True,
            env=module_env(),
        )
        figures: dict[str, Any] = json.loads(
            [line for line in done.stdout.splitlines() if line.startswith("{")][-1]
        )
        requests, cpu_after = servers.counters()
    finally:
        servers.close()
    if figures["done"] != jobs:
        raise RuntimeError(f"only {figures['done']}/{jobs} jobs done")
    limit = count * 1000 / ms
    figures.update(
        servers=count,
        ms=ms,
        jobs=jobs,
        efficiency=jobs / figures["seconds"] / limit,
        requests=sum(v for k, v in requests.items() if k != "GET /ws") / jobs,
        sockets=requests["GET /ws"],
        by_route={k: v for k, v in requests.most_common() if v},
        server_cpu=cpu_after - cpu_before,
    )
    return figures


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--servers", type=int, nargs="+", default=[1, 4, 16, 32, 64])
    parser.add_argument("--ms", type=int, nargs="+", default=[200, 50])
    parser.add_argument("--jobs-per-server", type=int, default=20)
    parser.add_argument("--routes", action="store_true", help="print requests per route")
    parser.add_argument(
        "--output-in", help="where the runner's output folder goes (e.g. /dev/shm: no fsync cost)"
    )
    parser.add_argument(
        "--profile", help="a folder: py-spy records each runner there (its CPU time grows)"
    )
    args = parser.parse_args()
    if args.profile:
        Path(args.profile).mkdir(parents=True, exist_ok=True)
        os.environ["COMFYFN_SCALE_PROFILE"] = args.profile
    if args.output_in:
        os.environ["COMFYFN_SCALE_OUTPUT"] = args.output_in
    print(
        "SIMULATED servers (tests/support/simcomfy.py, one process); the runner: "
        "comfyfn.batch.Batch, default settings, its own process; "
        f"{args.jobs_per_server} jobs per server"
    )
    print(
        f"{'job':>6} {'M':>3} {'jobs':>5} {'efficiency':>10} {'req/job':>8} {'ws':>4}"
        f" {'CPU ms/job':>10} {'sys %':>5} {'GC %':>4} {'RSS MB':>7} {'MB/server':>9}"
        f" {'sim CPU s':>9}"
    )
    for ms in args.ms:
        base: float | None = None
        for count in args.servers:
            f = measure(count, ms, args.jobs_per_server)
            base = f["rss_mb"] if base is None else base
            per_server = (f["rss_mb"] - base) / (count - 1) if count > 1 else 0.0
            print(
                f"{ms:4d}ms {count:3d} {f['jobs']:5d} {f['efficiency']:10.2f}"
                f" {f['requests']:8.2f} {f['sockets']:4d} {f['cpu'] / f['jobs'] * 1000:10.2f}"
                f" {f['sys'] / f['cpu']:5.0%} {f['gc'] / f['cpu']:4.0%} {f['rss_mb']:7.0f}"
                f" {per_server:9.2f} {f['server_cpu']:9.1f}",
                flush=True,
            )
            if args.routes:
                print("       ", json.dumps(f["by_route"]))


if __name__ == "__main__":
    os.environ.setdefault("PYTHONWARNINGS", "ignore")
    if sys.argv[1:2] == ["--runner"]:
        runner(sys.argv[3:], int(sys.argv[2]))
    else:
        main()
