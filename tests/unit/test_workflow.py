"""Workflow values: loading any format, typed parameters, binding by name/path/title."""

from __future__ import annotations

import inspect
import json

import pytest
from tests_png import tiny_png

from comfyfn import Workflow
from comfyfn.errors import WorkflowInvalid
from comfyfn.provenance import add_text_chunks
from comfyfn.workflow import builtin, zimage, zimage_turbo
from comfyfn.workflow._signature import signature_for


def test_builtin_params_are_typed():
    params = {p.name: p for p in zimage_turbo().params}
    assert list(params)[:3] == ["prompt", "seed", "width"]
    assert params["width"].type == "INT" and params["width"].step == 16
    assert params["width"].path == "13.width" and params["width"].class_type == (
        "EmptySD3LatentImage"
    )
    assert params["sampler"].choices and "res_multistep" in params["sampler"].choices
    assert params["model"].folder == "diffusion_models"
    assert params["steps"].default == 8


def test_zimage_base_has_a_real_negative():
    wf = zimage()
    params = {p.name: p.default for p in wf.params}
    assert (params["steps"], params["cfg"], params["negative"]) == (25, 4.0, "")
    assert params["model"] == "z_image_bf16.safetensors"
    assert wf.bind(negative="blurry").graph["7"]["inputs"]["text"] == "blurry"


def test_bind_returns_a_new_workflow_and_records_values():
    wf = zimage_turbo()
    wf2 = wf.bind(prompt="猫", seed=7, size=(512, 768), steps=4)
    assert wf.graph["27"]["inputs"]["text"] == ""
    assert wf2.graph["27"]["inputs"]["text"] == "猫"
    assert wf2.values == {"prompt": "猫", "seed": 7, "width": 512, "height": 768, "steps": 4}
    assert wf2.to_api() == wf2.to_api() and wf2.to_api() is not wf2.to_api()
    with pytest.raises(TypeError):
        wf2.graph["27"] = {}  # read-only view


def test_bind_by_path_and_title():
    wf = zimage_turbo()
    assert wf.bind(**{"11.shift": 2.5}).graph["11"]["inputs"]["shift"] == 2.5
    assert wf.bind(**{"Size.width": 512}).graph["13"]["inputs"]["width"] == 512
    with pytest.raises(WorkflowInvalid, match=r"'Nope\.width': no node has that id or title"):
        wf.bind(**{"Nope.width": 1})
    with pytest.raises(WorkflowInvalid, match="has no input 'colour'"):
        wf.bind(**{"13.colour": 1})


def test_load_every_format(tmp_path, templates):
    api = zimage_turbo().to_api()
    (tmp_path / "api.json").write_text(json.dumps(api))
    assert Workflow.load(tmp_path / "api.json").source == "api"
    (tmp_path / "ui.json").write_text(json.dumps(templates("image_z_image_turbo.json")))
    ui = Workflow.load(str(tmp_path / "ui.json"))
    assert ui.source == "ui" and ui.name == "ui" and "57:3" in ui.graph
    assert Workflow.load(api).graph == zimage_turbo().graph
    png = tmp_path / "made.png"
    png.write_bytes(add_text_chunks(tiny_png(), {"prompt": json.dumps(api)}))
    assert Workflow.load(png).source == "png:prompt"
    png.write_bytes(
        add_text_chunks(tiny_png(), {"workflow": json.dumps(templates("image_z_image_turbo.json"))})
    )
    assert Workflow.load(png).source == "png:workflow"
    png.write_bytes(tiny_png())
    with pytest.raises(WorkflowInvalid, match="carries no ComfyUI workflow"):
        Workflow.load(png)


def test_ambiguity_and_dead_nodes():
    api = zimage_turbo().to_api()
    api["99"] = json.loads(json.dumps(api["3"]))
    api["98"] = {"class_type": "VAELoader", "inputs": {"vae_name": "ae.safetensors"}}
    wf = Workflow.load(api)
    assert wf.ambiguous["seed"] == (("3", "seed"), ("99", "seed"))
    assert "seed" not in {p.name for p in wf.params}
    assert set(wf.dead_nodes) == {"98", "99"}
    assert builtin("zimage-turbo").dead_nodes == ()


def test_function_signature_lists_parameters():
    def call(**kwargs):
        return kwargs

    fn = signature_for(zimage_turbo(), call)
    sig = inspect.signature(fn)
    assert sig.parameters["seed"].default == 0
    assert sig.parameters["width"].annotation is int
    assert "steps (INT 1..10000): sampling steps [3.steps]" in fn.__doc__
    assert fn.__name__ == "zimage_turbo"
