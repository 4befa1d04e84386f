"""Gateway overhead: jobs/s and added latency (p50/p99) over direct client calls, same run.

Run: ``.venv/bin/python -m bench.gateway_latency [--levels 1 8 32] [--sleep-ms 300]``.

At 1, 8 and 32 concurrent callers, side by side (four rounds per level, direct-gateway-
gateway-direct, of max(30, 2n) jobs each):

- direct: ``comfyfn.AsyncClient`` against the engine;
- gateway: the official ``openai`` SDK's ``images.generate`` (b64_json) against
  ``comfyfn serve --prime 2`` on the same engine: it queues a job, runs it and answers with
  the image.

Two setups, printed one after the other:

1. GPU time SIMULATED: the Z-Image-Turbo graph with its sampler's output unused and the
   engine's test-only ``ComfyfnSleep`` node (``--sleep-ms`` per job) between an image made
   from the seed and the ``SaveImage``. ComfyUI runs only the sleep chain, so the engine
   uses no CPU and the gateway does not compete with it; every job has a new seed, so none
   is served from ComfyUI's cache. This is the figure the gateway's overhead is judged on.
2. The tiny Z-Image job itself (64 px, 1 step, tiny random weights) on the CPU engine, which
   shares the two cores with the gateway.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import tempfile
import time
import warnings
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from openai import AsyncOpenAI

import comfyfn
from comfyfn.engine import Engine
from comfyfn.workflow import Workflow, zimage_turbo
from tests.support.gateway_proc import Gateway, make_key

_seed = itertools.count(int(time.time() * 1000) % 8_000_000)  # < 2**24: also a valid color


def sleep_graph(milliseconds: int) -> dict[str, Any]:
    """Z-Image-Turbo's graph whose output is ``ComfyfnSleep`` over an image colored by the
    seed (the sampler chain stays, unused, so every Z-Image parameter is still there)."""
    graph = zimage_turbo().to_api()
    sampler = next(i for i, n in graph.items() if n["class_type"] == "KSampler")
    save = next(i for i, n in graph.items() if n["class_type"] == "SaveImage")
    graph["90"] = {"class_type": "PrimitiveInt", "inputs": {"value": 0}}
    graph[sampler]["inputs"]["seed"] = ["90", 0]
    graph["91"] = {
        "class_type": "EmptyImage",
        "inputs": {"width": 64, "height": 64, "batch_size": 1, "color": ["90", 0]},
    }
    graph["92"] = {
        "class_type": "ComfyfnSleep",
        "inputs": {"images": ["91", 0], "milliseconds": milliseconds, "steps": 4},
    }
    graph[save]["inputs"]["images"] = ["92", 0]
    return graph


async def level(
    call: Callable[[], Awaitable[None]], concurrency: int, total: int
) -> tuple[float, list[float]]:
    """Run ``total`` calls with ``concurrency`` callers: (seconds, latencies)."""
    latencies: list[float] = []
    tokens = iter(range(total))

    async def caller() -> None:
        for _ in tokens:
            start = time.perf_counter()
            await call()
            latencies.append(time.perf_counter() - start)

    start = time.perf_counter()
    await asyncio.gather(*(caller() for _ in range(concurrency)))
    return time.perf_counter() - start, latencies


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def compare(
    title: str,
    direct: Callable[[], Awaitable[None]],
    gateway: Callable[[], Awaitable[None]],
    levels: list[int],
) -> None:
    """Each level in four rounds, direct-gateway-gateway-direct, so that drifts and the
    engine's periodic pauses (ComfyUI collects garbage every 10 s) fall on both alike."""
    await direct()  # warm both paths (definitions, connections, models)
    await gateway()
    print(title)
    for n in levels:
        jobs = max(30, 2 * n)  # per round: each side runs about as long as ComfyUI's GC period
        seconds = {direct: 0.0, gateway: 0.0}
        latencies: dict[Callable[[], Awaitable[None]], list[float]] = {direct: [], gateway: []}
        for side in (direct, gateway, gateway, direct):
            took, lat = await level(side, n, jobs)
            seconds[side] += took
            latencies[side] += lat
        d_rps, g_rps = 2 * jobs / seconds[direct], 2 * jobs / seconds[gateway]
        d_lat, g_lat = latencies[direct], latencies[gateway]
        d50, d99, g50, g99 = (pct(d_lat, 0.5), pct(d_lat, 0.99), pct(g_lat, 0.5), pct(g_lat, 0.99))
        print(
            f"  {n:2d} concurrent: direct {d_rps:6.2f} jobs/s p50 {d50 * 1000:6.0f} ms "
            f"p99 {d99 * 1000:6.0f} ms | gateway {g_rps:6.2f} jobs/s p50 {g50 * 1000:6.0f} ms "
            f"p99 {g99 * 1000:6.0f} ms | jobs/s ratio {g_rps / d_rps:.2f}, "
            f"added p50 {(g50 - d50) * 1000:+.0f} ms, added p99 {(g99 - d99) * 1000:+.0f} ms",
            flush=True,
        )


async def run(url: str, gateway: Gateway, key: str, levels: list[int], sleep_ms: int) -> None:
    sleep_wf = Workflow.load(sleep_graph(sleep_ms), name="sleep")
    async with (
        AsyncOpenAI(base_url=f"{gateway.url}/v1", api_key=key, max_retries=0) as sdk,
        comfyfn.AsyncClient(url) as client,
    ):

        async def through_gateway(model: str, **extra: Any) -> None:
            await sdk.images.generate(
                model=model,
                prompt="灯笼",
                size="64x64",
                response_format="b64_json",
                extra_body={"seed": next(_seed), **extra},
            )

        async def direct_sleep() -> None:
            await client.run(sleep_wf, seed=next(_seed))

        async def direct_zimage() -> None:
            await client.generate("灯笼", seed=next(_seed), size=(64, 64), steps=1)

        await compare(
            f"GPU time simulated (ComfyfnSleep {sleep_ms} ms per job); gateway vs direct, "
            "same run:",
            direct_sleep,
            lambda: through_gateway("sleep"),
            levels,
        )
        await compare(
            "tiny Z-Image jobs (64 px, 1 step, CPU engine); gateway vs direct, same run:",
            direct_zimage,
            lambda: through_gateway("zimage-turbo", steps=1),
            levels,
        )


def main() -> None:
    warnings.simplefilter("ignore")
    parser = argparse.ArgumentParser()
    parser.add_argument("--levels", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--sleep-ms", type=int, default=300)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="comfyfn-gw-bench-"))
    (work / "sleep.json").write_text(json.dumps(sleep_graph(args.sleep_ms)))
    db = f"sqlite:///{work / 'g.db'}"
    engine = Engine("bench-gw")
    try:
        url = engine.up().url
        workflows = ("-w", "zimage-turbo", "-w", f"sleep={work / 'sleep.json'}")
        gateway = Gateway([url], db, work / "files", "--prime", "2", *workflows)
        try:
            key = make_key(db, "bench", rate="1000000/min")
            asyncio.run(run(url, gateway, key, args.levels, args.sleep_ms))
        finally:
            gateway.stop()
    finally:
        engine.down()


if __name__ == "__main__":
    main()
