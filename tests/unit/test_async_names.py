"""One naming rule for blocking calls and their async twins, checked over every package's
public names: the blocking call has the plain name; at module level its async twin is the same
name with an ``a`` in front (``generate``/``agenerate``, ``map_rows``/``amap_rows``,
``warm``/``awarm``); an ``Async`` class has the same methods as its blocking twin, async
(``Client``/``AsyncClient``; ``close`` is ``aclose``, as in httpx). No ``_async`` or ``_sync``
suffixes."""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable
from typing import Any

import pytest

import comfyfn
from tests.support.packages import PACKAGES


def is_async(obj: Any) -> bool:
    return inspect.iscoroutinefunction(obj) or inspect.isasyncgenfunction(obj)


def functions(package: str) -> dict[str, Callable[..., Any]]:
    module = importlib.import_module(package)
    found = {name: getattr(module, name) for name in module.__all__}
    return {name: f for name, f in found.items() if inspect.isfunction(f)}


@pytest.mark.parametrize("package", PACKAGES)
def test_module_level_twins_follow_the_rule(package):
    found = functions(package)
    assert not [n for n in found if n.endswith(("_async", "_sync"))], package
    for name, function in found.items():
        twin = found.get(f"a{name}")
        if twin is not None:
            assert not is_async(function) and is_async(twin), (package, name)
        if is_async(function) and name.startswith("a") and name[1:] in found:
            assert not is_async(found[name[1:]]), (package, name)


def test_there_are_twins_to_check():
    twins = [(p, n) for p in PACKAGES for n in functions(p) if f"a{n}" in functions(p)]
    assert {("comfyfn", "generate"), ("comfyfn.batch", "map_rows")} <= set(twins)


@pytest.mark.parametrize(
    ("blocking", "asynchronous"),
    [(comfyfn.Client, comfyfn.AsyncClient), (comfyfn.Job, comfyfn.AsyncJob)],
)
def test_async_classes_have_their_twins_methods(blocking, asynchronous):
    def public(cls: type) -> set[str]:
        return {n for n in dir(cls) if not n.startswith("_")}

    renamed = {"close": "aclose"}
    assert {renamed.get(n, n) for n in public(blocking)} == public(asynchronous)
    for name in public(blocking):
        mine, theirs = getattr(blocking, name), getattr(asynchronous, renamed.get(name, name))
        if inspect.isfunction(mine) and is_async(theirs):
            assert not is_async(mine), name
