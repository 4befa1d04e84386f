"""``comfyfn models`` against the real engine: check, pull, warm, and model-aware routing on
two engines, with model loads counted from the servers' logs."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import shutil
import threading
from collections.abc import Callable, Iterator
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from bench.model_affinity import add_model_files, loader_graph, log_size, run_batch, settle
from comfyfn.cli._models import models_app
from comfyfn.client import AsyncClient, Client
from comfyfn.engine import Engine
from comfyfn.events import NodeCached, NodeStarted
from comfyfn.models import WARMUP_PREFIX, warm
from comfyfn.workflow import Workflow, zimage_turbo

pytestmark = pytest.mark.engine
runner = CliRunner()
TURBO_FILES = {
    "diffusion_models/z_image_turbo_bf16.safetensors",
    "text_encoders/qwen_3_4b.safetensors",
    "vae/ae.safetensors",
}


class QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        """Nothing on stderr for each request."""


@contextlib.contextmanager
def file_server(root: Path) -> Iterator[str]:
    """A loopback HTTP server for the files under ``root``."""
    handler = partial(QuietHandler, directory=str(root))
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=10)


@pytest.fixture
def checkpoint_name(engine, unique) -> Iterator[str]:
    """A model file name no run used before; removed from the engine's models after."""
    name = f"comfyfn_it_{unique()}.safetensors"
    yield name
    (engine.base / "models" / "checkpoints" / name).unlink(missing_ok=True)


# -- check -----------------------------------------------------------------------------------------


def test_check_finds_every_file_of_zimage_turbo_on_the_engine(server):
    result = runner.invoke(models_app, ["check", "zimage-turbo", "--server", server, "--json"])
    assert result.exit_code == 0, result.output
    (report,) = json.loads(result.stdout)
    assert report["ok"] is True
    assert {f"{m['folder']}/{m['name']}" for m in report["models"]} == TURBO_FILES
    assert all(m["present"] for m in report["models"])
    unet = next(m for m in report["models"] if m["folder"] == "diffusion_models")
    assert unet["manifest"] == "zimage-turbo" and unet["url"].startswith("https://huggingface.co/")


def test_check_names_the_missing_file_its_folder_and_its_source(server, tmp_path):
    wf = zimage_turbo().bind(model="z_image_turbo_int8_convrot.safetensors")
    path = tmp_path / "int8.json"
    path.write_text(json.dumps(wf.to_api()))
    result = runner.invoke(models_app, ["check", str(path), "--server", server])
    assert result.exit_code == 1, result.output
    assert "1 of 3 model file(s) missing" in result.output
    line = next(li for li in result.output.splitlines() if "missing diffusion_models/" in li)
    assert "z_image_turbo_int8_convrot.safetensors" in line
    assert "put it in models/diffusion_models/" in line
    assert (
        "https://huggingface.co/Comfy-Org/z_image_turbo/resolve/main/split_files/"
        "diffusion_models/z_image_turbo_int8_convrot.safetensors" in line
    )
    assert "comfyfn models pull zimage-turbo-int8" in line


def test_check_takes_the_source_from_the_workflow_files_own_properties(server, tmp_path):
    """A UI workflow (the official template) records each loader's model URL; a file no
    manifest knows is shown with that URL."""
    templates = resources.files("comfyui_workflow_templates_json").joinpath("templates")
    data = json.loads(templates.joinpath("image_z_image_turbo.json").read_text(encoding="utf-8"))
    nodes = [n for sg in data["definitions"]["subgraphs"] for n in sg["nodes"]] + data["nodes"]
    unet = next(n for n in nodes if n["type"] == "UNETLoader")
    unet["widgets_values"][0] = "private_finetune.safetensors"
    unet["properties"]["models"] = [
        {
            "name": "private_finetune.safetensors",
            "url": "http://127.0.0.1:9/hub/private_finetune.safetensors",
            "directory": "diffusion_models",
        }
    ]
    path = tmp_path / "ui.json"
    path.write_text(json.dumps(data))
    result = runner.invoke(models_app, ["check", str(path), "--server", server, "--json"])
    assert result.exit_code == 1, result.output
    (report,) = json.loads(result.stdout)
    (missing,) = [m for m in report["models"] if not m["present"]]
    assert missing["name"] == "private_finetune.safetensors"
    assert missing["url"] == "http://127.0.0.1:9/hub/private_finetune.safetensors"
    assert missing["manifest"] is None


