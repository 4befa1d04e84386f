"""A generation's images as files at an exact pixel size (pure; Pillow, LANCZOS): what
batch rows deliver, whether ``comfyfn batch`` or a worker of the shared queue writes them.

Rule, for a source of ``w`` × ``h`` and a target of ``W`` × ``H``:

- ``cover`` (default): scale by ``max(W / w, H / h)`` so the image covers the target (each
  side rounded, never below the target), then crop the centre ``W`` × ``H`` (an odd extra
  pixel is dropped on the right/bottom). Nothing is padded; at most a sliver is cut when the
  aspect ratios already match, as with :func:`comfyfn.recipes.nearest_generate_size` sizes.
- ``contain``: scale by ``min(W / w, H / h)`` so the whole image fits, then centre it on a
  ``W`` × ``H`` canvas of ``background`` (letterbox / pillarbox).

A source already ``W`` × ``H`` is not re-encoded. The input's PNG text chunks (``prompt``,
``comfyfn`` provenance...) are kept, and the provenance gains ``"delivery": {"width",
"height", "fit", "from": [w, h]}`` — the size delivered, and the size generated — so
``comfyfn.read_provenance(path)["delivery"]`` says what the file is.
"""

from __future__ import annotations

import io
import json
from collections.abc import Sequence

from PIL import Image, ImageColor

from comfyfn.errors import ConfigError
from comfyfn.provenance import PROVENANCE_KEY, add_text_chunks, read_text_chunks

__all__ = ["FITS", "deliver"]

FITS = ("cover", "contain")


def deliver(
    data: bytes,
    width: int,
    height: int,
    fit: str = "cover",
    background: Sequence[int] | str = (255, 255, 255),
) -> bytes:
    """``data`` (a PNG; or a JPEG, WebP… that Pillow reads, made a PNG) as a PNG of exactly
    ``width`` × ``height`` (see the module docstring).

    ``background`` (for ``contain``) is ``(r, g, b)``, ``(r, g, b, a)`` or a colour string
    Pillow understands (``"#ffffff"``, ``"white"``).
    """
    for label, v in (("width", width), ("height", height)):
        if not isinstance(v, int) or isinstance(v, bool) or v <= 0:
            raise ConfigError(f"delivery {label} must be a positive integer, not {v!r}")
    if fit not in FITS:
        raise ConfigError(f"delivery fit {fit!r} is not one of {', '.join(FITS)}")
    bg = _rgba(background) if fit == "contain" else (255, 255, 255, 255)
    image: Image.Image = Image.open(io.BytesIO(data))  # in memory: nothing to close
    image.load()
    is_png = image.format == "PNG"
    texts = read_text_chunks(data) if is_png else {}
    source = image.size
    note = {"width": width, "height": height, "fit": fit, "from": list(source)}
    resized = source != (width, height)
    if resized:
        image = (
            _cover(image, width, height) if fit == "cover" else _contain(image, width, height, bg)
        )
    if resized or not is_png:
        buf = io.BytesIO()
        icc = image.info.get("icc_profile")
        image.save(buf, format="PNG", **({"icc_profile": icc} if icc else {}))
        data = buf.getvalue()
    return add_text_chunks(data, {**texts, PROVENANCE_KEY: _with_delivery(texts, note)})


def _with_delivery(texts: dict[str, str], note: dict[str, object]) -> str:
    """The provenance JSON of ``texts`` (``{}`` if it has none) with ``note`` as its
    ``delivery``."""
    try:
        provenance = json.loads(texts.get(PROVENANCE_KEY) or "{}")
    except ValueError:
        provenance = {}
    if not isinstance(provenance, dict):
        provenance = {}
    provenance["delivery"] = note
    return json.dumps(provenance, ensure_ascii=False)


def _normal(image: Image.Image) -> Image.Image:
    if image.mode in ("RGB", "RGBA", "L"):
        return image
    has_alpha = image.mode in ("LA", "PA") or "transparency" in image.info
    return image.convert("RGBA" if has_alpha else "RGB")


def _cover(image: Image.Image, width: int, height: int) -> Image.Image:
    image = _normal(image)
    w, h = image.size
    scale = max(width / w, height / h)
    rw, rh = max(width, round(w * scale)), max(height, round(h * scale))
    if (rw, rh) != (w, h):
        image = image.resize((rw, rh), Image.Resampling.LANCZOS)
    left, top = (rw - width) // 2, (rh - height) // 2
    return image.crop((left, top, left + width, top + height))


def _contain(
    image: Image.Image, width: int, height: int, bg: tuple[int, int, int, int]
) -> Image.Image:
    image = _normal(image)
    if image.mode == "L":
        image = image.convert("RGB")
    w, h = image.size
    scale = min(width / w, height / h)
    rw, rh = min(width, max(1, round(w * scale))), min(height, max(1, round(h * scale)))
    if (rw, rh) != (w, h):
        image = image.resize((rw, rh), Image.Resampling.LANCZOS)
    canvas = Image.new(image.mode, (width, height), bg if image.mode == "RGBA" else bg[:3])
    canvas.paste(image, ((width - rw) // 2, (height - rh) // 2))
    return canvas


def _rgba(colour: Sequence[int] | str) -> tuple[int, int, int, int]:
    try:
        if isinstance(colour, str):
            rgba: tuple[int, ...] = ImageColor.getrgb(colour)
        else:
            rgba = tuple(int(c) for c in colour)
            if len(rgba) not in (3, 4) or not all(0 <= c <= 255 for c in rgba):
                raise ValueError
    except (ValueError, TypeError):
        raise ConfigError(f"background {colour!r} is not a colour") from None
    return rgba[0], rgba[1], rgba[2], rgba[3] if len(rgba) == 4 else 255
