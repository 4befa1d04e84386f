"""Provenance chunks are added without touching pixels and read back, Chinese included."""

from __future__ import annotations

import io

from PIL import Image as PIL

from comfyfn.provenance import add_text_chunks, read_provenance, read_text_chunks
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
    assert PIL.open(io.BytesIO(tagged)).text["comfyfn"] == '{"prompt": "旗袍"}'


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
