"""Two ``comfyfn worker`` processes on the same ComfyUI servers (docs/faults.md, "two workers
on one ComfyUI server"), with real parts: PostgreSQL, two simulated servers in a process of
their own, a batch enqueued and followed by ``comfyfn batch --db``. Each worker sees the
other's prompts in the servers' queues; neither takes them for its own, removes them or
counts them against its slots wrongly: every row runs exactly once, on one server, with one
file, and both workers do part of the work."""

from __future__ import annotations

from collections import Counter

import sqlalchemy as sa

from comfyfn.gateway.schema import files_t, jobs_t
from comfyfn.gateway.store import Store
from tests.support.batches import results, write_rows
from tests.support.cli_proc import run_cli
from tests.support.polling import wait_for
from tests.support.simulated import executions, simulated
from tests.support.workers import Worker

ROWS = 120
JOB_MS = 40


def registered(db: str) -> set[str]:
    with Store(db) as store:
        return {w.name for w in store.workers()}


def test_two_workers_on_the_same_servers_run_every_row_once(postgres, tmp_path):
    db = postgres.create_database()
    storage, out = tmp_path / "files", tmp_path / "out"
    storage.mkdir()
    rows = write_rows(tmp_path / "rows.csv", ROWS)
    with simulated(2, job_ms=JOB_MS) as urls:
        workers = [Worker(name, db, storage, urls, 30.0) for name in ("left", "right")]
        try:  # both ready before the rows come, so that both take part
            wait_for(lambda: registered(db) == {"left", "right"}, 120, "both workers registered")
            follow = run_cli("batch", str(rows), "--db", db, "-o", str(out), "--name", "shared")
            assert follow.returncode == 0, follow.stderr
            ran = executions(urls)
        finally:
            for worker in workers:
                worker.stop()
        logs = "\n".join(w.log.read_text(errors="replace")[-2000:] for w in workers)

    with Store(db) as store, store._read() as conn:
        jobs = list(conn.execute(sa.select(jobs_t).where(jobs_t.c.batch == "shared")))
        files = Counter(r.job_id for r in conn.execute(sa.select(files_t.c.job_id)))
    assert len(jobs) == ROWS and {j.state for j in jobs} == {"succeeded"}, logs
    assert all(files[j.id] == 1 for j in jobs), logs
    # every prompt ran once, and only the rows' own prompts ran: nothing twice, nothing extra
    assert sorted(ran.values()) == [1] * ROWS, logs
    assert set(ran) == {j.prompt_id for j in jobs}
    assert {j.claims for j in jobs} == {1}  # no job changed hands
    by_worker = Counter(j.claimed_by for j in jobs)
    assert set(by_worker) == {"left", "right"}, by_worker  # both worked the shared servers
    lines = results(out)
    assert sorted(int(r["row"]) for r in lines) == list(range(1, ROWS + 1))
    assert {r["state"] for r in lines} == {"done"}
