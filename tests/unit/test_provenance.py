"""Provenance chunks are added without touching pixels and read back, Chinese included."""

from __future__ import annotations

import io
import struct
import tracemalloc
import zlib

import pytest
from PIL import Image as PIL
from PIL.PngImagePlugin import PngImageFile

from comfyfn.provenance import (
    MAX_CHUNK_TEXT,
    MAX_TOTAL_TEXT,
    add_text_chunks,
    read_provenance,
    read_text_chunks,
)
from comfyfn.result import Image


def _png(color=(10, 20, 30)) -> bytes:
    buf = io.BytesIO()
    PIL.new("RGB", (48, 32), color).save(buf, format="PNG")
    return buf.getvalue()


def test_chunks_round_trip_and_pixels_are_unchanged(tmp_path):
    data = _png()
    tagged = add_text_chunks(data, {"comfyfn": '{"prompt": "旗袍"}', "prompt": "{}"})
    assert read_text_chunks(tagged) == {"comfyfn": '{"prompt": "旗袍"}', "prompt": "{}"}
    assert PIL.open(io.BytesIO(tagged)).tobytes() == PIL.open(io.BytesIO(data)).tobytes()
    # Pillow (and so ComfyUI) reads them as well
    read_back = PIL.open(io.BytesIO(tagged))
    assert isinstance(read_back, PngImageFile)
    assert read_back.text["comfyfn"] == '{"prompt": "旗袍"}'


def test_existing_chunks_are_replaced_not_duplicated():
    once = add_text_chunks(_png(), {"prompt": "a"})
    twice = add_text_chunks(once, {"prompt": "b"})
    assert read_text_chunks(twice) == {"prompt": "b"}
    assert twice.count(b"iTXtprompt") == 1


def test_image_save_writes_provenance(tmp_path, sample):
    image = Image(
        sample("zimage_tiny_preview_256.png"),
        "9",
        "z_00001_.png",
        provenance={"prompt": "上海外滩", "seed": 42},
        workflow={"3": {"class_type": "KSampler"}},
    )
    path = image.save(tmp_path)
    assert path.name == "z_00001_.png"
    assert read_provenance(path) == {"prompt": "上海外滩", "seed": 42}
    assert '"KSampler"' in read_text_chunks(path)["prompt"]
    assert (image.width, image.height) == PIL.open(path).size
    assert not list(tmp_path.glob(".tmp-*"))


def _chunk(ctype: bytes, body: bytes) -> bytes:
    crc = zlib.crc32(ctype + body) & 0xFFFFFFFF
    return struct.pack(">I", len(body)) + ctype + body + struct.pack(">I", crc)


def _with_chunks(*chunks: bytes) -> bytes:
    """A real PNG with ``chunks`` put before its IEND (the last 12 bytes)."""
    data = _png()
    return data[:-12] + b"".join(chunks) + data[-12:]


def _deflated_zeros(size: int) -> bytes:
    """``size`` zero bytes deflated, made a MiB at a time (never held inflated)."""
    packer = zlib.compressobj(9)
    block = bytes(2**20)
    return b"".join(packer.compress(block) for _ in range(size // 2**20)) + packer.flush()


def _ztxt(key: bytes, deflated: bytes) -> bytes:
    return _chunk(b"zTXt", key + b"\0\0" + deflated)


def _itxt(key: bytes, deflated: bytes) -> bytes:
    return _chunk(b"iTXt", key + b"\0\1\0\0\0" + deflated)


@pytest.mark.parametrize("chunk", [_ztxt, _itxt], ids=["zTXt", "iTXt"])
def test_a_zlib_bomb_is_refused_without_being_inflated(chunk):
    bomb = _with_chunks(chunk(b"prompt", _deflated_zeros(200 * 2**20)))
    assert len(bomb) < 250_000  # ~204 KB that inflate to 200 MiB
    tracemalloc.start()
    try:
        with pytest.raises(ValueError, match=r"chunk 'prompt' holds over 16 MiB of text"):
            read_text_chunks(bomb)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    # inflating to the bound holds it twice at most (zlib's output blocks, then joined):
    # ~35 MB, where it was 459 MB when the whole text was inflated
    assert peak < 3 * MAX_CHUNK_TEXT


def test_text_chunks_are_bounded_together_too():
    twelve = _deflated_zeros(12 * 2**20)
    png = _with_chunks(*(_ztxt(key, twelve) for key in (b"a", b"b", b"c")))
    assert MAX_TOTAL_TEXT < 36 * 2**20
    with pytest.raises(ValueError, match=r"over 32 MiB of text together \(at 'c'\)"):
        read_text_chunks(png)


def test_a_text_as_long_as_the_bound_is_read_whole():
    png = _with_chunks(_ztxt(b"workflow", _deflated_zeros(MAX_CHUNK_TEXT)))
    assert read_text_chunks(png) == {"workflow": "\0" * MAX_CHUNK_TEXT}


@pytest.mark.parametrize(
    ("chunk", "error"),
    [
        (_ztxt(b"prompt", b"not zlib at all"), "chunk 'prompt' is not valid zlib data"),
        (_ztxt(b"prompt", zlib.compress(b"{}" * 1000)[:-8]), "chunk 'prompt' is cut short"),
        (_itxt(b"prompt", zlib.compress(b"{}")[:5]), "chunk 'prompt' is cut short"),
        (_chunk(b"iTXt", b"prompt\0\1"), "iTXt chunk 'prompt' is malformed"),
        (_chunk(b"tEXt", b"k" * 500), "chunk 'kkkk.*' has no text"),
    ],
    ids=["not-zlib", "zTXt-cut", "iTXt-cut", "iTXt-fields", "no-keyword-end"],
)
def test_a_broken_text_chunk_is_a_value_error_naming_it(chunk, error):
    with pytest.raises(ValueError, match=error) as info:
        read_text_chunks(_with_chunks(chunk))
    assert len(str(info.value)) < 200
