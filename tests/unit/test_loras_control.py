"""LoRAs and the Z-Image Fun ControlNet bound by meaning (pure: no server)."""

from __future__ import annotations

import io
from importlib import resources

import pytest
from PIL import Image as PIL

from comfyfn.errors import WorkflowInvalid
from comfyfn.workflow import Workflow, builtin, bundled_object_info
from comfyfn.workflow._loras import parse_lora, parse_loras
from comfyfn.workflow._validation import problems

TEMPLATES = resources.files("comfyui_workflow_templates_json") / "templates"
CONTROL_TEMPLATE = "image_z_image_turbo_fun_union_controlnet.json"


def _png(size=(100, 70)) -> bytes:
    out = io.BytesIO()
    PIL.new("RGB", size, "white").save(out, "PNG")
    return out.getvalue()


def _of(graph, cls):
    found = (n for n, node in graph.items() if node["class_type"] == cls)
    return sorted(found, key=lambda n: [int(p) for p in n.split(":")])


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("style.safetensors", ("style.safetensors", 1.0)),
        ("style.safetensors:0.8", ("style.safetensors", 0.8)),
        (" sub/style.safetensors : -0.5 ", ("sub/style.safetensors", -0.5)),
        ("c:style", ("c:style", 1.0)),  # a suffix that is no number is part of the name
    ],
)
def test_parse_lora_reads_name_and_strength(text, expected):
    assert parse_lora(text) == expected


def test_parse_loras_takes_a_column_value_a_list_or_pairs():
    assert parse_loras("a.safetensors:0.8, b.safetensors; c.safetensors:0") == (
        ("a.safetensors", 0.8),
        ("b.safetensors", 1.0),
        ("c.safetensors", 0.0),
    )
    assert parse_loras([("a.safetensors", 1), "b.safetensors:0.5"]) == (
        ("a.safetensors", 1.0),
        ("b.safetensors", 0.5),
    )
    assert parse_loras(None) == parse_loras("") == parse_loras([]) == ()


@pytest.mark.parametrize(
    ("value", "says"),
    [
        (":0.8", "names no LoRA file"),
        ("a.safetensors:nan", "not a finite number"),
        ([("a.safetensors", "strong")], "not a finite number"),
        ([("", 1.0)], "names no LoRA file"),
        (42, "not a int"),
        ([3], "is not a LoRA"),
    ],
)
def test_bad_loras_are_errors_naming_the_field(value, says):
    with pytest.raises(WorkflowInvalid) as info:
        builtin("zimage-turbo").bind(loras=value)
    (problem,) = info.value.problems
    assert problem.input_name == "loras"
    assert says in problem.message


def test_loras_are_chained_after_the_model_loader_each_with_its_strength():
    wf = builtin("zimage-turbo").bind(loras=[("a.safetensors", 0.8), "b.safetensors:0.5"])
    g = wf.to_api()
    first, second = _of(g, "LoraLoaderModelOnly")
    assert g[first]["inputs"] == {
        "model": ["28", 0],
        "lora_name": "a.safetensors",
        "strength_model": 0.8,
    }
    assert g[second]["inputs"]["model"] == [first, 0]
    assert (g[second]["inputs"]["lora_name"], g[second]["inputs"]["strength_model"]) == (
        "b.safetensors",
        0.5,
    )
    assert g["11"]["inputs"]["model"] == [second, 0]  # the sampler's model path has them
    assert wf.slots.params["model"] == ("28", "unet_name")  # still found by meaning
    assert not problems(g, bundled_object_info("0.28.0"), check_files=False)


def test_loras_bind_to_the_loaders_the_graph_has_first():
    once = builtin("zimage-turbo").bind(loras=["a.safetensors:0.8", "b.safetensors"])
    again = once.bind(loras=["c.safetensors:0.3"]).to_api()
    loaders = _of(again, "LoraLoaderModelOnly")
    assert len(loaders) == 2  # c took a's place; b, not reached by the list, stays
    assert again[loaders[0]]["inputs"]["lora_name"] == "c.safetensors"
    assert again[loaders[0]]["inputs"]["strength_model"] == 0.3
    assert again[loaders[1]]["inputs"]["lora_name"] == "b.safetensors"


