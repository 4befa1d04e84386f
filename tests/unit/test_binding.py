"""Binding parameters to graphs by meaning (tracing from the sampler), never by node id."""

from __future__ import annotations

import copy
import random
import warnings
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from comfyfn.errors import WorkflowInvalid
from comfyfn.workflow import bundled_object_info, zimage_turbo
from comfyfn.workflow._binding import ComfyWarning, bind, parse_size
from comfyfn.workflow._graph import is_link, load_api_graph
from comfyfn.workflow._meaning import find_slots
from comfyfn.workflow._sizes import decoded_size, input_value


def shuffle_ids(graph, seed):
    """The same graph with every node id replaced by a random one."""
    rng = random.Random(seed)
    new_ids = rng.sample(range(100, 100_000), len(graph))
    mapping = {old: str(new) for old, new in zip(graph, new_ids, strict=True)}
    out = {}
    for old, node in graph.items():
        node = copy.deepcopy(node)
        for name, value in node["inputs"].items():
            if is_link(value):
                node["inputs"][name] = [mapping[value[0]], value[1]]
        out[mapping[old]] = node
    return out, mapping


def test_zimage_slots_are_found_by_tracing():
    slots = find_slots(zimage_turbo().to_api())
    assert slots.samplers == ("3",)
    assert slots.params["prompt"] == ("27", "text")
    assert slots.params["seed"] == ("3", "seed")
    assert slots.params["width"] == ("13", "width")
    assert slots.params["model"] == ("28", "unet_name")
    assert slots.params["text_encoder"] == ("30", "clip_name")
    assert slots.params["vae"] == ("29", "vae_name")
    assert slots.zero_out == {"3": "33"}
    assert "negative" not in slots.params
    assert slots.outputs == ("9",)


@pytest.mark.parametrize("seed", range(5))
def test_binding_works_on_shuffled_ids(seed):
    graph, mapping = shuffle_ids(zimage_turbo().to_api(), seed)
    bound = bind(graph, prompt="一只猫", seed=7, width=128, height=64, steps=4)
    g = bound.graph
    assert g[mapping["27"]]["inputs"]["text"] == "一只猫"
    assert g[mapping["3"]]["inputs"]["seed"] == 7
    assert g[mapping["3"]]["inputs"]["steps"] == 4
    assert (g[mapping["13"]]["inputs"]["width"], g[mapping["13"]]["inputs"]["height"]) == (128, 64)


def test_bind_leaves_the_original_untouched_and_reports_values():
    graph = zimage_turbo().to_api()
    before = copy.deepcopy(graph)
    bound = bind(graph, prompt="p", seed=1, width=512, height=512)
    assert graph == before
    assert bound.values["seed"] == 1
    assert bound.values["steps"] == 8
    assert bound.values["cfg"] == 1.0
    assert bound.values["sampler"] == "res_multistep"
    assert bound.values["model"] == "z_image_turbo_bf16.safetensors"


def test_seed_none_picks_a_random_seed():
    seeds = {
        bind(zimage_turbo().to_api(), prompt="p", seed=None, width=512, height=512).values["seed"]
        for _ in range(5)
    }
    assert len(seeds) == 5
    assert all(isinstance(s, int) and 0 <= s < 2**53 for s in seeds)


def test_size_must_be_a_multiple_of_the_latent_step():
    with pytest.raises(WorkflowInvalid) as info:
        bind(zimage_turbo().to_api(), prompt="p", width=1000, height=768)
    assert "node 13 EmptySD3LatentImage: width 1000 is not a multiple of 16" in str(info.value)
    (problem,) = info.value.problems
    assert (problem.node_id, problem.class_type, problem.input_name) == (
        "13",
        "EmptySD3LatentImage",
        "width",
    )


@pytest.mark.parametrize(
    ("params", "text"),
    [
        ({"width": 0}, "width 0 is out of range 16..16384"),
        ({"height": 32768}, "height 32768 is out of range"),
        ({"steps": 0}, "steps 0 is out of range"),
        ({"seed": -1}, "seed -1 is out of range"),
        ({"seed": "abc"}, "seed 'abc' is not an integer"),
        ({"cfg": float("nan")}, "cfg nan is not a number"),
        ({"batch_size": 2.5}, "batch_size 2.5 is not an integer"),
    ],
)
def test_bad_values_are_named(params, text):
    with pytest.raises(WorkflowInvalid, match=text):
        bind(zimage_turbo().to_api(), prompt="p", **params)


