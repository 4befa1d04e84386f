"""What a server serves itself (``blueprint:NAME``, ``template:NAME``) read from answers in the
shape ComfyUI 0.33's ``app/subgraph_manager.py`` and the templates package give, and partner
(paid cloud) nodes refused before submitting unless a Comfy.org key goes with the job.

The real server's answers are checked in tests/integration/test_server_workflows.py."""

from __future__ import annotations

import asyncio
import copy
import json
from typing import Any

import pytest
from typer.testing import CliRunner

from comfyfn import Workflow
from comfyfn.cli._app import app
from comfyfn.errors import ConfigError, HTTPStatusError, WorkflowInvalid
from comfyfn.workflow import (
    BUILTIN,
    EXTRA_DATA_KEY,
    RouteMissing,
    bundled_object_info,
    list_server_workflows,
    served_workflow,
    server_source,
)
from tests.support.fileserver import Reply

INFO = bundled_object_info("0.33.0")
runner = CliRunner()
SERVER = "http://127.0.0.1:8188"


def blueprint_of(template: dict[str, Any]) -> dict[str, Any]:
    """The official Z-Image-Turbo template as a blueprint: its SaveImage (and the link to it)
    gone, so the subgraph instance's IMAGE output leads nowhere."""
    ui = copy.deepcopy(template)
    saves = {n["id"] for n in ui["nodes"] if n["type"] == "SaveImage"}
    ui["nodes"] = [n for n in ui["nodes"] if n["id"] not in saves]
    ui["links"] = [link for link in ui["links"] if link[3] not in saves]
    for node in ui["nodes"]:
        for output in node.get("outputs") or ():
            output["links"] = []
    return ui


class Served:
    """A server's answers by path; a path it lacks answers 404 (``asked`` notes each GET)."""

    def __init__(self, answers: dict[str, Any]) -> None:
        self.answers = answers
        self.asked: list[str] = []

    async def get_json(self, path: str) -> Any:
        self.asked.append(path)
        if path not in self.answers:
            raise HTTPStatusError(
                f"GET {path} answered HTTP 404",
                server=SERVER,
                status_code=404,
                body="404: Not Found",
                method="GET",
                path=path,
            )
        answer = self.answers[path]
        if isinstance(answer, HTTPStatusError):
            raise answer
        return answer


@pytest.fixture
def server(templates) -> Served:
    turbo = blueprint_of(templates("image_z_image_turbo.json"))
    return Served(
        {
            "/global_subgraphs": {
                "a1": {"source": "templates", "name": "Text to Image (Z-Image-Turbo)", "info": {}},
                "b2": {"source": "templates", "name": "Glow", "info": {"node_pack": "comfyui"}},
            },
            "/global_subgraphs/a1": {"source": "templates", "name": "x", "data": json.dumps(turbo)},
            "/templates/index.json": [
                {"moduleName": "default", "templates": [{"name": "image_z_image_turbo"}]},
                {"moduleName": "default", "templates": [{"name": "flux_schnell"}]},
            ],
            "/templates/image_z_image_turbo.json": templates("image_z_image_turbo.json"),
        }
    )


def load(source: str, server: Served) -> Workflow:
    return asyncio.run(served_workflow(source, server.get_json, SERVER, INFO))


@pytest.mark.parametrize(
    ("text", "parsed"),
    [
        ("blueprint:Text to Image (Z-Image-Turbo)", ("blueprint", "Text to Image (Z-Image-Turbo)")),
        ("template:image_z_image_turbo", ("template", "image_z_image_turbo")),
        ("blueprint:", None),
        ("zimage-turbo", None),
        ("flows/blueprint.json", None),
        ("c:/flows/x.json", None),
    ],
)
def test_server_sources_are_a_kind_a_colon_and_a_name(text, parsed):
    assert server_source(text) == parsed


def test_each_kind_is_listed_by_name(server):
    assert asyncio.run(list_server_workflows("blueprint", server.get_json, SERVER)) == [
        "Text to Image (Z-Image-Turbo)",
        "Glow",
    ]
    names = asyncio.run(list_server_workflows("template", server.get_json, SERVER))
    assert names == ["image_z_image_turbo", "flux_schnell"]


def test_a_blueprint_gets_a_save_node_and_binds_by_meaning(server):
    wf = load("blueprint:Text to Image (Z-Image-Turbo)", server)
    assert server.asked == ["/global_subgraphs", "/global_subgraphs/a1"]
    assert (wf.source, wf.name) == ("blueprint", "Text to Image (Z-Image-Turbo)")
    (save,) = [n for n, node in wf.graph.items() if node["class_type"] == "SaveImage"]
    assert wf.outputs == (save,)
    assert {"prompt", "seed", "width", "height", "steps"} <= {p.name for p in wf.params}
    bound = wf.bind(prompt="外滩", seed=3, size=(64, 80)).to_api()
    decoder = bound[save]["inputs"]["images"][0]
    assert bound[decoder]["class_type"] == "VAEDecode" and ":" in decoder  # inside the subgraph
    wf.validate(INFO)


def test_a_template_is_fetched_by_its_file_name(server):
    wf = load("template:image_z_image_turbo", server)
    assert server.asked == ["/templates/index.json", "/templates/image_z_image_turbo.json"]
    assert wf.source == "template" and "57:3" in wf.graph


