"""Public classes and functions show the package that exports them (as httpx and openai do):
in reprs, tracebacks and pickles ``comfyfn.models.ChecksumMismatch``, not
``comfyfn.models._errors.ChecksumMismatch``; and their fields still resolve for
``typing.get_type_hints`` and pydantic."""

from __future__ import annotations

import dataclasses
import importlib
import inspect
import pickle
import traceback
import typing
from collections.abc import Iterator

import pydantic
import pytest

import comfyfn
from tests.support.packages import PACKAGES


def exported() -> Iterator[tuple[str, str, object]]:
    """(package, name, object) for every class and function a package exports that comfyfn
    defines."""
    for package in PACKAGES:
        module = importlib.import_module(package)
        for name in module.__all__:
            obj = getattr(module, name)
            ours = getattr(obj, "__module__", "").startswith("comfyfn")
            if ours and (isinstance(obj, type) or inspect.isfunction(obj)):
                yield package, name, obj


EXPORTED = list(exported())


def test_the_public_face_is_large_enough_to_mean_something():
    assert len(EXPORTED) > 150


def ids(items: list[tuple[str, str, object]]) -> list[str]:
    return [f"{package}.{name}" for package, name, _ in items]


@pytest.mark.parametrize(("package", "name", "obj"), EXPORTED, ids=ids(EXPORTED))
def test_each_shows_a_public_module_that_has_it(package, name, obj):
    assert not any(part.startswith("_") for part in obj.__module__.split(".")), obj.__module__
    assert getattr(importlib.import_module(obj.__module__), obj.__name__) is obj


CLASSES = [e for e in EXPORTED if isinstance(e[2], type)]


@pytest.mark.parametrize(("package", "name", "obj"), CLASSES, ids=ids(CLASSES))
def test_each_class_s_fields_still_resolve(package, name, obj):
    typing.get_type_hints(obj)


def test_reprs_tracebacks_and_pickles_name_the_public_module():
    from comfyfn.models import ChecksumMismatch, Pulled

    assert repr(comfyfn.Workflow) == "<class 'comfyfn.workflow.Workflow'>"
    assert repr(comfyfn.Client) == "<class 'comfyfn.client.Client'>"
    error = ChecksumMismatch.__new__(ChecksumMismatch)
    (line,) = traceback.format_exception_only(ChecksumMismatch, error)
    assert line.startswith("comfyfn.models.ChecksumMismatch")
    assert b"comfyfn.models" in pickle.dumps(ChecksumMismatch)
    assert pickle.loads(pickle.dumps(Pulled)) is Pulled


@pytest.mark.parametrize(
    "name",
    [
        "workflow.InputImage",
        "workflow.Param",
        "workflow.Workflow",
        "models.ModelFile",
        "models.ModelManifest",
        "models.Pulled",
        "models.Pushed",
        "client.Credentials",
        "mcp.JobOutcome",
    ],
)
def test_pydantic_reads_a_presented_dataclass_s_fields(name):
    package, _, attr = name.rpartition(".")
    cls = getattr(importlib.import_module(f"comfyfn.{package}"), attr)
    fields = {f.name for f in dataclasses.fields(cls)}
    schema = pydantic.TypeAdapter(cls).core_schema
    assert schema and fields
    assert all(not isinstance(f.type, str) for f in dataclasses.fields(cls)), name
