"""Public names shown under the package that exports them, as httpx and openai do: a
traceback says ``comfyfn.models.ChecksumMismatch`` and ``repr(comfyfn.Workflow)`` says
``comfyfn.workflow.Workflow``, not the private module that defines them. The price, as in
httpx: ``inspect.getsource`` of such a class looks in the package's ``__init__`` and finds
nothing (read the defining module's file instead)."""

from __future__ import annotations

import inspect
import typing
from collections.abc import Iterable, Mapping


def present(package: str, namespace: Mapping[str, object], names: Iterable[str]) -> None:
    """Show each class and function of ``names`` in ``namespace`` that a private module of
    ``package`` defines as ``package.Name``. A class's own annotations are resolved first, in
    the module that wrote them, so ``typing.get_type_hints`` and pydantic still read its
    fields (they look names up in the module a class says it is from)."""
    for name in names:
        obj = namespace[name]
        if not isinstance(obj, type) and not inspect.isfunction(obj):
            continue
        if not _privately_below(obj.__module__, package):
            continue
        if isinstance(obj, type) and not _annotations_resolved(obj):
            continue  # a name only the type checker sees: tests/unit/test_public_names.py
        obj.__module__ = package


def _privately_below(module: str, package: str) -> bool:
    inner = module.removeprefix(package + ".")
    return inner != module and any(part.startswith("_") for part in inner.split("."))


def _annotations_resolved(cls: type) -> bool:
    own = inspect.get_annotations(cls)
    if not own:
        return True
    try:
        hints = typing.get_type_hints(cls, include_extras=True)
    except NameError:
        return False
    cls.__annotations__ = {field: hints[field] for field in own}
    for field in getattr(cls, "__dataclass_fields__", {}).values():
        field.type = hints.get(field.name, field.type)  # what pydantic reads of a dataclass
    return True
