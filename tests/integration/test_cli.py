"""The command line, through typer's CliRunner against the local engine."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from comfyfn.cli._app import app
from comfyfn.provenance import read_provenance

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
    models = runner.invoke(app, ["models", "diffusion_models", "--server", server])
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
