"""Runners on many machines (issue 20, phase 1), with real parts: PostgreSQL (tests/support/pg.py),
simulated ComfyUI servers in a process of their own (tests/support/simcomfy.py), a gateway started
with ``--no-worker`` and ``comfyfn worker`` processes. Faults are real: ``kill -9`` and
``SIGSTOP``/``SIGCONT`` of a worker."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from collections import Counter
from http.server import BaseHTTPRequestHandler, HTTPServer

import httpx
import pytest

from comfyfn.jobs.store import Store
from tests.support.cli_proc import CHILD_ENV
from tests.support.gateway_proc import Gateway, auth, make_key
from tests.support.polling import wait_for
from tests.support.queues import queue_of
from tests.support.simulated import executions, simulated
from tests.support.workers import CLI, Worker


@pytest.fixture
def place(postgres, tmp_path):
    db = postgres.create_database()
    storage = tmp_path / "files"
    storage.mkdir()
    return db, storage


def jobs_of(db: str):
    with Store(db) as store, store._read() as conn:
        import sqlalchemy as sa

        from comfyfn.jobs.schema import files_t, jobs_t

        jobs = {r.id: r for r in conn.execute(sa.select(jobs_t))}
        files = Counter(r.job_id for r in conn.execute(sa.select(files_t)))
    return jobs, files


def submit(gw: Gateway, key: str, n: int, **extra) -> list[str]:
    ids = []
    with httpx.Client(timeout=30) as http:
        for i in range(n):
            answer = http.post(
                f"{gw.url}/v1/jobs",
                headers=auth(key),
                json={
                    "workflow": "zimage-turbo",
                    "params": {"prompt": f"p{i}", "seed": i, "width": 64, "height": 64, "steps": 2},
                    **extra,
                },
            )
            assert answer.status_code in (200, 201, 202), answer.text
            ids.append(answer.json()["id"])
    return ids


def test_an_api_only_gateway_and_two_workers_run_100_jobs_once_through_a_kill_9(place):
    db, storage = place
    with simulated(4, job_ms=100) as urls:
        gw = Gateway([], db, storage, "--no-worker")
        workers = [Worker(n, db, storage, urls, stale_after=2.0) for n in ("a", "b")]
        try:
            key = make_key(db, "k")
            assert httpx.get(f"{gw.url}/readyz").status_code == 200  # no ComfyUI needed
            for url in urls:  # each server runs 7 jobs, then holds the rest in its queue
                httpx.post(f"{url}/simcomfy/hold", json={"after": 7}, timeout=30).raise_for_status()
            ids = submit(gw, key, 100)

            def done() -> int:
                jobs, _ = jobs_of(db)
                return sum(j.state == "succeeded" for j in jobs.values())

            def busy_worker() -> Worker | None:
                jobs, _ = jobs_of(db)
                held = Counter(j.claimed_by for j in jobs.values() if j.state == "running")
                return next((w for w in workers if held[w.name] >= 1), None)

            wait_for(lambda: done() >= 25, 120, "a quarter of the jobs done (28 can run)")
            # the held servers keep the rest in flight however slow this machine is: kill a
            # worker that holds some, so the kill leaves prompts to re-attach to
            victim = wait_for(busy_worker, 120, "a worker holding jobs")
            victim.proc.kill()  # kill -9 mid-run
            for url in urls:
                httpx.post(f"{url}/simcomfy/release", timeout=30).raise_for_status()
            wait_for(lambda: done() == 100, 240, "every job done after the kill")
            jobs, files = jobs_of(db)
            assert {j.state for j in jobs.values()} == {"succeeded"} and set(jobs) == set(ids)
            assert all(files[i] == len(json.loads(jobs[i].outputs)) == 1 for i in ids)
            assert any(j.claims >= 2 for j in jobs.values())  # the killed worker's, taken over
            ran = executions(urls)
            assert all(ran[j.prompt_id] == 1 for j in jobs.values())  # re-attached, not rerun
            assert max(ran.values()) == 1  # no prompt ran twice on a server
            listing = subprocess.run(
                [
                    sys.executable,
                    *CLI,
                    "workers",
                    "--db",
                    db,
                ],
                capture_output=True,
                text=True,
                env=CHILD_ENV,
                check=True,
            ).stdout
            assert listing.startswith("a  ") and "\nb  " in listing and urls[0] in listing
            metrics = httpx.get(f"{gw.url}/metrics", headers=auth(key)).text
            assert "comfyfn_workers " in metrics
        finally:
            for w in workers:
                w.stop()
            gw.stop()


def test_a_paused_worker_s_job_is_taken_over_and_its_late_writes_change_nothing(place):
    """A claims and submits (the server holds the prompt until A is stopped); SIGSTOP past
    stale_after; B takes the job over, re-attaches to the prompt and finishes; SIGCONT: A
    drops the job. One final state, one webhook, one set of files, the prompt run once."""
    db, storage = place
    received: list[bytes] = []

    class Receiver(BaseHTTPRequestHandler):
        def do_POST(self):
            received.append(self.rfile.read(int(self.headers["Content-Length"])))
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args):
            pass

    receiver = HTTPServer(("127.0.0.1", 0), Receiver)
    threading.Thread(target=receiver.serve_forever, daemon=True).start()
    hook = f"http://127.0.0.1:{receiver.server_port}/hook"
    with simulated(1, job_ms=4000) as urls:
        gw = Gateway([], db, storage, "--no-worker", "--allow-private-webhooks")
        a = Worker("a", db, storage, urls, 1.0, "--allow-private-webhooks")
        b = None
        try:
            key = make_key(db, "k")
            # the server keeps the prompt queued until A is stopped: the job cannot end first
            httpx.post(f"{urls[0]}/simcomfy/hold", timeout=30).raise_for_status()
            (job_id,) = submit(gw, key, 1, webhook=hook)
            prompt = wait_for(lambda: jobs_of(db)[0][job_id].prompt_id, 60, "A's prompt id")
            wait_for(lambda: prompt in queue_of(urls[0])[1], 60, "A's prompt queued on the server")
            os.kill(a.proc.pid, signal.SIGSTOP)
            httpx.post(f"{urls[0]}/simcomfy/release", timeout=30).raise_for_status()
            b = Worker("b", db, storage, urls, 1.0, "--allow-private-webhooks")
            wait_for(lambda: jobs_of(db)[0][job_id].state == "succeeded", 120, "B finishes")
            wait_for(lambda: received, 60, "B's webhook")
            os.kill(a.proc.pid, signal.SIGCONT)
            wait_for(lambda: a.said("taken over by another worker"), 60, "A drops the job")
            jobs, files = jobs_of(db)
            job = jobs[job_id]
            assert (job.state, job.claimed_by, job.claims) == ("succeeded", "b", 2)
            assert files[job_id] == 1 and len(list((storage / job_id).iterdir())) == 1
            assert executions(urls)[job.prompt_id] == 1
            a.stop()  # A's graceful end: nothing of its own left to hand back
            assert jobs_of(db)[0][job_id] == job and len(received) == 1
        finally:
            receiver.shutdown()
            receiver.server_close()
            for w in (a, b):
                if w is not None:
                    w.stop()
            gw.stop()
