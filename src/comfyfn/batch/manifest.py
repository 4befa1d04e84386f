"""The batch manifest: one SQLite file in the output folder recording every job's fate.

A job's key is the hash of its bound API graph (so the same row with the same workflow is
the same job across runs). States::

    pending → submitted(server, prompt_id) → done(files) | failed(error)
    invalid(error)        a row that could not become a job

``submitted`` is written *before* POST /prompt (with the client-chosen prompt id), so a
runner killed at any point can re-attach to its jobs instead of running them twice (a
resumed run re-attaches each such job when it reaches its row; the jobs in flight at a
crash are the ones just before where it stopped, so they are reached at once).

Durability: every commit is fsynced (``synchronous=FULL``), and a job is marked ``done`` only
after its files were written and fsynced (their folder once per commit, before it, for all
the jobs it marks done: see :meth:`Manifest.done`). Writes are *group-committed*: one writer
thread takes every write queued so far and commits them in one transaction (one fsync), off
the event loop; each write method returns a :class:`Commit` resolved once the transaction
that holds it is on disk (it blocks until then unless ``block=False``: then await it, or not
at all — writes are committed in the order they were queued, so an awaited one covers those
before it). After a failed commit every later write fails with the same error. Each file's
size and SHA-256 are recorded, so a resumed run regenerates a file that went missing or was
damaged instead of skipping it.
One runner at a time: the manifest holds an exclusive lock (``manifest.lock`` beside it) for
as long as it is open, and a second runner on the same folder is refused at once.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import errno
import fcntl
import functools
import hashlib
import json
import math
import os
import queue
import sqlite3
import threading
import time
from collections.abc import Callable, Generator, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from comfyfn._files import fsync_directory
from comfyfn.batch import migrations
from comfyfn.errors import ConfigError

__all__ = ["Commit", "Manifest", "ManifestError", "Record", "file_problem", "folder_problem"]

T = TypeVar("T")


class ManifestError(ConfigError):
    """The manifest cannot be used: another runner holds it, it is corrupt, or its disk
    refuses writes (read-only, full). One sentence naming the file."""


def _guarded(method: Callable[..., T]) -> Callable[..., T]:
    """SQLite errors of a manifest operation become one ManifestError naming the file."""

    @functools.wraps(method)
    def call(self: Manifest, *args: Any, **kwargs: Any) -> T:
        try:
            return method(self, *args, **kwargs)
        except sqlite3.DatabaseError as exc:
            raise ManifestError(f"cannot use the manifest {self.path}: {exc}") from exc

    return call


@dataclass(frozen=True)
class Record:
    key: str
    row: int
    label: str
    stem: str
    params: dict[str, Any]
    state: str
    server: str | None
    prompt_id: str | None
    checks: list[dict[str, Any]]  #: per file: path, size and sha256 as written
    error: str | None
    attempts: int
    seconds: float | None  #: turnaround: from submission to the outputs in hand
    executed: float | None  #: the server's execution time (its own timestamps)

    @property
    def files(self) -> list[str]:
        return [c["path"] for c in self.checks]


class Commit:
    """A write queued for the manifest: :meth:`wait` for it, or ``await`` it, to know it is
    on disk (either raises :class:`ManifestError` if its commit failed)."""

    def __init__(self, future: concurrent.futures.Future[None]) -> None:
        self._future = future

    def wait(self) -> None:
        self._future.result()

    def __await__(self) -> Generator[Any, None, None]:
        return asyncio.wrap_future(self._future).__await__()


#: a statement, its parameters, the folders to fsync before its commit, its future
_Write = tuple[str, tuple[Any, ...], frozenset[Path], "concurrent.futures.Future[None]"]


class _Writer:
    """The one thread that writes: commits every write queued so far in one transaction."""

    def __init__(self, db: sqlite3.Connection, path: Path, *, threaded: bool) -> None:
        self.db, self.path = db, path
        self.broken: ManifestError | None = None  #: the error of a failed commit: final
        self._queue: queue.SimpleQueue[_Write | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        if threaded:
            self._thread = threading.Thread(target=self._loop, name="manifest-writer", daemon=True)
            self._thread.start()

    def write(
        self, sql: str, params: tuple[Any, ...], folders: frozenset[Path] = frozenset()
    ) -> Commit:
        future: concurrent.futures.Future[None] = concurrent.futures.Future()
        if self._thread is None:  # in memory: nothing to fsync, commit at once
            self._commit([(sql, params, folders, future)])
        else:
            self._queue.put((sql, params, folders, future))
        return Commit(future)

    def close(self) -> None:
        """Commit what is queued, then stop the thread."""
        if self._thread is not None:
            self._queue.put(None)
            self._thread.join()
            self._thread = None

    def _loop(self) -> None:
        while (first := self._queue.get()) is not None:
            group, last = [first], False
            while not self._queue.empty():
                item = self._queue.get()
                if item is None:
                    last = True
                    break
                group.append(item)
            self._commit(group)
            if last:
                return

    def _commit(self, group: list[_Write]) -> None:
        # an awaiting caller cancelled: its write is still made, its future left alone
        waiting = [w[-1] for w in group if w[-1].set_running_or_notify_cancel()]
        if self.broken is None:
            self._sync_folders(group)
        if self.broken is None:
            try:
                self.db.execute("BEGIN IMMEDIATE")
                for sql, params, _, _ in group:
                    self.db.execute(sql, params)
                self.db.execute("COMMIT")
            except Exception as exc:  # whatever it is, no write may hang
                with contextlib.suppress(sqlite3.Error):
                    self.db.execute("ROLLBACK")
                self.broken = ManifestError(f"cannot use the manifest {self.path}: {exc}")
                self.broken.__cause__ = exc
        for future in waiting:
            if self.broken is None:
                future.set_result(None)
            else:
                future.set_exception(self.broken)

    def _sync_folders(self, group: list[_Write]) -> None:
        """Make the files the group's rows name durable in their folders: one fsync per
        folder, before the commit that relies on them."""
        for folder in sorted(frozenset[Path]().union(*(w[2] for w in group))):
            try:
                fsync_directory(folder)
            except Exception as exc:  # whatever it is, no write may hang
                reason = getattr(exc, "strerror", None) or str(exc)
                self.broken = ManifestError(
                    f"cannot write to the output folder ({folder}): {reason}"
                )
                self.broken.__cause__ = exc
                return


def file_problem(output: Path, check: dict[str, Any]) -> str | None:
    """Why a recorded output file is no longer what was written (None if it is)."""
    path = output / check["path"]
    try:
        size = path.stat().st_size
    except OSError:
        return f"{check['path']} is missing"
    if "size" in check and size != check["size"]:
        return f"{check['path']} has {size} bytes, not {check['size']}"
    if "sha256" in check and hashlib.sha256(path.read_bytes()).hexdigest() != check["sha256"]:
        return f"{check['path']} does not match its recorded SHA-256"
    if "md5" in check and hashlib.md5(path.read_bytes()).hexdigest() != check["md5"]:
        return f"{check['path']} does not match its recorded MD5"  # (a job store's etag)
    return None


def folder_problem(output: Path, checks: Iterable[dict[str, Any]]) -> str | None:
    """The first problem of a job's recorded files in the folder ``output`` (None if every
    one is what was written); :func:`comfyfn.batch.jobs.stored_problem` in object storage."""
    return next(filter(None, (file_problem(output, check) for check in checks)), None)


class Manifest:
    """Single-runner access to ``manifest.sqlite`` (WAL, fsync on commit, writes
    group-committed by a thread of its own); not to be shared between threads.

    Opening brings the manifest to the newest schema revision this comfyfn knows (see
    :mod:`comfyfn.batch.migrations`). Errors are :class:`ManifestError` naming the file: held
    by another runner, not a manifest, or on a disk that refuses writes; a manifest a newer
    comfyfn made is refused with :class:`~comfyfn.errors.SchemaTooNew`, untouched.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._lock: int | None = None
        memory = str(path) == ":memory:"
        try:
            if not memory:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                self._lock = _lock(self.path.with_name("manifest.lock"))
            self.db = sqlite3.connect(str(path), isolation_level=None)
        except OSError as exc:
            self._unlock()
            raise ManifestError(
                f"cannot use the output folder {self.path.parent}: {exc.strerror}"
            ) from exc
        try:
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute("PRAGMA synchronous=FULL")
            migrations.upgrade(self.db, self.path)
        except sqlite3.DatabaseError as exc:
            self.close()
            raise ManifestError(
                f"{self.path} is not a usable comfyfn manifest ({exc}); "
                "move it away to start the batch afresh"
            ) from exc
        except BaseException:  # SchemaTooNew (names the file), or interrupted
            self.close()
            raise
        self._writer = _Writer(
            self.db if memory else self._writing_connection(), self.path, threaded=not memory
        )

    def _writing_connection(self) -> sqlite3.Connection:
        db = sqlite3.connect(str(self.path), isolation_level=None, check_same_thread=False)
        db.execute("PRAGMA synchronous=FULL")
        return db

    def close(self) -> None:
        """Commit the writes still queued (a failure among them is logged by no one: await
        or wait for a write to know it is on disk), then release the manifest."""
        writer = getattr(self, "_writer", None)
        if writer is not None:
            writer.close()
            if writer.db is not self.db:
                writer.db.close()
        with contextlib.suppress(AttributeError):
            self.db.close()
        self._unlock()

    def flush(self) -> Commit:
        """Resolved once every write queued before it is on disk (or failed)."""
        return self._writer.write("SELECT 1", ())

    def _write(self, block: bool, sql: str, *params: Any) -> Commit:
        return self._write_synced(block, frozenset(), sql, *params)

    def _write_synced(
        self, block: bool, folders: frozenset[Path], sql: str, *params: Any
    ) -> Commit:
        commit = self._writer.write(sql, params, folders)
        if block:
            commit.wait()
        return commit

    def _unlock(self) -> None:
        if self._lock is not None:
            os.close(self._lock)  # closing the descriptor releases the flock
            self._lock = None

    def _record(self, row: tuple[Any, ...]) -> Record:
        (
            key,
            idx,
            label,
            stem,
            params,
            state,
            server,
            prompt_id,
            files,
            error,
            attempts,
            seconds,
            executed,
        ) = row
        checks = [c if isinstance(c, dict) else {"path": c} for c in json.loads(files or "[]")]
        return Record(
            key,
            idx,
            label,
            stem,
            json.loads(params),
            state,
            server,
            prompt_id,
            checks,
            error,
            attempts,
            seconds,
            executed,
        )

    _COLUMNS = (
        "key,row,label,stem,params,state,server,prompt_id,files,error,attempts,seconds,executed"
    )

    @_guarded
    def get(self, key: str) -> Record | None:
        row = self.db.execute(f"SELECT {self._COLUMNS} FROM jobs WHERE key=?", (key,)).fetchone()
        return self._record(row) if row else None

    # Writes: each returns its Commit, once on disk — or at once with ``block=False``.

    def add(
        self,
        key: str,
        row: int,
        label: str,
        stem: str,
        params: dict[str, Any],
        state: str = "pending",
        error: str | None = None,
        *,
        block: bool = True,
    ) -> Commit:
        return self._write(
            block,
            "INSERT INTO jobs(key,row,label,stem,params,state,error) VALUES(?,?,?,?,?,?,?) "
            "ON CONFLICT(key) DO UPDATE SET state=excluded.state, error=excluded.error "
            "WHERE jobs.state IN ('pending','invalid','failed')",
            key,
            row,
            label,
            stem,
            json.dumps(params, ensure_ascii=False, default=str),
            state,
            error,
        )

    def submitted(self, key: str, server: str, prompt_id: str, *, block: bool = True) -> Commit:
        return self._write(
            block,
            "UPDATE jobs SET state='submitted', server=?, prompt_id=?, attempts=attempts+1, "
            "submitted_at=? WHERE key=?",
            server,
            prompt_id,
            time.time(),
            key,
        )

    def done(
        self,
        key: str,
        files: list[dict[str, Any]],
        server: str,
        *,
        seconds: float,
        executed: float,
        folders: Iterable[Path] = (),
        block: bool = True,
    ) -> Commit:
        """``files``: what :func:`comfyfn.batch.jobs.save_outputs` wrote (path, size, sha256);
        ``seconds`` the turnaround (queued behind our own jobs included), ``executed`` the
        server's execution time; ``folders``: where files were written whose folder entries
        are not durable yet: fsynced before the commit that marks the job done (once for all
        the jobs of that commit)."""
        return self._write_synced(
            block,
            frozenset(folders),
            "UPDATE jobs SET state='done', files=?, seconds=?, executed=?, server=?, "
            "error=NULL, finished_at=? WHERE key=?",
            json.dumps(files),
            seconds,
            executed,
            server,
            time.time(),
            key,
        )

    def failed(self, key: str, error: str, *, block: bool = True) -> Commit:
        return self._write(
            block,
            "UPDATE jobs SET state='failed', error=?, finished_at=? WHERE key=?",
            error,
            time.time(),
            key,
        )

    def requeued(self, key: str, *, block: bool = True) -> Commit:
        """Back to pending: moved off a failed server, lost by it, or cancelled by us."""
        return self._write(block, "UPDATE jobs SET state='pending' WHERE key=?", key)

    def redo(self, key: str, *, block: bool = True) -> Commit:
        """A done job whose files went missing or were damaged: make it again."""
        return self._write(block, "UPDATE jobs SET state='pending', files=NULL WHERE key=?", key)

    def records(self, state: str | None = None) -> Iterator[Record]:
        query = f"SELECT {self._COLUMNS} FROM jobs"
        cur = self.db.execute(
            query + " WHERE state=? ORDER BY row, stem" if state else query + " ORDER BY row, stem",
            (state,) if state else (),
        )
        for row in cur:
            yield self._record(row)

    @_guarded
    def counts(self) -> dict[str, int]:
        return dict(self.db.execute("SELECT state, COUNT(*) FROM jobs GROUP BY state"))

    @_guarded
    def percentile(self, q: float, of: str = "executed") -> float | None:
        """The ``q`` quantile (nearest rank) over done jobs of their ``executed`` seconds
        (the servers' execution time) or ``seconds`` (turnaround)."""
        column = {"executed": "executed", "seconds": "seconds"}[of]
        done = f"state='done' AND {column} IS NOT NULL"
        (n,) = self.db.execute(f"SELECT COUNT(*) FROM jobs WHERE {done}").fetchone()
        if not n:
            return None
        offset = min(n - 1, max(0, math.ceil(q * n) - 1))
        (value,) = self.db.execute(
            f"SELECT {column} FROM jobs WHERE {done} ORDER BY {column} LIMIT 1 OFFSET ?",
            (offset,),
        ).fetchone()
        return float(value)


def _lock(path: Path) -> int:
    """An exclusive lock on ``path`` (held while the descriptor is open); the holder's pid is
    written into it so a refused runner can name it."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
        os.close(fd)
        if exc.errno in (errno.EAGAIN, errno.EACCES):
            raise ManifestError(
                f"the output folder {path.parent} is in use by another comfyfn batch "
                f"(pid {holder}); wait for it to finish or choose another --output"
            ) from exc
        raise
    os.ftruncate(fd, 0)
    os.pwrite(fd, str(os.getpid()).encode(), 0)
    return fd
