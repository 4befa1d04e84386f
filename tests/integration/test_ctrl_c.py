"""Ctrl-C in a synchronous caller cancels its job on the server instead of leaving it running."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time

import pytest
from cli_proc import CHILD_ENV
from graphs import blur_graph

import comfyfn

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
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:  # wait until that job is the running one
            running = c.queue()["queue_running"]
            if running and running[0][2]["1"]["inputs"]["color"] == color:
                break
            time.sleep(0.05)
        else:
            pytest.fail("the job never started")
        prompt_id = running[0][1]
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=60)
        assert proc.returncode == 130 and "cancelled" in out
        # the cancel reached the server before the process exited
        entry = c.history(prompt_id).get(prompt_id)
        deadline = time.monotonic() + 30
        while entry is None and time.monotonic() < deadline:  # it stops at a node boundary
            time.sleep(0.05)
            entry = c.history(prompt_id).get(prompt_id)
        assert entry is not None
        kinds = [kind for kind, _ in entry["status"]["messages"]]
        assert "execution_interrupted" in kinds
        assert len([n for n, o in entry["outputs"].items()]) == 0
