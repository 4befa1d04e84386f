"""Writing files so that a reader never sees half of one (the one place comfyfn does it).

:func:`write_atomic` writes a temporary file beside the target, made with the permissions a
normal ``open(path, "w")`` gives (``0o666`` minus the umask), flushes and fsyncs it, renames
it over the target, then fsyncs the directory so the rename itself survives a power cut.
"""

from __future__ import annotations

import errno
import logging
import os
import re
import secrets
import stat
import tempfile
import threading
import time
from pathlib import Path

__all__ = [
    "ABANDONED_AFTER",
    "current_umask",
    "fsync_directory",
    "ready_folder",
    "sweep_temporaries",
    "write_atomic",
]

log = logging.getLogger("comfyfn")

#: seconds after which a temporary file of :func:`write_atomic` was left by a writer that died
#: (``kill -9``, a power cut): a live writer renames its file moments after making it
ABANDONED_AFTER = 60.0
_TEMPORARY_PREFIX, _TOKEN_BYTES = ".tmp-", 8  #: a temporary file's name: prefix, token, suffix
_TEMPORARY = re.compile(
    rf"{re.escape(_TEMPORARY_PREFIX)}[0-9a-f]{{{2 * _TOKEN_BYTES}}}(\.[A-Za-z0-9]+)?"
)

_umask_lock = threading.Lock()


def current_umask() -> int:
    """The process umask, read without changing it where the OS allows (Linux /proc).

    Elsewhere it falls back to setting and restoring it, which is racy only against other
    threads creating files at that instant.
    """
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    with _umask_lock:
        mask = os.umask(0o022)
        os.umask(mask)
    return mask


def fsync_directory(directory: str | os.PathLike[str]) -> None:
    """Make a rename or new entry in ``directory`` durable (no-op where unsupported)."""
    flags = os.O_RDONLY | getattr(os, "O_DIRECTORY", 0)
    try:
        fd = os.open(directory, flags)
    except (PermissionError, IsADirectoryError):  # e.g. Windows cannot open directories
        return
    try:
        os.fsync(fd)
    except OSError as exc:
        if exc.errno not in (errno.EINVAL, errno.ENOTSUP, errno.EBADF):
            raise
    finally:
        os.close(fd)


def write_atomic(
    path: str | os.PathLike[str],
    data: bytes | str,
    *,
    durable: bool = True,
    sync_folder: bool = True,
) -> Path:
    """Write ``data`` (text as UTF-8) to ``path`` atomically, with normal permissions.

    With ``durable`` (the default) the file and its directory are fsynced, so when this
    returns the new content survives a crash or power cut; ``sync_folder=False`` leaves the
    directory to the caller, who makes many files' entries in one folder durable with one
    :func:`fsync_directory` before relying on them. On any failure the target is untouched
    and no temporary file is left behind.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    raw = data.encode("utf-8") if isinstance(data, str) else data
    fd, tmp = _temporary_beside(target)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(raw)
            fh.flush()
            if durable:
                os.fsync(fh.fileno())
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    if durable and sync_folder:
        fsync_directory(target.parent)
    return target


def _temporary_beside(target: Path) -> tuple[int, str]:
    """A new temporary file in ``target``'s folder, open for writing, made as ``open(path,
    "w")`` makes a file (``0o666`` minus the umask, applied by the OS: nothing to read)."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
    flags |= getattr(os, "O_CLOEXEC", 0)
    for _ in range(100):
        name = f"{_TEMPORARY_PREFIX}{secrets.token_hex(_TOKEN_BYTES)}{target.suffix}"
        tmp = str(target.parent / name)
        try:
            return os.open(tmp, flags, 0o666), tmp
        except FileExistsError:
            continue
    raise FileExistsError(errno.EEXIST, "no free temporary name", str(target.parent))


def sweep_temporaries(
    folder: str | os.PathLike[str], *, older_than: float = ABANDONED_AFTER
) -> int:
    """Remove the temporary files that :func:`write_atomic` left anywhere under ``folder``
    when its writer died before the rename, those last changed over ``older_than`` seconds
    ago; the number removed. Nothing else is touched (folders and links of that name
    neither), and a file that goes while this looks or cannot be removed is no error: a
    sweep never fails the report that runs it."""
    cutoff = time.time() - older_than
    removed = 0
    for path in Path(folder).rglob(f"{_TEMPORARY_PREFIX}*"):
        if not _TEMPORARY.fullmatch(path.name):
            continue
        try:
            status = path.lstat()
            if stat.S_ISREG(status.st_mode) and status.st_mtime < cutoff:
                path.unlink()
                removed += 1
        except FileNotFoundError:
            continue  # its writer renamed it meanwhile
        except OSError as exc:  # not ours to remove (another user's): leave it, say so
            log.warning("could not remove the temporary file %s: %s", path, exc)
    if removed:
        log.info("removed %d temporary file(s) that writers left under %s", removed, folder)
    return removed


def ready_folder(folder: str | os.PathLike[str]) -> Path:
    """``folder``, made if missing and checked writable (a file created and removed there),
    before anything is made for it; :class:`~comfyfn.errors.OutputUnusable` saying why not
    (a file in the way, read-only, not writable, full)."""
    from comfyfn.errors import OutputUnusable

    path = Path(folder)
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=path):
            pass
    except FileExistsError as exc:
        message = f"the output folder {path} cannot be made: {exc.filename or path} is a file"
        raise OutputUnusable(message, folder=str(path), reason="not-a-folder") from exc
    except NotADirectoryError as exc:
        message = f"the output folder {path} cannot be made: part of its path is a file"
        raise OutputUnusable(message, folder=str(path), reason="not-a-folder") from exc
    except OSError as exc:
        reason = {errno.EROFS: "read-only", errno.ENOSPC: "full", errno.EDQUOT: "full"}
        why = reason.get(exc.errno or 0, "not-writable")
        detail = exc.strerror or str(exc)
        message = f"the output folder {path} is {why.replace('-', ' ')} ({detail})"
        raise OutputUnusable(message, folder=str(path), reason=why) from exc
    return path
