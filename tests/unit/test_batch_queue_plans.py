"""A batch enqueued into the shared store (issue 20, phase 2a): one job per row keyed by
the row's content, invalid rows stored as such, claims by priority alongside API jobs,
cancelling, and the report written from the store's records."""

from __future__ import annotations

import asyncio
import csv
import json

import pytest

from comfyfn.batch import Row, RowError
from comfyfn.batch.queued import (
    QueuedBatch,
    enqueue,
    load_workflow,
    requeue_damaged,
)
from comfyfn.jobs.store import BATCH_KEY, NewFile, Store
from comfyfn.storage import LocalStorage


@pytest.fixture
def store(tmp_path):
    with Store(f"sqlite:///{tmp_path / 'q.db'}") as s:
        yield s


def rows(*prompts: str, priority: int = 0) -> list[Row]:
    values = [{"prompt": p, "width": 64, "height": 64} for p in prompts]
    return [Row(i, v, priority=priority) for i, v in enumerate(values, 1)]


def put(store: Store, name: str, items, output: str = "/out") -> tuple[set[str], int]:
    wf = load_workflow("zimage-turbo")
    return asyncio.run(enqueue(store, name, items, wf, output))


def test_the_same_rows_again_add_nothing_and_a_changed_row_is_a_new_job(store):
    keys, added = put(store, "b", rows("a cat", "a dog"))
    assert (len(keys), added) == (2, 2)
    assert put(store, "b", rows("a cat", "a dog")) == (keys, 0)
    changed, added = put(store, "b", rows("a cat", "a bird"))
    assert added == 1 and len(changed & keys) == 1
    assert store.batch_counts("b")["queued"] == 3
    assert len(store.batch_states("b", changed)) == 2  # a follower of the file sees its rows
    assert put(store, "other", rows("a cat"))[1] == 1  # another batch: its own job


def test_a_row_s_job_holds_its_bound_graph_and_where_its_images_go(store):
    put(store, "b", rows("a red fox"), output="s3://bucket/run")
    (job_id,) = store.batch_states("b")
    job = store.get_job(job_id)
    assert job is not None and job.key_id == BATCH_KEY and job.models
    assert "a red fox" in json.dumps(job.params["graph"])
    assert json.loads(store.job_target(job_id) or "") == {
        "output": "s3://bucket/run",
        "name": "images/000001",
        "deliver": None,
    }


def test_invalid_rows_are_stored_failed_naming_the_row_and_not_twice(store):
    bad = RowError(3, "steps", "'x' is not an integer")
    assert put(store, "b", [bad])[1] == 1
    assert put(store, "b", [bad])[1] == 0
    (job,) = [j for j, _ in store.batch_jobs(store.batch_states("b"))]
    assert job.state == "failed" and job.error is not None
    assert job.error["message"] == "row 3, column 'steps': 'x' is not an integer"


def test_rows_with_an_input_image_keep_it_once_in_the_batch_s_output_place(store, tmp_path):
    from PIL import Image

    Image.new("RGB", (8, 8), "red").save(tmp_path / "in.png")
    out = tmp_path / "out"
    wf = load_workflow("zimage-edit")
    same = [Row(i, {"prompt": f"edit {i}", "image": str(tmp_path / "in.png")}) for i in (1, 2)]
    asyncio.run(enqueue(store, "b", same, wf, str(out)))
    jobs = [j for j, _ in store.batch_jobs(store.batch_states("b"))]
    assert [j.state for j in jobs] == ["queued", "queued"]
    (kept,) = (out / "inputs").iterdir()  # one image, kept once for both rows
    assert kept.read_bytes() == (tmp_path / "in.png").read_bytes()
    for job in jobs:
        ((server_name, key),) = job.params["inputs"].items()
        assert key == f"inputs/{kept.name}" and server_name in json.dumps(job.params["graph"])


def test_a_row_whose_input_image_cannot_be_kept_stops_the_enqueue_naming_the_place(store, tmp_path):
    from PIL import Image

    from comfyfn.storage import StorageError

    Image.new("RGB", (8, 8)).save(tmp_path / "in.png")
    (tmp_path / "out").write_text("a file, not a folder")
    wf = load_workflow("zimage-edit")
    row = Row(1, {"prompt": "edit", "image": str(tmp_path / "in.png")})
    with pytest.raises(StorageError, match="inputs/"):
        asyncio.run(enqueue(store, "b", [row], wf, str(tmp_path / "out")))
    assert store.batch_states("b") == {}


