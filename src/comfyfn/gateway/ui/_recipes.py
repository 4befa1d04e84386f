"""Recipes in the web app: the ones this gateway can find (built-ins and ``$COMFYFN_RECIPES``),
and a recipe run for a list of topics as one gateway job per image, grouped by topic.

Each image is generated at the recipe's generate size, or — where that is over the gateway's
``max_pixels`` — at the largest size of the same aspect ratio within it (the delivered size
is reported with each image; the page shows what was generated)."""

from __future__ import annotations

import warnings
from typing import Any

from pydantic import BaseModel, Field

from comfyfn.errors import ConfigError
from comfyfn.gateway.errors import ApiError
from comfyfn.gateway.runtime import Runtime
from comfyfn.gateway.service import create_job, job_view, served_or_404
from comfyfn.jobs.schema import KeyRecord
from comfyfn.recipes import Recipe, list_recipes, load_recipe, nearest_generate_size
from comfyfn.workflow import ComfyWarning

__all__ = ["MAX_TOPICS", "RecipeRun", "recipe_list", "run_recipe"]

MAX_TOPICS = 100  #: topics of one run
MAX_IMAGES = 400  #: jobs of one run


class RecipeRun(BaseModel):
    topics: list[str] = Field(min_length=1, max_length=MAX_TOPICS)
    seed: int = Field(default=0, ge=0, le=2**53)


def _outline(recipe: Recipe) -> dict[str, Any]:
    return {
        "name": recipe.name,
        "description": recipe.description,
        "workflow": recipe.workflow,
        "images_per_topic": recipe.images_per_topic,
        "outputs": [
            {
                "name": out.name,
                "deliver": list(out.deliver),
                "generate": list(out.generate),
                "count": out.count,
            }
            for out in recipe.outputs
        ],
    }


def recipe_list() -> list[dict[str, Any]]:
    """Every recipe found by name, outlined: its outputs and their sizes."""
    return [_outline(recipe) for recipe in list_recipes()]


def _load(name: str) -> Recipe:
    if "/" in name or "\\" in name or name.startswith("."):  # by name only, never a path
        raise ApiError(404, f"no recipe {name!r}", param="recipe", code="recipe_not_found")
    try:
        return load_recipe(name)
    except ConfigError:  # its text may name the gateway's folders: not shown
        raise ApiError(
            404, f"no usable recipe {name!r}", param="recipe", code="recipe_not_found"
        ) from None


def _within(params: dict[str, Any], deliver: dict[str, Any], max_pixels: int) -> dict[str, Any]:
    """``params`` with width/height brought within ``max_pixels`` (same aspect ratio)."""
    if params["width"] * params["height"] <= max_pixels:
        return params
    width, height = nearest_generate_size(
        deliver["width"], deliver["height"], max_pixels=max_pixels
    )
    return {**params, "width": width, "height": height}


def _rows(recipe: Recipe, run: RecipeRun) -> tuple[list[dict[str, Any]], list[str]]:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ComfyWarning)
        rows = []
        for row in recipe.rows(run.topics, seed=run.seed):
            rows.append(row)
            if len(rows) > MAX_IMAGES:
                raise ApiError(
                    422,
                    f"topics: {recipe.name} makes more than {MAX_IMAGES} images; send fewer topics",
                    param="topics",
                    code="limit_exceeded",
                )
    if not rows:
        raise ApiError(422, "topics: give at least one topic", param="topics")
    return rows, [str(w.message) for w in caught if issubclass(w.category, ComfyWarning)]


async def run_recipe(
    runtime: Runtime, key: KeyRecord, name: str, run: RecipeRun, base_url: str
) -> dict[str, Any]:
    """Queue one job per image of ``name`` for ``run.topics``: the jobs, grouped by topic."""
    recipe = _load(name)
    served = served_or_404(runtime, recipe.workflow)
    rows, notes = _rows(recipe, run)
    groups: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        params = {k: v for k, v in row.items() if not k.startswith("_")}
        params = _within(params, row["_deliver"], runtime.settings.max_pixels)
        job = await create_job(runtime, key, served.name, params, None, None)
        groups.setdefault(row["_topic"], []).append(
            {
                "output": row["_output"],
                "name": row["_name"],
                "deliver": row["_deliver"],
                "job": job_view(runtime, job, base_url),
            }
        )
    return {
        "recipe": recipe.name,
        "groups": [{"topic": topic, "items": items} for topic, items in groups.items()],
        "notes": notes,
    }
