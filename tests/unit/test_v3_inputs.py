"""ComfyUI's V3 dynamic inputs (0.28): dynamic combos, autogrow groups and match types —
converted from the UI format as the frontend exports them, validated, and bound — plus the
frontend's own widgets and the bundled definitions chosen by server version."""

from __future__ import annotations

from typing import Any

import pytest

from comfyfn import Workflow
from comfyfn.errors import WorkflowInvalid
from comfyfn.workflow import BUNDLED_VERSIONS, bundled_object_info, bundled_version
from comfyfn.workflow._definitions import node_inputs
from comfyfn.workflow._uiformat import ui_to_api
from comfyfn.workflow._validation import problems

INFO = bundled_object_info("0.28.0")


def node(nid, kind, widgets=None, inputs=(), outputs=(), mode=0):
    out = {"id": nid, "type": kind, "mode": mode, "inputs": list(inputs), "outputs": list(outputs)}
    if widgets is not None:
        out["widgets_values"] = widgets
    return out


def link_in(name, link, kind):
    return {"name": name, "type": kind, "link": link}


def image_source(nid=1, links=(1,)):
    """An EmptyImage, the IMAGE source of the crafted graphs below."""
    out = [{"name": "IMAGE", "type": "IMAGE", "links": list(links)}]
    return node(nid, "EmptyImage", [64, 48, 1, 0], outputs=out)


def convert(*nodes, links=()):
    return ui_to_api({"nodes": list(nodes), "links": [list(x) for x in links]}, INFO)


def messages(graph, **kw):
    return [str(p) for p in problems(graph, INFO, **kw)]


# -- the bundled definitions ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("server", "bundle"),
    [
        ("0.3.75", "0.3.75"),
        ("0.3.80", "0.3.75"),
        ("0.4.0", "0.3.75"),
        ("0.28.0", "0.28.0"),
        ("0.30.1", "0.28.0"),
        ("v0.28.0-rc1", "0.28.0"),
        ("0.33.0", "0.33.0"),
        ("0.47.2", "0.33.0"),
        ("0.3.10", "0.3.75"),  # older than every bundle: the oldest
        (None, "0.33.0"),
        ("nightly", "0.33.0"),  # unreadable: the newest
    ],
)
def test_the_bundle_is_the_newest_not_newer_than_the_server(server, bundle):
    assert bundled_version(server) == bundle


def test_each_bundle_is_parsed_once_and_differs():
    assert BUNDLED_VERSIONS == ("0.3.75", "0.28.0", "0.33.0")
    assert bundled_object_info("0.28.0") is bundled_object_info("0.30") is INFO
    assert bundled_object_info("0.33.0") is bundled_object_info("0.40") is bundled_object_info()
    old, new = bundled_object_info("0.3.75"), bundled_object_info("0.33.0")
    assert (len(old), len(INFO), len(new)) == (510, 803, 886)
    assert "SaveImageAdvanced" in INFO and "SaveImageAdvanced" not in old
    assert "ImageCompositor" in new and "ImageCompositor" not in INFO


# -- reading the specs ---------------------------------------------------------------------


def test_a_dynamic_combo_adds_the_inputs_of_its_chosen_option():
    definition = INFO["SaveImageAdvanced"]
    png = node_inputs(definition, {"format": "png"})
    assert list(png) == [
        "images",
        "filename_prefix",
        "format",
        "format.bit_depth",
        "format.input_color_space",
    ]
    assert png["format"].choices == ("png", "exr")
    assert png["format.bit_depth"].choices == ("8-bit", "16-bit")
    exr = node_inputs(definition, {"format": "exr"})
    assert exr["format.bit_depth"].choices == ("32-bit float",)
    assert list(node_inputs(definition, {"format": "tiff"})) == [
        "images",
        "filename_prefix",
        "format",
    ]


