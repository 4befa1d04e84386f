"""What every output store offers, the one error type, and key validation."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from comfyfn.errors import ComfyError

__all__ = [
    "Storage",
    "StorageError",
    "StorageNotFound",
    "StoredFile",
    "put_files",
    "validate_key",
]

_MAX_KEY_BYTES = 1024  # S3's limit on an object key


class StorageError(ComfyError):
    """Writing, reading or signing an output file failed; ``key`` names it when known."""

    def __init__(self, message: str, *, key: str | None = None) -> None:
        super().__init__(message)
        self.key = key


class StorageNotFound(StorageError):
    """The store holds no file under that key."""


@dataclass(frozen=True)
class StoredFile:
    """A file as the store keeps it: its key, its size in bytes and the store's etag."""

    key: str
    size: int
    etag: str


def validate_key(key: str) -> str:
    """``key`` if it is a safe relative key (``a/b/c.png``), else :class:`StorageError`.

    Refused: empty keys, absolute paths, backslashes, NUL and other control characters,
    empty, ``.`` and ``..`` segments, and keys longer than 1024 UTF-8 bytes.
    """
    problem = _key_problem(key)
    if problem:
        raise StorageError(f"invalid storage key {key!r}: {problem}", key=key)
    return key


def _key_problem(key: str) -> str:
    if not key:
        return "empty"
    if len(key.encode("utf-8", "surrogatepass")) > _MAX_KEY_BYTES:
        return f"longer than {_MAX_KEY_BYTES} bytes"
    if any(ord(ch) < 0x20 or ord(ch) == 0x7F for ch in key):
        return "control character"
    if "\\" in key:
        return "backslash"
    if key.startswith("/"):
        return "absolute"
    if any(part in ("", ".", "..") for part in key.split("/")):
        return "empty, '.' or '..' segment"
    return ""


@runtime_checkable
class Storage(Protocol):
    """Where output files go: a local folder or an object store. Keys are ``a/b/c.png``."""

    async def put(self, key: str, data: bytes, content_type: str) -> StoredFile:
        """Store ``data`` under ``key`` (replacing any file there); durable when it returns."""
        ...

    async def get(self, key: str) -> bytes:
        """The file's bytes; :class:`StorageNotFound` if there is none."""
        ...

    async def exists(self, key: str) -> bool:
        """Whether a file is stored under ``key``."""
        ...

    async def delete(self, key: str) -> None:
        """Remove the file (no error if there is none)."""
        ...

    async def url(self, key: str, ttl: float) -> str | None:
        """A URL that fetches the file for ``ttl`` seconds, or None if the caller serves it."""
        ...


class Content(Protocol):
    """A file's bytes and media type, as :func:`put_files` stores them (e.g. a
    :class:`comfyfn.outputs.OutputFile`)."""

    @property
    def data(self) -> bytes: ...

    @property
    def content_type(self) -> str: ...


async def put_files(storage: Storage, files: Sequence[tuple[str, Content]]) -> list[StoredFile]:
    """Store every ``(key, file)`` of a job (:mod:`comfyfn.outputs` names them) in
    ``storage``, all at once, each with its media type; what the store keeps of them, in
    order. Raises :class:`StorageError` if one cannot be stored."""
    return list(
        await asyncio.gather(*(storage.put(key, f.data, f.content_type) for key, f in files))
    )
