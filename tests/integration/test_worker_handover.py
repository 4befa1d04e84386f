"""A worker stopped with SIGTERM takes its prompts that have not started off its servers'
queues and hands those jobs back without them, so nobody's GPU runs them for nothing; the
running one stays and the next worker on that server re-attaches to it."""

from __future__ import annotations

import httpx

from comfyfn.jobs.store import Store
from tests.support.polling import wait_for
from tests.support.queues import queue_of
from tests.support.simulated import executions, simulated
from tests.support.workers import Worker


def test_sigterm_takes_waiting_prompts_off_the_server_and_the_next_worker_reattaches(
    postgres, tmp_path
):
    db = postgres.create_database()
    storage = tmp_path / "files"
    storage.mkdir()
    with Store(db) as store:
        ids = [
            store.create_job(
                key_id="k",
                workflow="zimage-turbo",
                params={"prompt": f"p{i}", "seed": i, "width": 64, "height": 64, "steps": 2},
            )[0].id
            for i in range(4)
        ]
    with simulated(1, job_ms=4000) as urls:
        (url,) = urls
        # the server starts one job and holds it before its first node, and starts no other
        # until released: the stop meets a running and two waiting prompts however slow the
        # machine is
        hold = {"after": 1, "running": True}
        httpx.post(f"{url}/simcomfy/hold", json=hold, timeout=30).raise_for_status()
        first = Worker("first", db, storage, urls, 30.0, "--prime", "2")
        try:
            wait_for(
                lambda: [len(ids) for ids in queue_of(url)] == [1, 2],
                60,
                "one prompt running and two waiting on the server",
            )
            running, waiting = queue_of(url)
            first.proc.terminate()
            assert first.proc.wait(timeout=60) == 0
        finally:
            first.stop()
        now_running, now_waiting = queue_of(url)
        assert now_waiting == []  # ours taken off
        assert now_running == running  # the running one left there
        httpx.post(f"{url}/simcomfy/release", timeout=30).raise_for_status()
        with Store(db) as store:
            found = [store.get_job(i) for i in ids]
        handed = [j for j in found if j is not None]
        assert len(handed) == 4 and {j.state for j in handed} == {"queued"}
        assert {j.prompt_id for j in handed if j.prompt_id} == set(running)  # to re-attach
        second = Worker("second", db, storage, urls, 30.0)
        try:

            def finished() -> bool:
                with Store(db) as store:
                    jobs = [store.get_job(i) for i in ids]
                return all(j is not None and j.state == "succeeded" for j in jobs)

            wait_for(finished, 120, "the second worker finishing every job")
        finally:
            second.stop()
        ran = executions(urls)
    assert not set(waiting) & set(ran)  # the withdrawn prompts never ran
    assert set(running) <= set(ran) and max(ran.values()) == 1  # re-attached, not run again
    assert sum(ran.values()) == 4
