"""UI-format → API-format conversion, on the official template and on crafted graphs."""

from __future__ import annotations

import pytest

from comfyfn.errors import WorkflowInvalid
from comfyfn.workflow import bundled_object_info
from comfyfn.workflow._uiformat import ui_to_api

INFO = bundled_object_info()


def test_official_z_image_turbo_template_flattens_its_subgraph(templates):
    api = ui_to_api(templates("image_z_image_turbo.json"), INFO)
    assert set(api) == {
        "9",
        "57:3",
        "57:8",
        "57:11",
        "57:13",
        "57:27",
        "57:28",
        "57:29",
        "57:30",
        "57:33",
    }
    assert api["57:3"]["class_type"] == "KSampler"
    assert api["57:3"]["inputs"] == {
        "model": ["57:11", 0],
        "seed": 0,
        "steps": 8,
        "cfg": 1,
        "sampler_name": "res_multistep",
        "scheduler": "simple",
        "positive": ["57:27", 0],
        "negative": ["57:33", 0],
        "latent_image": ["57:13", 0],
        "denoise": 1,
    }
    assert api["57:13"]["inputs"] == {"width": 1024, "height": 1024, "batch_size": 1}
    assert api["57:28"]["inputs"] == {
        "unet_name": "z_image_turbo_bf16.safetensors",
        "weight_dtype": "default",
    }
    assert api["57:30"]["inputs"] == {
        "clip_name": "qwen_3_4b.safetensors",
        "type": "lumina2",
        "device": "default",
    }
    assert api["57:11"]["inputs"] == {"model": ["57:28", 0], "shift": 3}
    assert api["9"]["inputs"] == {"images": ["57:8", 0], "filename_prefix": "z-image-turbo"}
    assert "35" not in api  # the markdown note is dropped


def _node(nid, kind, inputs=(), outputs=(), widgets=None, mode=0, title=None):
    node = {
        "id": nid,
        "type": kind,
        "mode": mode,
        "inputs": [dict(i) for i in inputs],
        "outputs": [dict(o) for o in outputs],
    }
    if widgets is not None:
        node["widgets_values"] = widgets
    if title:
        node["title"] = title
    return node


def crafted():
    """EmptyImage → [Reroute] → bypassed ImageBlur → ImageScale(width from a PrimitiveNode)
    → SaveImage; a muted ImageInvert feeding nothing; a note; a group."""
    nodes = [
        _node(
            1,
            "EmptyImage",
            outputs=[{"name": "IMAGE", "type": "IMAGE", "links": [1]}],
            widgets=[64, 48, 1, 255],
        ),
        _node(
            2,
            "Reroute",
            inputs=[{"name": "", "type": "*", "link": 1}],
            outputs=[{"name": "", "type": "IMAGE", "links": [2]}],
        ),
        _node(
            3,
            "ImageBlur",
            inputs=[{"name": "image", "type": "IMAGE", "link": 2}],
            outputs=[{"name": "IMAGE", "type": "IMAGE", "links": [3]}],
            widgets=[5, 1.0],
            mode=4,
        ),
        _node(
            4,
            "PrimitiveNode",
            outputs=[{"name": "INT", "type": "INT", "links": [4]}],
            widgets=[96, "fixed"],
        ),
        _node(
            5,
            "ImageScale",
            inputs=[
                {"name": "image", "type": "IMAGE", "link": 3},
                {"name": "width", "type": "INT", "link": 4, "widget": {"name": "width"}},
            ],
            outputs=[{"name": "IMAGE", "type": "IMAGE", "links": [5, 6]}],
            widgets=["bilinear", 512, 32, "disabled"],
            title="Resize",
        ),
        _node(
            6,
            "SaveImage",
            inputs=[{"name": "images", "type": "IMAGE", "link": 5}],
            widgets=["crafted"],
        ),
        _node(
            7,
            "ImageInvert",
            inputs=[{"name": "image", "type": "IMAGE", "link": 6}],
            outputs=[{"name": "IMAGE", "type": "IMAGE", "links": []}],
            mode=2,
        ),
        _node(8, "Note", widgets=["hello"]),
    ]
    links = [
        [1, 1, 0, 2, 0, "IMAGE"],
        [2, 2, 0, 3, 0, "IMAGE"],
        [3, 3, 0, 5, 0, "IMAGE"],
        [4, 4, 0, 5, 1, "INT"],
        [5, 5, 0, 6, 0, "IMAGE"],
        [6, 5, 0, 7, 0, "IMAGE"],
    ]
    return {"nodes": nodes, "links": links, "groups": [{"title": "g"}], "version": 0.4}


def test_reroute_primitive_bypass_mute_notes():
    api = ui_to_api(crafted(), INFO)
    assert set(api) == {"1", "5", "6"}  # reroute, bypassed, primitive, muted, note: gone
    assert api["1"]["inputs"] == {"width": 64, "height": 48, "batch_size": 1, "color": 255}
    assert api["5"]["inputs"] == {
        "image": ["1", 0],
        "upscale_method": "bilinear",
        "width": 96,
        "height": 32,
        "crop": "disabled",
    }
    assert api["5"]["_meta"]["title"] == "Resize"
    assert api["6"]["inputs"] == {"images": ["5", 0], "filename_prefix": "crafted"}