def test_an_autogrow_group_has_every_name_it_may_take_the_first_min_required():
    batch = node_inputs(INFO["BatchImagesNode"], {})
    assert list(batch)[:2] == ["images.image0", "images.image1"] and len(batch) == 50
    assert batch["images.image0"].required and not batch["images.image1"].required
    assert batch["images.image1"].type == "IMAGE" and not batch["images.image1"].is_widget
    math = node_inputs(INFO["ComfyMathExpression"], {})
    assert [n for n in math if n.startswith("values.")][:3] == ["values.a", "values.b", "values.c"]
    assert math["values.a"].required and not math["values.b"].required


def test_a_match_type_accepts_its_allowed_types():
    specs = node_inputs(INFO["ResizeImageMaskNode"], {"resize_type": "match size"})
    assert specs["input"].accepts == "IMAGE,MASK" and specs["input"].match_group == "input_type"
    assert specs["resize_type.match"].accepts == "IMAGE,MASK"
    assert node_inputs(INFO["ComfySwitchNode"], {})["on_true"].accepts == "*"


# -- converting ----------------------------------------------------------------------------


def save_advanced(widgets, nid=2):
    return node(nid, "SaveImageAdvanced", widgets, inputs=[link_in("images", 1, "IMAGE")])


def test_a_dynamic_combo_sends_its_option_inputs_as_the_frontend_exports_them():
    api = convert(
        image_source(),
        save_advanced(["out", "exr", "32-bit float", "linear"]),
        links=[[1, 1, 0, 2, 0, "IMAGE"]],
    )
    assert api["2"]["inputs"] == {
        "images": ["1", 0],
        "filename_prefix": "out",
        "format": "exr",
        "format.bit_depth": "32-bit float",
        "format.input_color_space": "linear",
    }
    assert messages(api) == []


def test_widgets_after_a_dynamic_combo_come_after_its_options():
    resize = node(
        2,
        "ResizeImageMaskNode",
        ["scale dimensions", 512, 256, "disabled", "area"],
        inputs=[link_in("input", 1, "IMAGE,MASK")],
        outputs=[{"name": "resized", "type": "IMAGE", "links": [2]}],
    )
    preview = node(3, "PreviewImage", inputs=[link_in("images", 2, "IMAGE")])
    links = [[1, 1, 0, 2, 0, "IMAGE"], [2, 2, 0, 3, 0, "IMAGE"]]
    api = convert(image_source(), resize, preview, links=links)
    assert api["2"]["inputs"] == {
        "input": ["1", 0],
        "resize_type": "scale dimensions",
        "resize_type.width": 512,
        "resize_type.height": 256,
        "resize_type.crop": "disabled",
        "scale_method": "area",
    }
    resize["widgets_values"] = ["scale by multiplier", 1.5, "lanczos"]
    api = convert(image_source(), resize, preview, links=links)
    assert api["2"]["inputs"]["resize_type.multiplier"] == 1.5
    assert api["2"]["inputs"]["scale_method"] == "lanczos"
    assert messages(api) == []


def test_sockets_an_option_adds_take_their_links():
    resize = node(
        3,
        "ResizeImageMaskNode",
        ["match size", "center", "bilinear"],
        inputs=[link_in("input", 1, "IMAGE,MASK"), link_in("resize_type.match", 2, "IMAGE,MASK")],
        outputs=[{"name": "resized", "type": "IMAGE", "links": [3]}],
    )
    preview = node(4, "PreviewImage", inputs=[link_in("images", 3, "IMAGE")])
    links = [[1, 1, 0, 3, 0, "IMAGE"], [2, 2, 0, 3, 1, "IMAGE"], [3, 3, 0, 4, 0, "IMAGE"]]
    api = convert(image_source(), image_source(2, (2,)), resize, preview, links=links)
    assert api["3"]["inputs"] == {
        "input": ["1", 0],
        "resize_type": "match size",
        "resize_type.match": ["2", 0],
        "resize_type.crop": "center",
        "scale_method": "bilinear",
    }
    assert messages(api) == []


