"""A queued batch's files and counts, for the tests of ``comfyfn batch … --db``: a rows file
of ``n`` cats, the ``results.csv`` a follower wrote, the batch's job states in the store."""

from __future__ import annotations

import csv
from pathlib import Path

from comfyfn.gateway.store import Store


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
