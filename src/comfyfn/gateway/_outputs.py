"""A job's output files: every output of a :class:`~comfyfn.result.Generation` (still
images first, with comfyfn's provenance, then animated images, videos, audio, text and other
files) stored through :class:`~comfyfn.storage.Storage` under ``<job_id>/<i>.<ext>``, and the
way back from a file record to its storage key.

The key is kept in the file record's ``path``. Records written before storage backends
existed hold an absolute path inside the local storage folder; :func:`stored_key` turns
those into keys too (and refuses any path outside the folder).
"""

from __future__ import annotations

import asyncio
import os
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from comfyfn.gateway.schema import FileRecord, NewFile
from comfyfn.result import Generation, Image, Output
from comfyfn.storage import LocalStorage, Storage

__all__ = ["STILL_IMAGE_TYPES", "KnownFiles", "OutputFile", "output_files", "store_outputs"]

#: the media types of still images (what OpenAI's image routes return)
STILL_IMAGE_TYPES = frozenset({"image/png", "image/jpeg"})
TEXT_TYPE = "text/plain; charset=utf-8"
_EXTENSIONS = {"image/png": "png", "image/jpeg": "jpg", "image/webp": "webp"}


@dataclass(frozen=True)
class OutputFile:
    """One output as the gateway stores it."""

    data: bytes
    content_type: str
    ext: str  #: the key's extension, without the dot

    @property
    def still_image(self) -> bool:
        return self.content_type in STILL_IMAGE_TYPES


def output_files(generation: Generation) -> list[OutputFile]:
    """Every output of ``generation``: its still images (PNG with provenance), then every
    other output with its media type (text as UTF-8 ``text/plain``)."""
    files = [_image_file(image) for image in generation.images]
    files += [_other_file(output) for output in generation.outputs if output.kind != "image"]
    return files


def _image_file(image: Image) -> OutputFile:
    data = image.png_bytes()
    if data.startswith(b"\x89PNG"):
        media = "image/png"
    elif data.startswith(b"\xff\xd8\xff"):
        media = "image/jpeg"
    elif data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        media = "image/webp"
    else:
        media = "application/octet-stream"
    return OutputFile(data, media, _EXTENSIONS.get(media, "bin"))


def _other_file(output: Output) -> OutputFile:
    if output.kind == "text":
        return OutputFile(output.data, TEXT_TYPE, "txt")
    suffix = Path(output.filename or "").suffix.lower().removeprefix(".")
    ext = suffix if suffix.isascii() and suffix.isalnum() and len(suffix) <= 8 else "bin"
    return OutputFile(output.data, output.media_type, ext)


async def store_outputs(
    storage: Storage, job_id: str, files: Sequence[OutputFile]
) -> list[NewFile]:
    """Store ``files`` under ``<job_id>/<i>.<ext>`` (all at once); what to record of them.
    Raises :class:`~comfyfn.storage.StorageError` if one cannot be stored."""
    keys = [f"{job_id}/{i}.{f.ext}" for i, f in enumerate(files)]
    stored = await asyncio.gather(
        *(storage.put(key, f.data, f.content_type) for key, f in zip(keys, files, strict=True))
    )
    return [
        NewFile(s.key, f.content_type, s.size, s.etag) for s, f in zip(stored, files, strict=True)
    ]


def stored_key(storage: Storage, path: str) -> str | None:
    """The storage key of a file record's ``path``; None for an old absolute path that is
    not inside the local storage folder."""
    if not os.path.isabs(path):
        return path
    if not isinstance(storage, LocalStorage):
        return None
    resolved = Path(path).resolve()
    if not resolved.is_relative_to(storage.root):
        return None
    return resolved.relative_to(storage.root).as_posix()


class KnownFiles:
    """The file records this process has seen, by id (records never change), so a job's
    view can name its outputs' media types without a database read; the most recent
    ``limit`` are kept."""

    def __init__(self, limit: int = 10_000) -> None:
        self.limit = limit
        self._records: OrderedDict[str, FileRecord] = OrderedDict()

    def remember(self, records: Iterable[FileRecord]) -> None:
        for record in records:
            self._records[record.id] = record
            self._records.move_to_end(record.id)
        while len(self._records) > self.limit:
            self._records.popitem(last=False)

    def get(self, file_id: str) -> FileRecord | None:
        return self._records.get(file_id)

    def missing(self, file_ids: Iterable[str]) -> list[str]:
        return [f for f in file_ids if f not in self._records]
