"""The batch manifest: one SQLite file in the output folder recording every job's fate.

A job's key is the hash of its bound API graph (so the same row with the same workflow is
the same job across runs). States::

    pending → submitted(server, prompt_id) → done(files) | failed(error)
    invalid(error)        a row that could not become a job

``submitted`` is written *before* POST /prompt (with the client-chosen prompt id), so a
runner killed at any point can re-attach to its jobs instead of running them twice (a
resumed run re-attaches each such job when it reaches its row; the jobs in flight at a
crash are the ones just before where it stopped, so they are reached at once).
"""

from __future__ import annotations

import json
import math
import sqlite3
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["Manifest", "Record"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    key TEXT PRIMARY KEY,
    row INTEGER NOT NULL,
    label TEXT NOT NULL,
    stem TEXT NOT NULL,
    params TEXT NOT NULL,
    state TEXT NOT NULL,
    server TEXT,
    prompt_id TEXT,
    files TEXT,
    error TEXT,
    attempts INTEGER NOT NULL DEFAULT 0,
    submitted_at REAL,
    finished_at REAL,
    seconds REAL
);
CREATE INDEX IF NOT EXISTS jobs_state ON jobs(state);
"""


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
    files: list[str]
    error: str | None
    attempts: int
    seconds: float | None


class Manifest:
    """Thread-unsafe, single-writer access to ``manifest.sqlite`` (WAL, fsync on commit)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        if str(path) != ":memory:":
            self.path.parent.mkdir(parents=True, exist_ok=True)
        self.db = sqlite3.connect(str(path), isolation_level=None)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=NORMAL")
        self.db.executescript(_SCHEMA)

    def close(self) -> None:
        self.db.close()

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
        ) = row
        return Record(
            key,
            idx,
            label,
            stem,
            json.loads(params),
            state,
            server,
            prompt_id,
            json.loads(files) if files else [],
            error,
            attempts,
            seconds,
        )

    _COLUMNS = "key,row,label,stem,params,state,server,prompt_id,files,error,attempts,seconds"

    def get(self, key: str) -> Record | None:
        row = self.db.execute(f"SELECT {self._COLUMNS} FROM jobs WHERE key=?", (key,)).fetchone()
        return self._record(row) if row else None

    def add(
        self,
        key: str,
        row: int,
        label: str,
        stem: str,
        params: dict[str, Any],
        state: str = "pending",
        error: str | None = None,
    ) -> None:
        self.db.execute(
            "INSERT INTO jobs(key,row,label,stem,params,state,error) VALUES(?,?,?,?,?,?,?) "
            "ON CONFLICT(key) DO UPDATE SET state=excluded.state, error=excluded.error "
            "WHERE jobs.state IN ('pending','invalid','failed')",
            (
                key,
                row,
                label,
                stem,
                json.dumps(params, ensure_ascii=False, default=str),
                state,
                error,
            ),
        )

    def submitted(self, key: str, server: str, prompt_id: str) -> None:
        self.db.execute(
            "UPDATE jobs SET state='submitted', server=?, prompt_id=?, attempts=attempts+1, "
            "submitted_at=? WHERE key=?",
            (server, prompt_id, time.time(), key),
        )

    def done(self, key: str, files: list[str], seconds: float, server: str) -> None:
        self.db.execute(
            "UPDATE jobs SET state='done', files=?, seconds=?, server=?, error=NULL, "
            "finished_at=? WHERE key=?",
            (json.dumps(files), seconds, server, time.time(), key),
        )

    def failed(self, key: str, error: str) -> None:
        self.db.execute(
            "UPDATE jobs SET state='failed', error=?, finished_at=? WHERE key=?",
            (error, time.time(), key),
        )

    def requeued(self, key: str) -> None:
        self.db.execute("UPDATE jobs SET state='pending' WHERE key=?", (key,))

    def records(self, state: str | None = None) -> Iterator[Record]:
        query = f"SELECT {self._COLUMNS} FROM jobs"
        cur = self.db.execute(
            query + " WHERE state=? ORDER BY row, stem" if state else query + " ORDER BY row, stem",
            (state,) if state else (),
        )
        for row in cur:
            yield self._record(row)

    def counts(self) -> dict[str, int]:
        return dict(self.db.execute("SELECT state, COUNT(*) FROM jobs GROUP BY state"))

    def percentile(self, q: float) -> float | None:
        """The ``q`` quantile of job seconds over done jobs (nearest rank)."""
        (n,) = self.db.execute("SELECT COUNT(*) FROM jobs WHERE state='done'").fetchone()
        if not n:
            return None
        offset = min(n - 1, max(0, math.ceil(q * n) - 1))
        (value,) = self.db.execute(
            "SELECT seconds FROM jobs WHERE state='done' ORDER BY seconds LIMIT 1 OFFSET ?",
            (offset,),
        ).fetchone()
        return value
