"""A generation's outputs as files: every kind (still images first, with comfyfn's
provenance, then animated images, videos, audio, text and other files), each with its media
type and file extension, under the names of the place it goes to.

The one decision of what a finished job writes, for the gateway's API jobs and for batch
rows on every path (``comfyfn batch`` here, or a worker of the shared queue):

- an API job: :func:`indexed_files` — ``<job id>/<i>.<ext>`` in the server's order;
- a batch row: :func:`named_files` — its still images as ``<base>.png`` (``<base>_<i>.png``
  for several; a JPEG keeps ``.jpg``), delivered as PNGs at the row's size if it asks for
  one (:mod:`comfyfn.delivery`), then every other output as ``<base>_<kind><i>.<ext>``
  (``i`` counting the outputs of that kind: ``<base>_video0.mp4``, ``<base>_text0.txt``).

Pure: the bytes are written by :func:`comfyfn.storage.put_files` (or, into a batch's own
folder, by its writer whose folders the manifest syncs once per commit).
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any

from comfyfn.result import OUTPUT_KINDS, Generation, Image, Output

__all__ = [
    "OTHER_NAME",
    "STILL_IMAGE_TYPES",
    "OutputFile",
    "indexed_files",
    "named_files",
    "named_kind",
    "named_other_files",
    "output_files",
]

#: the media types of still images (what OpenAI's image routes return)
STILL_IMAGE_TYPES = frozenset({"image/png", "image/jpeg"})
TEXT_TYPE = "text/plain; charset=utf-8"
_EXTENSIONS = {"image/png": "png", "image/jpeg": "jpg", "image/webp": "webp"}
_MAX_EXTENSION = 8  #: longer (or non-alphanumeric) server extensions are stored as ``bin``
#: the end of a name :func:`named_other_files` makes (``_video0``); a batch row's own name
#: may not end so (:func:`comfyfn.batch.rows.output_name_problem`)
OTHER_NAME = re.compile(rf"_({'|'.join(k for k in OUTPUT_KINDS if k != 'image')})\d+$")


@dataclass(frozen=True)
class OutputFile:
    """One output as it is written: its bytes, media type, the extension of its name and its
    kind (see :data:`comfyfn.result.OUTPUT_KINDS`)."""

    data: bytes
    content_type: str
    ext: str  #: without the dot
    kind: str = "image"

    @property
    def still_image(self) -> bool:
        """A still image (PNG or JPEG): what OpenAI's image routes return. An animated PNG
        is not one, though its media type is ``image/png``."""
        return self.kind == "image" and self.content_type in STILL_IMAGE_TYPES


def output_files(generation: Generation) -> list[OutputFile]:
    """Every output of ``generation``: its still images (PNG with provenance), then every
    other output with its media type (text as UTF-8 ``text/plain``)."""
    return [_image_file(image) for image in generation.images] + [f for _, f in _others(generation)]


def indexed_files(generation: Generation, folder: str) -> list[tuple[str, OutputFile]]:
    """Every output under ``<folder>/<i>.<ext>`` (an API job's files, ``folder`` its id)."""
    return [(f"{folder}/{i}.{f.ext}", f) for i, f in enumerate(output_files(generation))]


def named_files(
    generation: Generation, base: str, deliver: Mapping[str, Any] | None = None
) -> list[tuple[str, OutputFile]]:
    """Every output under names fixed by ``base`` (a batch row's ``images/<stem>``): still
    images ``<base>.<ext>`` / ``<base>_<i>.<ext>`` (``png`` when delivered at ``deliver``'s
    ``width``, ``height`` and ``fit``), then :func:`named_other_files`."""
    stills = [_image_file(image) for image in generation.images]
    if deliver:
        stills = [_delivered(f, deliver) for f in stills]
    named = [
        (f"{base}.{f.ext}" if len(stills) == 1 else f"{base}_{i}.{f.ext}", f)
        for i, f in enumerate(stills)
    ]
    return named + named_other_files(generation, base)


def named_other_files(generation: Generation, base: str) -> list[tuple[str, OutputFile]]:
    """The outputs other than still images as ``<base>_<kind><i>.<ext>``, ``i`` counting the
    outputs of that kind (also :meth:`comfyfn.result.Generation.save`'s names)."""
    return [(f"{base}_{name}.{f.ext}", f) for name, f in _others(generation)]


def named_kind(path: str) -> str:
    """The kind of output a path :func:`named_files` made holds (``image`` for a still
    image; ``animated``, ``video``, ``audio``, ``text`` or ``file`` for the others). Row
    names that end like another kind's are refused (:data:`OTHER_NAME`), so this is exact."""
    match = OTHER_NAME.search(PurePosixPath(path).stem)
    return match.group(1) if match else "image"


def _others(generation: Generation) -> list[tuple[str, OutputFile]]:
    """``(<kind><i>, file)`` for each output that is not a still image, in the server's order."""
    counted: Counter[str] = Counter()
    named = []
    for output in generation.outputs:
        if output.kind != "image":
            named.append((f"{output.kind}{counted[output.kind]}", _other_file(output)))
            counted[output.kind] += 1
    return named


def _delivered(file: OutputFile, size: Mapping[str, Any]) -> OutputFile:
    from comfyfn.delivery import deliver  # Pillow: only when a size is asked for

    fit = size.get("fit", "cover")
    data = deliver(file.data, int(size["width"]), int(size["height"]), fit)
    return OutputFile(data, "image/png", "png")


def _image_file(image: Image) -> OutputFile:
    media = image.media_type
    return OutputFile(image.png_bytes(), media, _EXTENSIONS.get(media, "bin"))


def _other_file(output: Output) -> OutputFile:
    if output.kind == "text":
        return OutputFile(output.data, TEXT_TYPE, "txt", "text")
    suffix = PurePosixPath(output.filename or "").suffix.lower().removeprefix(".")
    usable = suffix.isascii() and suffix.isalnum() and len(suffix) <= _MAX_EXTENSION
    media = output.media_type
    if output.kind == "animated" and media == "image/png":
        media = "image/apng"  # (so no one takes it for a still image by its media type)
    return OutputFile(output.data, media, suffix if usable else "bin", output.kind)
