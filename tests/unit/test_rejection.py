"""ComfyUI's real 400 bodies become one readable line per node and input (0.3.75 and 0.28)."""

from __future__ import annotations

import pytest

from comfyfn.client._rejection import workflow_invalid_from_response
from comfyfn.errors import WorkflowInvalid

EXPECTED = {
    "unknown_class_type": ("1", "NoSuchNode", "node class NoSuchNode does not exist on the server"),
    "missing_input": ("1", "EmptyImage", "required input 'color' is missing"),
    "bad_combo": ("3", "ImageScale", "upscale_method 'nope' is not one of the server's choices"),
    "wrong_link_type": ("2", "SaveImage", "images expects IMAGE but receives LATENT from node 1"),
    "value_out_of_range": ("1", "EmptyImage", "width 0: Value 0 smaller than min of 1"),
    "wrong_value_type": ("1", "EmptyImage", "width 'abc' has the wrong type"),
    "link_to_missing_node": ("2", "SaveImage", "a link points at a node that is not in the"),
    "no_output_node": (None, None, "Prompt has no outputs"),
    "missing_class_type": ("1", None, "missing the class_type property"),
    "no_prompt_key": (None, None, "No prompt provided"),
}


@pytest.mark.parametrize("kind", sorted(EXPECTED))
def test_each_validation_error_kind_reads_well(sample, kind):
    body = sample("post_prompt_errors.json")[kind]["body"]
    error = workflow_invalid_from_response(body, server="http://gpu:8188")
    assert isinstance(error, WorkflowInvalid)
    node_id, class_type, text = EXPECTED[kind]
    (problem,) = error.problems
    assert problem.node_id == node_id
    assert problem.class_type == class_type
    assert text in problem.message
    assert text in str(error)
    assert error.server == "http://gpu:8188"


def test_missing_model_file_names_the_input(sample):
    body = sample("post_prompt_missing_model.json")["body"]
    error = workflow_invalid_from_response(body)
    assert str(error.problems[0]) == (
        "node 1 UNETLoader: unet_name 'nope.safetensors' is not one of the server's choices "
        "['z_image_turbo_bf16.safetensors']"
    )


def test_non_json_body_still_gives_an_error(sample):
    error = workflow_invalid_from_response(sample("post_prompt_errors.json")["not_json"]["body"])
    assert "500 Internal Server Error" in str(error)


#: 400 bodies recorded from ComfyUI 0.28.0 (POST /prompt, 2026-11-26): an unknown class is
#: type ``missing_node_type`` now, named in ``extra_info``; the message names the title.
MISSING_NODE_TYPE_0_28 = {
    "untitled": {
        "type": "missing_node_type",
        "message": "Node 'NoSuchNode' not found. The custom node may not be installed.",
        "details": "Node ID '#1'",
        "extra_info": {"node_id": "1", "class_type": "NoSuchNode", "node_title": "NoSuchNode"},
    },
    "titled": {
        "type": "missing_node_type",
        "message": "Node 'My Loader' not found. The custom node may not be installed.",
        "details": "Node ID '#1'",
        "extra_info": {"node_id": "1", "class_type": "NoSuchNode", "node_title": "My Loader"},
    },
}


@pytest.mark.parametrize("case", sorted(MISSING_NODE_TYPE_0_28))
def test_an_unknown_class_on_0_28_names_the_class_and_the_node(sample, case):
    body = {"error": MISSING_NODE_TYPE_0_28[case], "node_errors": {}}
    (problem,) = workflow_invalid_from_response(body).problems
    (before,) = workflow_invalid_from_response(
        sample("post_prompt_errors.json")["unknown_class_type"]["body"]
    ).problems
    assert (problem.node_id, problem.class_type, problem.kind) == (
        "1",
        "NoSuchNode",
        "missing_node_type",
    )
    titled = " (titled 'My Loader')" if case == "titled" else ""
    assert str(problem) == (
        f"node 1 NoSuchNode: node class NoSuchNode does not exist on the server{titled}: "
        "not installed?"
    )
    assert str(before) == str(problem).replace(titled, "")  # the same line on 0.3.75


def test_a_node_without_class_type_on_0_28_names_the_node():
    error = {
        "type": "missing_node_type",
        "message": "Node 'ID #1' has no class_type. The workflow may be corrupted or a custom "
        "node is missing.",
        "details": "Node ID '#1'",
        "extra_info": {"node_id": "1", "class_type": None, "node_title": None},
    }
    (problem,) = workflow_invalid_from_response({"error": error, "node_errors": {}}).problems
    assert (problem.node_id, problem.class_type) == ("1", None)
    assert "has no class_type" in str(problem)
