"""Gateway overhead: requests/s and added latency (p50/p99) over a direct client call.

Run: ``.venv/bin/python bench/gateway_latency.py [--levels 1 8 32]``.

The same tiny Z-Image job (64 px, 1 step, tiny random weights on the CPU engine, a new seed
each time) is made at 1, 8 and 32 concurrent callers, side by side in one run:

- direct: ``comfyfn.AsyncClient.generate`` against the engine;
- gateway: the official ``openai`` SDK's ``images.generate`` against ``comfyfn serve``
  (b64_json), which queues a job, runs it on the same engine and answers with the image.

Both are bound by the one engine; the difference is what the gateway adds.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from gateway_proc import Gateway, make_key  # noqa: E402
from openai import AsyncOpenAI  # noqa: E402

import comfyfn  # noqa: E402
from comfyfn.engine import Engine  # noqa: E402

_seed = itertools.count(int(time.time()))


async def level(call, concurrency: int, total: int) -> tuple[float, list[float]]:
    latencies: list[float] = []
    queue = asyncio.Queue()
    for _ in range(total):
        queue.put_nowait(None)

    async def worker() -> None:
        while not queue.empty():
            queue.get_nowait()
            start = time.perf_counter()
            await call()
            latencies.append(time.perf_counter() - start)

    start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return total / (time.perf_counter() - start), latencies


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def run(url: str, gateway: Gateway, key: str, levels: list[int]) -> None:
    sdk = AsyncOpenAI(base_url=f"{gateway.url}/v1", api_key=key, max_retries=0)
    async with comfyfn.AsyncClient(url) as client:

        async def direct() -> None:
            await client.generate("灯笼", seed=next(_seed), size=(64, 64), steps=1)

        async def through_gateway() -> None:
            await sdk.images.generate(
                model="zimage-turbo",
                prompt="灯笼",
                size="64x64",
                response_format="b64_json",
                extra_body={"seed": next(_seed), "steps": 1},
            )

        await direct()
        await through_gateway()
        print("tiny Z-Image jobs (64 px, 1 step, CPU engine); gateway vs direct, same run:")
        for n in levels:
            total = max(20, 3 * n)
            d_rps, d_lat = await level(direct, n, total)
            g_rps, g_lat = await level(through_gateway, n, total)
            print(
                f"  {n:2d} concurrent: direct {d_rps:6.2f} req/s p50 {pct(d_lat, 0.5) * 1000:6.0f}"
                f" ms p99 {pct(d_lat, 0.99) * 1000:6.0f} ms | gateway {g_rps:6.2f} req/s "
                f"p50 {pct(g_lat, 0.5) * 1000:6.0f} ms p99 {pct(g_lat, 0.99) * 1000:6.0f} ms | "
                f"rps ratio {g_rps / d_rps:.2f}, added p50 "
                f"{(pct(g_lat, 0.5) - pct(d_lat, 0.5)) * 1000:+.0f} ms, added p99 "
                f"{(pct(g_lat, 0.99) - pct(d_lat, 0.99)) * 1000:+.0f} ms "
                f"(median direct {statistics.median(d_lat) * 1000:.0f} ms)"
            )


def main() -> None:
    warnings.simplefilter("ignore")
    parser = argparse.ArgumentParser()
    parser.add_argument("--levels", type=int, nargs="+", default=[1, 8, 32])
    args = parser.parse_args()
    engine = Engine("bench-gw")
    url = engine.up().url
    work = Path(tempfile.mkdtemp(prefix="comfyfn-gw-bench-"))
    db = f"sqlite:///{work / 'g.db'}"
    gateway = Gateway([url], db, work / "files", "--prime", "2")
    try:
        key = make_key(db, "bench", rate="1000000/min")
        asyncio.run(run(url, gateway, key, args.levels))
    finally:
        gateway.stop()
        engine.down()


if __name__ == "__main__":
    main()