def test_a_template_with_a_lora_loader_has_it_bound():
    info = bundled_object_info("0.28.0")
    wf = Workflow.load(
        str(TEMPLATES / "image_qwen_image_2512_with_2steps_lora.json"), object_info=info
    )
    before = wf.to_api()
    (loader,) = _of(before, "LoraLoaderModelOnly")
    after = wf.bind(loras=[("mine.safetensors", 0.6)]).to_api()
    assert _of(after, "LoraLoaderModelOnly") == [loader]
    assert after[loader]["inputs"]["lora_name"] == "mine.safetensors"
    assert after[loader]["inputs"]["strength_model"] == 0.6


def test_loras_without_one_model_loader_are_an_error():
    graph = builtin("zimage-turbo").to_api()
    del graph["28"]
    graph["11"]["inputs"]["model"] = ["99", 0]
    with pytest.raises(WorkflowInvalid) as info:
        Workflow.load(graph).bind(loras=["a.safetensors"])
    assert "no diffusion model loader" in info.value.problems[0].message


def test_a_missing_lora_is_named_like_any_missing_model():
    info = bundled_object_info("0.28.0")
    info = {
        **info,
        "LoraLoaderModelOnly": _with_files(info["LoraLoaderModelOnly"], ["there.safetensors"]),
    }
    graph = builtin("zimage-turbo").bind(loras=["gone.safetensors"]).to_api()
    found = [p for p in problems(graph, info, check_files=True) if p.input_name == "lora_name"]
    (problem,) = found
    assert "gone.safetensors" in problem.message and "models/loras/" in problem.message
    from comfyfn.models import needed_models

    wf = builtin("zimage-turbo").bind(loras=["gone.safetensors"])
    assert "loras/gone.safetensors" in {n.relpath for n in needed_models(wf)}


def _with_files(definition, files):
    required = dict(definition["input"]["required"])
    required["lora_name"] = [files]
    return {**definition, "input": {**definition["input"], "required": required}}


def test_zimage_control_has_control_parameters_by_meaning():
    wf = builtin("zimage-control")
    params = {p.name: p for p in wf.params}
    assert params["control_image"].type == "IMAGE"
    assert params["control_image"].path == "58.image"
    assert (params["strength"].path, params["strength"].default) == ("60.strength", 1.0)
    assert "image" not in params  # the control image is not the (inpaint) input image
    bound = wf.bind(control_image=_png((100, 70)), strength=0.6).to_api()
    assert bound["60"]["inputs"]["strength"] == 0.6
    assert (bound["13"]["inputs"]["width"], bound["13"]["inputs"]["height"]) == (96, 64)
    assert bound["58"]["inputs"]["image"].startswith("comfyfn/")
    assert not problems(bound, bundled_object_info("0.28.0"), check_files=False)


def test_the_official_controlnet_template_binds_by_meaning():
    wf = Workflow.load(str(TEMPLATES / CONTROL_TEMPLATE), object_info=bundled_object_info("0.28.0"))
    params = {p.name: p for p in wf.params}
    assert params["strength"].class_type == "QwenImageDiffsynthControlnet"
    assert params["control_image"].class_type == "LoadImage"
    assert "image" not in params
    graph = wf.bind(control_type="depth", strength=0.5).to_api()
    assert not _of(graph, "Canny")  # a depth map is used as given
    (control,) = _of(graph, "QwenImageDiffsynthControlnet")
    assert graph[control]["inputs"]["strength"] == 0.5


