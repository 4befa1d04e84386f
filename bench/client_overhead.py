"""Client overhead per job, engine start-up, and Z-Image time per image — measured in one run.

Run: ``make bench`` (or ``.venv/bin/python -m bench.client_overhead [--jobs N]``).

Three ways to run the same trivial job (EmptyImage 64×48 → SaveImage, a new colour each time
so ComfyUI never serves it from cache) side by side against one local engine:

- ``raw``: a minimal hand-written client (POST /prompt, wait on the websocket for
  ``executing null``, GET /history, GET /view) — the floor for any client;
- ``comfyfn``: ``Client.run`` (idempotent submit, events, history race handling, streamed view);
- ``poll-1s``: the seed project's style (submit, poll /history every second).

It prints per-job medians and the ratios comfyfn/raw and poll-1s/comfyfn, then the engine's
start-up time and the warm time per 64 px and 128 px Z-Image image (tiny random weights, CPU).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time
import uuid
import warnings

import httpx
from websockets.asyncio.client import connect

import comfyfn
from comfyfn.engine import Engine
from tests.support.graphs import trivial_graph

_colour = iter(range(int(time.time()) % 10_000_000, 2**24))


async def raw_job(http: httpx.AsyncClient, ws, client_id: str) -> None:
    prompt_id = str(uuid.uuid4())
    await http.post(
        "/prompt",
        json={
            "prompt": trivial_graph(next(_colour)),
            "client_id": client_id,
            "prompt_id": prompt_id,
        },
    )
    while True:
        msg = await ws.recv()
        if isinstance(msg, str):
            data = json.loads(msg)
            if (
                data["type"] == "executing"
                and data["data"].get("node") is None
                and data["data"].get("prompt_id") == prompt_id
            ):
                break
    entry = (await http.get(f"/history/{prompt_id}")).json()[prompt_id]
    for output in entry["outputs"].values():
        for ref in output["images"]:
            await http.get("/view", params=ref)


async def poll_job(http: httpx.AsyncClient) -> None:
    prompt_id = (await http.post("/prompt", json={"prompt": trivial_graph(next(_colour))})).json()[
        "prompt_id"
    ]
    while True:
        await asyncio.sleep(1.0)
        entry = (await http.get(f"/history/{prompt_id}")).json().get(prompt_id)
        if entry:
            for output in entry["outputs"].values():
                for ref in output["images"]:
                    await http.get("/view", params=ref)
            return


async def measure(url: str, jobs: int) -> dict[str, list[float]]:
    times: dict[str, list[float]] = {"raw": [], "comfyfn": [], "poll-1s": []}
    client_id = uuid.uuid4().hex
    ws_url = url.replace("http", "ws") + f"/ws?clientId={client_id}"
    async with (
        httpx.AsyncClient(base_url=url) as http,
        connect(ws_url, max_size=None) as ws,
        comfyfn.AsyncClient(url) as c,
    ):
        await c.run(trivial_graph(next(_colour)))  # warm both paths
        await raw_job(http, ws, client_id)
        for i in range(jobs):  # interleave so drift hits all sides alike
            t = time.perf_counter()
            await raw_job(http, ws, client_id)
            times["raw"].append(time.perf_counter() - t)
            t = time.perf_counter()
            await c.run(trivial_graph(next(_colour)))
            times["comfyfn"].append(time.perf_counter() - t)
            if i < 5:
                t = time.perf_counter()
                await poll_job(http)
                times["poll-1s"].append(time.perf_counter() - t)
    return times


def zimage_times(url: str, size: int, runs: int) -> list[float]:
    out = []
    with comfyfn.Client(url) as c:
        c.generate("warm up", size=(size, size))
        for _ in range(runs):
            t = time.perf_counter()
            c.generate("一位身着旗袍的女性漫步在上海外滩夜景", size=(size, size))
            out.append(time.perf_counter() - t)
    return out


def main() -> None:
    warnings.simplefilter("ignore", comfyfn.ComfyWarning)  # tiny sizes are the point here
    parser = argparse.ArgumentParser()
    parser.add_argument("--jobs", type=int, default=40)
    args = parser.parse_args()
    engine = Engine("bench")
    engine.down()
    t = time.perf_counter()
    state = engine.up()
    startup = time.perf_counter() - t
    try:
        times = asyncio.run(measure(state.url, args.jobs))
        z64, z128 = zimage_times(state.url, 64, 5), zimage_times(state.url, 128, 5)
    finally:
        engine.down()
    med = {k: statistics.median(v) for k, v in times.items()}
    print(f"trivial job, median of {args.jobs} (poll-1s: 5), seconds per job:")
    for name, value in med.items():
        print(f"  {name:8} {value * 1000:8.1f} ms")
    print(
        f"  comfyfn / raw      = {med['comfyfn'] / med['raw']:.2f}x "
        f"(overhead {(med['comfyfn'] - med['raw']) * 1000:+.1f} ms per job)"
    )
    print(f"  poll-1s / comfyfn  = {med['poll-1s'] / med['comfyfn']:.1f}x")
    print(f"engine start-up (up → /system_stats answers): {startup:.1f} s")
    print(
        f"Z-Image-Turbo, tiny weights, CPU, warm, 8 steps: 64 px {statistics.median(z64):.2f} s"
        f" · 128 px {statistics.median(z128):.2f} s per image (median of 5)"
    )


if __name__ == "__main__":
    main()
