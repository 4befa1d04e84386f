"""Many workers through faults (issue 20): 3 ``comfyfn worker`` processes × 8 simulated
ComfyUI servers each (tests/support/simcomfy.py, one process of servers per "host"), one batch of
1,000 rows enqueued and followed by ``comfyfn batch FILE --db … -o DIR --name N``, real
PostgreSQL (tests/support/pg.py). Mid-run, each after a number of rows is done: ``kill -9`` of one
worker (a replacement starts on its servers, as a restarted host would), PostgreSQL stopped
for 10 s, SIGTERM of another (the survivors finish). Afterwards every row has exactly one
output file and one file record, no prompt ran twice on any server, every row's final
prompt ran once where the store says, the only extra runs are prompts the killed or stopped
worker had put on its own servers, and the follower's results.csv lists every row done."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa

from comfyfn.jobs.schema import files_t, jobs_t
from comfyfn.jobs.store import Store
from tests.support.batches import batch_counts, results, running_by, write_rows
from tests.support.cli_proc import CHILD_ENV, run_cli
from tests.support.polling import wait_for
from tests.support.ports import free_port
from tests.support.queues import idle
from tests.support.simulated import simulated
from tests.support.tcp_cut import TcpCut
from tests.support.workers import Worker

ROWS = 1000
JOB_MS = 80
#: the default: a worker's heartbeat (every STALE_AFTER / 4 s) can miss the outage and one
#: beat either side of it before its jobs count as stale, so a 10 s outage takes over nothing
STALE_AFTER = 30.0
OUTAGE_S = 10.0
ROW_TEXT = re.compile(r"queued cat \d+")


def runs_by_server(urls: list[str]) -> dict[str, Counter[str]]:
    """server URL → prompt id → times it ran there."""
    return {
        url: Counter(httpx.get(f"{url}/simcomfy/counters", timeout=30).json()["executions"])
        for url in urls
    }


def row_text(url: str, prompt_id: str) -> str:
    """The row's prompt text in the graph a server ran as ``prompt_id`` (from its history)."""
    entry = httpx.get(f"{url}/history/{prompt_id}", timeout=30).json()[prompt_id]
    (text,) = set(ROW_TEXT.findall(json.dumps(entry["prompt"][2])))
    return text


@dataclass(frozen=True)
class StoredJob:
    id: str
    state: str
    claims: int
    server: str
    prompt_id: str
    params_text: str  #: the row's prompt text


def stored(db: str) -> tuple[list[StoredJob], Counter[str]]:
    """The batch's jobs, and file records per job."""
    with Store(db) as store, store._read() as conn:
        rows = conn.execute(sa.select(jobs_t).where(jobs_t.c.batch.is_not(None)))
        jobs = [
            StoredJob(r.id, r.state, r.claims, r.server, r.prompt_id,
                      json.loads(r.params)["shown"]["prompt"])
            for r in rows
        ]  # fmt: skip
        files = Counter(r.job_id for r in conn.execute(sa.select(files_t.c.job_id)))
    return jobs, files


def succeeded(db: str, name: str) -> int:
    try:
        return batch_counts(db, name).get("succeeded", 0)
    except sa.exc.OperationalError:  # the outage: not yet
        return 0


class Follower:
    """``comfyfn batch [ROWS] --db DB -o OUT --name NAME`` with its output in a log file."""

    def __init__(self, db: str, out: Path, name: str, rows: Path | None = None) -> None:
        self.log = out.parent / f"follower-{out.name}.log"
        args = ["batch", *([str(rows)] if rows else []), "--db", db, "-o", str(out)]
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "comfyfn.cli", *args, "--name", name],
            stdout=self.log.open("wb"),
            stderr=subprocess.STDOUT,
            env=CHILD_ENV,
        )

    def said(self) -> str:
        return self.log.read_text(errors="replace")

    def finished(self, timeout: float) -> int | None:
        """Its exit code, or None if it is still following after ``timeout`` seconds."""
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return None


def where_things_are(db: str, name: str, follower: Follower, workers: dict[str, Worker]) -> str:
    """What a failure shows: the store's counts by state and the end of every log."""
    tails = [f"follower:\n{follower.said()[-2000:]}"]
    tails += [
        f"worker {n}:\n{w.log.read_text(errors='replace')[-2000:]}" for n, w in workers.items()
    ]
    return f"{batch_counts(db, name)}\n" + "\n".join(tails)


