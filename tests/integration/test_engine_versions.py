"""A ComfyUI source tree as a local engine: ComfyUI 0.28.0 from ../shared, beside 0.3.75.

The tree is unpacked into a temporary folder; its venv and tiny weights are kept in the
engine home, keyed by content, so only the first run on a machine pays the install.
Skipped, with the path, where the shared folder is absent.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

import comfyfn
from comfyfn.cli._app import app
from comfyfn.engine import Device, Engine, EngineInstall
from comfyfn.engine._device import probe_accelerator
from comfyfn.engine.install import TINY_FILES, assets
from comfyfn.errors import ConfigError
from tests.support.comfyui_trees import COMFYUI_028, unpack_comfyui

# a clean install takes minutes; it starts its own 0.28 engine, so the main pass runs it once
pytestmark = [pytest.mark.engine, pytest.mark.timeout(900), pytest.mark.one_version]

NAME = f"{os.environ['COMFYFN_TEST_ENGINE']}-c28"


@pytest.fixture(scope="module")
def tree28(tmp_path_factory) -> Path:
    return unpack_comfyui(COMFYUI_028, tmp_path_factory.mktemp("c28"))


@pytest.fixture(scope="module")
def engine28(tree28):
    eng = Engine(NAME, comfyui_path=tree28)  # a leftover on an older tree is restarted
    started = time.monotonic()
    seconds = eng.install.install()
    print(f"\nComfyUI 0.28.0 engine: install {seconds:.1f}s", end="")
    eng.up()
    print(f", start {time.monotonic() - started - seconds:.1f}s")
    yield eng
    eng.down()


def stats(eng: Engine) -> dict:
    return httpx.get(f"{eng.url}/system_stats", timeout=10).json()["system"]


def test_system_stats_report_0_28_on_the_device_auto_chose(engine28):
    system = stats(engine28)
    assert system["comfyui_version"] == "0.28.0"
    state = engine28.state()
    assert state.device == "auto" and state.comfyui == str(engine28.install.comfyui)
    gpu = probe_accelerator(engine28.install.python)
    assert ("--cpu" in system["argv"]) is (gpu is None)  # this machine has none: --cpu


def test_zimage_turbo_runs_end_to_end_on_0_28(engine28, unique):
    with comfyfn.Client(engine28.url) as client:
        gen = client.generate("一只红苹果 on a table", seed=unique(), size=(64, 64), steps=2)
    (image,) = gen.images
    assert (image.width, image.height) == (64, 64)
    assert image.to_pil().size == (64, 64)


def test_tiny_weights_are_made_by_the_trees_own_classes(engine28):
    models = engine28.install.tiny_models
    for folder, names in TINY_FILES.items():
        for name in names:
            assert (models / folder / name).stat().st_size > 1_000_000
    header = safetensors_keys(models / "diffusion_models" / "z_image_turbo_bf16.safetensors")
    assert "cap_embedder.1.weight" in header
    assert "norm_final.weight" not in header  # 0.28's NextDiT has none (0.3.75's has one)
    assert models != EngineInstall.default().tiny_models


def safetensors_keys(path: Path) -> set[str]:
    with open(path, "rb") as fh:
        size = int.from_bytes(fh.read(8), "little")
        return set(json.loads(fh.read(size))) - {"__metadata__"}


def test_the_install_is_reused_from_another_unpacked_copy(engine28, tmp_path):
    again = EngineInstall.default().for_tree(unpack_comfyui(COMFYUI_028, tmp_path))
    assert again.venv == engine28.install.venv
    assert again.tiny_models == engine28.install.tiny_models
    assert again.is_installed()
    started = time.monotonic()
    again.install()
    assert time.monotonic() - started < 5.0  # nothing redone


def test_cli_install_and_up_with_comfyui_path(engine28, tree28):
    runner = CliRunner()
    installed = runner.invoke(app, ["engine", "install", "--comfyui-path", str(tree28)])
    assert installed.exit_code == 0, installed.output
    assert "engine for ComfyUI 0.28.0 installed" in installed.output
    up = runner.invoke(app, ["engine", "up", "--comfyui-path", str(tree28), "--name", NAME])
    assert up.exit_code == 0, up.output
    assert up.stdout.strip() == engine28.url  # the running one: same options, kept


# The text encoder and DiT as each version's loaders see them, before and after the
# plugin, from shapes alone (meta tensors): real sizes must come out exactly as before.
PLUGIN_CHECK = r"""
import importlib.util, json, sys
tree, plugin = sys.argv[1], sys.argv[2]
sys.path.insert(0, tree)
import comfy.options
comfy.options.enable_args_parsing(False)
import comfy.cli_args
comfy.cli_args.args.cpu = True
import torch, comfy.sd, comfy.model_detection

def t(*shape):
    return torch.empty(shape, device="meta")

