"""Encoded images for tests: a plain-colour image as PNG (or another format's) bytes."""

from __future__ import annotations

import io

from PIL import Image


def image_bytes(
    size: tuple[int, int] = (8, 8),
    color: str | int | tuple[int, ...] = "orange",
    *,
    fmt: str = "PNG",
    mode: str = "RGB",
) -> bytes:
    """A ``size`` image of one ``color``, encoded as ``fmt`` (PNG unless told)."""
    buffer = io.BytesIO()
    Image.new(mode, size, color).save(buffer, format=fmt)
    return buffer.getvalue()