def test_batch_rows_and_api_jobs_are_claimed_by_priority_and_a_batch_worker_takes_its_own(store):
    api, _ = store.create_job(key_id="key_1", workflow="zimage-turbo", params={}, priority=1)
    put(store, "low", rows("low"), output="/low")
    put(store, "high", rows("high", priority=5), output="/high")
    assert store.claim_jobs("w", limit=1, batch="low")[0].params["shown"]["prompt"] == "low"
    first, second = store.claim_jobs("w", limit=2)
    assert first.params["shown"]["prompt"] == "high" and second.id == api.id


def test_a_worker_without_api_jobs_claims_batch_rows_only(store):
    """A worker that cannot bind API jobs (``batch --work``, no gateway) leaves them queued
    for one that can, even when they come first."""
    api, _ = store.create_job(key_id="key_1", workflow="zimage-turbo", params={}, priority=9)
    put(store, "b", rows("one", "two"))
    claimed = store.claim_jobs("w", limit=3, batch_rows_only=True)
    assert [job.key_id for job in claimed] == [BATCH_KEY, BATCH_KEY]
    assert store.get_job(api.id).state == "queued"
    assert [job.id for job in store.claim_jobs("w", limit=3)] == [api.id]


def test_cancelling_a_batch_ends_its_queued_rows_and_asks_its_running_ones(store):
    put(store, "b", rows("a", "b", "c"))
    put(store, "other", rows("d"))
    (running,) = store.claim_jobs("w", limit=1, batch="b")
    assert store.cancel_batch("b") == (2, 1)
    assert store.batch_counts("b")["cancelled"] == 2
    assert store.cancel_requests([running.id]) == {running.id}
    assert store.batch_counts("other")["queued"] == 1


def test_retrying_a_batch_queues_its_failed_and_cancelled_rows_again_but_not_invalid_ones(
    store,
):
    put(store, "b", [*rows("fails", "cancelled", "done"), RowError(4, "steps", "not a number")])
    put(store, "other", rows("fails elsewhere"))
    failing, cancelled, done = store.claim_jobs("w", limit=3, batch="b")
    store.update_job(failing.id, state="failed", attempts=3, error={"type": "X", "message": "m"})
    store.update_job(cancelled.id, state="cancelled", error={"type": "cancelled", "message": "c"})
    store.update_job(done.id, state="succeeded")
    (elsewhere,) = store.claim_jobs("w", limit=1, batch="other")
    store.update_job(elsewhere.id, state="failed", error={"type": "X", "message": "m"})
    assert store.retry_batch("b") == 2
    assert store.batch_counts("b") == {**store.batch_counts("b"), "queued": 2, "failed": 1}
    again = store.get_job(failing.id)
    assert again is not None and (again.attempts, again.error, again.server) == (0, None, None)
    assert store.retry_batch("b") == 0
    assert store.batch_counts("other")["failed"] == 1


def test_the_report_of_a_queued_batch_lists_every_row_and_file(store, tmp_path):
    put(store, "b", [*rows("one", "two"), RowError(3, "prompt", "is empty")])
    jobs = [j for j, _ in store.batch_jobs(store.batch_states("b")) if j.state == "queued"]
    for n, job in enumerate(store.claim_jobs("w", limit=2)):
        name = f"images/{job.params['stem']}.png"
        times = {"executed": 0.5 + n, "turnaround": 2.0 + n}
        new = NewFile(name, "image/png", 1, "e")
        store.complete_job(job.id, [new], state="succeeded", fence=job.claim, **times)
    assert len(jobs) == 2

    batch = QueuedBatch(store, "b", poll=0.01)
    states = asyncio.run(_consume(batch))
    assert sorted(states) == ["invalid", "skipped", "skipped"]  # finished before the first look
    summary, sheet = batch.report(tmp_path, {"skipped": 2, "invalid": 1})
    with (tmp_path / "results.csv").open(encoding="utf-8-sig") as f:
        lines = list(csv.DictReader(f))
    assert [(r["row"], r["file"], r["state"]) for r in lines] == [
        ("1", "images/000001.png", "done"),
        ("2", "images/000002.png", "done"),
        ("3", "", "invalid"),
    ]
    assert summary.invalid == 1 and sheet.name == "index.html"
    # the servers' own execution times and the turnarounds, as a batch run here reports them
    assert (summary.p50, summary.p95, summary.turnaround_p50) == (0.5, 1.5, 2.0)


def _run_all(store: Store, output) -> dict[str, str]:
    """Claim every queued row and finish it as a worker would: its image written to
    ``output`` (a folder) and recorded with its size and etag; {path: job id}."""
    storage, written = LocalStorage(output), {}
    for job in store.claim_jobs("w", limit=100):
        name = f"images/{job.params['stem']}.png"
        kept = asyncio.run(storage.put(name, f"image of {job.id}".encode(), "image/png"))
        new = NewFile(name, "image/png", kept.size, kept.etag)
        times = {"executed": 1.0, "turnaround": 2.0}
        store.complete_job(job.id, [new], state="succeeded", fence=job.claim, **times)
        written[name] = job.id
    return written


