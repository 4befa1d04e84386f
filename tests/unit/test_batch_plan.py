"""Planning a batch from a job file in the library (comfyfn.batch.plan_job_file): what the
CLI printed as usage errors, a Python caller gets as ConfigErrors naming the file or option."""

from __future__ import annotations

import pytest

from comfyfn.batch import Row, plan_job_file
from comfyfn.errors import ConfigError


def test_a_csv_with_variations_counts_every_combination_and_reads_lazily(tmp_path):
    source = tmp_path / "rows.csv"
    source.write_text("prompt,seed\na cat,1\na dog,2\n")
    plan = plan_job_file(source, vary=["steps=2,4", "cfg=1..3"])
    assert plan.total == 2 * 2 * 3 and plan.workflow is None and plan.prime is None
    first = next(plan.rows)
    assert isinstance(first, Row) and first.values["prompt"] == "a cat"
    assert len([first, *plan.rows]) == 12


def test_a_job_yaml_names_its_workflow_template_and_priming_and_options_win(tmp_path):
    job = tmp_path / "job.yaml"
    job.write_text(
        "workflow: zimage\ntemplate: '{topic}, poster'\nprime: 3\n"
        "rows:\n  - {topic: tea}\n  - {topic: silk}\n"
    )
    plan = plan_job_file(job)
    assert (plan.total, plan.workflow, plan.prime) == (2, "zimage", 3)
    assert plan.variables == frozenset({"topic"})
    assert plan_job_file(job, workflow="zimage-turbo", prime=1).workflow == "zimage-turbo"
    rows = list(plan.rows)
    assert all(isinstance(r, Row) for r in rows), rows
    assert [r.values["prompt"] for r in rows if isinstance(r, Row)] == [
        "tea, poster",
        "silk, poster",
    ]


def test_an_image_column_defaults_to_the_edit_workflow(tmp_path):
    source = tmp_path / "rows.csv"
    source.write_text("prompt,image\nrecolour,photo.png\n")
    assert plan_job_file(source).workflow == "zimage-edit"


@pytest.mark.parametrize(
    ("text", "options", "named"),
    [
        ("prompt\n", {}, "no rows to run"),
        ("tea\nsilk\n", {}, "names no workflow parameter"),
        ("prompt\ntea\n", {"template": "{topic"}, "--template '{topic'"),
        ("prompt\ntea\n", {"vary": ["style=a,b"]}, "--vary style"),
    ],
)
def test_what_a_file_or_option_gets_wrong_is_named_before_anything_runs(
    tmp_path, text, options, named
):
    source = tmp_path / "rows.csv"
    source.write_text(text)
    with pytest.raises(ConfigError, match=named):
        plan_job_file(source, **options)