@pytest.mark.parametrize(
    ("params", "text"),
    [
        ({"steps": 10_001}, "steps 10001 is out of range 1..10000"),
        ({"batch_size": 4097}, "batch_size 4097 is out of range 1..4096"),
        ({"cfg": 100.5}, "cfg 100.5 is out of range 0.0..100.0"),
        ({"denoise": 1.5}, "denoise 1.5 is out of range 0.0..1.0"),
        ({"cfg": -1.0}, "cfg -1.0 is out of range 0.0..100.0"),
    ],
)
def test_numbers_are_refused_outside_the_range_of_the_node_definition(params, text):
    with pytest.raises(WorkflowInvalid) as info:
        bind(zimage_turbo().to_api(), prompt="p", **params)
    (problem,) = info.value.problems
    assert problem.message == text
    assert problem.param == next(iter(params))


def test_the_range_is_the_one_the_given_definitions_declare():
    """Not a range of comfyfn's own: a server whose KSampler takes at most 50 steps."""
    definitions = copy.deepcopy(bundled_object_info())
    definitions["KSampler"]["input"]["required"]["steps"][1]["max"] = 50
    graph = zimage_turbo().to_api()
    with pytest.raises(WorkflowInvalid, match=r"steps 51 is out of range 1\.\.50"):
        bind(graph, definitions=definitions, prompt="p", steps=51)
    assert bind(graph, definitions=definitions, prompt="p", steps=50).values["steps"] == 50


def test_a_node_without_a_definition_keeps_only_the_least_value():
    graph = zimage_turbo().to_api()
    assert bind(graph, definitions={}, prompt="p", steps=20_000).values["steps"] == 20_000
    with pytest.raises(WorkflowInvalid, match=r"steps 0 is out of range 1\.\.∞"):
        bind(graph, definitions={}, prompt="p", steps=0)


def test_a_problem_names_the_parameter_not_the_input_it_binds_to():
    with pytest.raises(WorkflowInvalid) as info:
        bind(zimage_turbo().to_api(), prompt=5)
    (problem,) = info.value.problems
    assert (problem.input_name, problem.message) == ("text", "prompt 5 is not text")
    assert problem.param == "prompt"


def test_a_cfg_that_is_not_a_number_is_named_even_beside_a_negative():
    extras: list[dict[str, Any]] = [{}, {"negative": "blurry"}]
    for extra in extras:
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # nor a warning about a cfg of 1
            with pytest.raises(WorkflowInvalid, match="cfg 'high' is not a number"):
                bind(zimage_turbo().to_api(), prompt="p", cfg="high", **extra)


def test_a_dynamic_combo_option_it_lacks_is_named_by_its_path():
    graph = {
        "1": {
            "class_type": "EmptyImage",
            "inputs": {"width": 8, "height": 8, "batch_size": 1, "color": 0},
        },
        "2": {
            "class_type": "SaveImageAdvanced",
            "inputs": {"images": ["1", 0], "filename_prefix": "x", "format": "png"},
        },
    }
    with pytest.raises(WorkflowInvalid) as info:
        bind(graph, definitions=bundled_object_info("0.28.0"), **{"2.format": "tiff"})
    (problem,) = info.value.problems
    assert (problem.param, problem.node_id, problem.input_name) == ("2.format", "2", "format")


def test_a_negative_where_the_graph_has_a_text_for_it_is_bound_as_given():
    graph = zimage_turbo().to_api()
    bound = bind(graph, prompt="p", negative="blurry", cfg=4.0)
    again = bind(bound.graph, prompt="p", negative="grainy")
    neg_id, name = again.bound["negative"]
    assert (neg_id, name) == bound.bound["negative"]
    assert again.graph[neg_id]["inputs"]["text"] == "grainy"
    assert len(again.graph) == len(bound.graph)  # no second encoder