def qwen3(hidden, layers=1):
    sd = {"model.embed_tokens.weight": t(151936, hidden)}
    for i in range(layers):
        p = f"model.layers.{i}."
        sd.update({p + "post_attention_layernorm.weight": t(hidden),
                   p + "self_attn.q_norm.weight": t(128)})
    return sd

def llama3():
    p = "model.layers.0."
    return {"model.embed_tokens.weight": t(128256, 4096),
            p + "post_attention_layernorm.weight": t(4096)}

def dit(dim, cap):
    sd = {"cap_embedder.1.weight": t(dim, cap),
          "noise_refiner.0.attention.k_norm.weight": t(128),
          "noise_refiner.0.adaLN_modulation.0.weight": t(4 * dim, 256),
          "noise_refiner.0.attention.q_norm.weight": t(dim // 30 if dim == 3840 else 64),
          "noise_refiner.0.attention.qkv.weight": t(3 * dim, dim),
          "noise_refiner.0.feed_forward.w1.weight": t(dim * 8 // 3, dim),
          "cap_pad_token": t(1, dim)}
    for i in range(2):
        sd[f"layers.{i}.ffn_norm1.weight"] = t(dim)
    return sd

def unet(fn, sd):
    cfg = fn(sd, "")
    return {k: (v if isinstance(v, (int, float, str, bool, type(None))) else str(v))
            for k, v in cfg.items()}

cases = {"qwen3_4b": qwen3(2560), "llama3_8b": llama3(), "tiny_qwen3": qwen3(64)}
before_te = {k: comfy.sd.detect_te_model(v).name for k, v in cases.items()}
before_dit = unet(comfy.model_detection.detect_unet_config, dit(3840, 2560))
spec = importlib.util.spec_from_file_location("comfyfn_tiny_zimage", plugin)
spec.loader.exec_module(importlib.util.module_from_spec(spec))
print(json.dumps({
    "te_before": before_te,
    "te_after": {k: comfy.sd.detect_te_model(v).name for k, v in cases.items()},
    "dit_before": before_dit,
    "dit_after": unet(comfy.model_detection.detect_unet_config, dit(3840, 2560)),
    "tiny_dit": unet(comfy.model_detection.detect_unet_config, dit(384, 64)),
}))
"""


def plugin_verdict(install: EngineInstall) -> dict:
    done = subprocess.run(
        [
            str(install.python),
            "-c",
            PLUGIN_CHECK,
            str(install.comfyui),
            str(assets() / "custom_nodes" / "comfyfn_tiny_zimage.py"),
        ],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(install.stubs)},
        timeout=180,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.splitlines()[-1])


@pytest.mark.parametrize("version", ["0.3.75", "0.28.0"])
def test_tiny_weights_plugin_is_a_no_op_for_real_sizes(version, engine, engine28):
    install = engine.install if version == "0.3.75" else engine28.install
    verdict = plugin_verdict(install)
    assert verdict["te_after"]["qwen3_4b"] == verdict["te_before"]["qwen3_4b"] == "QWEN3_4B"
    assert verdict["te_after"]["llama3_8b"] == verdict["te_before"]["llama3_8b"] == "LLAMA3_8"
    assert verdict["dit_after"] == verdict["dit_before"]
    assert verdict["dit_before"]["n_heads"] == 30
    # what the plugin is for: a tiny Qwen3 is Qwen3 (0.28 alone took it for Llama 3)
    expected_before = "QWEN3_4B" if version == "0.3.75" else "LLAMA3_8"
    assert verdict["te_before"]["tiny_qwen3"] == expected_before
    assert verdict["te_after"]["tiny_qwen3"] == "QWEN3_4B"
    assert verdict["tiny_dit"]["n_heads"] == 6 and verdict["tiny_dit"]["z_image_modulation"]


def test_device_cuda_without_a_gpu_is_refused_and_the_engine_keeps_running(
    engine28, tree28, monkeypatch
):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")  # no GPU for torch, on any machine
    assert probe_accelerator(engine28.install.python) != "cuda"
    before = engine28.state()
    with pytest.raises(ConfigError, match=r"--device cuda: the engine's torch \(.*\) sees no CUDA"):
        Engine(NAME, comfyui_path=tree28, device="cuda").up()
    assert engine28.state().pid == before.pid


def test_other_options_restart_the_running_engine_saying_so(engine28, tree28):
    before = engine28.state()
    said: list[str] = []
    state = Engine(NAME, comfyui_path=tree28, device=Device.cpu).up(report=said.append)
    assert said[0] == f"engine {NAME!r} is running with --device auto (asked: cpu): restarting it"
    assert state.pid != before.pid and state.device == "cpu"
    system = stats(engine28)
    assert "--cpu" in system["argv"] and system["comfyui_version"] == "0.28.0"
