"""Input images for LoadImage/LoadImageMask: read, checked, and named by their content.

An input image is a local path, bytes, a Pillow image or an :class:`~comfyfn.Image` from an
earlier generation (http(s) URLs are fetched by the client, then given here as bytes). It is
checked (type, bytes, pixels) and named ``comfyfn/<sha256 prefix>.<ext>``: the server's file
name never comes from the caller, and the same content always has the same name, so it is
uploaded once per server.

A local path is read by :func:`read_image_file` alone: only a regular file within the byte
limit (:func:`max_input_bytes`) is opened, and at most one byte over the limit is read, so a
device (``/dev/zero``), a named pipe or a huge file is a quick ConfigError, never an endless
read, a hang or a MemoryError.
"""

from __future__ import annotations

import hashlib
import io
import os
import stat
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from comfyfn.errors import ConfigError
from comfyfn.result import Image

__all__ = [
    "INPUT_SUBFOLDER",
    "MAX_INPUT_BYTES",
    "MAX_INPUT_BYTES_ENV",
    "MAX_INPUT_PIXELS",
    "InputImage",
    "input_image",
    "is_local_file",
    "is_url",
    "max_input_bytes",
    "read_image_file",
]

#: The server's input subfolder for uploads (a path with "/" is checked by the server).
INPUT_SUBFOLDER = "comfyfn"
#: The default limit on one input image's bytes (a local file, a URL's body, bytes given).
MAX_INPUT_BYTES = 50 * 1024 * 1024
#: The environment variable that sets another limit (a positive number of bytes).
MAX_INPUT_BYTES_ENV = "COMFYFN_MAX_INPUT_BYTES"
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


def is_local_file(value: str | os.PathLike[str]) -> bool:
    """Whether ``value`` names a regular local file (a stat, nothing opened); False for a
    name the system refuses (too long, a NUL) as for a missing one."""
    try:
        return stat.S_ISREG(os.stat(value).st_mode)
    except (OSError, ValueError):
        return False


def max_input_bytes() -> int:
    """The limit on one input image's bytes: ``$COMFYFN_MAX_INPUT_BYTES``, else
    :data:`MAX_INPUT_BYTES` (50 MiB); resolved at each use."""
    raw = os.environ.get(MAX_INPUT_BYTES_ENV, "").strip()
    if not raw:
        return MAX_INPUT_BYTES
    try:
        limit = int(raw)
    except ValueError:
        limit = 0
    if limit <= 0:
        raise ConfigError(f"{MAX_INPUT_BYTES_ENV}={raw!r} is not a positive number of bytes")
    return limit


def _limit_text(limit: int) -> str:
    return f"the limit is {limit:,} bytes (${MAX_INPUT_BYTES_ENV})"


#: open flags so that opening never waits (a FIFO without a writer) nor takes a terminal
_NO_WAIT = getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOCTTY", 0)
#: file types by stat mode, for the message refusing a file that is not a regular one
_FILE_TYPES = (
    (stat.S_ISDIR, "a directory"),
    (stat.S_ISFIFO, "a named pipe"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
)


def _refuse_unless_readable(info: os.stat_result, what: str, limit: int) -> None:
    """A ConfigError unless ``info`` is a regular file of at most ``limit`` bytes."""
    if not stat.S_ISREG(info.st_mode):
        kind = next((name for test, name in _FILE_TYPES if test(info.st_mode)), "not a file")
        raise ConfigError(f"{what} is not a regular file ({kind})")
    if info.st_size > limit:
        raise ConfigError(f"{what} has {info.st_size:,} bytes; {_limit_text(limit)}")


def read_image_file(path: Path, param: str, *, limit: int | None = None) -> bytes:
    """The bytes of the local image file ``path`` given for ``param``, read safely.

    The path is stat'ed first: anything but a regular file of at most ``limit`` bytes
    (default :func:`max_input_bytes`) is a :class:`~comfyfn.ConfigError` naming ``param``
    and the path, and is never opened. The file is opened without waiting (a named pipe
    swapped in after the stat is not waited on), checked again as opened, and read up to
    ``limit + 1`` bytes: a file that grew past the limit is refused too. This is blocking
    file I/O: an async caller runs it on a worker thread.
    """
    limit = max_input_bytes() if limit is None else limit
    what = f"the image for {param}, {path},"
    try:
        _refuse_unless_readable(path.stat(), what, limit)
        fd = os.open(path, os.O_RDONLY | _NO_WAIT)
        with open(fd, "rb") as handle:
            _refuse_unless_readable(os.fstat(fd), what, limit)
            data = handle.read(limit + 1)
    except OSError as exc:
        raise ConfigError(f"{what} cannot be read: {exc.strerror or exc}") from None
    if len(data) > limit:
        raise ConfigError(f"{what} is over {limit:,} bytes; {_limit_text(limit)}")
    return data


def _checked(data: bytes, what: str) -> InputImage:
    from PIL import Image as PIL
    from PIL import UnidentifiedImageError

    limit = max_input_bytes()
    if len(data) > limit:
        raise ConfigError(f"{what} has {len(data):,} bytes; {_limit_text(limit)}")
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

    A path that does not exist or is not a regular file within the byte limit (read by
    :func:`read_image_file`), or data that is not an accepted image, raises
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
        return _checked(read_image_file(path, param), f"the image for {param} ({path})")
    raise ConfigError(
        f"{param} takes a path, bytes, a PIL image, an Image or an http(s) URL, "
        f"not a {type(value).__name__}"
    )
