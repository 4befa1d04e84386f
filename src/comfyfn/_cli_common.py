"""What every ``comfyfn`` subcommand shares: consoles, options, errors → exit codes."""

from __future__ import annotations

import os
from typing import Annotated

import typer
from rich.console import Console

from comfyfn import _config
from comfyfn.engine import Engine
from comfyfn.errors import ComfyError, ConfigError, WorkflowInvalid

err = Console(stderr=True)
out = Console()

ServerOpt = Annotated[
    str | None,
    typer.Option(
        "--server", "-s", help="ComfyUI URL. Default: $COMFYFN_SERVER, else the local engine."
    ),
]
EngineName = Annotated[
    str, typer.Option("--name", help="Engine instance name.", envvar="COMFYFN_ENGINE")
]


def fail(exc: ComfyError) -> typer.Exit:
    err.print(f"[red]error:[/red] {exc}", markup=True, highlight=False)
    usage = isinstance(exc, ConfigError | WorkflowInvalid)
    return typer.Exit(2 if usage else 1)


def server_url(server: str | None) -> str:
    """Resolve the server; with none given, install and start the local engine if needed."""
    try:
        return _config.resolve_server_sync(server)
    except ConfigError:
        if server or os.environ.get("COMFYFN_SERVER"):
            raise
    engine = Engine(os.environ.get("COMFYFN_ENGINE", "default"))
    err.print("no server given: using the local engine (first run installs it, ~1-2 min)")
    return engine.up(report=lambda msg: err.print(msg)).url
