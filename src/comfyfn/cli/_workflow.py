"""``comfyfn workflow``: list, inspect, convert and validate any workflow file, built-in
workflow, or a blueprint or template a server serves (``blueprint:NAME``, ``template:NAME``).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from comfyfn.cli._common import err, esc, out, workflow_source
from comfyfn.client import Client, resolve_server
from comfyfn.errors import (
    ConfigError,
)
from comfyfn.workflow import (
    BUILTIN,
    SERVED_ROUTES,
    RouteMissing,
    Workflow,
    bundled_version,
    server_source,
)

workflow_app = typer.Typer(
    help="Inspect, convert and validate workflows (API, UI with subgraphs, or a ComfyUI PNG).",
    no_args_is_help=True,
)

FileArg = Annotated[
    str,
    typer.Argument(
        help="A workflow file (API/UI JSON, PNG), a built-in name, or blueprint:NAME / "
        "template:NAME (served by --server)."
    ),
]
DefinitionsServer = Annotated[
    str | None,
    typer.Option(
        "--server",
        "-s",
        help="A ComfyUI URL whose node definitions (and, for validate, model files and "
        "uploaded images) to use. Default: $COMFYFN_SERVER, else the definitions of "
        f"ComfyUI {bundled_version()} bundled with comfyfn (offline; files not checked).",
    ),
]


def parse_params(wf: Workflow, items: list[str]) -> dict[str, Any]:
    """``["seed=7", "57:3.steps=4"]`` → values typed by the workflow's parameters."""
    by_name = {p.name: p for p in wf.params} | {p.name: p for p in wf.inputs}
    values: dict[str, Any] = {}
    for item in items:
        name, sep, text = item.partition("=")
        if not sep or not name:
            raise ConfigError(f"--param {item!r}: expected name=value")
        param = by_name.get(name)
        try:
            values[name] = param.parse(text) if param else json.loads(text)
        except ValueError as exc:
            if param is None:
                values[name] = text
                continue
            raise ConfigError(
                f"--param {name}: {text!r} is not a valid {param.type} ({exc})"
            ) from None
    return values


def _server_url(server: str | None) -> str | None:
    return server or os.environ.get("COMFYFN_SERVER")


def _load(source: str, server: str | None, *, strict: bool = True) -> tuple[Workflow, str | None]:
    """Load with the server's definitions when a server is known, else the bundled ones."""
    url = _server_url(server)
    served = server_source(source)
    if served is not None:
        if not url:
            raise ConfigError(
                f"{source}: a {served[0]} is served by ComfyUI: give its --server "
                "(or set COMFYFN_SERVER)"
            )
        with Client(resolve_server(url)) as client:
            return client.workflow(source), client.server
    source = workflow_source(source)
    if not url:
        return Workflow.load(source, strict=strict), None
    with Client(resolve_server(url)) as client:
        info = client.object_info()
        wf = Workflow.load(source, object_info=info, strict=strict)
        return wf.with_definitions(info), client.server


def _listings(url: str) -> dict[str, list[str] | RouteMissing]:
    found: dict[str, list[str] | RouteMissing] = {}
    with Client(resolve_server(url)) as client:
        for kind in SERVED_ROUTES:
            try:
                found[kind] = sorted(client.served_workflows(kind))
            except RouteMissing as exc:
                found[kind] = exc
    return found


ListServer = Annotated[
    str | None,
    typer.Option(
        "--server",
        "-s",
        help="A ComfyUI URL: list the blueprints and templates it serves too. Default: "
        "$COMFYFN_SERVER, else the built-in workflows only.",
    ),
]


@workflow_app.command("list")
def list_workflows(
    server: ListServer = None, as_json: Annotated[bool, typer.Option("--json")] = False
) -> None:
    """The built-in workflows, and the blueprints and templates a server serves (load one
    with blueprint:NAME or template:NAME wherever a workflow is taken)."""
    url = _server_url(server)
    found: dict[str, list[str] | RouteMissing] = {"builtin": sorted(BUILTIN)}
    if url:
        found |= _listings(url)
    if as_json:
        shown = {k: v if isinstance(v, list) else None for k, v in found.items()}
        typer.echo(json.dumps(shown, ensure_ascii=False, indent=2))
    for kind, names in found.items():
        if isinstance(names, RouteMissing):
            err.print(esc(str(names)), highlight=False)
        elif not as_json:
            prefix = "" if kind == "builtin" else f"{kind}:"
            out.print(esc(f"{kind} ({len(names)}):"), highlight=False)
            for name in names:
                out.print(esc(f"  {prefix}{name}"), highlight=False)


