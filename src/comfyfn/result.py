"""What a generation returns: images and other outputs with their bytes and metadata, and
how long it took."""

from __future__ import annotations

import io
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

from comfyfn._files import write_atomic
from comfyfn.provenance import PROVENANCE_KEY, add_text_chunks, png_structure_problem

if TYPE_CHECKING:
    from PIL.Image import Image as PILImage

__all__ = ["OUTPUT_KINDS", "Generation", "Image", "Output", "Timings", "image_problem"]

#: What an output is: a still image, an animated image, a video, audio, text, another file.
OUTPUT_KINDS = ("image", "animated", "video", "audio", "text", "file")


def image_problem(data: bytes) -> str | None:
    """Why ``data`` is not a complete image (PNG, JPEG, WebP... as Pillow reads), or None.

    The reason completes a sentence about the data: "is empty", "is not an image (…)",
    "is cut short …", "does not decode (…): …".

    Every pixel is decoded (Pillow's ``LOAD_TRUNCATED_IMAGES`` is left False, so a cut-off
    file raises); a PNG must also be whole chunk by chunk, with valid checksums, up to IEND.
    """
    from PIL import Image as PIL
    from PIL import UnidentifiedImageError

    if not data:
        return "is empty"
    if data.startswith(b"\x89PNG") and (problem := png_structure_problem(data)):
        return problem
    try:
        with PIL.open(io.BytesIO(data)) as im:
            if im.format == "PNG":
                im.verify()  # chunk checksums; the file must be opened again to decode
        with PIL.open(io.BytesIO(data)) as im:
            im.load()
    except UnidentifiedImageError:
        return f"is not an image ({len(data)} bytes beginning {data[:16]!r})"
    except Exception as exc:  # OSError, SyntaxError, ValueError...: plugins vary
        return f"does not decode ({len(data)} bytes): {type(exc).__name__}: {exc}"
    return None


@dataclass(frozen=True)
class Timings:
    """Seconds, measured by the client: waiting in the queue, executing, and in all."""

    queued: float
    executed: float
    total: float


@dataclass(frozen=True, eq=False)
class Image:
    """One output image: its bytes as the server made them, and where it came from."""

    data: bytes = field(repr=False)
    node_id: str | None
    filename: str | None = None
    subfolder: str = ""
    type: str = "output"
    provenance: Mapping[str, Any] = field(default_factory=dict, repr=False)
    workflow: Mapping[str, Any] = field(default_factory=dict, repr=False)

    @cached_property
    def _size(self) -> tuple[int, int]:
        from PIL import Image as PIL

        with PIL.open(io.BytesIO(self.data)) as im:
            return im.size

    @property
    def size(self) -> tuple[int, int]:
        """(width, height) in pixels."""
        return self._size

    @property
    def width(self) -> int:
        return self._size[0]

    @property
    def height(self) -> int:
        return self._size[1]

    @property
    def format(self) -> str:
        """``png``, ``jpeg`` or ``webp`` (by the data's signature), else ``bin``."""
        if self.data[:4] == b"\x89PNG":
            return "png"
        if self.data[:2] == b"\xff\xd8":
            return "jpeg"
        if self.data[:4] == b"RIFF" and self.data[8:12] == b"WEBP":
            return "webp"
        return "bin"

    @property
    def media_type(self) -> str:
        """``image/png``, ``image/jpeg``, ``image/webp``, else ``application/octet-stream``."""
        return "application/octet-stream" if self.format == "bin" else f"image/{self.format}"

    def to_pil(self) -> PILImage:
        """Decode into a Pillow image."""
        from PIL import Image as PIL

        im = PIL.open(io.BytesIO(self.data))
        im.load()
        return im

    def png_bytes(self) -> bytes:
        """The image with comfyfn's provenance chunks (and the API workflow) added."""
        if self.format != "png":
            return self.data
        texts = {PROVENANCE_KEY: json.dumps(dict(self.provenance), ensure_ascii=False)}
        if self.workflow:
            texts["prompt"] = json.dumps(dict(self.workflow), ensure_ascii=False)
        return add_text_chunks(self.data, texts)

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the image (with provenance) atomically; a directory gets the server's filename."""
        target = Path(path)
        if target.is_dir():
            target = target / (self.filename or f"image.{self.format}")
        return write_atomic(target, self.png_bytes())


@dataclass(frozen=True, eq=False)
class Output:
    """One output of any kind (see :data:`OUTPUT_KINDS`) with its media type and bytes.

    Only still images are decoded and size-checked (they are also in ``Generation.images``
    as :class:`Image`); text outputs have no file name and carry UTF-8 text.
    """

    kind: str
    media_type: str
    data: bytes = field(repr=False)
    node_id: str | None
    filename: str | None = None
    subfolder: str = ""
    type: str = "output"

    @property
    def text(self) -> str:
        return self.data.decode("utf-8", errors="replace")

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the bytes atomically; a directory gets the server's file name."""
        target = Path(path)
        if target.is_dir():
            target = target / (self.filename or f"{self.node_id or 'output'}.txt")
        return write_atomic(target, self.data)


@dataclass(frozen=True)
class Generation:
    """The outcome of one job: images, what ran, where, and how long it took."""

    prompt_id: str
    server: str
    images: tuple[Image, ...]
    params: Mapping[str, Any]
    workflow: Mapping[str, Any] = field(repr=False)
    timings: Timings
    cached_nodes: tuple[str, ...] = ()
    #: every output, images included (as kind ``image``), in the server's order
    outputs: tuple[Output, ...] = ()

    def outputs_of(self, kind: str) -> tuple[Output, ...]:
        """The outputs of one kind (``"video"``, ``"audio"``, ``"text"``...)."""
        return tuple(o for o in self.outputs if o.kind == kind)

    @property
    def seed(self) -> int | None:
        return self.params.get("seed")

    def save(self, directory: str | os.PathLike[str], *, prefix: str | None = None) -> list[Path]:
        """Save every image into ``directory`` (names ``{prefix}_{seed}_{i}.png``), then every
        other output (``{prefix}_{seed}_{kind}{i}.{ext}``, named as a batch row's are:
        :func:`comfyfn.outputs.named_other_files`)."""
        out = Path(directory)
        out.mkdir(parents=True, exist_ok=True)
        stem = prefix or f"{self.prompt_id[:8]}"
        if self.seed is not None:
            stem = f"{stem}_{self.seed}"
        paths = [
            image.save(out / f"{stem}_{i}.{image.format}") for i, image in enumerate(self.images)
        ]
        from comfyfn.outputs import named_other_files  # (it imports this module)

        for rel, file in named_other_files(self, str(out / stem)):
            paths.append(write_atomic(Path(rel), file.data))
        return paths
