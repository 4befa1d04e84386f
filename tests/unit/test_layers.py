"""The import graph follows the layers — workflow ← client ← fleet ← batch ← gateway ← cli —
and never goes backwards."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import comfyfn

SRC = Path(comfyfn.__file__).parent
#: what each layer (a package) may not import: only layers below it
ABOVE = ["comfyfn.cli", "comfyfn.gateway", "comfyfn.batch", "comfyfn.fleet", "comfyfn.client"]
FORBIDDEN = {
    "storage": tuple(ABOVE),
    "workflow": tuple(ABOVE),
    "client": tuple(ABOVE[:-1]),
    "models": tuple(ABOVE[:-1]),
    "fleet": tuple(ABOVE[:-2]),
    "batch": ("comfyfn.cli", "comfyfn.gateway"),
    "gateway": ("comfyfn.cli",),
}


def imported(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
        elif isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
    return names


def layer_files(layer: str) -> list[Path]:
    return sorted((SRC / layer).rglob("*.py"))


def test_no_layer_imports_a_layer_above_it():
    wrong = [
        f"{path.relative_to(SRC)} imports {name}"
        for layer, forbidden in FORBIDDEN.items()
        for path in layer_files(layer)
        for name in imported(path)
        if any(name == f or name.startswith(f + ".") for f in forbidden)
    ]
    assert wrong == []


def test_import_comfyfn_loads_no_batch_gateway_database_or_http_stack():
    code = (
        "import sys, comfyfn; print(sorted(m for m in sys.modules if m.startswith(("
        "'comfyfn.batch', 'comfyfn.fleet', 'comfyfn.gateway', 'sqlite3', 'sqlalchemy', "
        "'fastapi', 'uvicorn', 'httpx', 'websockets', 'comfyfn.client'))))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_the_client_names_load_on_first_use():
    code = "import comfyfn; print(comfyfn.Client.__module__, comfyfn.Timeout.__module__)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["comfyfn.client._sync", "httpx"]
    assert {"Client", "AsyncClient", "Job"} <= set(dir(comfyfn))
