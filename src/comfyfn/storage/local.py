"""Output files in a local folder (the default): atomic, durable writes; the gateway serves them."""

from __future__ import annotations

import asyncio
import hashlib
import os
from pathlib import Path

from comfyfn._files import write_atomic

from .base import StorageError, StorageNotFound, StoredFile, validate_key

__all__ = ["LocalStorage"]


class LocalStorage:
    """Files under ``root``; ``key`` ``a/b.png`` is ``root/a/b.png``. The etag is an MD5 hex.

    Keys are validated (no ``..``, absolute paths or NUL) and the resolved path is checked
    to stay under ``root`` even through symlinks.
    """

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root).resolve()

    def __repr__(self) -> str:
        return f"LocalStorage({str(self.root)!r})"

    def path(self, key: str) -> Path:
        """The file a key names (validated, and inside ``root``)."""
        target = (self.root / validate_key(key)).resolve()
        if not target.is_relative_to(self.root):
            raise StorageError(f"storage key {key!r} leaves {self.root}", key=key)
        return target

    async def put(self, key: str, data: bytes, content_type: str) -> StoredFile:
        path = self.path(key)
        try:
            await asyncio.to_thread(write_atomic, path, data)
        except OSError as exc:
            raise StorageError(f"could not write {path}: {exc}", key=key) from exc
        return StoredFile(key=key, size=len(data), etag=hashlib.md5(data).hexdigest())

    async def get(self, key: str) -> bytes:
        path = self.path(key)
        try:
            return await asyncio.to_thread(path.read_bytes)
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError) as exc:
            raise StorageNotFound(f"no stored file {key!r} in {self.root}", key=key) from exc
        except OSError as exc:
            raise StorageError(f"could not read {path}: {exc}", key=key) from exc

    async def exists(self, key: str) -> bool:
        return self.path(key).is_file()

    async def delete(self, key: str) -> None:
        path = self.path(key)
        try:
            await asyncio.to_thread(path.unlink, missing_ok=True)
        except OSError as exc:
            raise StorageError(f"could not delete {path}: {exc}", key=key) from exc

    async def url(self, key: str, ttl: float) -> str | None:
        """None: the gateway serves local files itself (after checking the key)."""
        self.path(key)
        return None
