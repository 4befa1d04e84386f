"""Where a workflow comes from: Workflow.load tells a built-in name from a file (the one
place that does), and the gateway's registry asks a server for a blueprint."""

from __future__ import annotations

import json

import pytest

from comfyfn.errors import ConfigError
from comfyfn.gateway.registry import Registry
from comfyfn.workflow import Workflow, builtin, bundled_object_info


def test_a_built_in_name_is_the_built_in_even_beside_a_file_of_that_name(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "zimage-turbo").write_text(json.dumps({"1": {"class_type": "X", "inputs": {}}}))
    wf = Workflow.load("zimage-turbo")
    assert wf.to_api() == builtin("zimage-turbo").to_api() and wf.name == "zimage-turbo"
    assert Workflow.load("zimage-turbo", name="served").name == "served"
    info = bundled_object_info()
    assert Workflow.load("zimage-edit", object_info=info).object_info is info


def test_a_served_blueprint_without_a_server_is_a_usage_error():
    with pytest.raises(ConfigError, match=r"blueprint:X: .* needs a --server"):
        Registry().load([("x", "blueprint:X")])


def test_a_blueprint_no_server_gives_names_the_last_error():
    from comfyfn.errors import ComfyError

    with pytest.raises(ComfyError) as caught:
        Registry().load([("x", "blueprint:X")], servers=["http://127.0.0.1:9"])
    assert not isinstance(caught.value, ConfigError)
