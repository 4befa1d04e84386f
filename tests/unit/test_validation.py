"""Every validation error kind, found before anything is sent."""

from __future__ import annotations

import copy

import pytest

from comfyfn.errors import WorkflowInvalid
from comfyfn.workflow import bundled_object_info, zimage_turbo
from comfyfn.workflow._validation import check, problems

INFO = bundled_object_info()
SERVER_INFO = copy.deepcopy(INFO)  # as a server with exactly the Z-Image files would answer
for _cls, _name, _file in (
    ("UNETLoader", "unet_name", "z_image_turbo_bf16.safetensors"),
    ("CLIPLoader", "clip_name", "qwen_3_4b.safetensors"),
    ("VAELoader", "vae_name", "ae.safetensors"),
):
    SERVER_INFO[_cls]["input"]["required"][_name][0] = [_file]


def graph():
    return zimage_turbo().to_api()


def one(g, info=SERVER_INFO, **kw):
    (p,) = problems(g, info, **kw)
    return p


def test_the_builtin_is_valid():
    assert problems(graph(), SERVER_INFO) == []


def test_unknown_class():
    g = graph()
    g["11"]["class_type"] = "ModelSamplingMadeUp"
    p = one(g)
    assert (p.node_id, p.kind) == ("11", "unknown_class")
    assert str(p) == "node 11 ModelSamplingMadeUp: unknown node class (not installed on the server)"


def test_missing_required_input():
    g = graph()
    del g["3"]["inputs"]["steps"]
    assert str(one(g)) == "node 3 KSampler: required input 'steps' is missing"


def test_link_type_mismatch():
    g = graph()
    g["9"]["inputs"]["images"] = ["13", 0]
    assert str(one(g)) == "node 9 SaveImage: images expects IMAGE but receives LATENT from node 13"


def test_link_to_missing_node_and_bad_slot():
    g = graph()
    g["8"]["inputs"]["vae"] = ["404", 0]
    assert "vae links to node 404, which is not in the workflow" in str(one(g))
    g = graph()
    g["8"]["inputs"]["vae"] = ["29", 3]
    assert "vae links to output 3 of node 29, which has 1" in str(one(g))


@pytest.mark.parametrize(
    ("node", "name", "value", "text"),
    [
        ("3", "steps", 0, "steps 0 is smaller than the minimum 1"),
        ("3", "denoise", 1.5, "denoise 1.5 is bigger than the maximum 1.0"),
        ("13", "width", 1000, "width 1000 is not a multiple of 16"),
        ("3", "steps", "eight", "steps 'eight' is not an integer"),
        ("3", "cfg", "high", "cfg 'high' is not a number"),
        ("27", "text", 5, "text 5 is not text"),
        ("3", "sampler_name", "warp", "sampler_name 'warp' is not one of ['euler'"),
    ],
)
def test_bad_values(node, name, value, text):
    g = graph()
    g[node]["inputs"][name] = value
    p = one(g)
    assert (p.node_id, p.input_name) == (node, name)
    assert text in p.message


def test_model_file_missing_says_which_folder():
    g = graph()
    g["28"]["inputs"]["unet_name"] = "z_image_turbo_fp8.safetensors"
    p = one(g, SERVER_INFO)
    assert str(p) == (
        "node 28 UNETLoader: unet_name 'z_image_turbo_fp8.safetensors' is not on the server; "
        "put it in models/diffusion_models/ (the server has: 'z_image_turbo_bf16.safetensors')"
    )
    assert problems(g, SERVER_INFO, check_files=False) == []


def test_no_output_node():
    g = graph()
    del g["9"]
    assert "no output node" in str(one(g))


def test_check_raises_with_every_problem():
    g = graph()
    g["13"]["inputs"]["width"] = 1000
    g["13"]["inputs"]["height"] = 7
    with pytest.raises(WorkflowInvalid) as info:
        check(g, SERVER_INFO, server="http://gpu:8188")
    assert len(info.value.problems) == 2
    assert str(info.value).startswith("the workflow is invalid for http://gpu:8188")


def test_workflow_validate_checks_files_only_against_a_server():
    wf = zimage_turbo().bind(model="z_image_turbo_fp8.safetensors")
    wf.validate()  # the bundled definitions cannot know what files a server has
    with pytest.raises(WorkflowInvalid, match="is not on the server; put it in models/"):
        wf.validate(SERVER_INFO)
    wf.validate(SERVER_INFO, check_files=False)


def test_files_are_known_by_input_name_upload_flag_or_file_name():
    graph = {
        "1": {"class_type": "LoadImage", "inputs": {"image": "cat.png"}},
        "2": {"class_type": "PreviewImage", "inputs": {"images": ["1", 0]}},
        "3": {
            "class_type": "LTXAVTextEncoderLoader",
            "inputs": {
                "text_encoder": "gemma.safetensors",
                "ckpt_name": "ltx.safetensors",
                "device": "default",
            },
        },
        "4": {"class_type": "KlingImageGenerationNode", "inputs": {"model_name": "kling-v9"}},
        "5": {"class_type": "PreviewAny", "inputs": {"source": ["3", 0]}},
        "6": {"class_type": "PreviewImage", "inputs": {"images": ["4", 0]}},
    }
    found = problems(graph, INFO, check_files=False)
    assert [str(p) for p in found if p.node_id != "4"] == []  # files: not checked offline
    kling = [p.message for p in found if p.input_name == "model_name"]
    assert "model_name 'kling-v9' is not one of ['kling-v3']" in kling  # 0.33's choices
    online = {(p.node_id, p.input_name): p.message for p in problems(graph, INFO)}
    assert "not among the server's input files" in online[("1", "image")]
    assert online[("3", "text_encoder")].startswith(
        "text_encoder 'gemma.safetensors' is not on the server; put it in models/text_encoders/"
    )
    assert online[("3", "ckpt_name")] == (
        "ckpt_name 'ltx.safetensors' is not on the server; put it in models/checkpoints/ "
        "(the server has: none)"
    )
