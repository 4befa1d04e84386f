"""What every ``comfyfn`` subcommand shares: consoles, options, errors → exit codes."""

from __future__ import annotations

import os
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape

from comfyfn.client import _config
from comfyfn.engine import Engine
from comfyfn.errors import ComfyError, ConfigError, WorkflowInvalid

# Every message may hold user or server text (prompts, file names, URLs, errors): it is put
# in with esc() so rich prints it literally ('[/x]' would crash rich's markup parser, and
# '[batch, 3]' would vanish as an unknown style); emoji=False keeps ':smile:' as typed.
err = Console(stderr=True, emoji=False, soft_wrap=True)
out = Console(emoji=False)


def esc(value: object) -> str:
    """``value`` as text that rich prints literally inside a markup string."""
    return escape(str(value))


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
    err.print(f"[red]error:[/red] {esc(exc)}", highlight=False)
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
    return engine.up(report=report).url


def report(message: object) -> None:
    """Progress messages of the engine (they name paths and URLs)."""
    err.print(esc(message), highlight=False)
