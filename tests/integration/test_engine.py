"""The managed local engine: idempotent up, stale pid files, down by pid, weights."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess

import httpx
import pytest

from comfyfn.engine import Engine
from comfyfn.engine.install import TINY_FILES, assets

pytestmark = [pytest.mark.engine, pytest.mark.one_version]  # the managed install itself


def test_up_is_idempotent_survives_a_stale_pid_and_down_stops_it(engine):
    eng = Engine(f"{os.environ['COMFYFN_TEST_ENGINE']}-lifecycle", install=engine.install)
    try:
        first = eng.up()
        assert httpx.get(f"{first.url}/system_stats").status_code == 200
        assert eng.up().pid == first.pid  # second up: same server
        os.kill(first.pid, signal.SIGKILL)  # crash: the state file is now stale
        os.waitpid(first.pid, 0)
        assert eng.state() is None and not eng.state_file.exists()
        second = eng.up()
        assert second.pid != first.pid
        status = eng.status()
        assert status["running"] and status["comfyui_version"] == "0.3.75"
        assert status["url"] == f"http://127.0.0.1:{second.port}"
        assert eng.down() is True
        with pytest.raises(httpx.ConnectError):
            httpx.get(f"{second.url}/system_stats")
        assert eng.down() is False
    finally:
        eng.down()


def test_state_file_naming_a_foreign_pid_is_ignored(engine):
    eng = Engine(f"{os.environ['COMFYFN_TEST_ENGINE']}-foreign", install=engine.install)
    eng.dir.mkdir(parents=True, exist_ok=True)
    # pid 1 is alive but is not a ComfyUI on that port: must not be taken as ours, or killed
    eng.state_file.write_text(
        json.dumps(
            {
                "pid": 1,
                "port": 1,
                "url": "http://127.0.0.1:1",
                "log": "",
                "comfyui": "",
                "models_dir": "",
                "started_at": 0,
            }
        )
    )
    assert eng.state() is None
    assert eng.down() is False


def test_tiny_weights_are_deterministic_and_named_officially(engine, tmp_path):
    for folder, names in TINY_FILES.items():
        for name in names:
            assert (engine.install.tiny_models / folder / name).stat().st_size > 1_000_000
    outs = []
    for run in ("a", "b"):
        out = tmp_path / run
        subprocess.run(
            [
                str(engine.install.python),
                str(assets() / "make_tiny_weights.py"),
                "--comfyui",
                str(engine.install.comfyui),
                "--out",
                str(out),
            ],
            check=True,
            capture_output=True,
            env={**os.environ, "PYTHONPATH": str(engine.install.stubs)},
        )
        outs.append(
            {
                p.relative_to(out).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
                for p in sorted(out.rglob("*.safetensors"))
            }
        )
    assert outs[0] == outs[1]
    core = {f"{folder}/{name}" for folder, names in TINY_FILES.items() for name in names}
    extras = {"loras/zimage_tiny_style.safetensors"}
    patch = "model_patches/Z-Image-Turbo-Fun-Controlnet-Union.safetensors"  # ComfyUI ≥ 0.28
    assert set(outs[0]) - {patch} == core | extras
    installed = engine.install.tiny_models / "vae" / "ae.safetensors"
    assert hashlib.sha256(installed.read_bytes()).hexdigest() == outs[0]["vae/ae.safetensors"]


def test_existing_comfyui_and_models_dir(engine, tmp_path):
    """--comfyui-path runs a given checkout; --models-dir serves the weights found there."""
    models = tmp_path / "models"
    (models / "vae").mkdir(parents=True)
    (models / "diffusion_models").mkdir()
    (models / "vae" / "my_vae.safetensors").write_bytes(
        (engine.install.tiny_models / "vae" / "ae.safetensors").read_bytes()
    )
    eng = Engine(
        f"{os.environ['COMFYFN_TEST_ENGINE']}-path",
        install=engine.install,
        comfyui_path=engine.install.comfyui,
        models_dir=models,
        python=engine.install.python,
    )
    try:
        state = eng.up()
        assert state.comfyui == str(engine.install.comfyui)
        assert httpx.get(f"{state.url}/models/vae").json() == ["my_vae.safetensors"]
        assert httpx.get(f"{state.url}/models/diffusion_models").json() == []
    finally:
        eng.down()
