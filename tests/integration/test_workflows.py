"""Workflows from the field on the real server: official templates, PNG round-trip, functions."""

from __future__ import annotations

import inspect
import json
import shutil
from importlib import resources

import pytest
from typer.testing import CliRunner

import comfyfn
from comfyfn.cli._app import app
from comfyfn.workflow._definitions import MODEL_FOLDERS
from comfyfn.workflow._validation import problems

pytestmark = pytest.mark.engine
TEMPLATES = resources.files("comfyui_workflow_templates_json") / "templates"
runner = CliRunner()

# Templates whose nodes all exist in ComfyUI 0.3.75; they differ in models, samplers and shape.
CHECKED = [
    "image_z_image_turbo.json",  # subgraph, proxy widgets
    "image_z_image_turbo_int8.json",
    "flux_schnell.json",
    "sdxl_simple_example.json",  # two samplers (base + refiner)
    "sd3.5_simple_example.json",
    "hidream_i1_fast.json",
    "image_qwen_image_2512_with_2steps_lora.json",
    "flux_kontext_dev_basic.json",  # LoadImage
]


@pytest.mark.parametrize("name", CHECKED)
def test_templates_convert_to_graphs_the_real_server_accepts(server, name):
    with comfyfn.Client(server) as c:
        wf = c.workflow(str(TEMPLATES / name))
        ours = problems(wf.to_api(), c.object_info())
        # the server's own verdict on our conversion (an accepted job is cancelled at once)
        events = c.stream_graph(wf, validate=False)
        try:
            assert isinstance(next(events), comfyfn.Queued)
            theirs = []
        except comfyfn.WorkflowInvalid as exc:
            theirs = list(exc.problems)
        finally:
            events.close()
    missing_files = {*MODEL_FOLDERS, "image"}  # model files and the template's example image
    assert all(p.input_name in missing_files for p in theirs), theirs
    assert all(p.input_name in missing_files for p in ours), ours
    # we find at least what the server finds (it stops early on some branches)
    assert {(p.node_id, p.input_name) for p in theirs} <= {(p.node_id, p.input_name) for p in ours}


def test_official_z_image_turbo_template_runs_on_the_engine(server, unique, tmp_path):
    with comfyfn.Client(server) as c:
        wf = c.workflow(str(TEMPLATES / "image_z_image_turbo.json"))
        gen = c.run(wf, prompt="外滩夜景", seed=unique(), width=64, height=80, steps=3)
    assert (gen.images[0].width, gen.images[0].height) == (64, 80)
    assert gen.params["model"] == "z_image_turbo_bf16.safetensors"
    assert gen.workflow["57:3"]["inputs"]["steps"] == 3


def test_z_image_base_template_runs_where_its_nodes_exist(server, unique):
    """The official Z-Image base template needs ResolutionSelector and SaveImageAdvanced: on a
    ComfyUI that has them (0.28 on) it runs with the size bound by meaning; on one without
    (0.3.75) the error names each missing class."""
    template = str(TEMPLATES / "image_z_image.json")
    with comfyfn.Client(server) as c:
        if not {"ResolutionSelector", "SaveImageAdvanced"} <= set(c.object_info()):
            with pytest.raises(comfyfn.WorkflowInvalid) as info:
                c.workflow(template)
            assert "ResolutionSelector" in str(info.value)
            assert "SaveImageAdvanced" in str(info.value)
            return
        wf = c.workflow(template)
        assert {"prompt", "negative", "seed", "steps", "cfg", "width", "height"} <= {
            p.name for p in wf.params
        }
        gen = c.run(wf, prompt="外滩夜景", seed=unique(), width=320, height=192, steps=2)
    assert (gen.images[0].width, gen.images[0].height) == (320, 192)
    assert gen.params["model"] == "z_image_bf16.safetensors"


def test_int8_template_runs_with_its_model_files_present(engine, server, unique):
    """Its files are absent until we provide them (tiny weights under the template's names)."""
    base = engine.base / "models"
    copies = {
        base
        / "diffusion_models"
        / "z_image_turbo_int8_convrot.safetensors": engine.install.tiny_models
        / "diffusion_models"
        / "z_image_turbo_bf16.safetensors",
        base / "text_encoders" / "qwen_3_4b_fp8_mixed.safetensors": engine.install.tiny_models
        / "text_encoders"
        / "qwen_3_4b.safetensors",
    }
    for dst, src in copies.items():
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(src, dst)
    try:
        with comfyfn.Client(server) as c:
            wf = c.workflow(str(TEMPLATES / "image_z_image_turbo_int8.json"))
            gen = c.run(wf, seed=unique(), size=(64, 64), steps=2)
        assert gen.params["model"] == "z_image_turbo_int8_convrot.safetensors"
        assert gen.images[0].width == 64
    finally:
        for dst in copies:
            dst.unlink()


