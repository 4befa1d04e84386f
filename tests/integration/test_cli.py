"""The command line, through typer's CliRunner against the local engine."""

from __future__ import annotations

import json
import signal
import subprocess
import time

import pytest
from typer.testing import CliRunner

import comfyfn
from comfyfn.cli._app import app
from comfyfn.provenance import read_provenance
from tests.support.cli_proc import start_cli, stop
from tests.support.graphs import sleep_graph
from tests.support.polling import wait_for

pytestmark = pytest.mark.engine
runner = CliRunner()


def test_generate_json_saves_images_with_provenance(server, unique, tmp_path):
    seed = unique()
    result = runner.invoke(
        app,
        [
            "generate",
            "上海外滩夜景",
            "--seed",
            str(seed),
            "--size",
            "64x80",
            "-o",
            str(tmp_path),
            "--server",
            server,
            "--json",
            "--steps",
            "3",
        ],
    )
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["seed"] == seed and data["server"] == server
    (path,) = data["files"]
    meta = read_provenance(path)
    assert (meta["prompt"], meta["seed"], meta["steps"], meta["height"]) == (
        "上海外滩夜景",
        seed,
        3,
        80,
    )


def test_generate_plain_output_prints_paths(server, unique, tmp_path, monkeypatch):
    monkeypatch.setenv("COMFYFN_SERVER", server)
    result = runner.invoke(
        app,
        [
            "generate",
            "p",
            "--seed",
            str(unique()),
            "--size",
            "64x64",
            "-o",
            str(tmp_path),
            "--batch",
            "2",
        ],
    )
    assert result.exit_code == 0, result.output
    paths = [line for line in result.stdout.splitlines() if line.endswith(".png")]
    assert len(paths) == 2 and all(p.startswith(str(tmp_path)) for p in paths)


def test_usage_errors_exit_2(server, tmp_path):
    bad_size = runner.invoke(app, ["generate", "p", "--size", "1000x768", "--server", server])
    assert bad_size.exit_code == 2
    assert "width 1000 is not a multiple of 16" in bad_size.output
    assert runner.invoke(app, ["generate", "p", "--size", "big", "--server", server]).exit_code == 2
    assert runner.invoke(app, ["generate", "p", "--seed", "x"]).exit_code == 2
    assert runner.invoke(app, ["no-such-command"]).exit_code == 2


def test_generation_failure_exits_1(engine, server, unique, tmp_path):
    corrupt = engine.base / "models" / "vae" / "cli_corrupt.safetensors"
    corrupt.parent.mkdir(parents=True, exist_ok=True)
    corrupt.write_bytes(b"\x00garbage")
    workflow = tmp_path / "wf.json"
    from comfyfn.workflow import zimage_turbo

    graph = zimage_turbo().to_api()
    graph["29"]["inputs"]["vae_name"] = "cli_corrupt.safetensors"
    workflow.write_text(json.dumps(graph))
    try:
        result = runner.invoke(
            app,
            [
                "generate",
                "p",
                "--workflow",
                str(workflow),
                "--size",
                "64x64",
                "--seed",
                str(unique()),
                "--server",
                server,
            ],
        )
    finally:
        corrupt.unlink()
    assert result.exit_code == 1
    assert "node 29 VAELoader failed" in result.output


def test_unreachable_server_exits_1():
    result = runner.invoke(app, ["info", "--server", "http://127.0.0.1:9"])
    assert result.exit_code == 1
    assert "cannot reach ComfyUI at http://127.0.0.1:9" in result.output


def test_info_models_and_engine_status(engine, server):
    info = runner.invoke(app, ["info", "--server", server, "--json"])
    assert info.exit_code == 0
    data = json.loads(info.stdout)
    assert data["comfyui_version"] == engine.install.version and data["devices"] == ["cpu"]
    models = runner.invoke(app, ["models", "list", "diffusion_models", "--server", server])
    assert "z_image_turbo_bf16.safetensors" in models.stdout.split()
    status = runner.invoke(app, ["engine", "status", "--name", engine.name, "--json"])
    assert status.exit_code == 0
    st = json.loads(status.stdout)
    assert st["url"] == server and st["comfyui_version"] == engine.install.version and st["pid"] > 0
    assert runner.invoke(app, ["engine", "status", "--name", "never-started"]).exit_code == 1
    logs = runner.invoke(app, ["engine", "logs", "--name", engine.name, "-n", "1000000"])
    assert "To see the GUI go to" in logs.stdout or "Starting server" in logs.stdout


