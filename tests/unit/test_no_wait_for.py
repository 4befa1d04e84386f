"""No ``asyncio.wait_for`` in the library: on Python 3.11 it returns the inner result when a
cancellation arrives as that result does, swallowing the cancellation (fixed in 3.12), so a
loop or a job cancelled at that moment runs on. ``async with asyncio.timeout(...)`` does not."""

from __future__ import annotations

import ast
from pathlib import Path

import comfyfn

SRC = Path(comfyfn.__file__).parent


def wait_for_calls(source: str) -> list[int]:
    """The lines of ``source`` that use ``asyncio.wait_for``."""
    return [
        node.lineno
        for node in ast.walk(ast.parse(source))
        if isinstance(node, ast.Attribute)
        and node.attr == "wait_for"
        and isinstance(node.value, ast.Name)
        and node.value.id == "asyncio"
    ]


def test_the_check_finds_a_call_and_nothing_else():
    source = "import asyncio\nx = asyncio.wait_for(f(), 1)\nwait_for(f)\npoll.wait_for(f)\n"
    assert wait_for_calls(source) == [2]


def test_the_library_never_calls_asyncio_wait_for():
    found = {
        str(path.relative_to(SRC)): lines
        for path in sorted(SRC.rglob("*.py"))
        if (lines := wait_for_calls(path.read_text(encoding="utf-8")))
    }
    assert found == {}, f"use `async with asyncio.timeout(...)` instead: {found}"
