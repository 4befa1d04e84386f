"""Batches through the shared store (issue 20, phase 2a), with real parts: PostgreSQL
(tests/support/pg.py), simulated ComfyUI servers in a process of their own
(tests/support/simcomfy.py), ``comfyfn worker`` processes killed with ``kill -9``,
``comfyfn batch … --db`` following; and one batch on the real engine with a worker in the
submitting process (``--work``)."""

from __future__ import annotations

import json
import signal

import httpx
import pytest

from comfyfn.jobs.store import Store
from tests.support.batches import batch_counts, results, running_by, write_rows
from tests.support.cli_proc import run_cli, start_cli
from tests.support.graphs import sleep_graph
from tests.support.polling import wait_for
from tests.support.simulated import simulated
from tests.support.workers import Worker


def named(output: str) -> str:
    """The batch name ``comfyfn batch`` printed."""
    line = next(
        line for line in output.splitlines() if line.startswith("batch ") and "rows," in line
    )
    return line.split()[1].rstrip(":")


@pytest.fixture
def place(postgres, tmp_path):
    db = postgres.create_database()
    storage = tmp_path / "files"
    storage.mkdir()
    return db, storage


def test_60_rows_on_two_workers_through_a_kill_9_each_row_once_in_results(place, tmp_path):
    db, storage = place
    rows, out = write_rows(tmp_path / "rows.csv", 60), tmp_path / "out"
    with simulated(4, job_ms=150) as urls:
        for url in urls:  # each server runs 4 rows, then keeps the rest queued until released
            httpx.post(f"{url}/simcomfy/hold", json={"after": 4}, timeout=30).raise_for_status()
        follower = start_cli("batch", str(rows), "--db", db, "-o", str(out), "--name", "cats")
        workers = [Worker(n, db, storage, urls, 2.0) for n in ("a", "b")]
        try:
            wait_for(lambda: batch_counts(db, "cats")["succeeded"] >= 15, 120, "15 rows done")
            wait_for(lambda: running_by(db, "a"), 120, "worker a holding rows on a server")
            workers[0].proc.send_signal(signal.SIGKILL)  # kill -9 mid-run
            for url in urls:
                httpx.post(f"{url}/simcomfy/release", timeout=30).raise_for_status()
            said, _ = follower.communicate(timeout=240)
            assert follower.returncode == 0, said
        finally:
            for w in workers:
                w.stop()
            if follower.poll() is None:
                follower.kill()
    assert batch_counts(db, "cats")["succeeded"] == 60
    lines = results(out)
    assert sorted(int(r["row"]) for r in lines) == list(range(1, 61))  # every row, once
    assert {r["state"] for r in lines} == {"done"}
    assert sorted(r["file"] for r in lines) == [f"images/{i:06d}.png" for i in range(1, 61)]
    made = sorted(p.relative_to(out).as_posix() for p in (out / "images").iterdir())
    assert made == [r["file"] for r in sorted(lines, key=lambda r: int(r["row"]))]
    assert (out / "index.html").read_text().count("<figure>") == 60
    with Store(db) as store, store._read() as conn:
        import sqlalchemy as sa

        from comfyfn.jobs.schema import files_t, jobs_t

        claims = [c for (c,) in conn.execute(sa.select(jobs_t.c.claims))]
        files = conn.execute(sa.select(sa.func.count()).select_from(files_t)).scalar()
    assert files == 60 and max(claims) >= 2  # the killed worker's rows were taken over
    # the same file again adds nothing: followed to the end at once, every row skipped
    again = run_cli("batch", str(rows), "--db", db, "-o", str(out), "--name", "cats")
    assert again.returncode == 0, again.stderr
    assert "60 rows, 0 new jobs queued" in again.stderr, again.stderr[:800]
    assert json.loads((out / "summary.json").read_text())["skipped"] == 60
    assert sum(batch_counts(db, "cats").values()) == 60
    # re-attaching by name alone, from elsewhere
    report = tmp_path / "elsewhere"
    follow = run_cli("batch", "--db", db, "--name", "cats", "-o", str(report))
    assert follow.returncode == 0, follow.stderr
    assert len(results(report)) == 60


