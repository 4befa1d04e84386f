"""Workflows the server serves itself, and partner nodes, on the real ComfyUI.

Blueprints: whatever ``GET /global_subgraphs`` lists is what the server can do (ComfyUI 0.33
ships "Text to Image (Z-Image-Turbo)" and "(Z-Image-Base)" in its ``blueprints/``; the
managed 0.3.75 lists none): listed by ``comfyfn workflow list``, converted (the subgraph
expanded, a SaveImage added), bound by meaning and run on the engine. Templates: the engine
runs without the comfyui-workflow-templates package, so it has no ``/templates/…`` route
(the error names it); a loopback server with that route and the engine's own definitions
stands in for one that has it, and the template it serves runs on the engine.
"""

from __future__ import annotations

import json
from importlib import resources

import httpx
import pytest
from typer.testing import CliRunner

import comfyfn
from comfyfn.cli._app import app
from tests.support.fileserver import Reply

pytestmark = pytest.mark.engine
runner = CliRunner()
BLUEPRINTS = {
    "Text to Image (Z-Image-Turbo)": "z_image_turbo_bf16.safetensors",
    "Text to Image (Z-Image-Base)": "z_image_bf16.safetensors",
}
TEMPLATES = resources.files("comfyui_workflow_templates_json") / "templates"


def listed(server: str) -> dict[str, list[str] | None]:
    done = runner.invoke(app, ["workflow", "list", "--server", server, "--json"])
    assert done.exit_code == 0, done.output
    return json.loads(done.stdout)


@pytest.mark.parametrize("name", list(BLUEPRINTS))
def test_a_core_blueprint_is_listed_bound_by_meaning_and_run(server, unique, tmp_path, name):
    blueprints = listed(server)["blueprint"]
    assert blueprints is not None  # every ComfyUI here has the route
    converted = tmp_path / "blueprint.json"
    done = runner.invoke(
        app, ["workflow", "convert", f"blueprint:{name}", "--server", server, "-o", str(converted)]
    )
    if name not in blueprints:  # a server without ComfyUI's blueprints/ (0.3.75)
        assert done.exit_code == 2
        assert f"serves no blueprint {name!r}" in " ".join(done.output.split())
        return
    assert done.exit_code == 0, done.output
    with comfyfn.Client(server) as c:
        wf = c.workflow(str(converted))
        assert {"prompt", "seed", "width", "height", "steps", "model"} <= {
            p.name for p in wf.params
        }
        gen = c.run(wf, prompt="外滩夜景", seed=unique(), width=64, height=80, steps=2)
    assert (gen.images[0].width, gen.images[0].height) == (64, 80)
    assert gen.params["model"] == BLUEPRINTS[name]
    assert any(":" in node_id for node_id in gen.workflow)  # the subgraph, expanded


def test_the_gateway_serves_a_blueprint_under_its_own_name(server, unique):
    """``serve -w tti=blueprint:NAME`` (and ``comfyfn worker``, ``comfyfn mcp``): the
    registry loads it from the first server that serves it and types its route."""
    from comfyfn.gateway.registry import Registry

    name = "Text to Image (Z-Image-Turbo)"
    registry = Registry()
    if name not in (listed(server)["blueprint"] or []):
        with pytest.raises(comfyfn.ComfyError, match="serves no blueprint"):
            registry.load([("tti", f"blueprint:{name}")], servers=[server])
        return
    registry.load([("tti", f"blueprint:{name}")], servers=["http://127.0.0.1:9", server])
    served = registry.get("tti")
    assert served is not None and served.workflow.name == "tti"
    assert {"prompt", "seed", "width", "height"} <= set(served.model.model_fields)
    bound = served.workflow.bind(prompt="a blueprint served", seed=unique(), width=64, height=64)
    with comfyfn.Client(server) as c:
        gen = c.run(bound, steps=2)
    assert (gen.images[0].width, gen.images[0].height) == (64, 64)


def test_inspect_reads_a_blueprint_straight_from_the_server(server):
    done = runner.invoke(
        app,
        ["workflow", "inspect", "blueprint:Text to Image (Z-Image-Turbo)", "-s", server, "--json"],
    )
    if "Text to Image (Z-Image-Turbo)" not in (listed(server)["blueprint"] or []):
        # a ComfyUI that ships no core blueprints (0.3.75): a usage error naming the name
        assert done.exit_code == 2, done.output
        assert "Text to Image (Z-Image-Turbo)" in done.output and "Traceback" not in done.output
        return
    assert done.exit_code == 0, done.output
    shown = json.loads(done.stdout)
    assert shown["source"] == "blueprint" and len(shown["outputs"]) == 1
    assert {p["name"] for p in shown["params"]} >= {"prompt", "seed", "width", "height"}