def test_autogrow_sockets_and_match_types_convert_by_name():
    batch = node(
        3,
        "BatchImagesNode",
        [],
        inputs=[
            link_in("images.image0", 1, "IMAGE"),
            link_in("images.image1", 2, "IMAGE"),
            link_in("images.image2", None, "IMAGE"),
        ],
        outputs=[{"name": "IMAGE", "type": "IMAGE", "links": [3]}],
    )
    switch = node(
        4,
        "ComfySwitchNode",
        [True],
        inputs=[link_in("on_false", 3, "IMAGE"), link_in("on_true", 4, "IMAGE")],
        outputs=[{"name": "output", "type": "IMAGE", "links": [5]}],
    )
    preview = node(5, "PreviewImage", inputs=[link_in("images", 5, "IMAGE")])
    links = [
        [1, 1, 0, 3, 0, "IMAGE"],
        [2, 2, 0, 3, 1, "IMAGE"],
        [3, 3, 0, 4, 0, "IMAGE"],
        [4, 2, 0, 4, 1, "IMAGE"],
        [5, 4, 0, 5, 0, "IMAGE"],
    ]
    api = convert(image_source(), image_source(2, (2, 4)), batch, switch, preview, links=links)
    assert api["3"]["inputs"] == {"images.image0": ["1", 0], "images.image1": ["2", 0]}
    assert api["4"]["inputs"] == {"switch": True, "on_false": ["3", 0], "on_true": ["2", 0]}
    assert messages(api) == []


def test_values_an_older_file_lacks_take_the_definition_defaults():
    scale = node(2, "ImageScaleToTotalPixels", ["area", 2.0], inputs=[link_in("image", 1, "IMAGE")])
    api = convert(image_source(), scale, links=[[1, 1, 0, 2, 0, "IMAGE"]])
    assert api["2"]["inputs"] == {
        "image": ["1", 0],
        "upscale_method": "area",
        "megapixels": 2.0,
        "resolution_steps": 1,
    }


@pytest.mark.parametrize("control", [[], ["randomize"]])
def test_a_seed_inside_an_option_may_be_followed_by_its_control_value(control):
    stored = ["", 256, "on", 0.7, 64, 0.95, 0.05, 1.05, 7, *control, 0.1, False, True]
    api = convert(node(1, "TextGenerate", stored))
    inputs = api["1"]["inputs"]
    assert inputs["sampling_mode.seed"] == 7
    assert inputs["sampling_mode.presence_penalty"] == 0.1
    assert (inputs["thinking"], inputs["use_default_template"]) == (False, True)


def test_custom_combo_sends_the_options_its_frontend_adds_and_the_index():
    api = convert(node(1, "CustomCombo", ["SFX", 2, "Music", "Instrument", "SFX", ""]))
    assert api["1"]["inputs"] == {
        "choice": "SFX",
        "index": 2,
        "option1": "Music",
        "option2": "Instrument",
        "option3": "SFX",
        "option4": "",
    }


def test_frontend_widgets_image_compare_and_a_3d_capture():
    compare = node(2, "ImageCompare", [], inputs=[link_in("image_a", 1, "IMAGE")])
    load3d = node(
        3, "Load3D", ["toy.glb", "upload3dmodel", "uploadExtraResources", "clear", "", 640, 480]
    )
    api = convert(image_source(), compare, load3d, links=[[1, 1, 0, 2, 0, "IMAGE"]])
    assert api["2"]["inputs"] == {"compare_view": {"__value__": ["", ""]}, "image_a": ["1", 0]}
    # the upload buttons' stored values sit between the file and the next widget
    assert api["3"]["inputs"] == {"model_file": "toy.glb", "image": "", "width": 640, "height": 480}
    api["4"] = {"class_type": "PreviewImage", "inputs": {"images": ["3", 0]}}
    (problem,) = problems(api, INFO, check_files=False)
    assert (problem.node_id, problem.input_name, problem.kind) == ("3", "image", "needs_frontend")
    assert "only the ComfyUI frontend makes this LOAD_3D value" in problem.message


