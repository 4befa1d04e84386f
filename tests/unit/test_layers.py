"""The README's architecture map, checked: the packages of ``comfyfn`` in layers, imports going
one way only, and no package reaching into another's private (``_``) modules or names.

Lowest first (a package imports only the packages of the rows below its own, and the
top-level modules, which import no package):

- ``errors``, ``events``, ``result``, ``provenance``, ``delivery``, ``outputs`` (and the
  shared private ``_files``, ``_yaml``, ``_tasks``): public values, importing no package;
- ``workflow`` (pure), ``storage`` (where outputs go), ``engine`` (the local ComfyUI);
- ``client`` (one server; it starts the engine when no server is given), ``recipes``;
- ``models`` (what a workflow needs and loads, downloads, warm-up);
- ``fleet`` (a pool of servers: placement, priming, the job state machine, the row the
  shared queue holds);
- ``jobs`` (the durable job store: the one queue of API jobs and named batches, and the
  worker that runs a job's life for both);
- ``batch`` and ``gateway``: peers, neither imports the other;
- ``mcp``: over the gateway's service layer (its public modules) and the batch API;
- ``cli``.

The gateway mounts the MCP endpoint (:data:`MOUNTS`): the one import upward, made lazily
when ``/mcp`` is served, so ``comfyfn.gateway`` loads without ``comfyfn.mcp``.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import comfyfn

SRC = Path(comfyfn.__file__).parent
LAYERS: list[tuple[str, ...]] = [
    ("workflow", "storage", "engine"),
    ("client", "recipes"),
    ("models",),
    ("fleet",),
    ("jobs",),
    ("batch", "gateway"),
    ("mcp",),
    ("cli",),
]
RANK = {package: rank for rank, row in enumerate(LAYERS) for package in row}
#: imports upward that the map states: (file under src/comfyfn, package it imports)
MOUNTS = {("gateway/app.py", "mcp")}


def imported(source: str, module: str) -> Iterator[tuple[str, ...]]:
    """Every name ``source`` (the module ``module``, dotted) imports, as absolute dotted
    parts: ``from comfyfn.a import b`` gives ``comfyfn.a.b`` (a module or a name in it)."""
    package = module.split(".")[:-1]  # a module's package; an __init__'s own
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            yield from (tuple(alias.name.split(".")) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = package[: len(package) - node.level + 1] if node.level else []
            head = [*base, *(node.module.split(".") if node.module else [])]
            yield from ((*head, alias.name) for alias in node.names)


def problems(rel: str, source: str) -> list[str]:
    """What the file ``rel`` (a path under src/comfyfn) imports against the map."""
    parts = rel.removesuffix(".py").split("/")
    own = parts[0] if len(parts) > 1 else None
    found = []
    for name in imported(source, ".".join(["comfyfn", *parts])):
        if name[0] != "comfyfn" or len(name) < 2 or name[1] == own or name[1] not in RANK:
            continue
        target = name[1]
        shown = ".".join(name)
        if own is None:
            if rel != "__init__.py":
                found.append(f"{rel}: a top-level module imports the package {shown}")
        elif RANK[target] >= RANK[own] and (rel, target) not in MOUNTS:
            found.append(f"{rel}: {own} imports {shown}, not below it")
        if any(part.startswith("_") for part in name[2:]):
            found.append(f"{rel}: imports {shown}, private to {target}")
    return found


def test_every_package_has_its_layer():
    packages = {p.parent.name for p in SRC.glob("*/__init__.py")}
    assert packages == set(RANK)


def test_every_import_follows_the_map():
    wrong = [
        problem
        for path in sorted(SRC.rglob("*.py"))
        for problem in problems(path.relative_to(SRC).as_posix(), path.read_text("utf-8"))
    ]
    assert wrong == []


def test_the_check_finds_each_kind_of_wrong_import():
    assert problems("gateway/x.py", "from comfyfn.batch import Row") == [
        "gateway/x.py: gateway imports comfyfn.batch.Row, not below it"
    ]
    assert problems("fleet/x.py", "import comfyfn.batch.jobs") == [
        "fleet/x.py: fleet imports comfyfn.batch.jobs, not below it"
    ]
    assert problems("batch/x.py", "from comfyfn.client import _config") == [
        "batch/x.py: imports comfyfn.client._config, private to client"
    ]
    assert problems("client/x.py", "def f():\n    from comfyfn.workflow._graph import G") == [
        "client/x.py: imports comfyfn.workflow._graph.G, private to workflow"
    ]
    assert problems("result.py", "from comfyfn import workflow") == [
        "result.py: a top-level module imports the package comfyfn.workflow"
    ]
    assert problems("storage/s3.py", "from .base import Storage\nfrom .. import errors") == []
    assert problems("storage/s3.py", "from ..fleet import Pool") == [
        "storage/s3.py: storage imports comfyfn.fleet.Pool, not below it"
    ]
    # the stated mount, a package's own privates and the shared top-level ones are fine
    assert problems("gateway/app.py", "from comfyfn.mcp import mcp_endpoint") == []
    assert (
        problems("batch/x.py", "from comfyfn.batch._schema import J\nimport comfyfn._files") == []
    )


def test_import_comfyfn_loads_no_batch_gateway_database_or_http_stack():
    code = (
        "import sys, comfyfn; print(sorted(m for m in sys.modules if m.startswith(("
        "'comfyfn.batch', 'comfyfn.fleet', 'comfyfn.gateway', 'comfyfn.jobs', 'sqlite3', "
        "'sqlalchemy', "
        "'fastapi', 'uvicorn', 'httpx', 'websockets', 'comfyfn.client', 'PIL'))))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_the_job_store_loads_without_the_gateway_s_service_stack():
    """``comfyfn batch --db`` (``--work`` too: the worker is here) needs SQLAlchemy and the
    fleet, not the HTTP service."""
    code = (
        "import sys, comfyfn.jobs; print(sorted({m.split('.')[0] for m in sys.modules} & "
        "{'fastapi', 'starlette', 'uvicorn', 'prometheus_client', 'sse_starlette'}), "
        "sorted(m for m in sys.modules if m.startswith(('comfyfn.gateway', 'comfyfn.batch'))))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[] []"


def test_a_batch_run_here_loads_no_job_store():
    """``comfyfn batch FILE`` without ``--db`` keeps its manifest (sqlite3): neither the job
    store nor SQLAlchemy is loaded for it."""
    code = (
        "import sys, comfyfn.batch; print(sorted(m for m in sys.modules if m.startswith(("
        "'comfyfn.jobs', 'comfyfn.gateway', 'sqlalchemy'))))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_the_client_names_load_on_first_use():
    code = "import comfyfn; print(comfyfn.Client.__module__, comfyfn.Timeout.__module__)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["comfyfn.client", "httpx"]  # shown under its public package
    assert {"Client", "AsyncClient", "Job"} <= set(dir(comfyfn))
