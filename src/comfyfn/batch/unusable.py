"""Why an output folder cannot be used, from the error that showed it: one sentence naming
the folder and what to do (:class:`~comfyfn.errors.OutputUnusable`), whatever raised it —
the raw ``sqlite3`` or ``OSError``, a :class:`~comfyfn.ComfyError` raised from one, an
exception group, or an object store's :class:`~comfyfn.storage.StorageError`."""

from __future__ import annotations

import errno
import os
import sqlite3
from collections.abc import Iterator
from pathlib import Path

from comfyfn.errors import OutputUnusable
from comfyfn.storage import StorageError

__all__ = ["unusable_output"]

_DISK_ERRNOS = {errno.EROFS, errno.ENOSPC, errno.EDQUOT, errno.EACCES, errno.EPERM}


def unusable_output(exc: BaseException, output: Path) -> OutputUnusable | None:
    """The :class:`~comfyfn.errors.OutputUnusable` that ``exc`` (or what caused it) means
    for the folder ``output``: not SQLite, read-only, not writable, full, or a store that
    refuses writes. None for any other error (a disk error on a file elsewhere, a bug)."""
    for cause in _chain(exc):
        if isinstance(cause, StorageError):
            message = f"the outputs cannot be stored: {cause}"
            return OutputUnusable(message, folder=str(output), reason="storage")
        if isinstance(cause, sqlite3.DatabaseError):
            return _sqlite_failure(cause, output)
        if isinstance(cause, OSError) and cause.errno in _DISK_ERRNOS:
            name = cause.filename
            if name is None or _inside(Path(os.fsdecode(name)), output):
                return _disk_failure(cause.errno, _detail(cause), output)
    return None


def _chain(exc: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    todo: list[BaseException | None] = [exc]
    while todo:
        item = todo.pop(0)
        if item is None or id(item) in seen:
            continue
        seen.add(id(item))
        yield item
        if isinstance(item, BaseExceptionGroup):
            todo.extend(item.exceptions)
        todo += [item.__cause__, item.__context__]


def _inside(path: Path, folder: Path) -> bool:
    try:
        return path.absolute().is_relative_to(folder.absolute())
    except (OSError, ValueError):
        return False


def _detail(exc: OSError) -> str:
    name = f": {os.fsdecode(exc.filename)}" if exc.filename is not None else ""
    return f"{exc.strerror or exc}{name}"


def _sqlite_failure(exc: sqlite3.DatabaseError, output: Path) -> OutputUnusable:
    code, text = getattr(exc, "sqlite_errorname", None) or "", str(exc)
    if code == "SQLITE_FULL" or "disk is full" in text:
        return _disk_failure(errno.ENOSPC, text, output)
    if code.startswith(("SQLITE_READONLY", "SQLITE_CANTOPEN")) or "unable to open" in text:
        read_only = not (output.is_dir() and os.access(output, os.W_OK))
        return _disk_failure(errno.EROFS if read_only else errno.EACCES, text, output)
    if code.startswith(("SQLITE_NOTADB", "SQLITE_CORRUPT")) or "not a database" in text:
        return OutputUnusable(
            f"the output folder {output} holds a manifest.sqlite that is not a usable comfyfn "
            f"manifest ({exc}); move it away or give another folder with -o",
            folder=str(output),
            reason="not-a-manifest",
        )
    message = f"cannot use the manifest in the output folder {output} ({exc})"
    return OutputUnusable(message, folder=str(output), reason="manifest")


def _disk_failure(code: int | None, detail: str, output: Path) -> OutputUnusable:
    if code in (errno.ENOSPC, errno.EDQUOT):
        message = (
            f"the output folder {output} is on a full disk ({detail}); free some space, "
            "then run the same command again to resume"
        )
        return OutputUnusable(message, folder=str(output), reason="full")
    if code == errno.EROFS:
        message = (
            f"the output folder {output} is read-only ({detail}); give a writable folder with -o"
        )
        return OutputUnusable(message, folder=str(output), reason="read-only")
    message = (
        f"the output folder {output} is not writable ({detail}); give a writable folder with -o"
    )
    return OutputUnusable(message, folder=str(output), reason="not-writable")
