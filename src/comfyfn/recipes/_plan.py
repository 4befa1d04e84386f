"""From a recipe and a file of topics to the rows a batch runs (what ``comfyfn recipe run``
plans before anything is submitted), for Python users too::

    from comfyfn.recipes import load_recipe, plan_topics
    plan = plan_topics(load_recipe("social"), "topics.txt", seed=7)
    results = map_rows(plan.rows, server=..., workflow=plan.workflow)   # or a Batch
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from comfyfn.errors import ConfigError

if TYPE_CHECKING:
    from comfyfn.recipes import Recipe

__all__ = ["TopicPlan", "plan_topics", "read_topics"]


@dataclass
class TopicPlan:
    """A recipe's jobs for a file of topics: one dict of parameters per image (read
    lazily, see :meth:`Recipe.rows`), how many, and the workflow they run."""

    rows: Iterator[dict[str, Any]]
    total: int  #: topics × the recipe's images per topic
    workflow: str


def plan_topics(
    recipe: Recipe, topics: str | Path, *, seed: int = 0, workflow: str | None = None
) -> TopicPlan:
    """Plan ``recipe`` for every topic in ``topics`` (one per line, ``#`` starts a comment);
    :class:`~comfyfn.ConfigError` for a file that cannot be read or holds no topic."""
    path = Path(topics)
    count = sum(1 for t in read_topics(path) if t.strip() and not t.strip().startswith("#"))
    if count == 0:
        raise ConfigError(f"{path}: no topics (one per line; '#' starts a comment)")
    return TopicPlan(
        recipe.rows(read_topics(path), seed=seed),
        count * recipe.images_per_topic,
        workflow or recipe.workflow,
    )


def read_topics(path: Path) -> Iterator[str]:
    """The lines of a topics file, streamed; a ``ConfigError`` naming it if unreadable."""
    try:
        with path.open(encoding="utf-8-sig") as fh:
            yield from fh
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror}") from exc
    except UnicodeDecodeError as exc:
        raise ConfigError(
            f"{path} is not UTF-8 ({exc.reason} at byte {exc.start}); save it as UTF-8"
        ) from exc