def test_check_reports_each_server_and_an_unreachable_one(server):
    dead = "http://127.0.0.1:9"
    result = runner.invoke(models_app, ["check", "zimage-turbo", "-s", server, "-s", dead])
    assert result.exit_code == 1, result.output
    assert f"{server}: all 3 model file(s) present" in result.output
    assert "127.0.0.1:9" in result.output.split("present", 1)[1]


# -- pull, then check ------------------------------------------------------------------------------


def test_pull_makes_a_missing_file_present(engine, server, tmp_path, checkpoint_name):
    hub = tmp_path / "hub"
    hub.mkdir()
    body = os.urandom(200_000)
    (hub / checkpoint_name).write_bytes(body)
    workflow = tmp_path / "wf.json"
    workflow.write_text(json.dumps(loader_graph(checkpoint_name, load_ms=0, job_ms=0)))
    before = runner.invoke(models_app, ["check", str(workflow), "--server", server])
    assert before.exit_code == 1, before.output
    assert f"missing checkpoints/{checkpoint_name}" in before.output
    with file_server(hub) as url:
        manifest = tmp_path / "m.yaml"
        manifest.write_text(
            f"- name: {checkpoint_name}\n  folder: checkpoints\n  url: {url}/{checkpoint_name}\n"
            f"  sha256: {hashlib.sha256(body).hexdigest()}\n  size: {len(body)}\n"
        )
        models_dir = engine.base / "models"
        pulled = runner.invoke(models_app, ["pull", str(manifest), "--models-dir", str(models_dir)])
    assert pulled.exit_code == 0, pulled.output
    assert pulled.stdout.startswith("downloaded")
    assert (models_dir / "checkpoints" / checkpoint_name).read_bytes() == body
    after = runner.invoke(models_app, ["check", str(workflow), "--server", server])
    assert after.exit_code == 0, after.output
    offset = log_size(engine)
    with Client(server) as client:
        client.run(workflow)  # the server loads the pulled file
    assert checkpoint_name in engine.log_file.read_bytes()[offset:].decode(errors="replace")


def test_pull_without_a_models_dir_is_a_usage_error(monkeypatch):
    monkeypatch.delenv("COMFYFN_MODELS_DIR", raising=False)
    result = runner.invoke(models_app, ["pull", "zimage-turbo"])
    assert result.exit_code == 2
    assert "--models-dir" in result.output


# -- warm-up ---------------------------------------------------------------------------------------


@pytest.fixture
def fresh_unet(engine, unique) -> Iterator[Callable[[], str]]:
    """Copies of the tiny turbo DiT under names this server never loaded (removed after)."""
    tiny = Path(engine.state().models_dir) / "diffusion_models" / "z_image_turbo_bf16.safetensors"
    made: list[Path] = []

    def copy() -> str:
        target = (
            engine.base / "models" / "diffusion_models" / f"comfyfn_warm_{unique()}.safetensors"
        )
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(tiny, target)
        made.append(target)
        return target.name

    yield copy
    for path in made:
        path.unlink(missing_ok=True)


def _loader_ran(client: Client, wf: Workflow, unique: Callable[[], int]) -> bool:
    """Run a real job of ``wf``; True if its UNETLoader ran, False if it was cached."""
    unet = next(n for n, node in wf.graph.items() if node["class_type"] == "UNETLoader")
    job = client.submit(
        workflow=wf, prompt=f"job {unique()}", seed=unique(), size=(64, 64), steps=2
    )
    ran, cached = False, set()
    for event in job.events():
        if isinstance(event, NodeStarted) and event.node_id == unet:
            ran = True
        if isinstance(event, NodeCached):
            cached |= set(event.node_ids)
    job.result()
    assert ran != (unet in cached)
    return ran


def test_after_warm_up_the_first_job_finds_its_model_loaded(server, fresh_unet, unique):
    with Client(server) as client:
        cold = client.workflow(zimage_turbo().bind(model=fresh_unet()))
        assert _loader_ran(client, cold, unique)  # without warm-up the first job loads it
        warmed = client.workflow(zimage_turbo().bind(model=fresh_unet()))
        warm(client, warmed)
        assert not _loader_ran(client, warmed, unique)  # loaded by the warm-up


