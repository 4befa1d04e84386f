"""Workflow values: loading any format, typed parameters, binding by name/path/title."""

from __future__ import annotations

import inspect
import json

import pytest

from comfyfn import Workflow
from comfyfn.errors import WorkflowInvalid
from comfyfn.provenance import add_text_chunks
from comfyfn.workflow import builtin, bundled_object_info, zimage, zimage_turbo
from comfyfn.workflow._signature import signature_for
from tests.support.tests_png import image_bytes


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
        wf2.graph["27"] = {}  # type: ignore[index]  # read-only view: what the test shows


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
    png.write_bytes(add_text_chunks(image_bytes((8, 8), (1, 2, 3)), {"prompt": json.dumps(api)}))
    assert Workflow.load(png).source == "png:prompt"
    png.write_bytes(
        add_text_chunks(
            image_bytes((8, 8), (1, 2, 3)),
            {"workflow": json.dumps(templates("image_z_image_turbo.json"))},
        )
    )
    assert Workflow.load(png).source == "png:workflow"
    png.write_bytes(image_bytes((8, 8), (1, 2, 3)))
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
    assert sig.parameters["seed"].default is None  # None: a random seed, as generate() draws
    assert sig.parameters["width"].annotation is int
    assert "steps (INT 1..10000): sampling steps [3.steps]" in (fn.__doc__ or "")
    assert fn.__name__ == "zimage_turbo"


ZIMAGE_TEMPLATES = [
    "image_z_image_turbo.json",
    "image_z_image.json",
    "image_z_image_int8.json",
    "image_z_image_turbo_int8.json",
]


@pytest.mark.parametrize("name", ZIMAGE_TEMPLATES)
def test_the_zimage_templates_convert_validate_and_have_their_parameters(templates, name):
    wf = Workflow.load(templates(name), object_info=bundled_object_info("0.28.0"))
    wf.validate()  # bundled definitions: model files are not checked
    names = [p.name for p in wf.params]
    expected = ["prompt", "seed", "width", "height", "steps", "cfg", "model", "text_encoder"]
    assert [n for n in names if n in expected] == expected
    assert ("negative" in names) == ("turbo" not in name)  # the turbo ones zero the negative
    assert wf.expected_size == (1024, 1024)


def test_zimage_base_binds_width_and_height_over_its_resolution_selector(templates):
    wf = Workflow.load(templates("image_z_image.json"))  # the newest bundled definitions
    params = {p.name: p for p in wf.params}
    assert {"prompt", "negative", "seed", "steps", "cfg", "width", "height"} <= set(params)
    width = params["width"]
    assert (width.path, width.class_type, width.default, width.step) == (
        "76:68.width",
        "EmptySD3LatentImage",
        1024,  # what ResolutionSelector computes for 1:1 at 1 MP
        16,
    )
    assert wf.graph["76:68"]["inputs"]["width"] == ["94", 0]
    bound = wf.bind(prompt="猫", seed=5, width=320, height=192)
    api = bound.to_api()
    assert api["76:68"]["inputs"] == {"width": 320, "height": 192, "batch_size": 1}
    assert bound.expected_size == (320, 192)
    assert bound.provenance()["width"] == 320 and "94" in bound.dead_nodes
    bound.validate()
    assert api["95"]["inputs"]["format"] == "png"  # SaveImageAdvanced keeps its options
    by_path = {"94.aspect_ratio": "16:9 (Widescreen)", "Resolution Selector.megapixels": 1.0}
    wide = wf.bind(**by_path)
    assert wide.expected_size == (1368, 768)
    assert {p.name: p.default for p in wide.params}["width"] == 1368
    with pytest.raises(WorkflowInvalid, match="width 1000 is not a multiple of 16"):
        wf.bind(width=1000)


def test_offline_definitions_default_to_the_newest_bundle():
    wf = zimage_turbo()
    assert wf.definitions is bundled_object_info("0.33.0")
    assert "SaveImageAdvanced" in wf.definitions and "ImageCompositor" in wf.definitions


def test_paths_may_have_dots_in_the_title_or_the_input():
    api = zimage_turbo().to_api()
    api["3"]["_meta"]["title"] = "Sampler v1.5"
    wf = Workflow.load(api)
    assert wf.bind(**{"Sampler v1.5.steps": 4}).graph["3"]["inputs"]["steps"] == 4
    with pytest.raises(WorkflowInvalid, match=r"has no input 'step\.count'"):
        wf.bind(**{"Sampler v1.5.step.count": 4})