def test_a_changed_row_is_a_new_job_status_and_cancel(place, tmp_path):
    db, _ = place
    rows, out = write_rows(tmp_path / "rows.csv", 20), tmp_path / "out"
    follower = start_cli("batch", str(rows), "--db", db, "-o", str(out))  # no worker at all
    try:
        wait_for(lambda: follower_said(follower, "new jobs queued"), 60, "the rows queued")
        name = named(follower.seen)  # type: ignore[attr-defined]  # follower_said keeps it
        assert batch_counts(db, name)["queued"] == 20
        write_rows(rows, 20, start=1)  # rows 1-19 changed their place, row 20 is new
        second = start_cli("batch", str(rows), "--db", db, "-o", str(out))
        wait_for(lambda: follower_said(second, "new jobs queued"), 60, "the changed rows")
        seen = second.seen  # type: ignore[attr-defined]  # follower_said keeps it
        assert "20 rows, 20 new jobs queued" in seen  # every row's content changed
        assert sum(batch_counts(db, name).values()) == 40
        status = run_cli("batch", "status", name, "--db", db)
        assert status.returncode == 0 and "40 jobs: queued 40," in status.stdout
        cancel = run_cli("batch", "cancel", name, "--db", db)
        assert cancel.returncode == 0 and "40 queued jobs cancelled" in cancel.stdout
        said, _ = follower.communicate(timeout=60)
        assert follower.returncode == 1, said  # its rows failed: cancelled
        lines = results(out)
        assert len(lines) == 20 and {r["state"] for r in lines} == {"failed"}
        assert {r["error"] for r in lines} == {"the batch was cancelled"}
        second.communicate(timeout=60)
        retry = run_cli("batch", "retry", name, "--db", db)
        assert retry.returncode == 0 and "40 failed or cancelled jobs queued again" in retry.stdout
        assert "40 jobs: queued 40," in retry.stdout
    finally:
        for proc in (follower, second if "second" in locals() else follower):
            if proc.poll() is None:
                proc.kill()
    unknown = run_cli("batch", "status", "nope", "--db", db)
    assert unknown.returncode == 2 and "no batch of that name" in unknown.stderr


def follower_said(proc, text: str) -> bool:
    """Whether ``proc`` (stdout and stderr together) has printed ``text`` (reads a line)."""
    proc.seen = getattr(proc, "seen", "")
    if text not in proc.seen:
        proc.seen += proc.stdout.readline()
    return text in proc.seen


@pytest.mark.engine
def test_a_queued_batch_worked_here_on_the_engine(server, tmp_path, unique):
    wf = tmp_path / "sleep.json"
    wf.write_text(json.dumps(sleep_graph(unique(), milliseconds=50)))
    rows = tmp_path / "rows.csv"
    rows.write_text("1.color\n" + "\n".join(str(unique()) for _ in range(3)) + "\n")
    db, out = f"sqlite:///{tmp_path / 'q.db'}", tmp_path / "out"
    run = run_cli(
        "batch", str(rows), "-w", str(wf), "--db", db, "-o", str(out), "--work", "-s", server
    )
    assert run.returncode == 0, run.stderr
    lines = results(out)
    assert [r["state"] for r in lines] == ["done"] * 3
    for line in lines:
        assert (out / line["file"]).read_bytes().startswith(b"\x89PNG")
    # a file lost since: the same command again makes that row again, and only that row
    kept = {line["file"]: (out / line["file"]).stat().st_mtime_ns for line in lines}
    lost = out / lines[1]["file"]
    lost.unlink()
    again = run_cli(
        "batch", str(rows), "-w", str(wf), "--db", db, "-o", str(out), "--work", "-s", server
    )
    assert again.returncode == 0, again.stderr
    assert "0 new jobs queued, 1 done rows queued again" in again.stderr
    assert f"{lines[1]['file']} is missing; queued again" in again.stderr
    assert lost.read_bytes().startswith(b"\x89PNG")
    assert [r["state"] for r in results(out)] == ["done"] * 3
    others = {f: t for f, t in kept.items() if f != lines[1]["file"]}
    assert others == {f: (out / f).stat().st_mtime_ns for f in others}  # not made again


@pytest.mark.engine
def test_rows_with_input_images_run_through_the_store_on_the_engine(server, tmp_path, unique):
    from PIL import Image as PIL

    from tests.support.tests_png import image_bytes

    (tmp_path / "photo.png").write_bytes(image_bytes((32, 48), "green"))
    source = tmp_path / "rows.csv"
    source.write_text(
        "prompt,image,steps,seed\n"
        f"recoloured,photo.png,2,{unique()}\n"
        f"again,photo.png,2,{unique()}\n"
        f"missing,gone.png,2,{unique()}\n"
    )
    db, out = f"sqlite:///{tmp_path / 'q.db'}", tmp_path / "out"
    run = run_cli("batch", str(source), "--db", db, "-o", str(out), "--work", "-s", server)
    assert run.returncode == 1, run.stderr  # the missing image's row is invalid
    by_row = {r["row"]: r for r in results(out)}
    assert by_row["3"]["state"] == "invalid"
    assert "row 3, column 'image'" in by_row["3"]["error"]
    for row in ("1", "2"):
        assert by_row[row]["state"] == "done", by_row[row]
        with PIL.open(out / by_row[row]["file"]) as made:
            assert made.size == (32, 48)  # the input's own size: the image reached the server
    assert len(list((out / "inputs").iterdir())) == 1  # kept once for both rows
