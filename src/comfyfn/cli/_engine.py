"""``comfyfn engine``: the managed local ComfyUI (install, up, down, status, logs)."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from comfyfn.cli._common import EngineName, err, esc, fail, out, report
from comfyfn.engine import Engine
from comfyfn.errors import ComfyError

engine_app = typer.Typer(
    help="The managed local ComfyUI engine (no GPU needed).", no_args_is_help=True
)


@engine_app.command("install")
def engine_install() -> None:
    """Install the engine (venv, ComfyUI, tiny weights) without starting it."""
    install = Engine().install
    try:
        seconds = install.install(report=report)
    except ComfyError as exc:
        raise fail(exc) from None
    err.print(f"engine installed in {esc(install.home)} ({seconds:.1f}s)", highlight=False)


@engine_app.command("up")
def engine_up(
    name: EngineName = "default",
    port: Annotated[int | None, typer.Option(help="Port (default: a free one).")] = None,
    comfyui_path: Annotated[Path | None, typer.Option(help="Use this ComfyUI checkout.")] = None,
    models_dir: Annotated[Path | None, typer.Option(help="Real weights folder.")] = None,
) -> None:
    """Install (first time) and start the local engine; prints its URL."""
    engine = Engine(name, comfyui_path=comfyui_path, models_dir=models_dir)
    started = time.monotonic()
    try:
        state = engine.up(port=port, report=report)
    except ComfyError as exc:
        raise fail(exc) from None
    err.print(
        f"engine {esc(repr(name))} up in {time.monotonic() - started:.1f}s (pid {state.pid})",
        highlight=False,
    )
    typer.echo(state.url)


@engine_app.command("down")
def engine_down(name: EngineName = "default") -> None:
    """Stop the local engine (by its pid)."""
    stopped = Engine(name).down()
    err.print(
        f"engine {esc(repr(name))} {'stopped' if stopped else 'was not running'}",
        highlight=False,
    )


@engine_app.command("status")
def engine_status(
    name: EngineName = "default", as_json: Annotated[bool, typer.Option("--json")] = False
) -> None:
    """URL, pid and ComfyUI version of the local engine; exit 1 if it is not running."""
    status = Engine(name).status()
    if as_json:
        typer.echo(json.dumps(status, indent=2))
    else:
        table = Table(show_header=False, box=None)
        for key, value in status.items():
            table.add_row(esc(key), esc(value))
        out.print(table)
    if not status["running"]:
        raise typer.Exit(1)


@engine_app.command("logs")
def engine_logs(
    name: EngineName = "default", lines: Annotated[int, typer.Option("--lines", "-n")] = 50
) -> None:
    """The last lines of the engine's server log."""
    typer.echo(Engine(name).log_tail(lines))
