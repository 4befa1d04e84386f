"""The tools, one definition for both transports: built from the served workflows (their
typed request models, the same the gateway's OpenAPI document shows) and run on a
:class:`~comfyfn.mcp._backend.Backend`.

| tool | what |
|---|---|
| ``generate_image`` | the served ``zimage-turbo`` (``prompt``, ``negative``, ``width``, …) |
| ``edit_image`` | the served ``zimage-edit`` (``image``, ``prompt``, ``denoise``, …) |
| one per other served workflow | its name (``workflow_<name>`` if that is taken) |
| ``list_workflows`` | the workflows, their tools and parameters |
| ``get_job`` / ``cancel_job`` | a job by id |
| ``run_batch`` | a recipe over topics, or rows of parameters, as one job per image |
"""

from __future__ import annotations

import copy
import logging
import re
from collections.abc import Mapping
from typing import Any

import mcp_types as types

from comfyfn.errors import ComfyError
from comfyfn.gateway.errors import ApiError
from comfyfn.gateway.registry import Served
from comfyfn.mcp._backend import Backend, Progress, ToolError, validated
from comfyfn.mcp._content import data_result, error_result, jobs_result, result
from comfyfn.recipes import list_recipes, load_recipe

__all__ = ["MAX_BATCH_ROWS", "Tools"]

log = logging.getLogger("comfyfn.mcp")

MAX_BATCH_ROWS = 64  #: jobs one ``run_batch`` call may make
#: the tool of a served workflow by its name; others are named after the workflow
NAMED = {"zimage-turbo": "generate_image", "zimage-edit": "edit_image"}
_DESCRIPTIONS = {
    "generate_image": "Generate images from a prompt (Chinese or English) with Z-Image-Turbo.",
    "edit_image": "Edit an input image as a prompt says (img2img: denoise sets how much).",
}
_JOB_ID = {
    "type": "object",
    "properties": {"job_id": {"type": "string", "description": "the job's id"}},
    "required": ["job_id"],
    "additionalProperties": False,
}