def test_warnings_point_at_the_caller_of_bind():
    with pytest.warns(ComfyWarning, match="no effect") as record:
        bind(zimage_turbo().to_api(), prompt="p", negative="blurry")
    with pytest.warns(ComfyWarning, match="outside Z-Image") as sized:
        bind(zimage_turbo().to_api(), prompt="p", width=256, height=256)
    assert {w.filename for w in [*record, *sized]} == {__file__}


def test_unknown_parameter_is_an_error():
    with pytest.raises(WorkflowInvalid, match="unknown parameter 'colour'"):
        bind(zimage_turbo().to_api(), prompt="p", colour="red")


def test_negative_at_cfg_1_warns_and_keeps_zero_out():
    with pytest.warns(ComfyWarning, match="no effect"):
        bound = bind(zimage_turbo().to_api(), prompt="p", negative="blurry", width=512, height=512)
    assert bound.graph["3"]["inputs"]["negative"] == ["33", 0]


def test_cfg_above_1_uses_a_real_negative_encoder():
    graph = zimage_turbo().to_api()
    bound = bind(graph, prompt="p", negative="blurry", cfg=4.0, width=512, height=512)
    neg_id, _ = bound.graph["3"]["inputs"]["negative"]
    node = bound.graph[neg_id]
    assert node["class_type"] == "CLIPTextEncode"
    assert node["inputs"] == {"clip": ["30", 0], "text": "blurry"}
    assert bound.values["negative"] == "blurry"
    # without a negative text, cfg > 1 still gets an (empty) encoder rather than zero-out
    bound = bind(zimage_turbo().to_api(), prompt="p", cfg=2.0, width=512, height=512)
    assert bound.graph[bound.graph["3"]["inputs"]["negative"][0]]["inputs"]["text"] == ""


def test_unusual_zimage_sizes_warn_but_bind():
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        bind(zimage_turbo().to_api(), prompt="p", width=64, height=64)
    assert any("recommended" in str(w.message) for w in caught)


def test_two_samplers_are_ambiguous():
    graph = zimage_turbo().to_api()
    graph["99"] = copy.deepcopy(graph["3"])
    bound = bind(graph, prompt="p")  # both samplers share one prompt encoder: fine
    assert bound.graph["27"]["inputs"]["text"] == "p"
    with pytest.raises(
        WorkflowInvalid, match=r"'seed' is ambiguous: candidates 3.seed \(KSampler\), 99.seed"
    ):
        bind(graph, seed=1)
    by_id: dict[str, Any] = {"99.seed": 5}
    assert bind(graph, **by_id).graph["99"]["inputs"]["seed"] == 5


def test_graph_without_negative_encoder_rejects_negative_param():
    graph = zimage_turbo().to_api()
    with pytest.raises(WorkflowInvalid, match="unknown parameter 'foo'"):
        bind(graph, foo=1)


def test_load_api_graph_rejects_ui_format_and_garbage(tmp_path):
    ui = tmp_path / "ui.json"
    ui.write_text('{"nodes": [], "links": []}')
    with pytest.raises(WorkflowInvalid, match="UI"):
        load_api_graph(ui)
    with pytest.raises(WorkflowInvalid, match="node 5"):
        load_api_graph({"5": {"inputs": {}}})
    with pytest.raises(WorkflowInvalid, match="cannot read"):
        load_api_graph(tmp_path / "missing.json")


@pytest.mark.parametrize(
    ("size", "expected"), [("1024x768", (1024, 768)), ((64, 128), (64, 128)), ("96×64", (96, 64))]
)
def test_parse_size(size, expected):
    assert parse_size(size) == expected


def test_parse_size_error_names_the_field():
    with pytest.raises(WorkflowInvalid, match="size '12by4'"):
        parse_size("12by4")


def _changes(a, b):
    out = set()
    for nid in set(a) | set(b):
        if nid not in a or nid not in b:
            out.add((nid, "*"))
            continue
        ia, ib = a[nid]["inputs"], b[nid]["inputs"]
        out |= {(nid, k) for k in set(ia) | set(ib) if ia.get(k) != ib.get(k)}
    return out