# -- validating ----------------------------------------------------------------------------


def saved(**inputs):
    return {
        "1": {
            "class_type": "EmptyImage",
            "inputs": {"width": 8, "height": 8, "batch_size": 1, "color": 0},
        },
        "2": {
            "class_type": "SaveImageAdvanced",
            "inputs": {"images": ["1", 0], "filename_prefix": "x", **inputs},
        },
    }


def test_a_dynamic_combo_and_the_inputs_of_its_option_are_required_and_checked():
    assert messages(saved()) == ["node 2 SaveImageAdvanced: required input 'format' is missing"]
    assert messages(saved(format="png", **{"format.input_color_space": "sRGB"})) == [
        "node 2 SaveImageAdvanced: required input 'format.bit_depth' is missing"
    ]
    assert messages(saved(format="tiff")) == [
        "node 2 SaveImageAdvanced: format 'tiff' is not one of ['png', 'exr']"
    ]
    bad_depth = {"format.bit_depth": "16-bit", "format.input_color_space": "sRGB"}
    assert messages(saved(format="exr", **bad_depth)) == [
        "node 2 SaveImageAdvanced: format.bit_depth '16-bit' is not one of ['32-bit float']"
    ]
    assert messages(saved(format="png", **bad_depth)) == []


def test_autogrow_inputs_are_required_up_to_min_and_typed():
    graph = saved(
        format="exr", **{"format.bit_depth": "32-bit float", "format.input_color_space": "HDR"}
    )
    graph["2"]["inputs"]["images"] = ["3", 0]
    graph["3"] = {"class_type": "BatchImagesNode", "inputs": {}}
    assert messages(graph) == ["node 3 BatchImagesNode: required input 'images.image0' is missing"]
    graph["4"] = {
        "class_type": "EmptyLatentImage",
        "inputs": {"width": 64, "height": 64, "batch_size": 1},
    }
    graph["3"]["inputs"] = {"images.image0": ["1", 0], "images.image1": ["4", 0]}
    assert messages(graph) == [
        "node 3 BatchImagesNode: images.image1 expects IMAGE but receives LATENT from node 4"
    ]


def test_match_types_check_allowed_types_and_give_their_outputs_the_linked_type():
    graph = {
        "1": {
            "class_type": "EmptyLatentImage",
            "inputs": {"width": 64, "height": 64, "batch_size": 1},
        },
        "2": {
            "class_type": "ResizeImageMaskNode",
            "inputs": {
                "input": ["1", 0],
                "resize_type": "scale by multiplier",
                "resize_type.multiplier": 2.0,
                "scale_method": "area",
            },
        },
        "3": {"class_type": "PreviewImage", "inputs": {"images": ["2", 0]}},
    }
    assert messages(graph) == [
        "node 2 ResizeImageMaskNode: input expects IMAGE,MASK but receives LATENT from node 1",
        "node 3 PreviewImage: images expects IMAGE but receives LATENT from node 2",
    ]
    switched: dict[str, Any] = {
        "1": graph["1"],
        "5": {
            "class_type": "EmptyImage",
            "inputs": {"width": 8, "height": 8, "batch_size": 1, "color": 0},
        },
        "2": {
            "class_type": "ComfySwitchNode",
            "inputs": {"switch": True, "on_false": ["5", 0], "on_true": ["5", 0]},
        },
        "3": {"class_type": "PreviewImage", "inputs": {"images": ["2", 0]}},
    }
    assert messages(switched) == []
    switched["2"]["inputs"].update(on_false=["1", 0], on_true=["1", 0])
    assert messages(switched) == [
        "node 3 PreviewImage: images expects IMAGE but receives LATENT from node 2"
    ]


