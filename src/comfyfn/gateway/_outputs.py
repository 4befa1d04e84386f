"""The gateway's side of a job's output files (named and written by
:mod:`comfyfn.outputs` and :func:`comfyfn.storage.put_files`): the way back from a file
record to its storage key, and the file records this process has seen.

The key is kept in the file record's ``path``. Records written before storage backends
existed hold an absolute path inside the local storage folder; :func:`stored_key` turns
those into keys too (and refuses any path outside the folder).
"""

from __future__ import annotations

import os
from collections import OrderedDict
from collections.abc import Iterable
from pathlib import Path

from comfyfn.jobs.schema import FileRecord
from comfyfn.storage import LocalStorage, Storage

__all__ = ["KnownFiles", "stored_key"]


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
