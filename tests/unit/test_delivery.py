"""deliver() makes exact-size PNGs, crops or pads as documented and keeps text chunks."""

from __future__ import annotations

import io
import json

import pytest
from PIL import Image

from comfyfn.delivery import deliver
from comfyfn.errors import ConfigError
from comfyfn.provenance import add_text_chunks, read_provenance, read_text_chunks
from comfyfn.recipes import nearest_generate_size


def _png(size, colour=(200, 30, 30), mode="RGB") -> bytes:
    buf = io.BytesIO()
    Image.new(mode, size, colour).save(buf, format="PNG")
    return buf.getvalue()


def _striped(width: int, height: int) -> bytes:
    """Left third blue, middle third red, right third green (vertical bands)."""
    image = Image.new("RGB", (width, height), (255, 0, 0))
    image.paste((0, 0, 255), (0, 0, width // 3, height))
    image.paste((0, 255, 0), (2 * width // 3, 0, width, height))
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


def _open(data: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(data))
    image.load()
    return image


def _rgb(image: Image.Image, xy: tuple[int, int]) -> tuple:
    """The red, green and blue of the pixel at ``xy``."""
    pixel = image.getpixel(xy)
    assert isinstance(pixel, tuple), pixel
    return pixel[:3]


@pytest.mark.parametrize(
    "target", [(1080, 1080), (1200, 675), (1080, 1920), (1242, 1660), (1920, 1080), (800, 600)]
)
@pytest.mark.parametrize("fit", ["cover", "contain"])
def test_exact_size_from_the_generate_size(target, fit):
    # small stand-ins keep the test fast: same rule at a tenth of the size
    src = nearest_generate_size(*target)
    out = deliver(_png((src[0] // 8, src[1] // 8)), target[0] // 8, target[1] // 8, fit)
    assert _open(out).size == (target[0] // 8, target[1] // 8)
    assert _open(out).format == "PNG"


def test_full_size_platform_delivery():
    out = deliver(_png((1088, 1936)), 1080, 1920)
    assert _open(out).size == (1080, 1920)
    assert read_provenance(out)["delivery"] == {
        "width": 1080,
        "height": 1920,
        "fit": "cover",
        "from": [1088, 1936],
    }


def test_cover_crops_the_centre():
    # 300x100 striped → 100x100 cover: only the red middle band survives
    image = _open(deliver(_striped(300, 100), 100, 100, "cover"))
    assert image.size == (100, 100)
    for x in (5, 50, 94):
        r, g, b = _rgb(image, (x, 50))
        assert r > 200 and g < 40 and b < 40


def test_contain_pads_with_background():
    # 200x100 red → 100x100 contain: red 100x50 band in the middle, background above and below
    image = _open(deliver(_png((200, 100)), 100, 100, "contain", background=(0, 0, 255)))
    assert image.size == (100, 100)
    assert _rgb(image, (50, 5)) == (0, 0, 255)
    assert _rgb(image, (50, 95)) == (0, 0, 255)
    assert _rgb(image, (50, 50)) == (200, 30, 30)
    # default background is white, colour strings are accepted
    white = _open(deliver(_png((200, 100)), 100, 100, "contain"))
    assert _rgb(white, (0, 0)) == (255, 255, 255)
    green = _open(deliver(_png((100, 200)), 100, 100, "contain", "#00ff00"))
    assert _rgb(green, (2, 50)) == (0, 255, 0)


def test_contain_upscales_small_images_to_fit():
    image = _open(deliver(_png((50, 50)), 100, 200, "contain"))
    assert image.size == (100, 200)
    assert _rgb(image, (50, 100)) == (200, 30, 30)
    assert _rgb(image, (50, 10)) == (255, 255, 255)


def test_text_chunks_are_kept_and_the_delivered_size_is_in_the_provenance():
    meta = {"prompt": "旗袍", "seed": 5, "width": 64, "height": 48}
    src = add_text_chunks(_png((64, 48)), {"comfyfn": json.dumps(meta), "prompt": "{}"})
    out = deliver(src, 32, 32, "cover")
    assert read_text_chunks(out)["prompt"] == "{}"
    delivered = {"width": 32, "height": 32, "fit": "cover", "from": [64, 48]}
    assert read_provenance(out) == {**meta, "delivery": delivered}
    # delivering again replaces the record rather than nesting or duplicating it
    again = deliver(out, 16, 16, "contain")
    assert read_provenance(again)["delivery"]["from"] == [32, 32]
    assert again.count(b"comfyfn") == 1


def test_same_size_is_not_re_encoded():
    src = _png((40, 30))
    out = deliver(src, 40, 30)
    assert _open(out).tobytes() == _open(src).tobytes()
    assert read_provenance(out)["delivery"]["from"] == [40, 30]


def test_rgba_and_palette_sources():
    rgba = _open(deliver(_png((64, 32), (1, 2, 3, 0), "RGBA"), 40, 40, "contain"))
    assert rgba.size == (40, 40) and rgba.mode == "RGBA"
    assert rgba.getpixel((20, 2)) == (255, 255, 255, 255)
    buf = io.BytesIO()
    Image.new("P", (30, 30), 3).save(buf, format="PNG")
    assert _open(deliver(buf.getvalue(), 10, 20, "cover")).size == (10, 20)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ((10, 10, "stretch"), "fit 'stretch'"),
        ((0, 10), "width"),
        ((10, 10, "contain", "notacolour"), "background"),
        ((10, 10, "contain", (1, 2)), "background"),
    ],
)
def test_bad_arguments(args, message):
    with pytest.raises(ConfigError, match=message):
        deliver(_png((20, 20)), *args)
