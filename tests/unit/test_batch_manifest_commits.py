"""The manifest's group commit: writes are committed off the event loop, in order, and a
failed commit fails its writes and every later one with one error naming the file."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import pytest

from comfyfn.batch.manifest import Manifest, ManifestError


def states(path: Path) -> dict[str, str]:
    """The jobs' states as committed, seen from a connection of another process's kind."""
    db = sqlite3.connect(path)
    try:
        return dict(db.execute("SELECT key, state FROM jobs"))
    finally:
        db.close()


def test_a_write_waiting_for_the_disk_does_not_block_the_event_loop(tmp_path):
    path = tmp_path / "manifest.sqlite"
    manifest = Manifest(path)
    blocker = sqlite3.connect(path, isolation_level=None)

    async def go() -> None:
        blocker.execute("BEGIN IMMEDIATE")  # the disk is "slow": the writer cannot commit yet
        for i in range(50):
            manifest.add(f"k{i}", i, f"row {i}", f"{i:06d}", {}, block=False)
        submitted = manifest.submitted("k49", "http://a", "p49", block=False)
        ran = asyncio.Event()
        asyncio.get_running_loop().call_soon(ran.set)
        await ran.wait()  # the loop runs while the writes wait
        assert states(path) == {}
        blocker.execute("COMMIT")
        await submitted  # once this one is on disk, so are those queued before it
        assert states(path) == {f"k{i}": "pending" for i in range(49)} | {"k49": "submitted"}

    try:
        asyncio.run(asyncio.wait_for(go(), 30))
    finally:
        blocker.close()
        manifest.close()


def test_a_failed_commit_fails_its_writes_and_every_later_one(tmp_path):
    path = tmp_path / "manifest.sqlite"
    manifest = Manifest(path)
    manifest.add("k1", 1, "row 1", "000001", {})
    other = sqlite3.connect(path)
    other.execute("DROP TABLE jobs")  # the writer's next statement fails
    other.commit()
    other.close()

    async def go() -> None:
        with pytest.raises(ManifestError, match=f"cannot use the manifest {path}: no such table"):
            await manifest.done("k1", [], "http://a", seconds=1.0, executed=1.0, block=False)
        with pytest.raises(ManifestError, match="no such table"):
            await manifest.flush()

    try:
        asyncio.run(asyncio.wait_for(go(), 30))
        with pytest.raises(ManifestError, match="no such table"):  # the blocking form too
            manifest.failed("k1", "broken")
    finally:
        manifest.close()


def test_closing_commits_the_writes_still_queued(tmp_path):
    path = tmp_path / "manifest.sqlite"
    manifest = Manifest(path)
    for i in range(20):
        manifest.add(f"k{i}", i, f"row {i}", f"{i:06d}", {}, block=False)
    manifest.close()
    assert states(path) == {f"k{i}": "pending" for i in range(20)}


def test_in_memory_writes_are_committed_at_once():
    manifest = Manifest(":memory:")
    commit = manifest.add("k1", 1, "row 1", "000001", {}, block=False)
    commit.wait()
    record = manifest.get("k1")
    assert record is not None and record.state == "pending"
    manifest.close()


def test_a_write_whose_caller_stopped_waiting_is_still_made(tmp_path):
    path = tmp_path / "manifest.sqlite"
    manifest = Manifest(path)
    blocker = sqlite3.connect(path, isolation_level=None)

    async def go() -> None:
        blocker.execute("BEGIN IMMEDIATE")
        waiter = asyncio.ensure_future(manifest.add("k1", 1, "row 1", "000001", {}, block=False))
        await asyncio.sleep(0)
        waiter.cancel()  # e.g. the batch was abandoned while the write waited for the disk
        with pytest.raises(asyncio.CancelledError):
            await waiter
        blocker.execute("COMMIT")
        await manifest.flush()  # the writer carries on: later writes are committed
        assert states(path) == {"k1": "pending"}

    try:
        asyncio.run(asyncio.wait_for(go(), 30))
    finally:
        blocker.close()
        manifest.close()
