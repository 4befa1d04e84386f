"""Planning a recipe over a file of topics in the library (comfyfn.recipes.plan_topics):
what ``comfyfn recipe run`` counted and read itself."""

from __future__ import annotations

import pytest

from comfyfn.errors import ConfigError
from comfyfn.recipes import load_recipe, plan_topics


def test_every_output_of_every_topic_is_planned_and_comments_are_skipped(tmp_path):
    topics = tmp_path / "topics.txt"
    topics.write_text("\ufeff龙井茶\n# not a topic\n\n丝绸围巾\n", encoding="utf-8")
    recipe = load_recipe("social")
    plan = plan_topics(recipe, topics, seed=7)
    assert plan.total == 2 * recipe.images_per_topic and plan.workflow == recipe.workflow
    rows = list(plan.rows)
    assert len(rows) == plan.total
    assert {row["_topic"] for row in rows} == {"龙井茶", "丝绸围巾"}
    assert plan_topics(recipe, topics, workflow="zimage").workflow == "zimage"


@pytest.mark.parametrize(
    ("content", "named"),
    [(b"# only a comment\n\n", "no topics"), (b"\xff\xfe bad", "is not UTF-8")],
)
def test_a_file_without_topics_or_not_utf8_is_named(tmp_path, content, named):
    topics = tmp_path / "topics.txt"
    topics.write_bytes(content)
    with pytest.raises(ConfigError, match=named):
        plan_topics(load_recipe("social"), topics)


def test_a_missing_file_is_named(tmp_path):
    with pytest.raises(ConfigError, match="cannot read"):
        plan_topics(load_recipe("social"), tmp_path / "missing.txt")
