"""LoRAs, the ControlNet and partner nodes wired through the client, the CLI and the gateway:
the Comfy.org key goes only with jobs that run partner nodes and is never shown or recorded;
``--lora`` and a gateway's ``loras`` are parsed with the workflow layer's rules and a bad one
is refused naming ``loras``; with no workflow given, the inputs choose the built-in one."""

from __future__ import annotations

import copy
import logging

import pytest
from typer.testing import CliRunner

from comfyfn import AsyncClient
from comfyfn.cli._app import app
from comfyfn.client import default_workflow
from comfyfn.errors import ConfigError, WorkflowInvalid
from comfyfn.gateway import service
from comfyfn.gateway.errors import ApiError
from comfyfn.gateway.registry import Registry
from comfyfn.gateway.runtime import Runtime
from comfyfn.gateway.settings import GatewaySettings
from comfyfn.jobs.schema import KeyRecord
from comfyfn.jobs.store import Store
from comfyfn.storage import LocalStorage
from comfyfn.workflow import (
    CONTROL_TYPES,
    EXTRA_DATA_KEY,
    KEY_ENV,
    RouteMissing,
    bundled_object_info,
    zimage_control,
    zimage_turbo,
)
from tests.support.fake_comfy import GRAPH, SERVER, FakeComfy, js
from tests.support.sockets import NoSocket

KEY = "sk-comfy-org-7f3a9c"  # a Comfy.org API key as a caller would give it
INFO = bundled_object_info("0.33.0")
runner = CliRunner()


def info_with_partner(cls: str | None) -> dict:
    """The bundled definitions, with ``cls`` made a partner (paid cloud) node."""
    info = dict(INFO)
    if cls is not None:
        info[cls] = {**copy.deepcopy(INFO[cls]), "api_node": True}
    return info


@pytest.fixture(autouse=True)
def _polling(monkeypatch):
    monkeypatch.setattr(AsyncClient, "_socket_class", NoSocket)
    monkeypatch.delenv(KEY_ENV, raising=False)


# -- the client: the key -----------------------------------------------------------------------


@pytest.mark.anyio
async def test_the_key_goes_only_with_a_graph_that_has_partner_nodes(caplog):
    caplog.set_level(logging.DEBUG, logger="comfyfn")
    partner, plain = (
        FakeComfy(object_info=info_with_partner("EmptyImage")),
        FakeComfy(object_info=info_with_partner(None)),
    )
    for fake in (partner, plain):
        async with AsyncClient(SERVER, transport=fake.transport(), comfy_org_key=KEY) as c:
            job = await c.submit_graph(GRAPH)
            assert KEY not in repr(job._spec) and KEY not in repr(job._spec.settings)
            assert KEY not in str(dict(job._spec.params))
            await job.result()
    assert partner.posted("/prompt")[0]["extra_data"][EXTRA_DATA_KEY] == KEY
    assert EXTRA_DATA_KEY not in plain.posted("/prompt")[0]["extra_data"]
    assert KEY not in caplog.text


@pytest.mark.anyio
async def test_without_a_key_partner_nodes_are_refused_before_anything_is_sent():
    fake = FakeComfy(object_info=info_with_partner("EmptyImage"))
    async with AsyncClient(SERVER, transport=fake.transport()) as c:
        with pytest.raises(WorkflowInvalid) as caught:
            await c.submit_graph(GRAPH)
    assert [p.kind for p in caught.value.problems] == ["partner_node"]
    assert KEY_ENV in str(caught.value)
    assert fake.posted("/prompt") == []


@pytest.mark.anyio
async def test_the_key_is_read_from_the_environment_at_use(monkeypatch):
    fake = FakeComfy(object_info=info_with_partner("EmptyImage"))
    async with AsyncClient(SERVER, transport=fake.transport()) as c:
        monkeypatch.setenv(KEY_ENV, KEY)  # set after the client was made
        await (await c.submit_graph(GRAPH)).result()
    assert fake.posted("/prompt")[0]["extra_data"][EXTRA_DATA_KEY] == KEY


