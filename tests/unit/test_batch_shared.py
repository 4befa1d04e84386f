"""A batch through the job store from Python (``open_shared_batch``), as ``comfyfn batch
--db`` runs it: enqueued once (again: nothing new), followed to its report, and a name the
store does not hold refused naming it."""

from __future__ import annotations

import asyncio

import pytest

from comfyfn.batch import Row
from comfyfn.batch.queued import load_workflow
from comfyfn.batch.shared import open_shared_batch
from comfyfn.errors import ConfigError
from comfyfn.jobs import NewFile, Store


def rows(n: int) -> list[Row]:
    return [Row(i, {"prompt": f"cat {i}", "width": 64, "height": 64}) for i in range(1, n + 1)]


def finish_all(db: str) -> None:
    """What the workers of other machines would do."""
    with Store(db) as store:
        for job in store.claim_jobs("elsewhere", limit=100):
            name = f"images/{job.params['stem']}.png"
            store.complete_job(
                job.id, [NewFile(name, "image/png", 1, "e")], state="succeeded", fence=job.claim
            )


def test_a_shared_batch_is_enqueued_once_and_followed_to_its_report(tmp_path):
    db, out = f"sqlite:///{tmp_path / 'q.db'}", str(tmp_path / "out")
    wf = load_workflow("zimage-turbo")

    async def submit() -> tuple[int, int]:
        async with open_shared_batch(db, "nightly", out, rows=rows(3), workflow=wf) as shared:
            assert shared.worker is None and shared.batch.keys == shared.keys
            return len(shared.keys or ()), shared.added

    assert asyncio.run(submit()) == (3, 3)
    assert asyncio.run(submit()) == (3, 0)  # the same rows again: nothing new
    finish_all(db)

    async def follow() -> list[str]:
        async with open_shared_batch(db, "nightly", out) as shared:
            shared.batch.poll = 0
            states = [r.state async for r in shared.batch.results()]
            summary, _ = shared.batch.report(tmp_path / "report", {"done": len(states)})
            assert summary.done == 3
            return states

    assert asyncio.run(follow()) == ["skipped"] * 3
    assert (tmp_path / "report" / "results.csv").read_text().count("images/") == 3


def test_following_a_batch_the_store_does_not_hold_names_it(tmp_path):
    async def follow() -> None:
        async with open_shared_batch(f"sqlite:///{tmp_path / 'q.db'}", "nope", "/out"):
            pass

    with pytest.raises(ConfigError, match="batch 'nope': the store holds no batch"):
        asyncio.run(follow())


def test_rows_without_their_workflow_are_refused(tmp_path):
    async def submit() -> None:
        async with open_shared_batch(f"sqlite:///{tmp_path / 'q.db'}", "b", "/o", rows=rows(1)):
            pass

    with pytest.raises(ConfigError, match="workflow"):
        asyncio.run(submit())


def test_rows_a_worker_ends_before_the_first_look_are_done_not_skipped(tmp_path):
    """Skipped means done by an earlier run: a row of this run that a fast worker (here, or
    on another machine) ends before the follower first looks was made by this run."""
    db, out = f"sqlite:///{tmp_path / 'q.db'}", str(tmp_path / "out")
    wf = load_workflow("zimage-turbo")

    async def run(n: int) -> list[str]:
        async with open_shared_batch(db, "b", out, rows=rows(n), workflow=wf) as shared:
            finish_all(db)  # before the follower's first look
            shared.batch.poll = 0
            return [r.state async for r in shared.batch.results()]

    assert asyncio.run(run(2)) == ["done", "done"]
    assert sorted(asyncio.run(run(3))) == ["done", "skipped", "skipped"]  # one row more


def test_an_empty_file_is_an_empty_batch(tmp_path):
    async def run() -> list[str]:
        db, wf = f"sqlite:///{tmp_path / 'q.db'}", load_workflow("zimage-turbo")
        async with open_shared_batch(db, "b", "/out", rows=[], workflow=wf) as shared:
            shared.batch.poll = 0
            return [r.state async for r in shared.batch.results()]

    assert asyncio.run(run()) == []


def test_a_worker_here_runs_this_batch_and_its_servers_health_is_said(tmp_path):
    """With ``work_on`` a worker of this batch runs in the block, on those servers with the
    batch's settings, and hands its rows back when the block ends; its servers going down
    and coming back reach the follower's ``on_event`` as a batch run's do."""
    from comfyfn.batch import BatchSettings

    db, url = f"sqlite:///{tmp_path / 'q.db'}", "http://127.0.0.1:9"  # nothing listens

    async def run() -> list[tuple[str, str]]:
        wf, settings = load_workflow("zimage-turbo"), BatchSettings(retries=7)
        opened = open_shared_batch(
            db, "b", "/out", rows=rows(1), workflow=wf, settings=settings, work_on=[url]
        )
        async with opened as shared:
            assert shared.worker is not None and shared.worker.only_batch == "b"
            assert shared.worker.settings.retries == 7 and shared.batch.servers == (url,)
            said: list[tuple[str, str]] = []
            shared.batch.on_event = lambda kind, data: said.append((kind, data))
            shared.worker.fleet.on_health(url, False)
            shared.worker.fleet.on_health(url, True)
            return said

    assert asyncio.run(run()) == [("server_down", url), ("server_up", url)]
    with Store(db) as store:
        assert store.batch_counts("b")["queued"] == 1  # nothing claimed it: no server answered