class Tools:
    """The tools of the workflows ``backend`` serves, and their calls."""

    def __init__(self, backend: Backend) -> None:
        self.backend = backend
        self.workflows: dict[str, Served] = {}  #: tool name → served workflow
        fixed = {"list_workflows", "get_job", "cancel_job", "run_batch"}
        for served in backend.registry:
            name = NAMED.get(served.name) or re.sub(r"[^A-Za-z0-9_.-]", "_", served.name)
            if name in fixed or (served.name not in NAMED and name in NAMED.values()):
                name = f"workflow_{name}"
            self.workflows[name[:128]] = served

    # -- definitions ---------------------------------------------------------------------

    def definitions(self) -> list[types.Tool]:
        tools = [self._workflow_tool(name, served) for name, served in self.workflows.items()]
        return [
            *tools,
            types.Tool(
                name="list_workflows",
                description="The served workflows: their tools, parameters and input images.",
                input_schema={"type": "object", "properties": {}, "additionalProperties": False},
                annotations=types.ToolAnnotations(read_only_hint=True),
            ),
            types.Tool(
                name="get_job",
                description="A job's state, seed, parameters and output links.",
                input_schema=_JOB_ID,
                annotations=types.ToolAnnotations(read_only_hint=True),
            ),
            types.Tool(
                name="cancel_job",
                description="Cancel a queued or running job.",
                input_schema=_JOB_ID,
                annotations=types.ToolAnnotations(destructive_hint=True, idempotent_hint=True),
            ),
            types.Tool(
                name="run_batch",
                description=(
                    "Run a recipe (outputs per topic at platform sizes) over a list of topics, "
                    f"or a list of rows of a workflow's parameters: one job per image (at most "
                    f"{MAX_BATCH_ROWS})."
                ),
                input_schema=self._batch_schema(),
            ),
        ]

    def schema(self, served: Served) -> dict[str, Any]:
        """The workflow's typed request as the tool's input schema: a prompt without a
        default is required, and input images say how this transport takes them."""
        schema = copy.deepcopy(served.request_model.model_json_schema())
        properties = schema.get("properties", {})
        for name in served.images:
            properties[name]["description"] = self.backend.image_description
        prompt = next((p for p in served.workflow.params if p.name == "prompt"), None)
        if prompt is not None and not prompt.default and "prompt" in properties:
            schema["required"] = [*schema.get("required", []), "prompt"]
        return schema

    def _workflow_tool(self, name: str, served: Served) -> types.Tool:
        description = _DESCRIPTIONS.get(name) or f"Run the workflow {served.name!r}."
        return types.Tool(
            name=name,
            title=served.name,
            description=f"{description} Returns a preview, links to the full images, the "
            "seed and parameters; progress is reported while it runs.",
            input_schema=self.schema(served),
        )

    def _batch_schema(self) -> dict[str, Any]:
        recipes = sorted({r.name for r in list_recipes()})
        return {
            "type": "object",
            "properties": {
                "recipe": {
                    "type": "string",
                    "enum": recipes,
                    "description": "a recipe: its outputs (platform sizes) for each topic",
                },
                "topics": {
                    "type": "array",
                    "items": {"type": "string", "minLength": 1},
                    "description": "one topic per entry (with recipe), e.g. '服装: 白色T恤'",
                },
                "rows": {
                    "type": "array",
                    "items": {"type": "object"},
                    "description": "instead of a recipe: one object of parameters per job",
                },
                "workflow": {
                    "type": "string",
                    "enum": sorted(s.name for s in self.workflows.values()),
                    "description": "the workflow to run (default: the recipe's, or zimage-turbo)",
                },
                "seed": {
                    "type": "integer",
                    "minimum": 0,
                    "description": "base seed of the recipe's stable seeds",
                },
            },
            "additionalProperties": False,
        }

    # -- calls ---------------------------------------------------------------------------

    async def call(
        self, name: str, arguments: Mapping[str, Any], request: Any, progress: Progress
    ) -> types.CallToolResult:
        """Run tool ``name``; every refusal or failure is the tool's error, one sentence."""
        try:
            caller = await self.backend.caller(request)
            return await self._call(caller, name, dict(arguments), progress)
        except ToolError as exc:
            return error_result(exc)
        except ApiError as exc:
            return error_result(ToolError.of(exc))
        except ComfyError as exc:
            return error_result(ToolError(str(exc)))
        except Exception:
            log.exception("tool %s failed", name)
            return error_result(ToolError(f"{name} failed inside comfyfn (see its log)"))

    async def _call(
        self, caller: Any, name: str, arguments: dict[str, Any], progress: Progress
    ) -> types.CallToolResult:
        backend = self.backend
        if name in self.workflows:
            served = self.workflows[name]
            values = validated(served, arguments)
            return result(await backend.run(caller, served, values, progress))
        if name == "list_workflows":
            described = [self._describe(t, s) for t, s in self.workflows.items()]
            return data_result({"workflows": described})
        if name in ("get_job", "cancel_job"):
            job_id = arguments.get("job_id")
            if not isinstance(job_id, str) or not job_id:
                raise ToolError("job_id: a job id is required", param="job_id")
            get = backend.get_job if name == "get_job" else backend.cancel_job
            return result(await get(caller, job_id), previews=False)
        if name == "run_batch":
            served, rows = self._batch(arguments)
            return jobs_result(await backend.run_rows(caller, served, rows, progress))
        raise ToolError(f"unknown tool {name!r}; list_workflows names the workflows' tools")

    def _describe(self, tool: str, served: Served) -> dict[str, Any]:
        schema = self.schema(served)
        return {
            "name": served.name,
            "tool": tool,
            "parameters": sorted(schema.get("properties", {})),
            "required": schema.get("required", []),
            "images": list(served.images),
        }

    def _batch(self, arguments: dict[str, Any]) -> tuple[Served, list[dict[str, Any]]]:
        """The workflow and the rows a ``run_batch`` call asks for (checked)."""
        unknown = sorted(set(arguments) - {"recipe", "topics", "rows", "workflow", "seed"})
        if unknown:
            raise ToolError(f"{unknown[0]}: not a run_batch parameter", param=unknown[0])
        recipe_name, topics, rows = (arguments.get(k) for k in ("recipe", "topics", "rows"))
        if (recipe_name is None) == (rows is None):
            raise ToolError("recipe: give a recipe and topics, or rows (not both)", param="recipe")
        workflow = arguments.get("workflow")
        if rows is not None:
            if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
                raise ToolError("rows: a list of objects of parameters", param="rows")
            chosen = workflow or "zimage-turbo"
        else:
            if not isinstance(recipe_name, str):
                raise ToolError("recipe: a recipe name", param="recipe")
            if (
                not isinstance(topics, list)
                or not topics
                or not all(isinstance(t, str) for t in topics)
            ):
                raise ToolError("topics: a list of one or more topics", param="topics")
            seed = arguments.get("seed", 0)
            if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
                raise ToolError("seed: a whole number, 0 or more", param="seed")
            known = sorted({r.name for r in list_recipes()})
            if recipe_name not in known:  # by name only: a path would read the host's files
                raise ToolError(
                    f"recipe: unknown recipe {recipe_name!r}; choose from {', '.join(known)}",
                    param="recipe",
                )
            recipe = load_recipe(recipe_name)
            chosen = workflow or recipe.workflow
            rows = list(recipe.rows(topics, seed=seed))
        served = next((s for s in self.workflows.values() if s.name == chosen), None)
        if served is None:
            raise ToolError(f"workflow: {chosen!r} is not served here", param="workflow")
        if not rows or len(rows) > MAX_BATCH_ROWS:
            raise ToolError(
                f"rows: {len(rows)} jobs; a batch makes 1 to {MAX_BATCH_ROWS}", param="rows"
            )
        for i, row in enumerate(rows):
            try:
                validated(served, {k: v for k, v in row.items() if not k.startswith("_")})
            except ToolError as exc:
                raise ToolError(f"rows[{i}].{exc}", param=f"rows[{i}].{exc.param}") from None
        return served, rows
