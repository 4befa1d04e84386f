"""Many machines: runner processes pulling one batch from PostgreSQL, measured in one run.

Run: ``.venv/bin/python -m bench.workers [--workers 1 3 6] [--per-server 40] [--job-ms 200]``.

Real parts: a throwaway PostgreSQL (tests/support/pg.py), simulated ComfyUI servers
(tests/support/simcomfy.py, one process of 8 per runner, as one GPU host), runner
processes. Jobs are batch rows (zimage-turbo, 64×64, bound by
:func:`comfyfn.batch.queued.enqueue` beforehand) added to the store in one transaction once
every runner has registered; the clock runs from that insert to the last row stored
``succeeded`` (outputs written to a folder).

- efficiency: ``comfyfn worker`` processes × 8 servers at ``--job-ms`` jobs: rows done per
  second over the servers' combined limit (servers / job time); goal ≥ 0.95;
- model-aware vs FIFO: rows alternating two diffusion models, the servers paying
  ``--load-ms`` whenever the model changes. Model-aware: runners as ``comfyfn worker`` runs
  them (claims prefer rows whose model one of the runner's servers holds; its fleet places
  them there). FIFO: the same runner with both switched off — ``comfyfn worker`` has no
  option for that, so this file's ``--fifo-runner`` mode runs the library's ``Worker`` with
  an empty loaded-model set in its claims and ``FleetSettings(by_model=False)``. Goal ≥ 1.5×;
- claim latency: bench/claims.py's measure (``claim_jobs(limit=1)``) with ``--finished``
  finished jobs in the table (bench/claims.py itself does 1 M).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import httpx

from bench.claims import FILL, claim_latency, percentile
from comfyfn.batch import Row
from comfyfn.batch.queued import enqueue, load_workflow
from comfyfn.fleet import QueuedRow
from comfyfn.jobs.store import Store
from tests.support.checkout import module_env
from tests.support.pg import Postgres
from tests.support.simulated import SIMCOMFY

SERVERS_PER_RUNNER = 8
MODELS = ("z_image_turbo_bf16.safetensors", "z_image_bf16.safetensors")


class Collected:
    """A stand-in store that keeps the bound rows, so the real insert can be timed alone."""

    def __init__(self) -> None:
        self.rows: list[QueuedRow] = []

    def add_batch_jobs(self, batch: str, rows: Sequence[QueuedRow]) -> int:
        self.rows += rows
        return len(rows)

    def batch_progress(self, batch: str) -> tuple[int, int]:
        return 0, 0

    def batch_finished(
        self, batch: str, since: float | None = None
    ) -> list[tuple[str, str | None, float]]:
        return []

    def batch_jobs(self, job_ids: Any) -> list[tuple[Any, list[str]]]:
        return []


def bound_rows(count: int, output: Path, two_models: bool) -> list[QueuedRow]:
    rows = [
        Row(
            i,
            {
                "prompt": f"bench row {i}",
                "width": 64,
                "height": 64,
                "steps": 2,
                **({"model": MODELS[i % 2]} if two_models else {}),
            },
        )
        for i in range(1, count + 1)
    ]
    collected = Collected()
    asyncio.run(enqueue(collected, "bench", rows, load_workflow("zimage-turbo"), str(output)))
    return collected.rows


@contextlib.contextmanager
def servers(count: int, job_ms: float, load_ms: float) -> Iterator[tuple[list[str], Any]]:
    """``count`` simulated servers in a process of their own: their URLs and the process."""
    proc = subprocess.Popen(
        [*SIMCOMFY, "--ports", str(count), "--job-ms", str(job_ms),
         "--load-ms", str(load_ms)],
        stdout=subprocess.PIPE,
        text=True,
        env=module_env(),
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        yield json.loads(proc.stdout.readline())["urls"], proc
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def start_runner(db: str, urls: list[str], name: str, storage: Path, fifo: bool) -> Any:
    if fifo:
        args = ["-m", "bench.workers", "--fifo-runner", "--db", db, "--name", name]
    else:
        args = ["-m", "comfyfn.cli", "worker", "--db", db, "--name", name]
        args += ["--storage", str(storage)]  # API jobs' files (a batch names its own place)
    for url in urls:
        args += ["--server", url]
    log = (storage / f"{name}.log").open("ab")
    return subprocess.Popen(
        [sys.executable, *args], stdout=log, stderr=subprocess.STDOUT, env=module_env()
    )


def loads(urls: list[str]) -> int:
    return sum(httpx.get(f"{u}/simcomfy/counters", timeout=30).json()["loads"] for u in urls)


def run_batch(
    pg: Postgres, runners: int, per_server: int, job_ms: float, load_ms: float, fifo: bool
) -> dict[str, float]:
    """One batch on ``runners`` runner processes × 8 servers: seconds, rows, model loads."""
    db = pg.create_database()
    with tempfile.TemporaryDirectory(prefix="comfyfn-bench-") as tmp, contextlib.ExitStack() as on:
        root = Path(tmp)
        total = runners * SERVERS_PER_RUNNER * per_server
        rows = bound_rows(total, root / "out", two_models=load_ms > 0)
        urls: list[str] = []
        procs = []
        for i in range(runners):
            mine, _ = on.enter_context(servers(SERVERS_PER_RUNNER, job_ms, load_ms))
            urls += mine
            procs.append(start_runner(db, mine, f"r{i}", root, fifo))
        on.callback(_stop, procs)
        with Store(db) as store:
            _wait(lambda: len(store.workers()) == runners, 300, "the runners registered", root)
            before = loads(urls)
            started = time.monotonic()
            store.add_batch_jobs("bench", rows)
            done = store.batch_counts
            _wait(lambda: done("bench").get("succeeded", 0) == total, 900, "the rows done", root)
            seconds = time.monotonic() - started
        return {"seconds": seconds, "rows": total, "servers": len(urls),
                "loads": loads(urls) - before}  # fmt: skip


def _stop(procs: list[Any]) -> None:
    for proc in procs:
        proc.send_signal(signal.SIGTERM)
    for proc in procs:
        proc.wait(timeout=60)


def _wait(check: Any, timeout: float, what: str, logs: Path) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            said = "".join(
                f"--- {log.name}:\n{log.read_text(errors='replace')[-1500:]}\n"
                for log in sorted(logs.glob("r*.log"))
            )
            raise SystemExit(f"bench: {what}: not within {timeout:g} s\n{said}")
        time.sleep(0.1)


def claim_figures(pg: Postgres, finished: int, claims: int) -> tuple[float, float]:
    """bench/claims.py's claim latency (p50, p99 ms) with ``finished`` jobs in the table."""
    with Store(pg.create_database()) as store:
        with store._write() as conn:
            conn.exec_driver_sql(FILL % int(finished))
        for i in range(claims + 10):
            store.create_job(key_id="key_a", workflow="zimage-turbo", params={"i": i},
                             models="m-a" if i % 2 else "m-b")  # fmt: skip
        with store._write() as conn:
            conn.exec_driver_sql("ANALYZE cfn_jobs")
        times = claim_latency(store, claims, 1)
    return statistics.median(times), percentile(times, 0.99)