def test_only_what_the_outputs_need_is_checked_but_every_class_must_exist():
    graph = saved(format="png", **{"format.bit_depth": "8-bit", "format.input_color_space": "sRGB"})
    graph["7"] = {"class_type": "ResizeImageMaskNode", "inputs": {"scale_method": "area"}}  # unused
    assert messages(graph) == []
    graph["8"] = {"class_type": "NotInstalled", "inputs": {}}
    assert messages(graph) == [
        "node 8 NotInstalled: unknown node class (not installed on the server)"
    ]


def test_combos_whose_options_the_frontend_makes_are_not_checked_against_the_server():
    graph = saved(format="png", **{"format.bit_depth": "8-bit", "format.input_color_space": "sRGB"})
    graph["2"]["inputs"]["filename_prefix"] = ["6", 0]
    graph["6"] = {"class_type": "CustomCombo", "inputs": {"choice": "anything", "index": 0}}
    assert messages(graph) == []


# -- binding -------------------------------------------------------------------------------


def advanced_workflow():
    api = saved(format="png", **{"format.bit_depth": "16-bit", "format.input_color_space": "sRGB"})
    return Workflow.load(api, object_info=INFO)


def test_choosing_an_option_lays_out_its_inputs_with_their_defaults():
    wf = advanced_workflow()
    exr = wf.bind(**{"2.format": "exr"})
    assert exr.graph["2"]["inputs"] == {
        "images": ["1", 0],
        "filename_prefix": "x",
        "format": "exr",
        "format.bit_depth": "32-bit float",
        "format.input_color_space": "sRGB",
    }
    exr.validate()
    linear = wf.bind(**{"2.format": "exr", "2.format.input_color_space": "linear"})
    assert linear.graph["2"]["inputs"]["format.input_color_space"] == "linear"
    same = wf.bind(**{"2.format": "png"})  # the chosen option: its values stay
    assert same.graph["2"]["inputs"]["format.bit_depth"] == "16-bit"
    assert (
        wf.bind(**{"2.format.bit_depth": "8-bit"}).graph["2"]["inputs"]["format.bit_depth"]
        == "8-bit"
    )
    with pytest.raises(
        WorkflowInvalid,
        match=r"node 2 SaveImageAdvanced: format 'tiff' is not one of \['png', 'exr'\]",
    ):
        wf.bind(**{"2.format": "tiff"})
    with pytest.raises(WorkflowInvalid, match=r"has no input 'format\.quality'"):
        wf.bind(**{"2.format.quality": 3})


PICK = {
    "Pick": {
        "input": {
            "required": {
                "mode": [
                    "COMFY_DYNAMICCOMBO_V3",
                    {
                        "options": [
                            {
                                "key": "one",
                                "inputs": {
                                    "required": {"a": ["IMAGE", {}], "n": ["INT", {"default": 1}]}
                                },
                            },
                            {
                                "key": "two",
                                "inputs": {
                                    "required": {
                                        "a": ["IMAGE", {}],
                                        "b": ["IMAGE", {}],
                                        "n": ["INT", {"default": 2}],
                                    }
                                },
                            },
                            {"key": "none", "inputs": {"required": {}}},
                        ]
                    },
                ]
            }
        },
        "output": ["IMAGE"],
        "output_node": True,
    },
    "EmptyImage": INFO["EmptyImage"],
}


def test_links_into_sockets_the_new_option_has_too_are_kept():
    graph = {
        "1": {
            "class_type": "EmptyImage",
            "inputs": {"width": 8, "height": 8, "batch_size": 1, "color": 0},
        },
        "2": {"class_type": "Pick", "inputs": {"mode": "one", "mode.a": ["1", 0], "mode.n": 5}},
    }
    wf = Workflow.load(graph, object_info=PICK)
    assert wf.bind(**{"2.mode": "two"}).graph["2"]["inputs"] == {
        "mode": "two",
        "mode.a": ["1", 0],
        "mode.n": 2,
    }
    assert wf.bind(**{"2.mode": "none"}).graph["2"]["inputs"] == {"mode": "none"}