@workflow_app.command()
def inspect(
    source: FileArg,
    server: DefinitionsServer = None,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Parameters (name, type, value, range, node), outputs and dead nodes."""
    wf, url = _load(source, server, strict=False)
    if as_json:
        typer.echo(
            json.dumps(
                {
                    "source": wf.source,
                    "params": [
                        {
                            "name": p.name,
                            "type": p.type,
                            "value": p.default,
                            "min": p.min,
                            "max": p.max,
                            "step": p.step,
                            "choices": p.choices,
                            "folder": p.folder,
                            "node": p.node_id,
                            "input": p.input,
                            "class_type": p.class_type,
                        }
                        for p in wf.params
                    ],
                    "ambiguous": {k: [f"{n}.{i}" for n, i in v] for k, v in wf.ambiguous.items()},
                    "outputs": list(wf.outputs),
                    "dead_nodes": list(wf.dead_nodes),
                },
                ensure_ascii=False,
                indent=2,
                default=str,
            )
        )
        return
    table = Table(title=esc(f"{wf.name or source} ({wf.source} format, {len(wf.graph)} nodes)"))
    for column in ("parameter", "type", "value", "range / choices", "node.input", "class"):
        table.add_column(column, overflow="fold")
    for p in wf.params:
        if p.choices:
            limits = ", ".join(map(str, p.choices[:4])) + (" …" if len(p.choices) > 4 else "")
        elif p.folder:
            limits = f"file in models/{p.folder}/"
        elif p.min is not None or p.max is not None:
            limits = f"{p.min}..{p.max}" + (f" step {p.step}" if p.step else "")
        else:
            limits = ""
        value = (
            p.default
            if not isinstance(p.default, str) or len(p.default) < 60
            else (p.default[:57] + "…")
        )
        cells = (p.name, p.type, value, limits, p.path, p.class_type)
        table.add_row(*(esc(cell) for cell in cells))
    out.print(table)
    for name, candidates in wf.ambiguous.items():
        out.print(
            esc(
                f"ambiguous: {name} → "
                + ", ".join(f"{n}.{i}" for n, i in candidates)
                + " (bind by path)"
            ),
            highlight=False,
        )
    out.print(
        esc(
            "outputs: "
            + (", ".join(f"{n} {wf.graph[n]['class_type']}" for n in wf.outputs) or "none")
        ),
        highlight=False,
    )
    if wf.dead_nodes:
        out.print(
            esc(
                "dead nodes (output unused): "
                + ", ".join(f"{n} {wf.graph[n]['class_type']}" for n in wf.dead_nodes)
            ),
            highlight=False,
        )
    if wf.unknown_nodes:
        out.print(
            esc(
                "unknown to these definitions (not runnable there): "
                + ", ".join(f"{n} {wf.graph[n]['class_type']}" for n in wf.unknown_nodes)
            ),
            highlight=False,
        )
    if url is None:
        err.print(
            f"definitions: bundled ComfyUI {bundled_version()} (pass --server to use a server's)"
        )


@workflow_app.command()
def convert(
    source: FileArg,
    output: Annotated[Path | None, typer.Option("--output", "-o", help="Write here.")] = None,
    server: DefinitionsServer = None,
) -> None:
    """Convert to the API format (POST /prompt); prints it without --output."""
    wf, _ = _load(source, server)
    text = json.dumps(wf.to_api(), ensure_ascii=False, indent=2)
    if output is None:
        typer.echo(text)
    else:
        output.write_text(text + "\n", encoding="utf-8")
        err.print(f"wrote {esc(output)} ({len(wf.graph)} nodes)", highlight=False)


@workflow_app.command()
def validate(source: FileArg, server: DefinitionsServer = None) -> None:
    """Check a workflow as ComfyUI would before running it; exit 2 listing every problem.

    Offline (no --server, no $COMFYFN_SERVER) it is checked against the node definitions
    bundled with comfyfn: classes, inputs, links, types, ranges and choices, but not model
    files or input images. With --server, against that server's own definitions, model
    files and uploaded images included.
    """
    wf, url = _load(source, server)
    wf.validate(server=url)
    where = url or f"the bundled ComfyUI {bundled_version()} definitions (files not checked)"
    out.print(f"valid: {len(wf.graph)} nodes, checked against {esc(where)}", highlight=False)
