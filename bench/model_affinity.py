"""Model-aware routing vs shortest-queue routing: jobs/s and model loads, side by side.

Run: ``.venv/bin/python -m bench.model_affinity [--jobs 40] [--job-ms 200] [--load-ms 1000]``.

Two local engines; two workflows that load different (tiny) model files, in interleaved
rows (A, B, A, B…). GPU time and model loads are SIMULATED: the engine's test-only
``ComfyfnLoadModel`` node sleeps ``--load-ms`` whenever the file it is given differs from the
last one it loaded in that server (a GPU swapping weights), and ``ComfyfnSleep`` stands in
for sampling (``--job-ms``). Loads are counted from each server's log (``comfyfn-load:``).

Both ways run the same jobs through ``comfyfn.batch`` (its fleet), with the same priming
(``--prime``; default: adaptive):

- shortest queue: ``BatchSettings(by_model=False)`` (the emptiest server, rows in order);
- model-aware: the default (``comfyfn.fleet.assign`` over the rows waiting in the pool).

Before each routing every server loads a mark file, so both start from the same state; the
mark in the log also says where a run's loads end.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import os
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from comfyfn.batch import Batch, BatchSettings, Row
from comfyfn.client import AsyncClient
from comfyfn.engine import Engine

Routing = Literal["shortest", "models"]
NAMES: dict[Routing, str] = {"shortest": "shortest queue", "models": "model-aware"}
_colour = iter(range(int(time.time() * 1000) % 8_000_000, 2**24))


def loader_graph(ckpt: str, *, load_ms: int, job_ms: int, steps: int = 2) -> dict[str, Any]:
    """A job that loads ``checkpoints/<ckpt>`` (simulated cost) then runs ``job_ms``."""
    return {
        "1": {
            "class_type": "EmptyImage",
            "inputs": {"width": 64, "height": 48, "batch_size": 1, "color": next(_colour)},
        },
        "2": {
            "class_type": "ComfyfnLoadModel",
            "inputs": {"images": ["1", 0], "ckpt_name": ckpt, "load_milliseconds": load_ms},
        },
        "3": {
            "class_type": "ComfyfnSleep",
            "inputs": {"images": ["2", 0], "milliseconds": job_ms, "steps": steps},
        },
        "4": {"class_type": "SaveImage", "inputs": {"images": ["3", 0], "filename_prefix": "aff"}},
    }


@dataclass(frozen=True)
class RunResult:
    seconds: float
    jobs: int
    per_server: dict[str, int]
    slots: dict[str, int]  # slots per server at the end

    @property
    def rate(self) -> float:
        return self.jobs / self.seconds


async def run_batch(
    urls: list[str],
    files: Sequence[str],
    jobs: int,
    job_ms: tuple[int, int],
    load_ms: int,
    *,
    prime: int | None,
    by_model: bool,
) -> RunResult:
    """The mix (A, B, A, B…) through ``comfyfn.batch``: rows bind the loader's file and the
    job time; ``by_model`` turns the fleet's model-aware placement on or off."""
    workflow = loader_graph(files[0], load_ms=load_ms, job_ms=job_ms[0])
    rows = [
        Row(
            i + 1,
            {
                "1.color": next(_colour),
                "2.ckpt_name": files[i % 2],
                "3.milliseconds": job_ms[i % 2],
            },
        )
        for i in range(jobs)
    ]
    settings = BatchSettings(prime=prime, by_model=by_model)
    batch = Batch(rows, None, servers=urls, workflow=workflow, settings=settings)
    per_server = dict.fromkeys(urls, 0)
    start = time.perf_counter()
    async for result in batch.results():
        if result.state != "done" or result.server is None:
            raise RuntimeError(f"row {result.row}: {result.state} {result.error}")
        per_server[result.server] += 1
    slots = {url: batch.pool.slots(url) for url in urls}
    return RunResult(time.perf_counter() - start, jobs, per_server, slots)


MARKS = ("comfyfn_mark_0.safetensors", "comfyfn_mark_1.safetensors")
_marks = itertools.count()
Loads = dict[str, list[str]]


def log_size(engine: Engine) -> int:
    return engine.log_file.stat().st_size


def logged_loads(engine: Engine, offset: int) -> list[str]:
    """Files the test loader logged as loaded since byte ``offset`` of the engine's log."""
    with engine.log_file.open("rb") as fh:
        fh.seek(offset)
        text = fh.read().decode(errors="replace")
    marker = "comfyfn-load: "
    return [line.split(marker, 1)[1].strip() for line in text.splitlines() if marker in line]


def add_model_files(engine: Engine, names: Sequence[str]) -> None:
    """Tiny files in the instance's own ``models/checkpoints`` (ComfyUI lists them at once),
    the two mark files included."""
    folder = engine.base / "models" / "checkpoints"
    folder.mkdir(parents=True, exist_ok=True)
    for name in (*names, *MARKS):
        path = folder / name
        if not path.exists():
            path.write_bytes(os.urandom(64 * 1024))