@pytest.mark.parametrize("kind", ["depth", "pose", "hed", "mlsd", "tile"])
def test_a_control_map_bypasses_canny_and_canny_puts_it_back(kind):
    mapped = builtin("zimage-control").bind(control_type=kind)
    g = mapped.to_api()
    assert "57" not in g and g["60"]["inputs"]["image"] == ["58", 0]
    back = mapped.bind(control_type="canny").to_api()
    (canny,) = _of(back, "Canny")
    assert back[canny]["inputs"] == {
        "image": ["58", 0],
        "low_threshold": 0.1,
        "high_threshold": 0.32,
    }
    assert back["60"]["inputs"]["image"] == [canny, 0]


def test_control_type_errors_name_the_field():
    with pytest.raises(WorkflowInvalid) as info:
        builtin("zimage-control").bind(control_type="scribble")
    assert info.value.problems[0].input_name == "control_type"
    assert "canny, depth" in info.value.problems[0].message
    with pytest.raises(WorkflowInvalid) as info:
        builtin("zimage-turbo").bind(control_type="canny")
    assert "ControlNet" in info.value.problems[0].message


def test_inpaint_image_and_mask_get_loaders_on_the_control_patch():
    wf = builtin("zimage-control").bind(control_image=_png(), image=_png(), mask=_png())
    g = wf.to_api()
    image, mask = g["60"]["inputs"]["inpaint_image"][0], g["60"]["inputs"]["mask"][0]
    assert g[image]["class_type"] == "LoadImage" and g[image]["inputs"]["image"].startswith(
        "comfyfn/"
    )
    assert g[mask]["class_type"] == "LoadImageMask"
    assert set(wf.uploads) == {g[image]["inputs"]["image"], g[mask]["inputs"]["image"]}
    assert not problems(g, bundled_object_info("0.28.0"), check_files=False)


def test_inpainting_needs_the_z_image_control_node():
    wf = Workflow.load(str(TEMPLATES / CONTROL_TEMPLATE), object_info=bundled_object_info("0.28.0"))
    with pytest.raises(WorkflowInvalid) as info:
        wf.bind(image=_png(), mask=_png())
    assert "ZImageFunControlnet" in info.value.problems[0].message


SETTINGS = ("steps", "cfg", "sampler", "scheduler", "denoise", "width", "height", "vae")


@pytest.mark.parametrize(
    ("template", "name", "files"),
    [
        ("image_z_image_turbo.json", "zimage-turbo", {}),
        ("image_z_image.json", "zimage", {}),
        (
            "image_z_image_turbo_int8.json",
            "zimage-turbo",
            {
                "model": "z_image_turbo_int8_convrot.safetensors",
                "text_encoder": "qwen_3_4b_fp8_mixed.safetensors",
            },
        ),
        ("image_z_image_int8.json", "zimage", {"model": "z_image_int8_convrot.safetensors"}),
        (CONTROL_TEMPLATE, "zimage-control", {}),
    ],
)
def test_builtins_have_the_official_templates_settings(template, name, files):
    official = Workflow.load(str(TEMPLATES / template), object_info=bundled_object_info("0.28.0"))
    ours = builtin(name)
    theirs = {p.name: p.default for p in official.params}
    mine = {p.name: p.default for p in ours.bind(**files).params}
    keys = [k for k in (*SETTINGS, "model", "text_encoder", "strength") if k in theirs]
    assert {k: theirs[k] for k in keys} == {k: mine[k] for k in keys}
    assert _shift(official) == _shift(ours) == 3
    if name == "zimage-control":
        assert _inputs(official, "Canny") == _inputs(ours, "Canny")
        assert _inputs(official, "ModelPatchLoader") == _inputs(ours, "ModelPatchLoader")


def _shift(wf):
    (shift,) = {
        n["inputs"]["shift"]
        for n in wf.graph.values()
        if n["class_type"] == "ModelSamplingAuraFlow"
    }
    return shift


def _inputs(wf, cls):
    (node,) = [n for n in wf.graph.values() if n["class_type"] == cls]
    return {k: v for k, v in node["inputs"].items() if not isinstance(v, list)}