def test_done_rows_whose_files_went_missing_or_were_damaged_are_queued_again(store, tmp_path):
    """As a batch run here remakes them on resume: submitting the file again queues them."""
    out = tmp_path / "out"
    keys, _ = put(store, "b", rows("one", "two", "three"), output=str(out))
    written = _run_all(store, out)
    (out / "images/000001.png").unlink()
    damaged = out / "images/000002.png"
    damaged.write_bytes(bytes(len(damaged.read_bytes())))  # the same size, other bytes
    again = asyncio.run(requeue_damaged(store, "b", str(out), keys))
    assert sorted(again) == [
        "images/000001.png is missing",
        "images/000002.png does not match its recorded MD5",
    ]
    states = store.batch_states("b")
    assert sorted(states.values()) == ["queued", "queued", "succeeded"]
    assert states[written["images/000003.png"]] == "succeeded"
    outputs = store.batch_outputs("b", keys, str(out))
    assert [job_id for job_id, _ in outputs] == [written["images/000003.png"]]
    queued = store.get_job(written["images/000001.png"])
    assert queued is not None and (queued.outputs, queued.attempts, queued.error) == ([], 0, None)
    assert (queued.executed, queued.turnaround) == (None, None)  # this run's times to come
    assert asyncio.run(requeue_damaged(store, "b", str(out), keys)) == []  # queued: not checked


def test_a_changed_row_s_old_job_is_not_queued_again_for_the_new_one_s_file(store, tmp_path):
    """A changed row is a new job writing the same name: the old job's record no longer
    matches that file, and must not be taken for a damaged row (the two would take turns)."""
    out = tmp_path / "out"
    put(store, "b", rows("one", "a dog"), output=str(out))
    _run_all(store, out)
    keys, added = put(store, "b", rows("one", "a bird"), output=str(out))
    assert added == 1
    _run_all(store, out)  # the bird's image replaces the dog's under images/000002.png
    assert asyncio.run(requeue_damaged(store, "b", str(out), keys)) == []
    assert sorted(store.batch_states("b").values()) == ["succeeded"] * 3
    elsewhere = str(tmp_path / "other-run")  # rows of this file that went to another place
    assert store.batch_outputs("b", keys, elsewhere) == []


def test_a_place_holding_none_of_the_done_files_queues_nothing_again(store, tmp_path, caplog):
    """Another host's folder (the workers write elsewhere): every file "missing" is not
    taken as every row to redo."""
    keys, _ = put(store, "b", rows("one", "two"), output=str(tmp_path / "out"))
    _run_all(store, tmp_path / "out")
    # the same path as the workers wrote, but not their files (another host's folder)
    for image in (tmp_path / "out" / "images").iterdir():
        image.unlink()
    assert asyncio.run(requeue_damaged(store, "b", str(tmp_path / "out"), keys)) == []
    assert sorted(store.batch_states("b").values()) == ["succeeded", "succeeded"]
    assert "none of the 2 done rows of batch b has its files in" in caplog.text


async def _consume(batch: QueuedBatch) -> list[str]:
    return [r.state async for r in batch.results()]


@pytest.mark.parametrize(
    ("args", "named"),
    [
        (["rows.csv", "--work"], "--work runs a worker of a queued batch: give --db URL too"),
        (["rows.csv", "--name", "n"], "--name names a batch in the shared store"),
        (["--db", "sqlite://"], "give a job file"),
        (["rows.csv", "extra"], "unexpected argument 'extra'"),
        (["status", "--db", "sqlite://"], "comfyfn batch status NAME needs the batch's name"),
        (["rows.csv", "--db", "sqlite://", "-s", "http://127.0.0.1:9"], "--server is for --work"),
        (["rows.csv", "--db", "sqlite://", "--warm"], "--warm warms the servers of --work"),
        (["--db", "sqlite://", "--name", "n", "--work", "--warm"], "give the file and --work"),
        (
            ["rows.csv", "--db", "sqlite://", "--workflow", "blueprint:X"],
            "--workflow blueprint:X: a blueprint is served by ComfyUI; with --db it is loaded "
            "from the servers of --work: give --work --server URL",
        ),
    ],
)
def test_the_queued_batch_s_usage_errors_name_what_is_missing(args, named, tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from comfyfn.cli._app import app

    monkeypatch.chdir(tmp_path)
    (tmp_path / "rows.csv").write_text("prompt\na cat\n")
    result = CliRunner().invoke(app, ["batch", *args])
    assert result.exit_code == 2 and named in " ".join(result.output.split())
