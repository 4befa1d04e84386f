"""Two gateway replicas sharing one real PostgreSQL: every job runs exactly once."""

from __future__ import annotations

import json

import httpx
import pytest

import comfyfn
from tests.support.gateway_proc import Gateway, make_key
from tests.support.graphs import sleep_graph
from tests.support.pg import Postgres
from tests.support.polling import wait_for

# about replicas sharing PostgreSQL, not the ComfyUI version: run once, in the 0.33.0 tier
pytestmark = [pytest.mark.engine, pytest.mark.any_version]


def test_two_replicas_share_the_queue(server, tmp_path, unique):
    colors = [unique() for _ in range(12)]
    workflows = []
    for i, color in enumerate(colors):
        wf = tmp_path / f"sleep{i}.json"
        wf.write_text(json.dumps(sleep_graph(color, milliseconds=150, steps=2)))
        workflows += ["-w", f"s{i}={wf}"]
    with Postgres() as pg:
        a = Gateway([server], pg.url, tmp_path / "files", *workflows)
        b = Gateway([server], pg.url, tmp_path / "files", *workflows)
        try:
            key = make_key(pg.url, "shared")
            headers = {"Authorization": f"Bearer {key}"}
            ids = []
            for i in range(len(colors)):
                gateway = a if i % 2 else b
                answer = httpx.post(
                    f"{gateway.url}/v1/jobs",
                    headers=headers,
                    json={"workflow": f"s{i}", "params": {}},
                )
                assert answer.status_code == 202, answer.text
                ids.append(answer.json()["id"])

            def ended() -> dict[str, str] | None:
                states = {
                    i: httpx.get(f"{a.url}/v1/jobs/{i}", headers=headers).json()["state"]
                    for i in ids
                }
                ended = all(s in ("succeeded", "failed") for s in states.values())
                return states if ended else None

            states = wait_for(ended, 120, "every job to end", interval=0.2)
            assert set(states.values()) == {"succeeded"}, states
            # the other replica sees the same jobs
            assert httpx.get(f"{b.url}/v1/jobs/{ids[0]}", headers=headers).json()["state"] == (
                "succeeded"
            )
        finally:
            a.stop()
            b.stop()
    with comfyfn.Client(server) as c:
        runs = [
            e["prompt"][2]["1"]["inputs"]["color"]
            for e in c.history().values()
            if e["prompt"][2].get("2", {}).get("class_type") == "ComfyfnSleep"
        ]
    assert all(runs.count(color) == 1 for color in colors)