def test_seed_control_value_is_skipped_and_dict_widgets_map_by_name():
    ui = {
        "nodes": [
            _node(1, "KSampler", widgets=[42, "randomize", 8, 1.5, "euler", "simple", 0.5]),
            _node(2, "EmptyImage", widgets={"width": 8, "height": 16, "batch_size": 2, "color": 1}),
        ],
        "links": [],
    }
    api = ui_to_api(ui, INFO)
    assert api["1"]["inputs"] == {
        "seed": 42,
        "steps": 8,
        "cfg": 1.5,
        "sampler_name": "euler",
        "scheduler": "simple",
        "denoise": 0.5,
    }
    assert api["2"]["inputs"] == {"width": 8, "height": 16, "batch_size": 2, "color": 1}


def nested():
    """Root: PrimitiveNode(width) → instance 10 of subgraph A; A holds instance 20 of B;
    B holds EmptyImage(width ← A's input, height unfed → own value) → output."""
    sub_b = {
        "id": "B",
        "name": "inner",
        "inputs": [{"name": "width", "type": "INT"}, {"name": "height", "type": "INT"}],
        "outputs": [{"name": "IMAGE", "type": "IMAGE"}],
        "nodes": [
            _node(
                3,
                "EmptyImage",
                inputs=[
                    {"name": "width", "type": "INT", "link": 31, "widget": {"name": "width"}},
                    {"name": "height", "type": "INT", "link": 32, "widget": {"name": "height"}},
                ],
                outputs=[{"name": "IMAGE", "type": "IMAGE", "links": [33]}],
                widgets=[16, 24, 1, 7],
            )
        ],
        "links": [
            {
                "id": 31,
                "origin_id": -10,
                "origin_slot": 0,
                "target_id": 3,
                "target_slot": 0,
                "type": "INT",
            },
            {
                "id": 32,
                "origin_id": -10,
                "origin_slot": 1,
                "target_id": 3,
                "target_slot": 1,
                "type": "INT",
            },
            {
                "id": 33,
                "origin_id": 3,
                "origin_slot": 0,
                "target_id": -20,
                "target_slot": 0,
                "type": "IMAGE",
            },
        ],
    }
    sub_a = {
        "id": "A",
        "name": "outer",
        "inputs": [{"name": "width", "type": "INT"}],
        "outputs": [{"name": "IMAGE", "type": "IMAGE"}],
        "nodes": [
            _node(
                20,
                "B",
                inputs=[
                    {"name": "width", "type": "INT", "link": 21, "widget": {"name": "width"}},
                    {"name": "height", "type": "INT", "link": None, "widget": {"name": "height"}},
                ],
                outputs=[{"name": "IMAGE", "type": "IMAGE", "links": [22]}],
            )
        ],
        "links": [
            {
                "id": 21,
                "origin_id": -10,
                "origin_slot": 0,
                "target_id": 20,
                "target_slot": 0,
                "type": "INT",
            },
            {
                "id": 22,
                "origin_id": 20,
                "origin_slot": 0,
                "target_id": -20,
                "target_slot": 0,
                "type": "IMAGE",
            },
        ],
    }
    root = [
        _node(
            1, "PrimitiveNode", outputs=[{"name": "INT", "type": "INT", "links": [1]}], widgets=[80]
        ),
        _node(
            10,
            "A",
            inputs=[{"name": "width", "type": "INT", "link": 1, "widget": {"name": "width"}}],
            outputs=[{"name": "IMAGE", "type": "IMAGE", "links": [2]}],
        ),
        _node(
            11,
            "SaveImage",
            inputs=[{"name": "images", "type": "IMAGE", "link": 2}],
            widgets=["nested"],
        ),
    ]
    return {
        "nodes": root,
        "links": [[1, 1, 0, 10, 0, "INT"], [2, 10, 0, 11, 0, "IMAGE"]],
        "definitions": {"subgraphs": [sub_a, sub_b]},
    }


def test_nested_subgraphs_get_compound_ids_and_unfed_inputs_keep_their_value():
    api = ui_to_api(nested(), INFO)
    assert set(api) == {"10:20:3", "11"}
    assert api["10:20:3"]["inputs"] == {"width": 80, "height": 24, "batch_size": 1, "color": 7}
    assert api["11"]["inputs"]["images"] == ["10:20:3", 0]


def test_bypassed_subgraph_instance_passes_its_input_through():
    ui = nested()
    ui["nodes"][1]["mode"] = 4
    # nothing of type IMAGE enters the bypassed instance: SaveImage loses its input
    api = ui_to_api(ui, INFO)
    assert api == {
        "11": {
            "inputs": {"filename_prefix": "nested"},
            "class_type": "SaveImage",
            "_meta": {"title": "Save Image"},
        }
    }


