"""The MCP server through the official SDK's own client, against the local engine: over
streamable HTTP at a real gateway's ``/mcp`` (its keys, its jobs) and over stdio (the
command spawned as an agent spawns it). Tools listed with their typed schemas; an image
generated (preview, link, seed); an image edited; a bad parameter named; a wrong key
refused; a cancelled call cancels its job; progress notifications arrive.

stdio runs ``comfyfn mcp`` (as ``python -m comfyfn.cli mcp``)."""

from __future__ import annotations

import base64
import contextlib
import io
import json
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from urllib.parse import urlsplit

import anyio
import httpx
import mcp_types as types
import pytest
import sqlalchemy as sa
from mcp import ClientSession, MCPError, StdioServerParameters, stdio_client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client
from PIL import Image

import comfyfn
from tests.support.cli_proc import CHILD_ENV
from tests.support.gateway_proc import Gateway, auth, make_key, sqlite_gateway
from tests.support.graphs import sleep_graph
from tests.support.polling import await_for
from tests.support.tests_png import image_bytes

pytestmark = [pytest.mark.engine, pytest.mark.anyio, pytest.mark.any_version]  # about MCP

SMALL = {"width": 64, "height": 64, "steps": 1}


@pytest.fixture(scope="module")
def slow_workflow(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("mcp-wf") / "slow.json"
    path.write_text(json.dumps(sleep_graph(7, milliseconds=30000, steps=30)))
    return path


@pytest.fixture(scope="module")
def gw(server, tmp_path_factory, slow_workflow) -> Iterator[Gateway]:
    root = tmp_path_factory.mktemp("mcp")
    workflows = ("-w", "zimage-turbo", "-w", "zimage-edit", "-w", f"slow={slow_workflow}")
    with sqlite_gateway([server], root, *workflows) as gateway:
        gateway.key = make_key(gateway.db, "mcp")
        yield gateway


@contextlib.asynccontextmanager
async def over_http(gw: Gateway, key: str) -> AsyncIterator[ClientSession]:
    client = create_mcp_http_client(headers=auth(key))
    async with (
        client,
        streamable_http_client(f"{gw.url}/mcp", http_client=client) as (read, write),
        ClientSession(read, write) as session,
    ):
        await session.initialize()
        yield session


@contextlib.asynccontextmanager
async def over_stdio(server: str, output: Path, *extra: str) -> AsyncIterator[ClientSession]:
    command = [sys.executable, "-m", "comfyfn.cli", "mcp", "--server", server, "-o", str(output)]
    params = StdioServerParameters(command=command[0], args=[*command[1:], *extra], env=CHILD_ENV)
    async with stdio_client(params) as (read, write), ClientSession(read, write) as session:
        await session.initialize()
        yield session


def preview_of(result: types.CallToolResult) -> Image.Image:
    (image,) = [c for c in result.content if isinstance(c, types.ImageContent)]
    assert image.mime_type == "image/jpeg"
    return Image.open(io.BytesIO(base64.b64decode(image.data)))


def links_of(result: types.CallToolResult) -> list[types.ResourceLink]:
    return [c for c in result.content if isinstance(c, types.ResourceLink)]


def error_text(result: types.CallToolResult) -> str:
    assert result.is_error
    text = " ".join(c.text for c in result.content if isinstance(c, types.TextContent))
    assert "Traceback" not in text
    return text


# -- streamable HTTP at the gateway -------------------------------------------------------


async def test_tools_are_listed_with_the_workflows_typed_schemas(gw):
    async with over_http(gw, gw.key) as session:
        tools = {t.name: t for t in (await session.list_tools()).tools}
    assert {"generate_image", "edit_image", "slow", "list_workflows", "get_job"} <= set(tools)
    assert {"cancel_job", "run_batch"} <= set(tools)
    generate = tools["generate_image"].input_schema
    assert generate["required"] == ["prompt"]
    width = next(s for s in generate["properties"]["width"]["anyOf"] if s["type"] == "integer")
    assert (width["multipleOf"], width["minimum"], width["maximum"]) == (16, 16, 16384)
    assert generate["properties"]["width"]["default"] == 1024
    assert {"prompt", "seed", "steps", "cfg", "batch_size"} <= set(generate["properties"])
    assert generate["additionalProperties"] is False
    edit = tools["edit_image"].input_schema
    assert "image" in edit["required"] and "upload id" in edit["properties"]["image"]["description"]
    assert {"social", "ecommerce", "design"} <= set(
        tools["run_batch"].input_schema["properties"]["recipe"]["enum"]
    )


async def test_generate_gives_a_preview_a_signed_link_the_seed_and_progress(gw, unique):
    seed = unique()
    reported: list[float] = []

    async def on_progress(progress: float, total: float | None, message: str | None) -> None:
        reported.append(progress)

    async with over_http(gw, gw.key) as session:
        result = await session.call_tool(
            "generate_image",
            {"prompt": "a red apple", "seed": seed, **SMALL},
            progress_callback=on_progress,
        )
    assert not result.is_error, result.content
    assert result.structured_content["seed"] == seed
    assert result.structured_content["params"]["width"] == 64
    assert result.structured_content["state"] == "succeeded"
    assert preview_of(result).size == (64, 64)
    (link,) = links_of(result)
    assert urlsplit(link.uri).path.startswith("/v1/files/") and "sig=" in link.uri
    full = httpx.get(link.uri, timeout=30)  # signed: no key needed
    assert full.status_code == 200 and Image.open(io.BytesIO(full.content)).size == (64, 64)
    assert reported, "no progress notification"
    # the same job through the HTTP API: same store, same key
    job = httpx.get(
        f"{gw.url}/v1/jobs/{result.structured_content['job_id']}", headers=auth(gw.key)
    ).json()
    assert job["state"] == "succeeded" and job["params"]["seed"] == seed


async def test_edit_takes_base64_and_an_upload_id(gw, unique):
    data = image_bytes((80, 48), "orange")
    upload = httpx.post(
        f"{gw.url}/v1/uploads",
        json={"b64_json": base64.b64encode(data).decode()},
        headers=auth(gw.key),
    ).json()
    async with over_http(gw, gw.key) as session:
        for image in (base64.b64encode(data).decode(), upload["id"]):
            result = await session.call_tool(
                "edit_image",
                {"image": image, "prompt": "a cat", "steps": 1, "seed": unique(), "denoise": 0.5},
            )
            assert not result.is_error, result.content
            assert preview_of(result).size == (80, 48)  # the input's size, rounded to 16


async def test_a_bad_parameter_is_a_tool_error_naming_it(gw):
    async with over_http(gw, gw.key) as session:
        wrong = await session.call_tool("generate_image", {"prompt": "x", "width": 70})
        over = await session.call_tool("generate_image", {"prompt": "x", "steps": 5000})
        blank = await session.call_tool("generate_image", {"prompt": "  ", **SMALL})
        image = await session.call_tool("edit_image", {"image": "not an image", "prompt": "x"})
    assert error_text(wrong).startswith("width: Input should be a multiple of 16")
    assert wrong.structured_content["error"]["param"] == "width"
    assert error_text(over) == "steps 5000 is over this gateway's limit of 100"
    assert error_text(blank) == "prompt: the prompt is blank"
    assert error_text(image).startswith("image: ")


async def test_a_wrong_key_is_refused(gw):
    with pytest.raises(ExceptionGroup) as refused:  # the SDK's client: no session at all
        async with over_http(gw, "sk-not-a-key") as session:
            await session.list_tools()
    assert refused.group_contains(MCPError)
    answer = httpx.post(f"{gw.url}/mcp", json={}, headers=auth("sk-not-a-key"))
    assert answer.status_code == 401
    assert answer.json()["error"]["code"] == "invalid_api_key"


async def test_a_cancelled_call_cancels_its_job(gw, server):
    progressed = anyio.Event()

    async def on_progress(progress: float, total: float | None, message: str | None) -> None:
        if message == "running" and progress > 0:
            progressed.set()

    async with over_http(gw, gw.key) as session, anyio.create_task_group() as tg:
        outcome: list[types.CallToolResult] = []

        async def call() -> None:
            outcome.append(await session.call_tool("slow", {}, progress_callback=on_progress))

        tg.start_soon(call)
        with anyio.fail_after(120):
            await progressed.wait()  # the job runs on the engine
        tg.cancel_scope.cancel()
    assert not outcome
    engine = sa.create_engine(gw.db)

    async def cancelled() -> bool:
        with engine.connect() as conn:
            states = conn.execute(sa.text("SELECT state FROM cfn_jobs WHERE workflow = 'slow'"))
            return [row.state for row in states] == ["cancelled"]

    try:
        await await_for(cancelled, 30, "the slow job to end cancelled")
    finally:
        engine.dispose()
    with comfyfn.Client(server) as comfy:

        async def idle() -> bool:
            queue = comfy.queue()
            return not queue["queue_running"] and not queue["queue_pending"]

        await await_for(idle, 30, "the engine to stop running the cancelled job")


# -- stdio ----------------------------------------------------------------------------------


async def test_stdio_generates_edits_and_names_a_bad_parameter(server, tmp_path, unique):
    seed = unique()
    reported: list[tuple[float, float | None]] = []
    photo = tmp_path / "photo.png"
    photo.write_bytes(image_bytes((48, 32), "teal"))

    async def on_progress(progress: float, total: float | None, message: str | None) -> None:
        reported.append((progress, total))

    async with over_stdio(server, tmp_path / "out") as session:
        tools = {t.name: t for t in (await session.list_tools()).tools}
        made = await session.call_tool(
            "generate_image", {"prompt": "a red apple", "seed": seed, **SMALL}, None, on_progress
        )
        edited = await session.call_tool(
            "edit_image", {"image": str(photo), "prompt": "a cat", "steps": 1, "denoise": 0.5}
        )
        wrong = await session.call_tool("generate_image", {"prompt": "x", "width": 70})
    assert "file path" in tools["edit_image"].input_schema["properties"]["image"]["description"]
    assert not made.is_error, made.content
    assert made.structured_content["seed"] == seed
    (link,) = links_of(made)
    path = Path(urlsplit(link.uri).path)
    assert path.is_relative_to(tmp_path / "out") and Image.open(path).size == (64, 64)
    assert preview_of(made).size == (64, 64)
    assert reported and reported[-1] == (1.0, 1.0)
    assert not edited.is_error, edited.content
    assert preview_of(edited).size == (48, 32)
    assert isinstance(edited.structured_content["seed"], int)  # drawn, and reported
    assert error_text(wrong).startswith("width: Input should be a multiple of 16")


async def test_stdio_cancellation_interrupts_the_job_on_the_server(server, tmp_path, slow_workflow):
    running = anyio.Event()

    async def on_progress(progress: float, total: float | None, message: str | None) -> None:
        if progress > 0:
            running.set()

    async with (
        over_stdio(server, tmp_path / "out", "-w", f"slow={slow_workflow}") as session,
        anyio.create_task_group() as tg,
    ):
        outcome: list[types.CallToolResult] = []

        async def call() -> None:
            outcome.append(await session.call_tool("slow", {}, progress_callback=on_progress))

        tg.start_soon(call)
        with anyio.fail_after(120):
            await running.wait()
        tg.cancel_scope.cancel()
    assert not outcome
    with comfyfn.Client(server) as comfy:

        async def idle() -> bool:
            queue = comfy.queue()
            return not queue["queue_running"] and not queue["queue_pending"]

        await await_for(idle, 30, "the engine to stop running the cancelled job")
