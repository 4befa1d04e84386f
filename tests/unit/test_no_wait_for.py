"""No ``asyncio.wait_for`` in the library: on Python 3.11 it returns the inner result when a
cancellation arrives as that result does, swallowing the cancellation (fixed in 3.12), so a
loop or a job cancelled at that moment runs on. ``async with asyncio.timeout(...)`` does not."""

from __future__ import annotations

import ast
from pathlib import Path

import comfyfn

SRC = Path(comfyfn.__file__).parent


def wait_for_uses(source: str) -> list[int]:
    """The lines of ``source`` that use asyncio's ``wait_for`` (``asyncio.wait_for``,
    ``asyncio.tasks.wait_for``, or imported from either)."""
    modules = ("asyncio", "asyncio.tasks")
    return sorted(
        node.lineno
        for node in ast.walk(ast.parse(source))
        if (
            isinstance(node, ast.Attribute)
            and node.attr == "wait_for"
            and ast.unparse(node.value) in modules
        )
        or (
            isinstance(node, ast.ImportFrom)
            and node.module in modules
            and any(alias.name == "wait_for" for alias in node.names)
        )
    )


def test_the_check_finds_every_spelling_and_nothing_else():
    source = (
        "import asyncio\n"
        "x = asyncio.wait_for(f(), 1)\n"
        "from asyncio import wait_for as w\n"
        "y = asyncio.tasks.wait_for(f(), 1)\n"
        "wait_for(f)\n"
        "poll.wait_for(f)\n"
        "from tests.support.polling import wait_for\n"
    )
    assert wait_for_uses(source) == [2, 3, 4]


def test_the_library_never_uses_asyncio_wait_for():
    sources = sorted(SRC.rglob("*.py"))
    assert len(sources) > 100  # the whole library was looked at
    found = {
        str(path.relative_to(SRC)): lines
        for path in sources
        if (lines := wait_for_uses(path.read_text(encoding="utf-8")))
    }
    assert found == {}, f"use `async with asyncio.timeout(...)` instead: {found}"
