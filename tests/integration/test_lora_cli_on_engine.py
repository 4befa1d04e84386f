"""``comfyfn generate --lora`` on the real ComfyUI with the tiny weights: the LoRA runs on the
diffusion model with its strength, and the graph that ran (in the saved PNG) says so."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from comfyfn.cli._app import app
from comfyfn.provenance import read_text_chunks

pytestmark = pytest.mark.engine
runner = CliRunner()
LORA = "zimage_tiny_style.safetensors"


def test_generate_with_a_lora_runs_it_on_the_model(server, unique, tmp_path):
    args = ["generate", "a red apple", "--seed", str(unique()), "--size", "64x64"]
    args += ["--steps", "2", "--lora", f"{LORA}:0.8", "-o", str(tmp_path), "--server", server]
    done = runner.invoke(app, [*args, "--json"])
    assert done.exit_code == 0, done.output
    (path,) = json.loads(done.stdout)["files"]
    with open(path, "rb") as f:
        graph = json.loads(read_text_chunks(f.read())["prompt"])
    loaders = [n for n in graph.values() if n["class_type"] == "LoraLoaderModelOnly"]
    assert [(n["inputs"]["lora_name"], n["inputs"]["strength_model"]) for n in loaders] == [
        (LORA, 0.8)
    ]
    sampler = next(n for n in graph.values() if n["class_type"] == "KSampler")
    model_path = sampler["inputs"]["model"][0]
    chain = {model_path}
    while graph[model_path]["class_type"] != "UNETLoader":  # the sampler's model has the LoRA
        model_path = graph[model_path]["inputs"]["model"][0]
        chain.add(model_path)
    assert any(graph[n]["class_type"] == "LoraLoaderModelOnly" for n in chain)