def test_three_workers_through_kill_9_a_postgres_outage_and_sigterm_run_1000_rows_once(
    postgres, tmp_path
):
    db = postgres.create_database()
    storage, out = tmp_path / "files", tmp_path / "out"
    storage.mkdir()
    rows = write_rows(tmp_path / "rows.csv", ROWS)
    name = "fleet"
    with (
        simulated(8, job_ms=JOB_MS) as urls_a,
        simulated(8, job_ms=JOB_MS) as urls_b,
        simulated(8, job_ms=JOB_MS) as urls_c,
    ):
        every_url = [*urls_a, *urls_b, *urls_c]
        follower = Follower(db, out, name, rows)  # enqueues, then follows through it all
        wait_for(lambda: sum(batch_counts(db, name).values()) == ROWS, 120, "the rows queued")
        workers = {n: Worker(n, db, storage, u, STALE_AFTER) for n, u in
                   (("a", urls_a), ("b", urls_b), ("c", urls_c))}  # fmt: skip
        started = time.monotonic()
        try:
            wait_for(lambda: succeeded(db, name) >= 150, 120, "150 rows done")
            workers["a"].proc.send_signal(signal.SIGKILL)  # kill -9 mid-run
            workers["a"].proc.wait(timeout=30)
            workers["a2"] = Worker("a2", db, storage, urls_a, STALE_AFTER)  # its host restarts it
            wait_for(lambda: workers["a2"].said("worker a2 →"), 60, "a2 working")

            wait_for(lambda: succeeded(db, name) >= 350, 120, "350 rows done")
            # c's rows stay on its servers from now until it is stopped (held at 650 done,
            # they could all be done already: the rows finished during the outage are
            # stored at once when it ends, and the others claim every row left early)
            for url in urls_c:
                httpx.post(f"{url}/simcomfy/hold", timeout=30).raise_for_status()
            wait_for(
                lambda: running_by(db, "c"),
                120,
                lambda: (
                    "c holding rows on its servers " + where_things_are(db, name, follower, workers)
                ),
            )
            postgres.halt()
            cut_off = time.monotonic()
            for w in ("a2", "b", "c"):
                said = partial(workers[w].said, "the job store failed")
                wait_for(said, 30, f"{w} sees it")
            time.sleep(max(0.0, OUTAGE_S - (time.monotonic() - cut_off)))  # the outage itself
            postgres.resume()

            wait_for(lambda: succeeded(db, name) >= 650, 120, "650 rows done")
            workers["c"].proc.send_signal(signal.SIGTERM)
            assert workers["c"].proc.wait(timeout=60) == 0
            assert workers["c"].said("its jobs are back in the queue")
            for url in urls_c:
                httpx.post(f"{url}/simcomfy/release", timeout=30).raise_for_status()

            assert follower.finished(240) == 0, where_things_are(db, name, follower, workers)
            seconds = time.monotonic() - started
        finally:
            for worker in workers.values():
                worker.stop()
            if follower.proc.poll() is None:
                follower.proc.kill()
        wait_for(lambda: all(map(idle, every_url)), 60, "every server done with its queue")
        ran = runs_by_server(every_url)
        jobs, files = stored(db)
        final = {j.prompt_id for j in jobs}
        extra = {url: set(counts) - final for url, counts in ran.items()}
        extra_rows = {(u, p): row_text(u, p) for u, prompts in extra.items() for p in prompts}

    # every row once in the follower's report, done, its file where the batch names it
    lines = results(out)
    assert sorted(int(r["row"]) for r in lines) == list(range(1, ROWS + 1))
    assert {r["state"] for r in lines} == {"done"}
    # (a temporary file of the killed worker stays until it is a minute old: the report sweeps
    # older ones, tests/unit/test_files_sweep.py)
    made = sorted(p.relative_to(out).as_posix() for p in (out / "images").glob("[!.]*"))
    assert made == sorted(r["file"] for r in lines)
    assert len(set(made)) == ROWS
    # the store: every job succeeded with exactly one file record
    assert len(jobs) == ROWS and {j.state for j in jobs} == {"succeeded"}
    assert all(files[j.id] == 1 for j in jobs) and sum(files.values()) == ROWS
    assert any(j.claims >= 2 for j in jobs)  # the killed and the stopped worker's, taken over
    # no prompt ran twice, on one server or across servers
    total: Counter[str] = Counter()
    for counts in ran.values():
        total.update(counts)
    assert max(total.values()) == 1, [p for p, n in total.items() if n > 1][:5]
    # each row's final prompt ran once, on the server the store names
    assert all(ran[j.server][j.prompt_id] == 1 for j in jobs)
    # the other prompts that ran: only ones the killed (a) or stopped (c) worker had put on
    # its own servers, each of a row that changed hands (claimed again, run elsewhere)
    assert not any(extra[u] for u in urls_b), {u: len(extra[u]) for u in urls_b}
    by_text = {j.params_text: j for j in jobs}
    for (url, prompt_id), text in extra_rows.items():
        job = by_text[text]
        assert job.claims >= 2 and job.prompt_id != prompt_id, (url, prompt_id, job.id)
    extras = len(extra_rows)
    print(f"{ROWS} rows in {seconds:.1f} s through the faults; {extras} extra runs")


def test_a_follower_lives_through_a_postgres_partition(postgres, tmp_path):
    db = postgres.create_database()
    rows, out = write_rows(tmp_path / "rows.csv", 4), tmp_path / "out"
    with TcpCut(postgres.port) as cut, simulated(1, job_ms=50) as urls:
        through_cut = db.replace(f":{postgres.port}/", f":{cut.port}/")
        follower = Follower(through_cut, out, "cut", rows)
        worker = None
        try:
            wait_for(lambda: "new jobs queued" in follower.said(), 60, "the rows queued")
            cut.cut()
            wait_for(
                lambda: cut.refused >= 6 or follower.proc.poll() is not None,
                60,
                "the follower trying the store again and again (or giving up)",
            )
            cut.restore()
            worker = Worker("w", db, tmp_path, urls, STALE_AFTER)
            assert follower.proc.wait(timeout=120) == 0, follower.said()[-2000:]
        finally:
            if worker is not None:
                worker.stop()
            if follower.proc.poll() is None:
                follower.proc.kill()
    assert sorted(int(r["row"]) for r in results(out)) == [1, 2, 3, 4]


@pytest.mark.parametrize("command", ["worker", "batch"])
def test_an_unreachable_store_at_start_is_a_clear_error(command, tmp_path):
    db = f"postgresql+psycopg://postgres@127.0.0.1:{free_port()}/comfyfn"  # nothing listens
    args = {
        "worker": ["worker", "--db", db, "--storage", str(tmp_path), "-s", "http://127.0.0.1:9"],
        "batch": ["batch", "--db", db, "--name", "n", "-o", str(tmp_path / "out")],
    }[command]
    run = run_cli(*args, timeout=120)
    said = run.stdout + run.stderr
    assert run.returncode != 0 and db.split("@")[1].split("/")[0] in said, said
    assert "a bug in comfyfn" not in said and "sqlalche.me" not in said, said
