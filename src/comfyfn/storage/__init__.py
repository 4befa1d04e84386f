"""Where output files go: a local folder (default) or an S3-compatible object store.

::

    storage = open_storage("s3://bucket/outputs")   # or a folder path
    stored = await storage.put("job/0.png", data, "image/png")
    url = await storage.url("job/0.png", ttl=3600)   # presigned for S3, None for a folder
"""

from __future__ import annotations

import os

from comfyfn._public import present as _present

from .base import Storage, StorageError, StorageNotFound, StoredFile, put_files, validate_key
from .local import LocalStorage
from .s3 import S3Storage, parse_s3_url

__all__ = [
    "LocalStorage",
    "S3Storage",
    "Storage",
    "StorageError",
    "StorageNotFound",
    "StoredFile",
    "open_storage",
    "parse_s3_url",
    "put_files",
    "validate_key",
]


def open_storage(where: str | os.PathLike[str]) -> Storage:
    """``s3://bucket/prefix`` → :class:`S3Storage`; a folder path → :class:`LocalStorage`."""
    text = os.fspath(where)
    if text.startswith("s3://"):
        return S3Storage.from_url(text)
    return LocalStorage(text)


_present(__name__, globals(), __all__)