# -- the workflow layer and the default workflow ----------------------------------------------


def test_the_control_image_is_an_image_input_and_loras_are_kept_normalised():
    wf = zimage_control()
    assert wf.is_image_input("control_image") and not wf.is_image_input("strength")
    bound = wf.bind(loras="a.safetensors:0.8; b.safetensors", control_type="depth")
    assert bound.values["loras"] == (("a.safetensors", 0.8), ("b.safetensors", 1.0))
    assert wf.takes_loras and wf.takes_control_type
    assert zimage_turbo().takes_loras and not zimage_turbo().takes_control_type


@pytest.mark.parametrize(
    ("given", "chosen"),
    [
        ({}, "zimage-turbo"),
        ({"image": "in.png"}, "zimage-edit"),
        ({"control_image": "map.png"}, "zimage-control"),
        ({"control_image": "map.png", "image": "in.png"}, "zimage-control"),  # inpainting
        ({"image": None, "control_image": None}, "zimage-turbo"),
    ],
)
def test_with_no_workflow_given_the_inputs_choose_the_built_in_one(given, chosen):
    assert default_workflow(given) == chosen


# -- the CLI -----------------------------------------------------------------------------------


@pytest.mark.parametrize("lora", [":0.8", "style.safetensors:inf", "  "])
def test_a_bad_lora_is_a_usage_error_naming_it_before_any_server(lora, monkeypatch):
    monkeypatch.delenv("COMFYFN_SERVER", raising=False)
    done = runner.invoke(app, ["generate", "p", "--lora", "ok.safetensors", "--lora", lora])
    assert done.exit_code == 2, done.output
    assert "invalid LoRA" in done.output and "LoRA" in done.output
    assert "no server given" not in done.output  # refused before the local engine is looked up


def test_an_unknown_control_type_lists_the_choices():
    done = runner.invoke(app, ["generate", "p", "--control-type", "scribble"])
    assert done.exit_code == 2
    assert all(name in done.output for name in CONTROL_TYPES)


def test_the_key_option_shows_no_value(monkeypatch):
    monkeypatch.setenv(KEY_ENV, KEY)
    done = runner.invoke(app, ["generate", "--help"], env={"COLUMNS": "200"})
    assert "--comfy-org-key" in done.output and KEY not in done.output


# -- the gateway -------------------------------------------------------------------------------


@pytest.fixture
def runtime(tmp_path):
    store = Store(f"sqlite:///{tmp_path / 'g.db'}")
    settings = GatewaySettings(servers=("http://fake",), db_url=store.url, storage=tmp_path)
    registry = Registry()
    registry.add("zimage-turbo", zimage_turbo())
    registry.add("zimage-control", zimage_control())
    yield Runtime(settings, store, registry, LocalStorage(tmp_path))
    store.close()


def test_the_schemas_take_loras_and_a_control_type_where_the_workflow_does(runtime):
    turbo = runtime.registry.get("zimage-turbo").request_model.model_json_schema()
    control = runtime.registry.get("zimage-control").request_model.model_json_schema()
    assert "loras" in turbo["properties"] and "control_type" not in turbo["properties"]
    assert "loras" in control["properties"]
    assert "$defs" not in control  # inline: the OpenAPI document and the UI show it as it is
    assert control["properties"]["loras"]["anyOf"][0] == {"type": "string"}  # the UI's field
    enum = control["properties"]["control_type"]["anyOf"][0]["enum"]
    assert enum == list(CONTROL_TYPES)
    assert "control_image" in runtime.registry.get("zimage-control").images


