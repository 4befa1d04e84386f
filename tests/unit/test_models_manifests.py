"""The built-in model manifests: their shape, and that they are exactly what the official
ComfyUI templates publish (``comfyui-workflow-templates-json``, node ``properties.models``).

Regenerate the data files after a templates update with
``.venv/bin/python tests/unit/test_models_manifests.py``. Never contacts a host: the
manifests are checked for shape only.
"""

from __future__ import annotations

import json
import re
from importlib import metadata, resources
from pathlib import Path
from typing import Any

import pytest

from comfyfn.errors import ConfigError
from comfyfn.models import BUILTIN_MANIFESTS, ModelFile, ModelManifest, load_manifest
from comfyfn.models._manifest import manifest_json

TEMPLATES = "comfyui-workflow-templates-json"
#: built-in manifest → the official template it comes from
FROM_TEMPLATE = {
    "zimage-turbo": "image_z_image_turbo",
    "zimage": "image_z_image",
    "zimage-turbo-int8": "image_z_image_turbo_int8",
    "zimage-int8": "image_z_image_int8",
}
_FOLDER_ORDER = ["diffusion_models", "text_encoders", "vae"]


def _templates() -> Path:
    return Path(str(resources.files("comfyui_workflow_templates_json"))) / "templates"


def _nodes_with_models(data: Any) -> list[dict[str, Any]]:
    found, stack = [], [data]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            if isinstance((item.get("properties") or {}).get("models"), list):
                found.append(item)
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return found


def manifest_from_template(name: str) -> ModelManifest:
    """The manifest for built-in ``name``, read from the installed templates package."""
    template = FROM_TEMPLATE[name]
    version = metadata.version(TEMPLATES)
    data = json.loads((_templates() / f"{template}.json").read_text(encoding="utf-8"))
    index = json.loads((_templates() / "index.json").read_text(encoding="utf-8"))
    entry = next(t for cat in index for t in cat["templates"] if t["name"] == template)
    files: dict[tuple[str, str], ModelFile] = {}
    for node in _nodes_with_models(data):
        for model in node["properties"]["models"]:
            published = (
                model.get("hash") if model.get("hash_type", "").upper() == "SHA256" else None
            )
            key = (model["directory"], model["name"])
            files.setdefault(
                key,
                ModelFile(
                    model["name"],
                    model["directory"],
                    model["url"],
                    published,
                    None,  # the templates publish no per-file size
                    source=f"{TEMPLATES} {version}: {template}.json, node {node['id']} "
                    f"{node['type']}",
                ),
            )
    ordered = sorted(files.values(), key=lambda f: (_FOLDER_ORDER.index(f.folder), f.name))
    description = (
        f"{entry['title']}: the model files of the official template {template}.json "
        f"({TEMPLATES} {version}). The templates publish no sha256 or per-file size (null "
        "here): the sha256 and size Hugging Face publishes for each file are checked "
        "instead. total_size is the template index's total for all files."
    )
    return ModelManifest(name, tuple(ordered), description, entry.get("size"))


def _shipped(name: str) -> str:
    path = resources.files("comfyfn.models").joinpath("data", BUILTIN_MANIFESTS[name])
    return path.read_text(encoding="utf-8")


@pytest.mark.parametrize("name", sorted(FROM_TEMPLATE))
def test_builtin_manifest_is_what_the_official_template_publishes(name):
    assert _shipped(name) == manifest_json(manifest_from_template(name))


def test_every_builtin_manifest_comes_from_a_template():
    assert set(BUILTIN_MANIFESTS) == set(FROM_TEMPLATE)


@pytest.mark.parametrize("name", sorted(FROM_TEMPLATE))
def test_builtin_manifest_shape(name):
    manifest = load_manifest(name)
    assert manifest.name == name
    assert {f.folder for f in manifest.files} == {"diffusion_models", "text_encoders", "vae"}
    for f in manifest.files:
        assert re.fullmatch(
            r"https://huggingface\.co/Comfy-Org/z_image(_turbo)?/resolve/main/"
            r"split_files/\w+/[\w.]+\.safetensors",
            f.url,
        )
        assert f.url.endswith(f"/{f.folder}/{f.name}")
        assert f.sha256 is None and f.size is None  # not published by the templates
        assert f.source and f.source.startswith(TEMPLATES)
    assert manifest.total_size and manifest.total_size > 10 * 10**9


def test_builtin_manifests_use_the_official_file_names():
    names = {n: {f.relpath for f in load_manifest(n).files} for n in FROM_TEMPLATE}
    assert names["zimage-turbo"] == {
        "diffusion_models/z_image_turbo_bf16.safetensors",
        "text_encoders/qwen_3_4b.safetensors",
        "vae/ae.safetensors",
    }
    assert "diffusion_models/z_image_bf16.safetensors" in names["zimage"]
    assert "diffusion_models/z_image_turbo_int8_convrot.safetensors" in names["zimage-turbo-int8"]
    assert "text_encoders/qwen_3_4b_fp8_mixed.safetensors" in names["zimage-turbo-int8"]
    assert "diffusion_models/z_image_int8_convrot.safetensors" in names["zimage-int8"]


