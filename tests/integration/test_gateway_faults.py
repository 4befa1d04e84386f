"""Faults the gateway must end in a clear state: database outages, SIGTERM, broken answers.

Real parts throughout: ComfyUI (the local engine), PostgreSQL from Debian's binaries, SQLite
files, gateway processes started with the real CLI. Only what a real ComfyUI cannot do (a
broken or slow answer) goes through tests/support/faultproxy.py.
"""

from __future__ import annotations

import json
import signal
from collections import Counter

import httpx
import pytest

import comfyfn
from tests.support.blocking import blocked
from tests.support.gateway_proc import Gateway, auth, make_key
from tests.support.graphs import sleep_graph
from tests.support.pg import Postgres
from tests.support.polling import wait_for

# about the gateway's own faults, not the ComfyUI version: run once, in the 0.33.0 tier
pytestmark = [pytest.mark.engine, pytest.mark.any_version]

FINAL = ("succeeded", "failed", "cancelled")


def job_state(gateway: Gateway, key: str, job_id: str) -> dict:
    answer = httpx.get(f"{gateway.url}/v1/jobs/{job_id}", headers=auth(key), timeout=10)
    assert answer.status_code == 200, answer.text
    return answer.json()


def final(gateway: Gateway, key: str, job_id: str, timeout: float = 90.0) -> dict:
    return wait_for(
        lambda: (s := job_state(gateway, key, job_id))["state"] in FINAL and s,
        timeout=timeout,
        what=f"job {job_id} to end",
    )


def post_job(gateway: Gateway, key: str, workflow: str):
    return httpx.post(
        f"{gateway.url}/v1/jobs",
        headers=auth(key),
        json={"workflow": workflow, "params": {}},
        timeout=30,
    )


def sleep_workflows(tmp_path, ms: int, colors: dict[str, int]) -> list[str]:
    """``-w name=file`` options: one simulated job per name, told apart by its color."""
    options = []
    for name, color in colors.items():
        path = tmp_path / f"{name}.json"
        path.write_text(json.dumps(sleep_graph(color, milliseconds=ms, steps=4)))
        options += ["-w", f"{name}={path}"]
    return options


def runs_by_color(server: str) -> Counter:
    """Successful ComfyfnSleep runs on the server, by their EmptyImage color."""
    with comfyfn.Client(server) as c:
        return Counter(
            e["prompt"][2]["1"]["inputs"]["color"]
            for e in c.history().values()
            if e["prompt"][2].get("2", {}).get("class_type") == "ComfyfnSleep"
            and e["status"]["status_str"] == "success"
        )


def ready(gateway: Gateway) -> int:
    try:
        return httpx.get(f"{gateway.url}/readyz", timeout=5).status_code
    except httpx.HTTPError:
        return 0


def test_postgres_outage_jobs_before_and_after_finish(server, tmp_path, unique):
    colors = {"before": unique(), "during": unique(), "after": unique()}
    workflows = sleep_workflows(tmp_path, 1500, colors)
    with Postgres() as pg:
        gw = Gateway([server], pg.url, tmp_path / "files", *workflows)
        try:
            key = make_key(pg.url, "outage")
            # a job of the server's own holds it, so the first job waits there (submitted, its
            # state "running") until the outage has begun, however slow this machine is
            with blocked(server, unique()):
                before = post_job(gw, key, "before")
                assert before.status_code == 202, before.text
                wait_for(
                    lambda: job_state(gw, key, before.json()["id"])["state"] == "running",
                    timeout=30,
                    what="the first job submitted",
                )
                pg.halt()
                wait_for(lambda: ready(gw) == 503, timeout=20, what="/readyz to say 503")
                during = post_job(gw, key, "during")
                assert during.status_code == 503, during.text
                assert during.json()["error"]["type"] == "server_error"
            # the first job ends while the store is away: its final write waits for it
            wait_for(lambda: runs_by_color(server)[colors["before"]], 60, "the first job run")
            pg.resume()
            wait_for(lambda: ready(gw) == 200, timeout=30, what="/readyz to recover")
            after = post_job(gw, key, "after")
            assert after.status_code == 202, after.text
            for answer in (before, after):
                assert final(gw, key, answer.json()["id"])["state"] == "succeeded"
        finally:
            gw.stop()
        log = gw.log.read_text()
    assert "the job store failed" in log  # logged, and the loop went on
    runs = runs_by_color(server)
    assert [runs[colors[n]] for n in ("before", "during", "after")] == [1, 0, 1]


def test_sigterm_hands_running_jobs_to_another_replica_at_once(server, tmp_path, unique):
    db = f"sqlite:///{tmp_path / 'gateway.db'}"
    color = unique()
    # long enough to be running still when A stops, on any machine; both replicas up first
    workflows = sleep_workflows(tmp_path, 8000, {"slow": color})
    # only a hand-back gets the job to B before the test ends: a takeover waits 10 minutes
    stale = ("--stale-after", "600")
    a = Gateway([server], db, tmp_path / "files", *workflows, *stale)
    b = Gateway([server], db, tmp_path / "files", *workflows, *stale)
    try:
        key = make_key(db, "handover")
        job = post_job(a, key, "slow").json()
        wait_for(
            lambda: job_state(a, key, job["id"])["state"] == "running",
            timeout=60,
            what="the job to start on replica A",
        )
        a.stop()  # SIGTERM; uvicorn shuts down, then re-raises the signal
        assert a.proc.returncode == -signal.SIGTERM
        assert "handed job" in a.log.read_text()
        done = final(b, key, job["id"], timeout=120)
        assert done["state"] == "succeeded", done
    finally:
        a.stop()
        b.stop()
    assert runs_by_color(server)[color] == 1  # re-attached by prompt id, not run again