def fifo_runner(argv: Sequence[str]) -> None:
    """A runner with model-aware claims and placement switched off (see the docstring)."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--db", required=True)
    parser.add_argument("--name", required=True)
    parser.add_argument("--server", action="append", required=True)
    args = parser.parse_args(argv)
    asyncio.run(_fifo_runner(args))


async def _fifo_runner(args: argparse.Namespace) -> None:
    from comfyfn.fleet import Fleet, FleetSettings
    from comfyfn.jobs import Worker, WorkerSettings

    class FifoWorker(Worker):
        def _loaded_models(self) -> set[str]:
            return set()  # claims by priority, then age only

    settings = WorkerSettings(servers=tuple(args.server), worker_id=args.name)
    fleet = Fleet(
        settings.servers,
        FleetSettings(http_timeout=settings.http_timeout, job_timeout=settings.job_timeout,
                      health_interval=1.0, by_model=False),
    )  # fmt: skip
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    with Store(args.db) as store:
        worker = FifoWorker(store, settings, fleet=fleet)
        await worker.start()
        try:
            await stop.wait()
        finally:
            await worker.stop()


def main() -> None:
    if sys.argv[1:2] == ["--fifo-runner"]:
        fifo_runner(sys.argv[2:])
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0] if __doc__ else None)
    parser.add_argument("--workers", type=int, nargs="*", default=[1, 3, 6])
    parser.add_argument("--per-server", type=int, default=40, help="rows per server")
    parser.add_argument("--job-ms", type=float, default=200.0)
    parser.add_argument("--load-ms", type=float, default=1000.0)
    parser.add_argument("--mix-workers", type=int, default=3)
    parser.add_argument("--mix-per-server", type=int, default=20)
    parser.add_argument("--finished", type=int, default=100_000)
    parser.add_argument("--claims", type=int, default=300)
    args = parser.parse_args()
    lines = ["| measure | figure | goal |", "|---|---|---|"]
    with Postgres() as pg:
        for n in args.workers:
            got = run_batch(pg, n, args.per_server, args.job_ms, 0, fifo=False)
            limit = got["servers"] / (args.job_ms / 1000)
            rate = got["rows"] / got["seconds"]
            lines.append(
                f"| efficiency, {n} runner(s) × {SERVERS_PER_RUNNER} servers, "
                f"{args.job_ms:g} ms jobs ({got['rows']:g} rows, {got['seconds']:.1f} s) "
                f"| {rate / limit:.2f} | ≥ 0.95 |"
            )
            print(lines[-1], flush=True)
        mix = {}
        for fifo in (False, True):
            mix[fifo] = run_batch(
                pg, args.mix_workers, args.mix_per_server, args.job_ms, args.load_ms, fifo
            )
            print(f"{'FIFO' if fifo else 'model-aware'}: {mix[fifo]}", flush=True)
        lines.append(
            f"| model-aware vs FIFO, {args.mix_workers} runners × {SERVERS_PER_RUNNER}, two "
            f"models, {args.load_ms:g} ms loads ({mix[False]['seconds']:.1f} s vs "
            f"{mix[True]['seconds']:.1f} s; loads {mix[False]['loads']:g} vs "
            f"{mix[True]['loads']:g}) | {mix[True]['seconds'] / mix[False]['seconds']:.2f}× "
            "| ≥ 1.5× |"
        )
        p50, p99 = claim_figures(pg, args.finished, args.claims)
        lines.append(
            f"| claim latency, {args.finished:,} finished jobs (p50 / p99) "
            f"| {p50:.2f} / {p99:.2f} ms | < 5 ms |"
        )
    print("\n".join(lines))


if __name__ == "__main__":
    main()
