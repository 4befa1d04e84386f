"""LoRAs and the Z-Image Fun ControlNet running on the real ComfyUI with the tiny weights.

LoRAs run on the session engine (every version). The ControlNet needs ComfyUI >= 0.28
(``ZImageFunControlnet`` and the Z-Image control patch loader): where the session engine's
object_info lacks them (the managed 0.3.75), these tests start an engine from the 0.33 tree
in ../shared, so they run everywhere and are skipped nowhere.
"""

from __future__ import annotations

import io
from importlib import resources

import pytest
from PIL import Image as PIL
from PIL import ImageDraw

import comfyfn
from tests.support.comfyui_trees import COMFYUI_033, engine_on_tree

pytestmark = pytest.mark.engine

TEMPLATES = resources.files("comfyui_workflow_templates_json") / "templates"
CONTROL_CLASSES = {"ModelPatchLoader", "ZImageFunControlnet", "Canny", "GetImageSize"}
LORA = "zimage_tiny_style.safetensors"
PATCH = "Z-Image-Turbo-Fun-Controlnet-Union.safetensors"


def _pixels(gen: comfyfn.Generation) -> bytes:
    """The first image's pixels (its PNG also holds the graph, which differs)."""
    return gen.images[0].to_pil().tobytes()


def _control_image(size=(96, 64)) -> bytes:
    image = PIL.new("RGB", size, "black")
    ImageDraw.Draw(image).ellipse((10, 8, size[0] - 10, size[1] - 8), outline="white", width=4)
    out = io.BytesIO()
    image.save(out, "PNG")
    return out.getvalue()


@pytest.fixture(scope="module")
def control_server(server, tmp_path_factory):
    """A server with the Z-Image Fun ControlNet: the session's if its object_info has the
    classes, else an engine on the 0.33 tree (a missing tree fails, naming it)."""
    with comfyfn.Client(server) as c:
        if set(c.object_info()) >= CONTROL_CLASSES:
            yield server
            return
    with engine_on_tree("control-033", COMFYUI_033, tmp_path_factory.mktemp("c33")) as url:
        yield url


def test_the_tiny_lora_is_listed_in_loras(server):
    with comfyfn.Client(server) as c:
        assert LORA in c.models("loras")


def test_a_lora_changes_the_image_and_strength_zero_does_not(server, unique):
    seed = unique()
    with comfyfn.Client(server) as c:
        plain = c.generate("a red apple", seed=seed, size=(64, 64), steps=2)
        styled = c.generate("a red apple", seed=seed, size=(64, 64), steps=2, loras=[(LORA, 0.8)])
        off = c.generate("a red apple", seed=seed, size=(64, 64), steps=2, loras=[f"{LORA}:0"])
    assert _pixels(styled) != _pixels(plain)
    assert _pixels(off) == _pixels(plain)
    loaders = [n for n in styled.workflow.values() if n["class_type"] == "LoraLoaderModelOnly"]
    assert [(n["inputs"]["lora_name"], n["inputs"]["strength_model"]) for n in loaders] == [
        (LORA, 0.8)
    ]


def test_a_missing_lora_is_named_before_anything_runs(server):
    with comfyfn.Client(server) as c, pytest.raises(comfyfn.WorkflowInvalid) as info:
        c.generate("x", size=(64, 64), loras=[(LORA, 1.0), ("no_such_lora.safetensors", 0.5)])
    (problem,) = info.value.problems  # the LoRA the server has is no problem
    assert problem.input_name == "lora_name"
    assert problem.class_type == "LoraLoaderModelOnly"
    assert "no_such_lora.safetensors" in problem.message and "models/loras/" in problem.message


def test_zimage_control_follows_the_control_image_and_strength(control_server, unique):
    seed, control = unique(), _control_image((96, 64))
    with comfyfn.Client(control_server) as c:
        wf = c.workflow("zimage-control")
        full = c.run(wf, prompt="a ring", seed=seed, steps=2, control_image=control)
        none = c.run(wf, prompt="a ring", seed=seed, steps=2, control_image=control, strength=0.0)
        mapped = c.run(
            wf, prompt="a ring", seed=seed, steps=2, control_image=control, control_type="depth"
        )
    assert (full.images[0].width, full.images[0].height) == (96, 64)  # the control's size
    assert _pixels(full) != _pixels(none)
    assert _pixels(mapped) != _pixels(full)  # the map as given, not its edges
    assert not [n for n in mapped.workflow.values() if n["class_type"] == "Canny"]


def test_zimage_control_inpaints_with_image_and_mask_and_a_lora(control_server, unique):
    photo, mask = _control_image((64, 64)), io.BytesIO()
    m = PIL.new("L", (64, 64), 0)
    m.paste(255, (16, 16, 48, 48))
    m.save(mask, "PNG")
    with comfyfn.Client(control_server) as c:
        gen = c.run(
            "zimage-control",
            prompt="a ring",
            seed=unique(),
            steps=2,
            control_image=photo,
            image=photo,
            mask=mask.getvalue(),
            loras=[(LORA, 0.5)],
        )
    assert (gen.images[0].width, gen.images[0].height) == (64, 64)
    classes = {n["class_type"] for n in gen.workflow.values()}
    assert {"LoadImageMask", "LoraLoaderModelOnly", "ModelPatchLoader"} <= classes


def test_the_official_controlnet_template_runs_as_published(control_server, unique):
    with comfyfn.Client(control_server) as c:
        wf = c.workflow(str(TEMPLATES / "image_z_image_turbo_fun_union_controlnet.json"))
        assert wf.slots.params["control_image"][1] == "image"
        gen = c.run(wf, prompt="a ring", seed=unique(), steps=2, control_image=_control_image())
    saved = [i for i in gen.images if i.width == 96]
    assert saved and saved[0].height == 64
    assert PATCH in {n["inputs"].get("name") for n in gen.workflow.values()}