def test_png_made_by_the_engine_runs_again_with_the_same_result(server, unique, tmp_path):
    seed = unique()
    with comfyfn.Client(server) as c:
        first = c.generate("a red apple", seed=seed, size=(64, 64), steps=3)
        path = first.images[0].save(tmp_path / "made.png")
        wf = comfyfn.Workflow.load(path)
        assert wf.source == "png:prompt"
        assert {p.name: p.default for p in wf.params}["seed"] == seed
        # Another sampling in between takes the first one's nodes out of ComfyUI's cache, so
        # the graph really runs again. (POST /free cannot: ComfyUI applies it between prompts,
        # sometimes only after the next one.)
        between = c.generate("a red apple", seed=unique(), size=(64, 64), steps=3)
        assert "57:3" not in between.cached_nodes and "3" not in between.cached_nodes
        again = c.submit_graph(wf).result()
    assert again.prompt_id != first.prompt_id
    assert "57:3" not in again.cached_nodes and "3" not in again.cached_nodes
    assert again.images[0].data == first.images[0].data


def test_client_function_takes_the_parameters(server, unique):
    with comfyfn.Client(server) as c:
        wf = c.workflow("zimage-turbo")
        fn = c.function(wf)
        assert {"prompt", "seed", "width", "steps"} <= set(inspect.signature(fn).parameters)
        gen = fn(prompt="一只猫", seed=unique(), width=64, height=64, steps=2)
    assert gen.params["prompt"] == "一只猫" and gen.images[0].height == 64


@pytest.mark.anyio
async def test_async_function_and_builtin_base_model(server, unique):
    async with comfyfn.AsyncClient(server) as c:
        fn = c.function(await c.workflow("zimage"))
        gen = await fn(prompt="山水", negative="模糊", seed=unique(), width=64, height=64, steps=2)
    assert gen.params["model"] == "z_image_bf16.safetensors"
    assert gen.params["cfg"] == 4.0 and gen.params["negative"] == "模糊"


def test_validation_before_submit_lists_every_problem(server):
    with comfyfn.Client(server) as c:
        before = len(c.history())
        wf = c.workflow("zimage-turbo").bind(**{"13.width": 1000, "29.vae_name": "nope.st"})
        with pytest.raises(comfyfn.WorkflowInvalid) as info:
            c.run(wf)
        assert len(c.history()) == before  # nothing was sent
    text = str(info.value)
    assert "node 13 EmptySD3LatentImage: width 1000 is not a multiple of 16" in text
    assert "node 29 VAELoader: vae_name 'nope.st' is not on the server; put it in models/vae/" in (
        text
    )


def test_cli_workflow_commands(server, unique, tmp_path):
    template = str(TEMPLATES / "image_z_image_turbo.json")
    inspected = runner.invoke(app, ["workflow", "inspect", template, "--server", server, "--json"])
    assert inspected.exit_code == 0, inspected.output
    params = {p["name"]: p for p in json.loads(inspected.stdout)["params"]}
    assert {"prompt", "seed", "width", "height", "steps", "model", "text_encoder", "vae"} <= set(
        params
    )
    assert (params["width"]["value"], params["steps"]["value"]) == (1024, 8)
    assert params["model"]["value"] == "z_image_turbo_bf16.safetensors"

    api = tmp_path / "api.json"
    converted = runner.invoke(app, ["workflow", "convert", template, "-o", str(api)])
    assert converted.exit_code == 0
    assert json.loads(api.read_text())["57:3"]["class_type"] == "KSampler"

    assert runner.invoke(app, ["workflow", "validate", str(api), "--server", server]).exit_code == 0
    graph = json.loads(api.read_text())
    graph["57:13"]["inputs"]["width"] = 1000
    api.write_text(json.dumps(graph))
    bad = runner.invoke(app, ["workflow", "validate", str(api), "--server", server])
    assert bad.exit_code == 2 and "width 1000 is not a multiple of 16" in bad.output

    made = runner.invoke(
        app,
        [
            "generate",
            "--workflow",
            template,
            "--server",
            server,
            "-p",
            "prompt=灯笼",
            "-p",
            f"seed={unique()}",
            "-p",
            "width=64",
            "-p",
            "height=64",
            "-p",
            "57:3.steps=2",
            "-o",
            str(tmp_path),
            "--json",
        ],
    )
    assert made.exit_code == 0, made.output
    result = json.loads(made.stdout)
    assert result["params"]["prompt"] == "灯笼" and result["params"]["steps"] == 2
    wrong = runner.invoke(
        app, ["generate", "--workflow", template, "--server", server, "-p", "width=wide"]
    )
    assert wrong.exit_code == 2 and "--param width: 'wide' is not a valid INT" in wrong.output
