"""Warm-up and previews on real engines: ``comfyfn engine up --preview-method … --warm …``
(an engine of this test's own: the client gets ``Preview`` events from it, and the warm-up
job ran on it), and ``comfyfn batch --warm`` on the session's engine — a warm-up that fails
names the server, exits non-zero and submits nothing."""

from __future__ import annotations

import io
import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from PIL import Image as PIL
from typer.testing import CliRunner

import comfyfn
from comfyfn.cli._app import app
from comfyfn.engine import Engine, PreviewMethod
from comfyfn.models import WARMUP_PREFIX
from comfyfn.workflow import builtin

pytestmark = pytest.mark.engine
runner = CliRunner()


def warmups(client: comfyfn.Client) -> int:
    """How many warm-up jobs the server's history holds."""
    history = client.history()
    return sum(
        1
        for entry in history.values()
        for node in entry["prompt"][2].values()
        if node.get("inputs", {}).get("filename_prefix") == WARMUP_PREFIX
    )


@pytest.fixture
def preview_engine() -> Iterator[str]:
    """The name of an engine of this test's own (stopped at the end)."""
    name = f"{os.environ['COMFYFN_TEST_ENGINE']}-previews"
    yield name
    Engine(name).down()


def test_engine_up_with_previews_and_a_warm_up(preview_engine, unique):
    result = runner.invoke(
        app,
        [
            "engine",
            "up",
            "--name",
            preview_engine,
            "--preview-method",
            "latent2rgb",
            "--warm",
            "zimage-turbo",
        ],
    )
    assert result.exit_code == 0, result.output
    url = result.stdout.strip().splitlines()[-1]
    assert f"warmed {url} in " in result.stderr
    state = Engine(preview_engine).state()
    assert state is not None and state.preview_method == "latent2rgb"
    cmdline = Path(f"/proc/{state.pid}/cmdline").read_bytes().split(b"\0")
    at = cmdline.index(b"--preview-method")
    assert cmdline[at + 1] == b"latent2rgb"
    with comfyfn.Client(url) as client:
        assert warmups(client) == 1
        events = list(client.stream("previews", seed=unique(), size=(64, 64), steps=4))
    previews = [e for e in events if isinstance(e, comfyfn.Preview)]
    assert previews, [type(e).__name__ for e in events]
    assert isinstance(events[-1], comfyfn.Succeeded)
    with PIL.open(io.BytesIO(previews[-1].image)) as image:
        image.load()
        assert image.width > 0 and image.height > 0
    assert previews[-1].media_type.startswith("image/")
    # the same options again: kept as it is (no restart, no second warm-up needed to say so)
    again = runner.invoke(
        app, ["engine", "up", "--name", preview_engine, "--preview-method", "latent2rgb"]
    )
    assert again.exit_code == 0, again.output
    assert Engine(preview_engine).state() == state


def test_an_unknown_preview_method_or_warm_workflow_is_refused_before_starting(preview_engine):
    bad = runner.invoke(app, ["engine", "up", "--name", preview_engine, "--preview-method", "x"])
    assert bad.exit_code == 2 and "x" in bad.output
    missing = runner.invoke(app, ["engine", "up", "--name", preview_engine, "--warm", "nope.json"])
    assert missing.exit_code == 2, missing.output
    assert "nope.json" in missing.stderr
    assert Engine(preview_engine).state() is None  # nothing was started
    assert PreviewMethod("taesd").value == "taesd"


def test_batch_warm_runs_the_warm_up_once_per_server_before_the_rows(server, unique, tmp_path):
    source = tmp_path / "rows.csv"
    source.write_text(f"prompt,seed,width,height,steps\nwarm rows,{unique()},64,48,2\n")
    output = tmp_path / "out"
    with comfyfn.Client(server) as client:
        before = warmups(client)
        result = runner.invoke(
            app, ["batch", str(source), "-o", str(output), "-s", server, "--warm", "--json"]
        )
        assert result.exit_code == 0, result.output
        assert f"warmed {server} in " in result.stderr
        assert json.loads(result.stdout)["done"] == 1
        assert warmups(client) == before + 1


def test_a_failing_warm_up_names_the_server_and_submits_nothing(server, unique, tmp_path):
    graph = builtin("zimage-turbo").bind(model="not_on_the_server.safetensors").to_api()
    workflow = tmp_path / "missing_model.json"
    workflow.write_text(json.dumps(graph))
    source = tmp_path / "rows.csv"
    source.write_text(f"prompt,seed,width,height\nnever run,{unique()},64,48\n")
    output = tmp_path / "out"
    with comfyfn.Client(server) as client:
        queued_before = len(client.history())
        args = ["batch", str(source), "-o", str(output), "-s", server, "-w", str(workflow)]
        result = runner.invoke(app, [*args, "--warm"])
        assert result.exit_code != 0, result.output
        assert f"warm-up failed on {server}: " in result.stderr
        assert "not_on_the_server.safetensors" in result.stderr
        assert not output.exists()  # no manifest: no row was taken
        assert len(client.history()) == queued_before
