"""What input images cost the gateway's memory, measured on a real ``comfyfn serve``
process (its peak resident set, ``VmHWM``): parallel uploads of small files that decode to
a lot (16-bit PNGs) stay bounded, whether the decoded-bytes budget refuses them from their
header or they are decoded, a few at a time. No ComfyUI server is needed (none runs)."""

from __future__ import annotations

import asyncio
import struct
import zlib
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support.gateway_proc import Gateway, auth, make_key, sqlite_gateway

PARALLEL = 12
#: the gateway's peak resident memory must stay under this. Measured: ~85 MiB at start,
#: ~220 MiB after these uploads; before decodes were budgeted and bounded, ~950 MiB (12
#: images of 64-160 MB decoded at once), ~560 MiB of it kept
PEAK_LIMIT = 400 * 1024 * 1024


def png16(width: int, height: int, level: int) -> bytes:
    """A 16-bit RGB PNG of one grey ``level``: ~1,000 decoded bytes per byte of file."""
    row = b"\0" + struct.pack(">HHH", level, level, level) * width
    ihdr = struct.pack(">IIBBBBB", width, height, 16, 2, 0, 0, 0)

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(kind + data)
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)

    idat = zlib.compress(row * height, 9)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def memory_kb(pid: int, field: str) -> int:
    """A ``/proc/<pid>/status`` memory figure (``VmHWM``: peak resident; ``VmRSS``), in kB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1])
    raise AssertionError(f"no {field} in /proc/{pid}/status")


@pytest.fixture(scope="module")
def gw(tmp_path_factory) -> Iterator[Gateway]:
    root = tmp_path_factory.mktemp("upload-memory")
    # nothing listens on port 9: the gateway is alive (/healthz) but runs no job
    with sqlite_gateway(["http://127.0.0.1:9"], root, ready="/healthz") as gateway:
        gateway.key = make_key(gateway.db, "memory")
        yield gateway


async def upload_all(gw: Gateway, images: list[bytes]) -> list[httpx.Response]:
    async with httpx.AsyncClient(timeout=240, headers=auth(gw.key)) as client:
        return await asyncio.gather(
            *(
                client.post(f"{gw.url}/v1/uploads", files={"file": ("in.png", data, "image/png")})
                for data in images
            )
        )


@pytest.mark.parametrize(
    ("size", "status"),
    [((6300, 6300), 422), ((4000, 4000), 201)],
    ids=["over-the-decoded-budget", "within-it"],
)
def test_parallel_16_bit_uploads_keep_the_gateways_memory_bounded(gw, size, status):
    # (the over-budget ones are the probe's: ~230 KB each, 39.7 Mpx, 159 MB decoded)
    width, height = size
    images = [png16(width, height, level=1000 * i + 1) for i in range(PARALLEL)]
    answers = asyncio.run(upload_all(gw, images))
    assert [a.status_code for a in answers] == [status] * PARALLEL, answers[0].text
    if status == 422:
        assert {a.json()["error"]["param"] for a in answers} == {"file"}
        assert "decodes to" in answers[0].json()["error"]["message"]
    peak = memory_kb(gw.proc.pid, "VmHWM") * 1024
    assert peak < PEAK_LIMIT, f"the gateway's peak memory was {peak / 2**20:.0f} MiB"
