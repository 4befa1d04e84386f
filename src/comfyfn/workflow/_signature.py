"""Give a callable the signature and docstring of a workflow's parameters."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any, TypeVar

from comfyfn.workflow._workflow import Workflow

__all__ = ["signature_for"]

F = TypeVar("F", bound=Callable[..., Any])


def signature_for(workflow: Workflow, fn: F) -> F:
    """Set ``fn.__signature__``/``__doc__`` to the workflow's named parameters.

    The callable still accepts any ``"node.input"`` path through ``**kwargs``.
    """
    params = workflow.params
    fn.__signature__ = inspect.Signature(  # type: ignore[attr-defined]
        [
            inspect.Parameter(
                p.name,
                inspect.Parameter.KEYWORD_ONLY,
                default=None if p.name == "seed" else p.default,
                annotation=p.python_type,
            )
            for p in params
        ]
        + [inspect.Parameter("paths", inspect.Parameter.VAR_KEYWORD)]
    )
    lines = [f"Run the workflow {workflow.name or ''} and return its Generation.", "", "Args:"]
    for p in params:
        extra = f" {p.min}..{p.max}" if p.min is not None or p.max is not None else ""
        lines.append(f"    {p.name} ({p.type}{extra}): {p.description} [{p.path}]")
    fn.__doc__ = "\n".join(lines)
    fn.__name__ = (workflow.name or "workflow").replace("-", "_")
    return fn