async def settle(
    clients: dict[str, AsyncClient], engines: Sequence[Engine], offsets: Sequence[int]
) -> Loads:
    """The loads each server logged since its offset: every server loads a mark file (not
    the last it loaded, so it is logged), and the loads before the mark are counted once
    the mark is in the log (within 30 s). It also leaves every server in the same state."""
    mark = MARKS[next(_marks) % 2]
    graph = loader_graph(mark, load_ms=0, job_ms=0, steps=1)
    for client in clients.values():
        await (await client.submit_graph(graph, validate=False)).result()
    deadline = time.monotonic() + 30
    loads: Loads = {}
    for url, engine, offset in zip(clients, engines, offsets, strict=True):
        while mark not in (logged := logged_loads(engine, offset)):
            if time.monotonic() > deadline:
                raise TimeoutError(f"{url} did not log loading {mark} within 30 s")
            await asyncio.sleep(0.05)
        loads[url] = logged[: logged.index(mark)]
    return loads


async def compare(
    clients: dict[str, AsyncClient],
    engines: Sequence[Engine],
    *,
    jobs: int,
    job_ms: tuple[int, int],
    load_ms: int,
    prime: int | None,
    rounds: int,
) -> dict[Routing, list[tuple[RunResult, Loads]]]:
    """Both ways on the same mix, one after the other, ``rounds`` times each."""
    files = ["comfyfn_bench_a.safetensors", "comfyfn_bench_b.safetensors"]
    results: dict[Routing, list[tuple[RunResult, Loads]]] = {r: [] for r in NAMES}
    await settle(clients, engines, [log_size(e) for e in engines])
    for _ in range(rounds):
        for routing in NAMES:
            offsets = [log_size(e) for e in engines]
            result = await run_batch(
                list(clients),
                files,
                jobs,
                job_ms,
                load_ms,
                prime=prime,
                by_model=routing == "models",
            )
            results[routing].append((result, await settle(clients, engines, offsets)))
    return results


class _clients:
    def __init__(self, urls: Sequence[str]) -> None:
        self.urls = urls

    async def __aenter__(self) -> dict[str, AsyncClient]:
        self.clients = {url: AsyncClient(url) for url in self.urls}
        for client in self.clients.values():
            await client.open()
        return self.clients

    async def __aexit__(self, *exc: object) -> None:
        for client in self.clients.values():
            await client.aclose()


def start_engines(names: Sequence[str], files: Sequence[str]) -> tuple[list[Engine], list[str]]:
    engines = [Engine(name) for name in names]
    urls = []
    for engine in engines:
        add_model_files(engine, files)
        urls.append(engine.up().url)
    return engines, urls


def report(title: str, results: dict[Routing, list[tuple[RunResult, Loads]]]) -> None:
    print(title)
    print(f"  {'':24}{'jobs/s':>8}{'seconds':>9}   loads per server   jobs per server")
    for routing, runs in results.items():
        for result, loaded in runs:
            per = "  ".join(f"{len(v):3d}" for v in loaded.values())
            jobs = "  ".join(f"{n:3d}" for n in result.per_server.values())
            print(f"  {NAMES[routing]:24}{result.rate:8.2f}{result.seconds:9.2f}   {per:18} {jobs}")
    rate = {r: sum(res.rate for res, _ in runs) / len(runs) for r, runs in results.items()}
    loads = {
        r: sum(len(v) for _, per in runs for v in per.values()) / len(runs)
        for r, runs in results.items()
    }
    worst = max(len(v) for _, per in results["models"] for v in per.values())
    slots = "/".join(str(n) for res, _ in results["models"] for n in res.slots.values())
    print(
        f"  model-aware: {rate['models'] / rate['shortest']:.2f}x the jobs/s of shortest-queue "
        f"(means of {len(results['models'])} runs); loads per run {loads['models']:.1f} vs "
        f"{loads['shortest']:.1f}; most loads on one server (model-aware): {worst}, distinct "
        f"model sets: 2; slots per server at the end: {slots}"
    )


async def run_all(urls: Sequence[str], engines: Sequence[Engine], args: argparse.Namespace) -> None:
    async with _clients(urls) as clients:
        for job_ms, what in (
            ((args.job_ms, args.job_ms), "equal job times"),
            ((args.job_ms, 3 * args.job_ms), "job times 1:3, like Z-Image-Turbo 8 steps : base 25"),
        ):
            results = await compare(
                clients,
                engines,
                jobs=args.jobs,
                job_ms=job_ms,
                load_ms=args.load_ms,
                prime=args.prime,
                rounds=args.rounds,
            )
            report(
                f"{what}: A {job_ms[0]} ms, B {job_ms[1]} ms; model load {args.load_ms} ms",
                results,
            )


def main() -> None:
    warnings.simplefilter("ignore")
    parser = argparse.ArgumentParser()
    parser.add_argument("--jobs", type=int, default=40)
    parser.add_argument("--job-ms", type=int, default=200, help="simulated GPU ms per job")
    parser.add_argument("--load-ms", type=int, default=1000, help="simulated ms per load")
    parser.add_argument("--prime", type=int, default=None, help="default: adaptive")
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    files = ["comfyfn_bench_a.safetensors", "comfyfn_bench_b.safetensors"]
    engines, urls = start_engines(["bench-affinity-0", "bench-affinity-1"], files)
    print(
        f"SIMULATED GPU time and model loads: {args.jobs} jobs, two model sets interleaved "
        f"(A, B, A, B…), 2 servers, prime {args.prime or 'adaptive'}"
    )
    try:
        asyncio.run(run_all(urls, engines, args))
    finally:
        for engine in engines:
            engine.down()


if __name__ == "__main__":
    os.environ.setdefault("PYTHONWARNINGS", "ignore")
    main()