@settings(max_examples=200, deadline=None)
@given(
    shuffle=st.integers(0, 10_000),
    prompt=st.text(max_size=40),
    seed=st.integers(0, 2**53),
    side=st.tuples(st.integers(1, 64), st.integers(1, 64)),
    steps=st.integers(1, 50),
    sampler=st.sampled_from(["euler", "res_multistep"]),
)
def test_binding_changes_only_the_bound_inputs(shuffle, prompt, seed, side, steps, sampler):
    graph, _ = shuffle_ids(zimage_turbo().to_api(), shuffle)
    params = {
        "prompt": prompt,
        "seed": seed,
        "width": side[0] * 16,
        "height": side[1] * 16,
        "steps": steps,
        "sampler": sampler,
    }
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        bound = bind(graph, **params)
    allowed = {bound.bound[name] for name in params}
    changed = _changes(graph, bound.graph)
    assert changed <= allowed
    for name, value in params.items():
        node, inp = bound.slots.params[name]
        assert bound.graph[node]["inputs"][inp] == value


def selector_graph(**selector):
    """Z-Image-Turbo whose latent size comes from a ResolutionSelector, which also sizes an
    EmptyImage."""
    graph = zimage_turbo().to_api()
    graph["50"] = {
        "class_type": "ResolutionSelector",
        "inputs": {"aspect_ratio": "1:1 (Square)", "megapixels": 1.0, "multiple": 8, **selector},
        "_meta": {"title": "Size picker"},
    }
    graph["13"]["inputs"].update(width=["50", 0], height=["50", 1])
    graph["51"] = {
        "class_type": "EmptyImage",
        "inputs": {"width": ["50", 0], "height": ["50", 1], "batch_size": 1, "color": 0},
    }
    return graph


@pytest.mark.parametrize(
    ("ratio", "megapixels", "multiple", "size"),
    [
        ("1:1 (Square)", 1.0, 8, (1024, 1024)),
        ("16:9 (Widescreen)", 1.0, 8, (1368, 768)),
        ("2:3 (Portrait Photo)", 1.0, 8, (840, 1256)),
        ("21:9 (Ultrawide)", 2.0, 64, (2240, 960)),
        ("3:4 (Portrait Standard)", 0.5, 16, (624, 832)),
    ],
)
def test_a_resolution_selector_size_is_known_without_running(ratio, megapixels, multiple, size):
    graph = selector_graph(aspect_ratio=ratio, megapixels=megapixels, multiple=multiple)
    slots = find_slots(graph)
    assert (slots.params["width"], slots.params["height"]) == (("13", "width"), ("13", "height"))
    assert decoded_size(graph) == size
    assert (input_value(graph, "13", "width"), input_value(graph, "13", "height")) == size


def test_an_unknowable_size_is_none():
    graph = selector_graph(megapixels=["99", 0])  # linked: known only when it runs
    assert input_value(graph, "13", "width") is None and decoded_size(graph) is None
    graph = selector_graph()
    graph["50"]["class_type"] = "SomeOtherSizer"
    assert input_value(graph, "13", "width") is None
    assert "width" in find_slots(graph).params  # still bindable by meaning


def test_binding_a_computed_size_replaces_its_links_everywhere():
    graph = selector_graph()
    bound = bind(graph, width=320, height=192)
    assert bound.graph["13"]["inputs"] == {"width": 320, "height": 192, "batch_size": 1}
    assert (
        bound.graph["51"]["inputs"]["width"] == 320 and bound.graph["51"]["inputs"]["height"] == 192
    )
    assert bound.graph["50"] == graph["50"]  # the selector itself is left as it was
    assert (bound.values["width"], bound.values["height"]) == (320, 192)
    assert decoded_size(bound.graph) == (320, 192)
    only_width = bind(graph, width=512).graph
    assert only_width["13"]["inputs"]["height"] == ["50", 1]
    title_path: dict[str, Any] = {"Size picker.aspect_ratio": "16:9 (Widescreen)"}
    by_path = bind(graph, **title_path)
    assert (by_path.values["width"], by_path.values["height"]) == (1368, 768)
