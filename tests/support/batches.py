"""A queued batch's files and counts, for the tests of ``comfyfn batch … --db``: a rows file
of ``n`` cats, the ``results.csv`` a follower wrote, the batch's job states in the store, the
jobs a worker holds."""

from __future__ import annotations

import csv
from pathlib import Path

import sqlalchemy as sa

from comfyfn.jobs.schema import jobs_t
from comfyfn.jobs.store import Store


def write_rows(path: Path, n: int, start: int = 0) -> Path:
    rows = [f"queued cat {i},64,64,2\n" for i in range(start, start + n)]
    path.write_text("prompt,width,height,steps\n" + "".join(rows))
    return path


def results(out: Path) -> list[dict[str, str]]:
    with (out / "results.csv").open(encoding="utf-8-sig") as f:
        return list(csv.DictReader(f))


def batch_counts(db: str, name: str) -> dict[str, int]:
    with Store(db) as store:
        return store.batch_counts(name)


def running_by(db: str, worker: str) -> int:
    """How many jobs ``worker`` holds submitted to a server (state ``running``)."""
    with Store(db) as store, store._read() as conn:
        query = sa.select(sa.func.count()).where(
            jobs_t.c.claimed_by == worker, jobs_t.c.state == "running"
        )
        return int(conn.execute(query).scalar() or 0)
