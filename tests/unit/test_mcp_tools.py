"""The MCP tools' definitions and argument checks (no server): names and schemas from the
served workflows, run_batch's rows from a recipe, previews bounded in size, and every
failure a tool error of one sentence."""

from __future__ import annotations

import base64
import io
from typing import Any

import anyio
import pytest
from PIL import Image

from comfyfn.gateway.registry import Registry, Served
from comfyfn.mcp import JobOutcome, OutputFile, ToolError, Tools
from comfyfn.mcp._content import PREVIEW_SIDE, preview


class Recorder:
    """A backend that records what the tools ask of it."""

    image_description = "an image, as this transport takes it"

    def __init__(self, *workflows: tuple[str, str]) -> None:
        self.registry = Registry()
        self.registry.load(workflows or [("zimage-turbo", "zimage-turbo")])
        self.runs: list[tuple[str, Any]] = []

    async def caller(self, request: Any) -> None:
        return None

    async def run(self, caller: Any, served: Served, values: dict, progress: Any) -> JobOutcome:
        self.runs.append((served.name, values))
        return JobOutcome("job_1", served.name, "succeeded", {**values, "seed": 5})

    async def run_rows(self, caller: Any, served: Served, rows: list, progress: Any) -> list:
        self.runs.append((served.name, rows))
        return [JobOutcome(f"job_{i}", served.name, "succeeded", r) for i, r in enumerate(rows)]

    async def get_job(self, caller: Any, job_id: str) -> JobOutcome:
        raise ToolError(f"no job {job_id!r}", param="job_id")

    async def cancel_job(self, caller: Any, job_id: str) -> JobOutcome:
        raise RuntimeError("a bug, with /secret/path in its message")


async def _no_progress(done: float, total: float | None, message: str | None) -> None:
    return None


def call(tools: Tools, name: str, arguments: dict[str, Any]) -> Any:
    return anyio.run(tools.call, name, arguments, None, _no_progress)


def test_each_served_workflow_is_a_tool_named_for_agents():
    backend = Recorder(
        ("zimage-turbo", "zimage-turbo"),
        ("zimage-edit", "zimage-edit"),
        ("run batch", "zimage-turbo"),
    )
    tools = {t.name: t for t in Tools(backend).definitions()}
    assert set(tools) == {
        "generate_image",
        "edit_image",
        "workflow_run_batch",  # "run batch": a tool name, which a fixed tool has already
        "list_workflows",
        "get_job",
        "cancel_job",
        "run_batch",
    }
    edit = tools["edit_image"].input_schema
    assert edit["properties"]["image"]["description"] == backend.image_description
    assert edit["required"] == ["image", "prompt"]


def test_arguments_are_checked_against_the_typed_schema_before_anything_runs():
    backend = Recorder()
    tools = Tools(backend)
    bad = call(tools, "generate_image", {"prompt": "x", "width": 70})
    unknown = call(tools, "generate_image", {"prompt": "x", "colour": "red"})
    assert bad.is_error and bad.content[0].text.startswith("width: Input should be a multiple")
    assert bad.structured_content["error"]["param"] == "width"
    assert unknown.is_error and unknown.structured_content["error"]["param"] == "colour"
    assert backend.runs == []
    good = call(tools, "generate_image", {"prompt": "x", "width": 64})
    assert not good.is_error and good.structured_content["seed"] == 5
    assert backend.runs == [("zimage-turbo", {"prompt": "x", "width": 64})]


def test_run_batch_makes_a_recipes_rows_and_refuses_what_it_cannot_run():
    backend = Recorder()
    tools = Tools(backend)
    done = call(tools, "run_batch", {"recipe": "social", "topics": ["咖啡", "tea"]})
    assert not done.is_error
    ((name, rows),) = backend.runs
    assert name == "zimage-turbo" and len(rows) == 8  # 4 platforms × 2 topics
    assert {r["_topic"] for r in rows} == {"咖啡", "tea"}
    refusals: dict[str, dict[str, Any]] = {
        "recipe": {"recipe": "../etc/passwd", "topics": ["a"]},
        "topics": {"recipe": "social", "topics": []},
        "workflow": {"rows": [{"prompt": "a"}], "workflow": "zimage-edit"},
        "rows[1].width": {"rows": [{"prompt": "a"}, {"prompt": "b", "width": 70}]},
    }
    for param, arguments in refusals.items():
        refused = call(tools, "run_batch", arguments)
        assert refused.is_error and refused.structured_content["error"]["param"] == param, param
    assert len(backend.runs) == 1


def test_failures_are_one_sentence_never_a_traceback():
    tools = Tools(Recorder())
    missing = call(tools, "get_job", {"job_id": "job_x"})
    bug = call(tools, "cancel_job", {"job_id": "job_x"})
    assert missing.is_error and missing.content[0].text == "no job 'job_x'"
    assert bug.is_error and bug.content[0].text == "cancel_job failed inside comfyfn (see its log)"
    assert call(tools, "no_such_tool", {}).is_error


@pytest.mark.parametrize("size", [(1600, 900), (64, 64)])
def test_a_preview_is_a_jpeg_at_most_512_pixels_on_its_longer_side(size):
    buffer = io.BytesIO()
    Image.new("RGB", size, "red").save(buffer, "PNG")
    shown = preview(OutputFile("a.png", "file:///a.png", "image/png", buffer.getvalue()))
    assert shown is not None and shown.mime_type == "image/jpeg"
    image = Image.open(io.BytesIO(base64.b64decode(shown.data)))
    assert max(image.size) == min(PREVIEW_SIDE, max(size))
    assert image.size[0] * size[1] == pytest.approx(image.size[1] * size[0], rel=0.01)