def test_an_unknown_name_suggests_the_nearest(server):
    with pytest.raises(ConfigError) as caught:
        load("blueprint:Text to Image (Z-Image-Trubo)", server)
    assert str(caught.value) == (
        f"ComfyUI at {SERVER} serves no blueprint 'Text to Image (Z-Image-Trubo)'; did you "
        "mean 'Text to Image (Z-Image-Turbo)'?"
    )
    with pytest.raises(ConfigError, match="serves no template 'nothing_like_it'; it serves 2"):
        load("template:nothing_like_it", server)


@pytest.mark.parametrize(
    ("source", "route"),
    [("blueprint:Glow", "/global_subgraphs"), ("template:flux", "/templates/index.json")],
)
def test_a_server_without_the_route_is_named_with_it(source, route):
    bare = Served({})
    with pytest.raises(RouteMissing) as caught:
        load(source, bare)
    assert caught.value.route == route and caught.value.server == SERVER
    assert str(caught.value).startswith(
        f"ComfyUI at {SERVER} serves no {source.partition(':')[0]}s: GET {route} answered HTTP 404"
    )
    assert isinstance(caught.value, ConfigError)


def test_a_failing_list_route_stays_an_http_error():
    broken = HTTPStatusError(
        "boom", server=SERVER, status_code=500, body="", method="GET", path="/global_subgraphs"
    )
    with pytest.raises(HTTPStatusError) as caught:
        load("blueprint:Glow", Served({"/global_subgraphs": broken}))
    assert caught.value.status_code == 500 and not isinstance(caught.value, RouteMissing)


def test_without_a_server_loading_one_says_where_it_comes_from():
    with pytest.raises(ConfigError, match=r"a blueprint is served by ComfyUI: load it through"):
        Workflow.load("blueprint:Text to Image (Z-Image-Turbo)")


# -- partner nodes -------------------------------------------------------------------------


def partner_graph() -> dict[str, Any]:
    return {
        "1": {"class_type": "OpenAIDalle2", "inputs": {"prompt": "a cat"}},
        "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "p"}},
        "3": {"class_type": "IdeogramV3", "inputs": {"prompt": "unused"}},  # never runs
    }


def test_partner_nodes_are_refused_naming_each_unless_a_key_goes_with_the_job():
    wf = Workflow.load(partner_graph(), object_info=INFO)
    assert wf.partner_nodes() == ("OpenAIDalle2", "IdeogramV3")
    with pytest.raises(WorkflowInvalid) as caught:
        wf.validate(server=SERVER)
    assert str(caught.value).splitlines()[0] == (
        f"the workflow uses partner (paid cloud) nodes for {SERVER}: OpenAIDalle2; they run "
        "only with a Comfy.org API key"
    )
    (problem,) = caught.value.problems
    assert (problem.node_id, problem.class_type, problem.kind) == (
        "1",
        "OpenAIDalle2",
        "partner_node",
    )
    assert "--comfy-org-key or COMFY_ORG_API_KEY" in problem.message
    wf.validate(server=SERVER, partner_key=True)
    assert EXTRA_DATA_KEY == "api_key_comfy_org"  # what ComfyUI's execution.py reads


def test_other_problems_come_first_and_the_partner_nodes_still_show():
    graph = partner_graph()
    graph["2"]["inputs"]["filename_prefix"] = 7
    with pytest.raises(WorkflowInvalid) as caught:
        Workflow.load(graph, object_info=INFO).validate()
    assert [p.kind for p in caught.value.problems] == ["bad_value", "partner_node"]
    assert str(caught.value).splitlines()[0] == "the workflow is invalid"


def test_a_graph_without_partner_nodes_needs_no_key():
    graph = partner_graph()
    graph["1"] = {"class_type": "EmptyImage", "inputs": {"width": 8, "height": 8, "batch_size": 1}}
    graph["1"]["inputs"]["color"] = 0
    del graph["3"]
    Workflow.load(graph, object_info=INFO).validate()


# -- the CLI ---------------------------------------------------------------------------------


def test_workflow_list_offline_shows_the_built_ins(monkeypatch):
    monkeypatch.delenv("COMFYFN_SERVER", raising=False)
    done = runner.invoke(app, ["workflow", "list", "--json"])
    assert done.exit_code == 0, done.output
    assert json.loads(done.stdout) == {"builtin": sorted(BUILTIN)}


def test_a_served_source_without_a_server_is_a_usage_error(monkeypatch):
    monkeypatch.delenv("COMFYFN_SERVER", raising=False)
    done = runner.invoke(app, ["workflow", "inspect", "blueprint:Text to Image (Z-Image-Turbo)"])
    assert done.exit_code == 2
    assert "a blueprint is served by ComfyUI: give its --server" in " ".join(done.output.split())


def test_the_server_is_asked_with_its_credentials_and_none_is_shown(file_server):
    listing = {"a1": {"source": "templates", "name": "Turbo", "info": {}}}
    answer = Reply(json.dumps(listing).encode(), media_type="application/json")
    file_server.files["/global_subgraphs?token=tok-123456"] = answer  # asked with the token
    url = file_server.url.replace("//", "//alice:s3cret-pw@") + "/?token=tok-123456"
    done = runner.invoke(app, ["workflow", "list", "--server", url])
    assert done.exit_code == 0, done.output
    shown = " ".join(done.output.split())
    assert "blueprint (1): blueprint:Turbo" in shown
    assert f"ComfyUI at {file_server.url} serves no templates: GET /templates/index.json" in shown
    assert "s3cret" not in done.output and "tok-123456" not in done.output
