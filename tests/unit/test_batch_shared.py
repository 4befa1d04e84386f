"""A batch through the job store from Python (``open_shared_batch``), as ``comfyfn batch
--db`` runs it: enqueued once (again: nothing new), followed to its report, and a name the
store does not hold refused naming it."""

from __future__ import annotations

import asyncio

import pytest

import comfyfn
from comfyfn.batch import Row
from comfyfn.batch.queued import load_workflow
from comfyfn.batch.shared import open_shared_batch
from comfyfn.errors import ConfigError
from comfyfn.jobs import NewFile, Store


def rows(n: int) -> list[Row]:
    return [Row(i, {"prompt": f"cat {i}", "width": 64, "height": 64}) for i in range(1, n + 1)]


def finish_all(db: str) -> None:
    """What the workers of other machines would do (their servers ran each job 1.5 s)."""
    with Store(db) as store:
        for job in store.claim_jobs("elsewhere", limit=100):
            name = f"images/{job.params['stem']}.png"
            new = NewFile(name, "image/png", 1, "e")
            times = {"executed": 1.5, "turnaround": 2.0}
            store.complete_job(job.id, [new], state="succeeded", fence=job.claim, **times)


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
    batch's settings, and hands its rows back when the block ends. Its servers' health
    reaches the follower's ``on_event`` as a batch run's does: one down from the start at
    the first look (before anyone could listen), later changes as they come."""
    from comfyfn.batch import BatchSettings

    db, url = f"sqlite:///{tmp_path / 'q.db'}", "http://127.0.0.1:9"  # nothing listens

    async def run() -> list[tuple[str, object]]:
        wf, settings = load_workflow("zimage-turbo"), BatchSettings(retries=7)
        opened = open_shared_batch(
            db, "b", "/out", rows=rows(1), workflow=wf, settings=settings, work_on=[url]
        )
        async with opened as shared:
            assert shared.worker is not None and shared.worker.only_batch == "b"
            assert shared.worker.settings.retries == 7 and shared.batch.servers == (url,)
            said: list[tuple[str, object]] = []
            shared.batch.on_event = lambda kind, data: said.append((kind, data))
            shared.batch.poll = 0
            finish_all(db)  # a worker elsewhere does the row
            async for result in shared.batch.results():
                said.append(("got", result.state))
                shared.worker.fleet.on_health(url, True)
            return said

    said = asyncio.run(run())
    assert [e for e in said if e[0] != "result"] == [
        ("server_down", url),
        ("got", "done"),
        ("server_up", url),
    ]


def test_a_row_a_worker_elsewhere_ends_while_this_run_checks_files_is_not_skipped(
    tmp_path, monkeypatch
):
    """Remaking lost files can take minutes (a HEAD per done file in object storage): what
    other machines' workers end meanwhile was made by this run."""
    from comfyfn.batch import queued
    from comfyfn.batch import shared as shared_module

    db, out = f"sqlite:///{tmp_path / 'q.db'}", str(tmp_path / "out")
    real = queued.requeue_damaged

    async def slow_check(*args):
        finish_all(db)  # while the files are checked
        return await real(*args)

    monkeypatch.setattr(shared_module, "requeue_damaged", slow_check)

    async def run() -> list[tuple[str, float | None]]:
        wf = load_workflow("zimage-turbo")
        async with open_shared_batch(db, "b", out, rows=rows(2), workflow=wf) as shared:
            shared.batch.poll = 0
            return [(r.state, r.executed) async for r in shared.batch.results()]

    assert asyncio.run(run()) == [("done", 1.5), ("done", 1.5)]


def test_a_done_row_made_again_by_this_run_is_done_not_skipped(tmp_path):
    db, out = f"sqlite:///{tmp_path / 'q.db'}", str(tmp_path / "out")
    wf = load_workflow("zimage-turbo")

    async def run(ended_by_a_worker: bool) -> tuple[list[str], list[str]]:
        async with open_shared_batch(db, "b", out, rows=rows(1), workflow=wf) as shared:
            if ended_by_a_worker:
                finish_all(db)
            shared.batch.poll = 0
            return shared.redone, [r.state async for r in shared.batch.results()]

    assert asyncio.run(run(True)) == ([], ["done"])
    # its file was never written: the next submission queues it again, and a worker ends it
    assert asyncio.run(run(True)) == (["images/000001.png is missing"], ["done"])


def test_without_an_answering_server_a_file_is_typed_by_the_bundled_definitions(tmp_path, caplog):
    """The rows still go to the queue for the workers of other machines, saying so; a
    blueprint, which only a server has, is refused before anything is made."""
    dead = ["http://127.0.0.1:9", "http://127.0.0.1:7"]  # nothing listens on either
    db = f"sqlite:///{tmp_path / 'q.db'}"

    async def run(workflow: str) -> int:
        opened = open_shared_batch(db, "b", "/out", rows=rows(1), workflow=workflow, work_on=dead)
        async with opened as shared:
            return shared.added

    with pytest.raises(comfyfn.ComfyError, match="blueprint:Any: none of the servers"):
        asyncio.run(run("blueprint:Any"))
    assert not (tmp_path / "q.db").exists()  # refused before the store was opened
    assert asyncio.run(run("zimage-turbo")) == 1
    assert "typed with the bundled definitions" in caplog.text