def test_a_server_without_the_templates_route_is_named_with_it(server):
    served = httpx.get(f"{server}/templates/index.json", timeout=30).status_code
    # the test engines (0.3.75 and 0.33.0) do not install comfyui-workflow-templates
    assert served != 200, "the test engine serves templates: this test needs one that does not"
    assert listed(server)["template"] is None
    done = runner.invoke(app, ["workflow", "inspect", "template:image_z_image_turbo", "-s", server])
    assert done.exit_code == 2
    assert (
        f"ComfyUI at {server} serves no templates: GET /templates/index.json answered HTTP "
        f"{served}" in " ".join(done.output.split())
    )


def test_a_template_a_server_serves_runs_on_the_engine(server, file_server, unique, tmp_path):
    """The loopback server answers the templates routes and the engine's /object_info."""
    index = [{"moduleName": "default", "templates": [{"name": "image_z_image_turbo"}]}]
    template = (TEMPLATES / "image_z_image_turbo.json").read_bytes()
    definitions = httpx.get(f"{server}/object_info", timeout=60).content
    for path, body in {
        "/templates/index.json": json.dumps(index).encode(),
        "/templates/image_z_image_turbo.json": template,
        "/object_info": definitions,
    }.items():
        file_server.files[path] = Reply(body, media_type="application/json")
    assert listed(file_server.url)["template"] == ["image_z_image_turbo"]
    converted = tmp_path / "template.json"
    done = runner.invoke(
        app,
        [
            "workflow",
            "convert",
            "template:image_z_image_turbo",
            "-s",
            file_server.url,
            "-o",
            str(converted),
        ],
    )
    assert done.exit_code == 0, done.output
    with comfyfn.Client(server) as c:
        gen = c.run(
            c.workflow(str(converted)), prompt="a boat", seed=unique(), size=(64, 64), steps=2
        )
    assert gen.images[0].width == 64 and gen.params["model"] == "z_image_turbo_bf16.safetensors"


class Recording(httpx.AsyncBaseTransport):
    """The network, noting every request as ``"METHOD /path"``."""

    def __init__(self) -> None:
        self.network = httpx.AsyncHTTPTransport()
        self.seen: list[str] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.seen.append(f"{request.method} {request.url.path}")
        return await self.network.handle_async_request(request)

    async def aclose(self) -> None:
        await self.network.aclose()


def test_a_partner_node_is_refused_before_anything_is_sent(server):
    graph = {
        "1": {"class_type": "OpenAIDalle2", "inputs": {"prompt": "a cat"}},
        "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "p"}},
    }
    network = Recording()
    with comfyfn.Client(server, transport=network) as c:
        # a partner node on every ComfyUI the tests run (0.3.75 and 0.33.0)
        assert c.object_info("OpenAIDalle2").get("api_node") is True
        with pytest.raises(comfyfn.WorkflowInvalid) as caught:
            c.run(graph)
    (problem,) = caught.value.problems
    assert (problem.node_id, problem.class_type) == ("1", "OpenAIDalle2")
    assert problem.kind == "partner_node"
    assert str(caught.value).splitlines()[0] == (
        f"the workflow uses partner (paid cloud) nodes for {server}: OpenAIDalle2; they run "
        "only with a Comfy.org API key"
    )
    assert "GET /object_info" in network.seen and "POST /prompt" not in network.seen


def test_a_queued_batch_worked_here_loads_a_blueprint_from_its_servers(server, unique, tmp_path):
    """``batch FILE --db … --work --server …`` with ``--workflow blueprint:NAME``: the rows'
    workflow is loaded from the first server of the worker here that answers (it was loaded
    with the bundled definitions, which refuse a blueprint), then run there."""
    import asyncio

    from comfyfn.batch import Row
    from comfyfn.batch.shared import open_shared_batch

    name = "Text to Image (Z-Image-Turbo)"
    row = Row(1, {"prompt": "外滩夜景", "seed": unique(), "width": 64, "height": 64, "steps": 2})
    db, out = f"sqlite:///{tmp_path / 'q.db'}", tmp_path / "out"
    servers = ["http://127.0.0.1:9", server]  # the first does not answer

    async def run() -> list[str]:
        opened = open_shared_batch(
            db, "b", str(out), rows=[row], workflow=f"blueprint:{name}", work_on=servers
        )
        async with opened as shared:
            shared.batch.poll = 0.1
            return [result.state async for result in shared.batch.results()]

    if name not in (listed(server)["blueprint"] or []):  # 0.3.75 ships no blueprints
        with pytest.raises(comfyfn.ComfyError, match="serves no blueprint"):
            asyncio.run(run())
        return
    assert asyncio.run(run()) == ["done"]
    assert (out / "images" / "000001.png").stat().st_size > 0