def test_an_unknown_name_lists_the_builtin_manifests():
    with pytest.raises(ConfigError, match="zimage-turbo"):
        load_manifest("no-such-manifest")


# -- manifest files ---------------------------------------------------------------------------

GOOD = """
- name: z_image_turbo_bf16.safetensors
  folder: diffusion_models
  url: https://example.invalid/z.safetensors
  sha256: %s
  size: 12
""" % ("AB" * 32)


def test_a_yaml_list_manifest(tmp_path):
    path = tmp_path / "mine.yaml"
    path.write_text(GOOD)
    manifest = load_manifest(path)
    (f,) = manifest.files
    assert manifest.name == "mine"
    assert (f.folder, f.name, f.size) == ("diffusion_models", "z_image_turbo_bf16.safetensors", 12)
    assert f.sha256 == "ab" * 32  # lowered
    assert f.path(tmp_path) == tmp_path / "diffusion_models" / "z_image_turbo_bf16.safetensors"


def test_a_json_mapping_manifest_with_shared_headers(tmp_path):
    path = tmp_path / "hub.json"
    path.write_text(
        json.dumps(
            {
                "headers": {"Authorization": "Bearer ${HUB_TOKEN}"},
                "models": [
                    {
                        "name": "a.safetensors",
                        "folder": "loras",
                        "url": "https://h/a",
                        "sha256": None,
                        "size": None,
                    },
                    {
                        "name": "b.safetensors",
                        "folder": "loras",
                        "url": "https://h/b",
                        "headers": {"X-Team": "${TEAM}-x"},
                    },
                ],
            }
        )
    )
    a, b = load_manifest(path).files
    assert a.request_headers({"HUB_TOKEN": "t"}) == {"Authorization": "Bearer t"}
    assert b.request_headers({"HUB_TOKEN": "t", "TEAM": "red"}) == {
        "Authorization": "Bearer t",
        "X-Team": "red-x",
    }


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"sha256": "abc"}, "m.yaml: models[0].sha256: must be 64 hexadecimal digits, not 'abc'"),
        ({"size": -1}, "m.yaml: models[0].size: must be at least 0, not -1"),
        ({"size": "12"}, "m.yaml: models[0].size: must be a whole number, not '12'"),
        ({"folder": "../etc"}, "m.yaml: models[0].folder: '../etc' is not a models/ folder name"),
        ({"name": "../x.safetensors"}, "models[0].name: '../x.safetensors' is not a file name"),
        ({"name": "/abs.safetensors"}, "models[0].name: '/abs.safetensors' is not a file name"),
        (
            {"url": "file:///etc/passwd"},
            "models[0].url: 'file:///etc/passwd' is not an http(s) URL",
        ),
        ({"headers": {"Authorization": "Bearer ${TOKEN"}}, "is not ${NAME}"),
        ({"sha": "x"}, "m.yaml: models[0]: unknown field 'sha'; known: name, folder, url"),
    ],
)
def test_a_bad_field_is_named(tmp_path, change, message):
    item = {"name": "a.safetensors", "folder": "loras", "url": "https://h/a", **change}
    path = tmp_path / "m.yaml"
    path.write_text(json.dumps([item]))
    with pytest.raises(ConfigError) as caught:
        load_manifest(path)
    assert message in str(caught.value)


def test_a_missing_field_and_a_duplicate_are_named(tmp_path):
    path = tmp_path / "m.yaml"
    path.write_text("- name: a.safetensors\n  folder: loras\n")
    with pytest.raises(ConfigError, match=r"models\[0\]: missing field 'url'"):
        load_manifest(path)
    item = {"name": "a.safetensors", "folder": "loras", "url": "https://h/a"}
    path.write_text(json.dumps([item, item]))
    with pytest.raises(ConfigError, match=r"models\[1\]: loras/a.safetensors is listed twice"):
        load_manifest(path)


def test_a_manifest_that_is_not_a_list_or_mapping_or_is_empty(tmp_path):
    path = tmp_path / "m.yaml"
    path.write_text("just text")
    with pytest.raises(ConfigError, match="must be a list of model entries"):
        load_manifest(path)
    path.write_text("[]")
    with pytest.raises(ConfigError, match="models: must not be empty"):
        load_manifest(path)


def write() -> None:
    """Regenerate ``src/comfyfn/models/data/*.json`` from the installed templates."""
    data = Path(str(resources.files("comfyfn.models"))) / "data"
    for name, filename in BUILTIN_MANIFESTS.items():
        (data / filename).write_text(manifest_json(manifest_from_template(name)), encoding="utf-8")
        print(data / filename)


if __name__ == "__main__":
    write()
