"""The import graph follows the layers: client ← fleet ← batch/gateway, never backwards."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import comfyfn

SRC = Path(comfyfn.__file__).parent
#: what each layer may not import (directly or through the package)
FORBIDDEN = {
    "client": ("comfyfn.fleet", "comfyfn.batch", "comfyfn.gateway"),
    "fleet": ("comfyfn.batch", "comfyfn.gateway"),
    "batch": ("comfyfn.gateway",),
}
CLIENT_LAYER = [
    "client.py",
    "sync.py",
    "_http.py",
    "_job.py",
    "_outputs.py",
    "_socket.py",
    "events.py",
    "result.py",
    "errors.py",
    "workflow.py",
    "graph.py",
]


def imported(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
        elif isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
    return names


def layer_files(layer: str) -> list[Path]:
    if layer == "client":
        return [SRC / name for name in CLIENT_LAYER]
    return sorted((SRC / layer).rglob("*.py"))


def test_no_layer_imports_a_layer_above_it():
    wrong = [
        f"{path.relative_to(SRC)} imports {name}"
        for layer, forbidden in FORBIDDEN.items()
        for path in layer_files(layer)
        for name in imported(path)
        if name.startswith(forbidden)
    ]
    assert wrong == []


def test_import_comfyfn_loads_no_batch_gateway_or_database():
    code = (
        "import sys, comfyfn; print(sorted(m for m in sys.modules if m.startswith(("
        "'comfyfn.batch', 'comfyfn.fleet', 'comfyfn.gateway', 'sqlite3', 'sqlalchemy', "
        "'fastapi', 'uvicorn'))))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
