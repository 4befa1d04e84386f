"""The workflows a gateway serves, each with a pydantic model of its typed parameters.

The models are built from :attr:`comfyfn.Workflow.params` (types, ranges, steps, choices,
defaults), so the OpenAPI document shows every endpoint's parameters exactly, and a bad
request is refused with the field named before any job is created.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, create_model

from comfyfn.workflow import BUILTIN, Param, Workflow, builtin

__all__ = ["Registry", "Served"]

_PY = {"INT": int, "FLOAT": float, "STRING": str, "BOOLEAN": bool}
_SKIP = {"filename_prefix"}
#: image inputs are not request parameters until the gateway takes uploads itself: bound from
#: request text, a value would be read as a path on the gateway's own machine
_SKIP_TYPES = {"IMAGE"}


def _field(p: Param, max_prompt: int) -> tuple[Any, Any]:
    kind: Any = _PY.get(p.type, str)
    if p.type == "COMBO" and p.choices and not p.folder:
        kind = Literal[tuple(p.choices)]
    limits: dict[str, Any] = {}
    if p.type in ("INT", "FLOAT"):
        if p.min is not None:
            limits["ge"] = p.min
        if p.max is not None:
            limits["le"] = p.max
        if p.type == "INT" and isinstance(p.step, int) and p.step > 1:
            limits["multiple_of"] = p.step
    if p.type == "STRING":
        limits["max_length"] = max_prompt
    default = None if p.name == "seed" else p.default
    return (kind | None, Field(default=default, description=p.description or p.path, **limits))


@dataclass(frozen=True)
class Served:
    name: str
    workflow: Workflow
    model: type[BaseModel]

    def params(self, values: Mapping[str, Any]) -> dict[str, Any]:
        """Validated values (raises pydantic's ValidationError naming the field)."""
        model = self.model.model_validate(dict(values))
        return model.model_dump(exclude_unset=True, exclude_none=True)

    def effective(self, values: Mapping[str, Any]) -> dict[str, Any]:
        """``values`` with the workflow's default for every parameter not given (what runs)."""
        return {**{p.name: p.default for p in self.workflow.params}, **values}


class Registry:
    def __init__(self) -> None:
        self.served: dict[str, Served] = {}

    def add(self, name: str, workflow: Workflow, *, max_prompt: int = 4000) -> Served:
        fields: dict[str, Any] = {
            p.name: _field(p, max_prompt)
            for p in workflow.params
            if p.name not in _SKIP and p.type not in _SKIP_TYPES
        }
        model_name = "".join(part.title() for part in re.split(r"[^A-Za-z0-9]+", name)) + "Params"
        model = create_model(model_name, __config__=ConfigDict(extra="forbid"), **fields)
        served = Served(name, workflow, model)
        self.served[name] = served
        return served

    def load(self, workflows: Iterable[tuple[str, str]], *, max_prompt: int = 4000) -> None:
        """Serve each (name, built-in name or workflow file)."""
        for name, source in workflows:
            wf = builtin(source) if source in BUILTIN else Workflow.load(source, name=name)
            self.add(name, wf, max_prompt=max_prompt)

    def get(self, name: str) -> Served | None:
        return self.served.get(name)

    def __iter__(self) -> Iterator[Served]:
        return iter(self.served.values())