def test_workflow_inspect_prints_markup_and_emoji_codes_literally(tmp_path):
    from comfyfn.workflow import zimage_turbo

    wf = zimage_turbo()
    prompt = next(p for p in wf.params if p.name == "prompt")
    graph = wf.to_api()
    graph[prompt.node_id]["inputs"][prompt.input] = "[/x] [batch, 3] :smile:"
    path = tmp_path / "[red]hostile.json"
    path.write_text(json.dumps(graph))
    result = runner.invoke(app, ["workflow", "inspect", str(path)])
    assert result.exit_code == 0, result.output
    for part in ("[/x]", "[batch, 3]", ":smile:", "[red]hostile"):
        assert part in result.output, part


# -- issue 11: stopping a job, warnings, no silent no-ops --------------------------------------


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_stopped_generate_cancels_its_job_on_the_server_and_says_so(
    server, unique, sig, tmp_path
):
    color = unique()
    wf = tmp_path / "sleep.json"
    wf.write_text(json.dumps(sleep_graph(color, milliseconds=20000, steps=40)))
    proc = start_cli(
        "generate", "-w", str(wf), "-s", server, "-o", str(tmp_path / "out"), stderr=subprocess.PIPE
    )
    try:
        prompt_id = wait_for_running(server, color)
        # ComfyUI 0.3.75 clears its interrupt flag as a job starts executing, so an interrupt
        # in the instant after the job leaves the queue is lost (a client race, reported with
        # issue 11): signal once the job has surely started.
        time.sleep(1.0)
        proc.send_signal(sig)
        _, errors = proc.communicate(timeout=30)
    finally:
        stop(proc)
    assert proc.returncode == 130, errors
    assert errors.strip().splitlines()[-1] == (
        f"interrupted: job {prompt_id} was cancelled on {server}"
    )
    assert "Traceback" not in errors
    with comfyfn.Client(server) as c:
        history = wait_for(lambda: c.history(prompt_id), 30, "the job stopped on the server")
        messages = [m[0] for m in history[prompt_id]["status"]["messages"]]
    assert "execution_interrupted" in messages


def wait_for_running(server: str, color: int) -> str:
    """The prompt id of the job made from ``color``, once the server runs it."""
    with comfyfn.Client(server) as c:

        def running() -> str | None:
            items = c.queue()["queue_running"]
            return next((str(i[1]) for i in items if i[2]["1"]["inputs"]["color"] == color), None)

        return wait_for(running, 60, "the job to run")


def test_a_negative_prompt_column_at_cfg_1_warns_once(server, unique, tmp_path):
    src = tmp_path / "rows.csv"
    src.write_text(
        "prompt,negative_prompt,seed,width,height,steps\n"
        + "".join(f"p{i},模糊,{unique()},64,64,2\n" for i in range(3)),
        encoding="utf-8",
    )
    result = runner.invoke(app, ["batch", str(src), "-o", str(tmp_path / "out"), "-s", server])
    assert result.exit_code == 0, result.output
    warned = [x for x in result.output.splitlines() if "the negative prompt has no effect" in x]
    assert warned == [
        "warning: at cfg 1 the negative prompt has no effect (the workflow zeroes it); "
        "pass cfg > 1 to use it"
    ]


def test_a_vary_name_one_rows_prompt_uses_runs_it_and_makes_the_others_invalid(server, tmp_path):
    # a name no row uses is a usage error before anything runs (tests/unit/test_cli_usage.py)
    src = tmp_path / "rows.csv"
    src.write_text("prompt,width,height,steps\n猫 {style},64,64,1\n狗,64,64,1\n", encoding="utf-8")
    result = runner.invoke(
        app,
        ["batch", str(src), "-o", str(tmp_path / "out"), "-s", server, "--vary", "style=a,b"],
    )
    assert result.exit_code == 1, result.output
    assert result.output.count("invalid row 2, column 'style': (a --vary name) is neither") == 2
    assert "done 2 · failed 0 · invalid 2" in result.output
