"""The YAML job file's schema (pydantic): what :func:`comfyfn.batch.jobfile.read_job_file`
accepts. Every problem names the file and the setting:
``job.yaml: vary.seed: the range must go up, at most 100001 values``. The rows themselves
are not checked here: a bad row is a row error naming row and column, and the rest runs.
"""

from __future__ import annotations

from typing import Annotated, Any, ClassVar

from pydantic import AfterValidator, BeforeValidator, Field, model_validator

from comfyfn._yaml import Settings, described
from comfyfn.batch.rows import template_problem
from comfyfn.batch.variations import vary_values

__all__ = ["JobFile"]


def _workflow(value: Any) -> Any:
    if isinstance(value, str | dict):
        return value
    raise ValueError(
        f"must be a built-in name, a workflow file or a workflow mapping, not {described(value)}"
    )


def _template(template: str) -> str:
    problem = template_problem(template)
    if problem is not None:
        raise ValueError(problem)
    return template


def _vary(value: Any) -> Any:
    """``'1..8'`` and ``'ink, photo'`` become lists, as on the command line."""
    if isinstance(value, str):
        return vary_values(value)
    if isinstance(value, list):
        return value
    raise ValueError(f"must be a list or 'a..b', not {described(value)}")


def _scalar(value: Any) -> Any:
    if isinstance(value, str | int | float):  # bool is an int: true/false for a BOOLEAN input
        return value
    raise ValueError(f"must be text or a number, not {described(value)}")


Workflow = Annotated[str | dict[str, Any], BeforeValidator(_workflow)]
Values = Annotated[
    list[Annotated[Any, AfterValidator(_scalar)]], BeforeValidator(_vary), Field(min_length=1)
]


class JobFile(Settings):
    """A whole job file: where the rows come from and how they become jobs."""

    shape: ClassVar[str] = "a mapping of settings (workflow, defaults, vary, rows or input…)"

    workflow: Workflow | None = None
    defaults: dict[str, Any] | None = None
    template: Annotated[str, AfterValidator(_template)] | None = None
    vary: dict[str, Values] | None = None
    rows: list[Any] | None = None
    input: str | None = None
    prime: int | None = Field(None, ge=0)

    @model_validator(mode="after")
    def _one_source(self) -> JobFile:
        if self.rows is None and self.input is None:
            raise ValueError("give either 'rows' (a list) or 'input' (a CSV/JSONL file)")
        if self.rows is not None and self.input is not None:
            raise ValueError("give either 'rows' or 'input', not both")
        return self