def test_the_warm_up_job_is_the_smallest_job(server):
    with Client(server) as client:
        done = warm(client, "zimage-turbo")
        graph = client.history(done.prompt_id)[done.prompt_id]["prompt"][2]
    assert done.server == server and done.seconds > 0
    by_class = {node["class_type"]: node["inputs"] for node in graph.values()}
    latent, sampler = by_class["EmptySD3LatentImage"], by_class["KSampler"]
    assert (latent["width"], latent["height"], latent["batch_size"]) == (16, 16, 1)
    assert (sampler["steps"], sampler["seed"]) == (1, 0)
    assert by_class["SaveImage"]["filename_prefix"] == WARMUP_PREFIX
    assert by_class["UNETLoader"]["unet_name"] == "z_image_turbo_bf16.safetensors"


def test_an_edit_workflow_warms_up_with_a_tiny_input_image(server):
    with Client(server) as client:
        done = warm(client, "zimage-edit")
        graph = client.history(done.prompt_id)[done.prompt_id]["prompt"][2]
    by_class = {node["class_type"]: node["inputs"] for node in graph.values()}
    assert by_class["LoadImage"]["image"].startswith("comfyfn/")
    assert by_class["KSampler"]["steps"] == 1


def test_warm_command_on_each_server(server, second_engine):
    urls = [server, second_engine.url]
    result = runner.invoke(models_app, ["warm", "zimage-turbo", "-s", urls[0], "-s", urls[1]])
    assert result.exit_code == 0, result.output
    assert [line.split(": warm (")[0] for line in result.stdout.splitlines()] == urls


def test_warm_command_fails_on_a_server_that_is_down():
    result = runner.invoke(models_app, ["warm", "zimage-turbo", "-s", "http://127.0.0.1:9"])
    assert result.exit_code == 1
    assert "127.0.0.1:9" in result.output


# -- model loads and model-aware routing -----------------------------------------------------------


def test_the_test_loader_loads_only_when_its_file_changes(engine, server):
    files = ["comfyfn_it_load_a.safetensors", "comfyfn_it_load_b.safetensors"]
    add_model_files(engine, files)
    a, b = files

    async def go() -> dict[str, list[str]]:
        async with AsyncClient(server) as client:
            offsets = [log_size(engine)]
            await settle({server: client}, [engine], offsets)
            offsets = [log_size(engine)]
            for name in (a, a, b, a):
                graph = loader_graph(name, load_ms=10, job_ms=0)
                await (await client.submit_graph(graph, validate=False)).result()
            return await settle({server: client}, [engine], offsets)

    assert asyncio.run(go()) == {server: [a, b, a]}


@pytest.fixture(scope="module")
def second_engine(engine) -> Iterator[Engine]:
    other = Engine(f"{engine.name}-models2", install=engine.install)
    other.up()
    yield other
    other.down()


def test_model_aware_routing_loads_each_model_set_once_per_server(engine, second_engine):
    """Sixteen interleaved rows (A, B, A, B…) through comfyfn.batch on two engines."""
    files = ["comfyfn_it_route_a.safetensors", "comfyfn_it_route_b.safetensors"]
    engines = [engine, second_engine]
    for e in engines:
        add_model_files(e, files)
    urls = [e.url for e in engines]

    async def go():
        clients = {url: AsyncClient(url) for url in urls}
        try:
            await settle(clients, engines, [log_size(e) for e in engines])
            offsets = [log_size(e) for e in engines]
            result = await run_batch(urls, files, 16, (50, 50), 300, prime=1, by_model=True)
            return result, await settle(clients, engines, offsets)
        finally:
            for client in clients.values():
                await client.aclose()

    result, loads = asyncio.run(go())
    assert sum(result.per_server.values()) == 16
    # Each server starts on its own model set and never loads a set twice; a server that
    # runs out of its set's jobs may take over the other set's backlog once (the policy's
    # one load to clear a queue): at most three loads, where alternating jobs would load
    # at every job.
    firsts = [names[0] for names in loads.values() if names]
    assert sorted(firsts) == sorted(files), loads
    assert all(len(names) == len(set(names)) <= len(files) for names in loads.values()), loads
    assert sum(len(names) for names in loads.values()) <= len(files) + 1, loads
