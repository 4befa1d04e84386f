"""Remote model provisioning on the real ComfyUI: ``models push``, ``pull --to-server`` and
``check --pool`` on ComfyUI 0.33 started with its assets API (``--enable-assets``), with
tiny files; the session engine (no assets API: 0.3.75 has no such route, 0.33 without the
flag says ``assets: false``) refuses with the missing route named.
"""

from __future__ import annotations

import json
import os

import httpx
import pytest
from typer.testing import CliRunner

from comfyfn.cli._models import models_app
from comfyfn.client import Client
from comfyfn.engine import Engine
from comfyfn.models import PushFailed, blake3_of, pull_to_server, push_file
from comfyfn.workflow import RouteMissing, zimage_turbo
from tests.support.comfyui_trees import COMFYUI_033, engine_on_tree
from tests.support.modelserver import BODY, ModelServer, entry

pytestmark = [pytest.mark.engine, pytest.mark.timeout(600)]

runner = CliRunner()


class AssetsEngine(Engine):
    """An engine whose ComfyUI runs with its assets API (``--enable-assets``)."""

    def _server_args(self, port: int) -> list[str]:
        return [*super()._server_args(port), "--enable-assets"]


@pytest.fixture(scope="module")
def assets_server(tmp_path_factory):
    """ComfyUI 0.33 (../shared) with its assets API on (a missing tree fails, naming it)."""
    with engine_on_tree(
        "assets-033", COMFYUI_033, tmp_path_factory.mktemp("a33"), AssetsEngine
    ) as url:
        yield url


@pytest.fixture
def tiny_file(tmp_path):
    """A small model file of bytes no server has seen."""
    path = tmp_path / "tiny_style.safetensors"
    path.write_bytes(os.urandom(70_000))
    return path


def test_push_puts_the_file_in_its_folder_verified_by_hash(assets_server, tiny_file):
    seen: list[tuple[str, int, int]] = []
    pushed = push_file(
        tiny_file, assets_server, folder="loras", on_progress=lambda *a: seen.append(a)
    )
    digest = blake3_of(tiny_file)
    assert (pushed.action, pushed.blake3, pushed.size) == ("uploaded", digest, 70_000)
    assert pushed.stored_as == digest.removeprefix("blake3:") + ".safetensors"
    with Client(assets_server) as c:
        assert pushed.stored_as in c.models("loras")
    listed = httpx.get(f"{assets_server}/api/assets", params={"include_tags": "models"}).json()
    (asset,) = [a for a in listed["assets"] if a.get("loader_path") == pushed.stored_as]
    assert asset["hash"] == digest and "model_type:loras" in asset["tags"]
    assert seen[-1] == ("loras/tiny_style.safetensors", 70_000, 70_000)
    again = push_file(tiny_file, assets_server, folder="loras")  # held already: nothing sent
    assert (again.action, again.stored_as) == ("present", pushed.stored_as)


def test_push_command_prints_the_name_loaders_use(assets_server, tiny_file):
    result = runner.invoke(
        models_app, ["push", str(tiny_file), "--folder", "loras", "--server", assets_server]
    )
    assert result.exit_code == 0, result.output
    stored = blake3_of(tiny_file).removeprefix("blake3:") + ".safetensors"
    assert f"as loras/{stored}" in result.stdout and "verified" in result.stdout


def test_bytes_the_server_holds_in_another_folder_are_not_claimed_pushed(assets_server, tiny_file):
    push_file(tiny_file, assets_server, folder="vae")
    with pytest.raises(PushFailed, match=r"not in models/loras/"):
        push_file(tiny_file, assets_server, folder="loras")


def test_push_to_a_folder_the_server_lacks_names_it(assets_server, tiny_file):
    result = runner.invoke(
        models_app, ["push", str(tiny_file), "--folder", "nope", "--server", assets_server]
    )
    assert result.exit_code == 2, result.output
    assert "has no models/nope/ folder" in result.output


def test_pull_to_server_downloads_here_then_pushes_verified(assets_server, tmp_path):
    hub = ModelServer(body=BODY)
    hub.start()
    try:
        (pushed,) = pull_to_server(
            [entry(hub, folder="loras", name="hub_lora.safetensors")], assets_server
        )
    finally:
        hub.stop()
    (tmp_path / "b").write_bytes(BODY)
    assert pushed.blake3 == blake3_of(tmp_path / "b") and pushed.size == len(BODY)
    with Client(assets_server) as c:
        assert pushed.stored_as in c.models("loras")


def test_check_pool_names_each_servers_gap(assets_server, server, tiny_file, tmp_path):
    pushed = push_file(tiny_file, assets_server, folder="loras")
    workflow = tmp_path / "wf.json"
    workflow.write_text(json.dumps(zimage_turbo().bind(loras=[(pushed.stored_as, 0.5)]).to_api()))
    argv = ["check", str(workflow), "--pool", "-s", assets_server, "-s", server]
    result = runner.invoke(models_app, argv)
    assert result.exit_code == 1, result.output
    rows = {line.split()[1]: line for line in result.stdout.splitlines() if "http://" in line}
    assert "4/4" in rows[assets_server]
    assert "3/4" in rows[server] and f"loras/{pushed.stored_as[:8]}" in rows[server]


def test_a_server_without_the_assets_api_names_the_missing_route(server, tiny_file):
    answer = httpx.get(f"{server}/features")
    features = answer.json() if answer.status_code == 200 else {}
    with pytest.raises(RouteMissing) as info:
        push_file(tiny_file, server, folder="loras")
    assert info.value.route == "POST /api/assets"
    assert "pushing needs POST /api/assets" in str(info.value)
    if features.get("assets") is False:  # a ComfyUI with the API turned off
        assert "assets: false" in str(info.value) and "--enable-assets" in str(info.value)
    else:  # a ComfyUI without the route
        assert "GET /api/assets answered HTTP 404" in str(info.value)
    result = runner.invoke(models_app, ["pull", "zimage-turbo", "--to-server", server])
    assert result.exit_code == 2, result.output  # before anything is downloaded
    assert "POST /api/assets" in result.output