def test_unknown_node_classes_are_listed():
    ui = {
        "nodes": [_node(4, "FancyCustomNode", widgets=[1]), _node(5, "OtherMissing")],
        "links": [],
    }
    with pytest.raises(WorkflowInvalid) as info:
        ui_to_api(ui, INFO)
    text = str(info.value)
    assert "node 4 FancyCustomNode: unknown node class" in text
    assert "node 5 OtherMissing: unknown node class" in text


def test_muted_source_drops_the_input_even_with_a_widget_value():
    ui = crafted()
    ui["nodes"][3]["mode"] = 2  # mute the PrimitiveNode feeding ImageScale.width
    api = ui_to_api(ui, INFO)
    assert "width" not in api["5"]["inputs"]
    ui["nodes"][3]["mode"] = 0
    ui["nodes"][3]["type"] = "Reroute"  # an unresolvable source: the widget value is kept
    ui["nodes"][3]["inputs"] = []
    assert ui_to_api(ui, INFO)["5"]["inputs"]["width"] == 512


def test_instance_widget_values_fill_unfed_promoted_inputs():
    ui = nested()
    instance = ui["nodes"][1]
    instance["inputs"] = [
        {"name": "width", "type": "INT", "link": None, "widget": {"name": "width"}}
    ]
    ui["links"] = [ui["links"][1]]
    instance["widgets_values"] = [112]
    assert ui_to_api(ui, INFO)["10:20:3"]["inputs"]["width"] == 112
    instance["widgets_values"] = []  # nothing stored on the instance: inner values
    assert ui_to_api(ui, INFO)["10:20:3"]["inputs"]["width"] == 16


def test_list_widget_values_are_wrapped_not_mistaken_for_links():
    ui = {
        "nodes": [
            _node(
                1,
                "EmptyImage",
                widgets={"width": ["5", 0], "height": 8, "batch_size": 1, "color": 0},
            )
        ],
        "links": [],
    }
    assert ui_to_api(ui, INFO)["1"]["inputs"]["width"] == {"__value__": ["5", 0]}


def promoted(instance_values=None, named=None):
    """A subgraph with inputs image (socket), width and height (feeding EmptyImage's widgets;
    width also feeds PreviewAny.source, a socket) and seed_text (feeding a socket only);
    its instance shows only ``height`` as an input, as real files do."""

    def sub_link(lid, slot, target, target_slot, kind):
        return {
            "id": lid,
            "origin_id": -10,
            "origin_slot": slot,
            "target_id": target,
            "target_slot": target_slot,
            "type": kind,
        }

    sub = {
        "id": "S",
        "inputs": [
            {"name": "image", "type": "IMAGE"},
            {"name": "width", "type": "INT"},
            {"name": "seed_text", "type": "STRING"},
            {"name": "height", "type": "INT"},
        ],
        "outputs": [],
        "nodes": [
            _node(
                3,
                "EmptyImage",
                inputs=[
                    {"name": "width", "type": "INT", "link": 31, "widget": {"name": "width"}},
                    {"name": "height", "type": "INT", "link": 32, "widget": {"name": "height"}},
                ],
                outputs=[{"name": "IMAGE", "type": "IMAGE", "links": [34]}],
                widgets=[16, 24, 1, 0],
            ),
            _node(4, "PreviewAny", inputs=[{"name": "source", "type": "*", "link": 33}]),
            _node(5, "PreviewImage", inputs=[{"name": "images", "type": "IMAGE", "link": 34}]),
            _node(6, "PreviewAny", inputs=[{"name": "source", "type": "*", "link": 35}]),
        ],
        "links": [
            sub_link(31, 1, 3, 0, "INT"),
            sub_link(32, 3, 3, 1, "INT"),
            sub_link(33, 1, 4, 0, "INT"),
            {"id": 34, "origin_id": 3, "origin_slot": 0, "target_id": 5, "target_slot": 0},
            sub_link(35, 2, 6, 0, "STRING"),
        ],
    }
    instance = _node(
        10,
        "S",
        inputs=[{"name": "height", "type": "INT", "link": None, "widget": {"name": "height"}}],
        widgets=instance_values,
    )
    if named is not None:
        instance["widgets_values_named"] = named
    return {"nodes": [instance], "links": [], "definitions": {"subgraphs": [sub]}}


def test_instance_values_map_onto_the_subgraph_inputs_that_feed_widgets():
    api = ui_to_api(promoted([80, 96]), INFO)  # width, height (seed_text feeds no widget)
    assert api["10:3"]["inputs"] == {"width": 80, "height": 96, "batch_size": 1, "color": 0}
    assert api["10:4"]["inputs"] == {"source": 80}  # a socket gets what the widget shows
    assert "source" not in api["10:6"]["inputs"]  # nothing shows seed_text: left unfed
    named = ui_to_api(promoted([1, 2], named={"width": 112, "height": 64}), INFO)
    assert named["10:3"]["inputs"]["width"] == 112 and named["10:4"]["inputs"]["source"] == 112


def test_a_socket_fed_by_an_unfed_subgraph_input_gets_the_inner_widget_value():
    api = ui_to_api(promoted(), INFO)  # the instance stores nothing: inner values stand
    assert api["10:3"]["inputs"]["width"] == 16
    assert api["10:4"]["inputs"] == {"source": 16}
