"""Which model files a workflow needs, where they come from, and the warm-up job (pure)."""

from __future__ import annotations

import json
from importlib import resources

from comfyfn.models import WARMUP_PREFIX, needed_models, sources_from, warm_job
from comfyfn.models._check import Needed, Source
from comfyfn.workflow import Workflow, zimage, zimage_edit, zimage_turbo

TEMPLATES = resources.files("comfyui_workflow_templates_json").joinpath("templates")


def test_the_files_of_zimage_turbo_by_folder_with_their_nodes():
    needed = {n.relpath: n for n in needed_models(zimage_turbo())}
    assert set(needed) == {
        "diffusion_models/z_image_turbo_bf16.safetensors",
        "text_encoders/qwen_3_4b.safetensors",
        "vae/ae.safetensors",
    }
    (node,) = needed["diffusion_models/z_image_turbo_bf16.safetensors"].nodes
    assert node[1] == "UNETLoader"


def test_a_file_loaded_by_two_nodes_is_listed_once_with_both():
    graph = zimage_turbo().to_api()
    unet_id = next(n for n, node in graph.items() if node["class_type"] == "UNETLoader")
    graph["999"] = json.loads(json.dumps(graph[unet_id]))
    graph["999"]["_meta"] = {"title": "second"}
    (unet,) = [n for n in needed_models(Workflow.load(graph)) if n.folder == "diffusion_models"]
    assert [node for node, _ in unet.nodes] == [unet_id, "999"]


def test_sources_come_from_the_builtin_manifests():
    sources = sources_from("zimage")
    needed = {n.relpath: n for n in needed_models(zimage(), sources)}
    unet = needed["diffusion_models/z_image_bf16.safetensors"]
    assert unet.source == Source(
        "https://huggingface.co/Comfy-Org/z_image/resolve/main/split_files/diffusion_models/"
        "z_image_bf16.safetensors",
        "zimage",
    )
    assert unet.describe().endswith("(comfyfn models pull zimage)")


def test_sources_come_from_the_workflow_files_properties_for_files_no_manifest_names(tmp_path):
    data = json.loads(TEMPLATES.joinpath("image_z_image_turbo.json").read_text(encoding="utf-8"))
    loader = next(
        n
        for sg in data["definitions"]["subgraphs"]
        for n in sg["nodes"]
        if n["type"] == "UNETLoader"
    )
    loader["properties"]["models"][0].update(name="mine.safetensors", url="https://hub/mine")
    path = tmp_path / "ui.json"
    path.write_text(json.dumps(data))
    sources = sources_from(str(path))
    assert sources[("diffusion_models", "mine.safetensors")] == Source("https://hub/mine")
    assert sources[("vae", "ae.safetensors")].manifest is not None  # a manifest names it


def test_describe_without_a_source():
    needed = Needed("loras", "x.safetensors", (("5", "LoraLoader"),))
    assert needed.describe() == "loras/x.safetensors (node 5 LoraLoader): put it in models/loras/"


def test_the_warm_up_job_is_the_smallest_job_of_the_workflow():
    job = warm_job(zimage_turbo().bind(prompt="a cat", steps=8, width=1024, height=768))
    values = job.provenance()
    assert (values["width"], values["height"], values["steps"], values["seed"]) == (16, 16, 1, 0)
    assert values["batch_size"] == 1 and values["prompt"] == "a cat"
    assert values["filename_prefix"] == WARMUP_PREFIX
    assert needed_models(job) == needed_models(zimage_turbo())  # the same models


def test_the_warm_up_job_of_an_edit_workflow_gets_a_tiny_input_image():
    job = warm_job(zimage_edit())
    values = job.provenance()
    assert (values["width"], values["height"], values["steps"]) == (16, 16, 1)  # not 1 px
    (upload,) = job.uploads.values()
    assert values["image"] == upload.server_name and upload.size == (16, 16)


def test_the_warm_up_job_of_a_workflow_without_a_size_binds_what_it_has():
    graph = {
        "1": {
            "class_type": "EmptyImage",
            "inputs": {"width": 64, "height": 48, "batch_size": 1, "color": 0},
        },
        "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "x"}},
    }
    job = warm_job(Workflow.load(graph))
    assert job.to_api()["2"]["inputs"]["filename_prefix"] == WARMUP_PREFIX
