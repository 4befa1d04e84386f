"""Input images for LoadImage/LoadImageMask: read, checked, and named by their content.

An input image is a local path, bytes, a Pillow image or an :class:`~comfyfn.Image` from an
earlier generation (http(s) URLs are fetched by the client, then given here as bytes). It is
checked (type, bytes, pixels) and named ``comfyfn/<sha256 prefix>.<ext>``: the server's file
name never comes from the caller, and the same content always has the same name, so it is
uploaded once per server.
"""

from __future__ import annotations

import hashlib
import io
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from comfyfn.errors import ConfigError
from comfyfn.result import Image

__all__ = [
    "INPUT_SUBFOLDER",
    "MAX_INPUT_BYTES",
    "MAX_INPUT_PIXELS",
    "InputImage",
    "input_image",
    "is_url",
]

#: The server's input subfolder for uploads (a path with "/" is checked by the server).
INPUT_SUBFOLDER = "comfyfn"
MAX_INPUT_BYTES = 50 * 1024 * 1024
MAX_INPUT_PIXELS = 64 * 1024 * 1024
#: Pillow format → (file extension, media type) of the input images accepted.
_FORMATS: Mapping[str, tuple[str, str]] = {
    "PNG": ("png", "image/png"),
    "JPEG": ("jpg", "image/jpeg"),
    "WEBP": ("webp", "image/webp"),
    "GIF": ("gif", "image/gif"),
    "BMP": ("bmp", "image/bmp"),
    "TIFF": ("tiff", "image/tiff"),
}


@dataclass(frozen=True)
class InputImage:
    """An input image ready to upload: its bytes, content-hashed name and size."""

    data: bytes = field(repr=False)
    filename: str  #: ``<sha256 prefix>.<ext>``
    media_type: str
    size: tuple[int, int]

    @property
    def server_name(self) -> str:
        """What a LoadImage node names it with once uploaded (``comfyfn/<filename>``)."""
        return f"{INPUT_SUBFOLDER}/{self.filename}"


def is_url(value: object) -> bool:
    return isinstance(value, str) and value.lower().startswith(("http://", "https://"))


def _checked(data: bytes, what: str) -> InputImage:
    from PIL import Image as PIL
    from PIL import UnidentifiedImageError

    if len(data) > MAX_INPUT_BYTES:
        raise ConfigError(f"{what} has {len(data)} bytes; the limit is {MAX_INPUT_BYTES}")
    try:
        with PIL.open(io.BytesIO(data)) as im:
            fmt, size = im.format or "", im.size
    except (UnidentifiedImageError, OSError) as exc:
        raise ConfigError(f"{what} is not an image ({len(data)} bytes): {exc}") from None
    if fmt not in _FORMATS:
        raise ConfigError(f"{what} is a {fmt} image; accepted: {', '.join(_FORMATS)}")
    if size[0] * size[1] > MAX_INPUT_PIXELS:
        raise ConfigError(f"{what} has {size[0]}x{size[1]} pixels; the limit is {MAX_INPUT_PIXELS}")
    ext, media_type = _FORMATS[fmt]
    digest = hashlib.sha256(data).hexdigest()[:32]
    return InputImage(data, f"{digest}.{ext}", media_type, size)


def _png(image: Any) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def input_image(value: object, param: str) -> InputImage:
    """``value`` (path, bytes, PIL image, :class:`~comfyfn.Image`) as an :class:`InputImage`.

    A path that does not exist, or data that is not an accepted image, raises
    :class:`~comfyfn.ConfigError` naming ``param``.
    """
    from PIL import Image as PIL

    if isinstance(value, InputImage):
        return value
    if isinstance(value, bytes | bytearray | memoryview):
        return _checked(bytes(value), f"the image for {param}")
    if isinstance(value, Image):
        return _checked(value.data, f"the image for {param} ({value.filename or 'generated'})")
    if isinstance(value, PIL.Image):
        return _checked(_png(value), f"the image for {param}")
    if is_url(value):
        raise ConfigError(
            f"{param}: an http(s) URL is fetched by the client (client.generate/submit), "
            "not by Workflow.bind"
        )
    if isinstance(value, str | os.PathLike):
        path = Path(value)
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise ConfigError(
                f"the image for {param}, {path}, cannot be read: {exc.strerror}"
            ) from None
        return _checked(data, f"the image for {param} ({path})")
    raise ConfigError(
        f"{param} takes a path, bytes, a PIL image, an Image or an http(s) URL, "
        f"not a {type(value).__name__}"
    )