def test_loras_as_objects_or_text_are_stored_as_pairs_that_bind(runtime):
    served = runtime.registry.get("zimage-turbo")
    objects = served.params({"loras": [{"name": "a.safetensors", "strength": 0.5}, {"name": "b"}]})
    text = served.params({"loras": "a.safetensors:0.5, b"})
    assert objects["loras"] == text["loras"] == [["a.safetensors", 0.5], ["b", 1.0]]
    graph = served.workflow.bind(**text).to_api()
    chained = [n["inputs"] for n in graph.values() if n["class_type"] == "LoraLoaderModelOnly"]
    assert [(i["lora_name"], i["strength_model"]) for i in chained] == [
        ("a.safetensors", 0.5),
        ("b", 1.0),
    ]
    assert "loras" not in served.params({"loras": ""})


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("loras", "param", "says"),
    [
        ("a.safetensors:0.8, :0.5", "loras", "':0.5' names no LoRA file"),
        ([{"name": "a.safetensors", "strength": "much"}], "loras.0.strength", "number"),
        ([{"name": ""}], "loras.0.name", "at least 1 character"),
    ],
)
async def test_a_bad_lora_is_a_422_naming_it(runtime, loras, param, says):
    key = KeyRecord("key_1", "k", "cf_", "", 0.0, False)
    with pytest.raises(ApiError) as caught:
        await service.create_job(
            runtime, key, "zimage-turbo", {"prompt": "p", "loras": loras}, None, None
        )
    assert caught.value.status == 422
    assert caught.value.param == f"params.{param}"
    assert says in caught.value.message


@pytest.mark.anyio
async def test_an_unknown_control_type_is_a_422_naming_it(runtime):
    key = KeyRecord("key_1", "k", "cf_", "", 0.0, False)
    params = {"prompt": "p", "control_image": {"upload": "upl_" + "0" * 64}, "control_type": "x"}
    with pytest.raises(ApiError) as caught:
        await service.create_job(runtime, key, "zimage-control", params, None, None)
    assert (caught.value.status, caught.value.param) == (422, "params.control_type")
    assert "'canny'" in caught.value.message  # the choices, not "extra inputs not permitted"


# -- the client: what a server serves ----------------------------------------------------------


@pytest.mark.anyio
async def test_the_client_loads_and_lists_what_the_server_serves(templates):
    fake = FakeComfy(object_info=INFO)
    index = [{"moduleName": "default", "templates": [{"name": "image_z_image_turbo"}]}]
    fake.set("GET", "/templates/index.json", js(index))
    fake.set(
        "GET", "/templates/image_z_image_turbo.json", js(templates("image_z_image_turbo.json"))
    )
    async with AsyncClient(SERVER, transport=fake.transport()) as c:
        assert await c.served_workflows("template") == ["image_z_image_turbo"]
        wf = await c.workflow("template:image_z_image_turbo")
        with pytest.raises(RouteMissing) as missing:
            await c.served_workflows("blueprint")
        with pytest.raises(ConfigError, match="choose from blueprint, template"):
            await c.served_workflows("templates")
    assert (wf.source, wf.name) == ("template", "image_z_image_turbo")
    assert {"prompt", "seed", "model"} <= {p.name for p in wf.params}
    assert missing.value.route == "/global_subgraphs"


def test_batch_serve_and_worker_take_the_key_and_never_show_it():
    from typer.testing import CliRunner

    from comfyfn.batch import BatchSettings
    from comfyfn.cli._app import app
    from comfyfn.gateway import GatewaySettings

    batch = BatchSettings(comfy_org_key="sk-secret")
    assert batch.fleet().comfy_org_key == "sk-secret" and "sk-secret" not in repr(batch)
    gateway = GatewaySettings(
        servers=("http://127.0.0.1:9",), db_url="sqlite://", storage="x", comfy_org_key="sk-secret"
    )
    assert "sk-secret" not in repr(gateway)
    for command in ("batch", "serve", "worker"):
        shown = CliRunner().invoke(app, [command, "--help"], env={"COLUMNS": "200"}).output
        assert "--comfy-org-key" in shown, command
