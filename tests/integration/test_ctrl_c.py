"""Ctrl-C in a synchronous caller cancels its job on the server instead of leaving it running."""

from __future__ import annotations

import json
import signal
import subprocess
import sys

import pytest

import comfyfn
from tests.support.cli_proc import CHILD_ENV
from tests.support.graphs import blur_graph
from tests.support.polling import wait_for

pytestmark = pytest.mark.engine

SCRIPT = """
import json, sys
import comfyfn
graph = json.loads(sys.argv[2])
with comfyfn.Client(sys.argv[1]) as c:
    try:
        c.run(graph)
    except KeyboardInterrupt:
        print("cancelled", flush=True)
        sys.exit(130)
"""


def test_ctrl_c_interrupts_the_running_job(server, unique):
    color = unique()
    graph = blur_graph(color, blurs=8)
    proc = subprocess.Popen(
        [sys.executable, "-c", SCRIPT, server, json.dumps(graph)],
        stdout=subprocess.PIPE,
        text=True,
        env=CHILD_ENV,
    )
    with comfyfn.Client(server) as c:

        def ours_running() -> str | None:  # that job, recognised by its color
            running = c.queue()["queue_running"]
            ours = running and running[0][2]["1"]["inputs"]["color"] == color
            return str(running[0][1]) if ours else None

        prompt_id = wait_for(ours_running, 60, "the job to run")
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=60)
        assert proc.returncode == 130 and "cancelled" in out
        # the cancel reached the server before the process exited
        entry = wait_for(  # it stops at a node boundary
            lambda: c.history(prompt_id).get(prompt_id), 30, "the job's history entry"
        )
        kinds = [kind for kind, _ in entry["status"]["messages"]]
        assert "execution_interrupted" in kinds
        assert len([n for n, o in entry["outputs"].items()]) == 0