def test_dynamic_inputs_are_typed_parameters_by_path():
    inputs = {p.name: p for p in advanced_workflow().inputs}
    assert (inputs["2.format"].type, inputs["2.format"].choices) == ("COMBO", ("png", "exr"))
    assert inputs["2.format.bit_depth"].choices == ("8-bit", "16-bit")
    assert inputs["2.format.bit_depth"].path == "2.format.bit_depth"


# -- ComfyUI 0.33: layers, the compositor, multi-typed widgets, nested dynamic combos -------

INFO33 = bundled_object_info("0.33.0")


def test_the_compositor_is_a_stored_widget_and_layers_link_like_any_socket():
    out = [{"name": "LAYERS", "type": "LAYERS", "links": [2]}]
    add = node(2, "AddLayer", ["logo", 10, 20, 0.5, "multiply", 0, 0, 0], outputs=out)
    add["inputs"] = [link_in("image", 1, "IMAGE")]
    state = {"version": 1, "canvas": {"width": 64, "height": 48}, "layers": [{"id": 0}]}
    compositor = node(3, "ImageCompositor", [state], inputs=[link_in("layers", 2, "LAYERS")])
    ui = {
        "nodes": [image_source(), add, compositor],
        "links": [[1, 1, 0, 2, 0, "IMAGE"], [2, 2, 0, 3, 0, "LAYERS"]],
    }
    api = ui_to_api(ui, INFO33)
    assert api["3"]["inputs"] == {"layers": ["2", 0], "compositor": state}
    assert api["2"]["inputs"]["blend_mode"] == "multiply" and api["2"]["inputs"]["x"] == 10
    api["4"] = {"class_type": "SaveImage", "inputs": {"images": ["3", 0], "filename_prefix": "c"}}
    assert problems(api, INFO33, check_files=False) == []
    api["3"]["inputs"]["layers"] = ["1", 0]
    assert [str(p) for p in problems(api, INFO33, check_files=False)] == [
        "node 3 ImageCompositor: layers expects LAYERS but receives IMAGE from node 1"
    ]


def test_a_multi_typed_widget_is_checked_as_the_type_it_is_drawn_as():
    latent = {
        "class_type": "LTXVEmptyLatentAudio",
        "inputs": {"frames_number": 97, "frame_rate": "fast", "batch_size": 1, "audio_vae": 5},
    }
    shown = {"class_type": "PreviewAny", "inputs": {"source": ["1", 0]}}
    found = problems({"1": latent, "2": shown}, INFO33, check_files=False)
    assert [str(p) for p in found if p.input_name == "frame_rate"] == [
        "node 1 LTXVEmptyLatentAudio: frame_rate 'fast' is not a number"
    ]


def test_dynamic_combos_nested_three_deep_lay_out_in_widget_order():
    save = node(2, "SaveVideo", ["video/x", "auto", "h264", "re-encode", 18.0, "sRGB"])
    save["inputs"] = [link_in("video", 1, "VIDEO")]
    source = node(1, "CreateVideo", [24, "auto"], outputs=[{"name": "VIDEO", "links": [1]}])
    api = ui_to_api({"nodes": [source, save], "links": [[1, 1, 0, 2, 0, "VIDEO"]]}, INFO33)
    assert api["2"]["inputs"] == {
        "video": ["1", 0],
        "filename_prefix": "video/x",
        "format": "auto",
        "format.codec": "h264",
        "format.codec.encoding": "re-encode",
        "format.codec.encoding.crf": 18.0,
        "format.codec.encoding.color_space": "sRGB",
        "codec": "auto",  # a hidden input kept for older files: its default (format's wins)
    }
