"""``comfyfn engine``: local ComfyUI engines (install, up, down, status, logs).

The managed engine is ComfyUI 0.3.75 from PyPI; ``--comfyui-path`` runs any ComfyUI
source tree instead (a checkout, or an unpacked release), with a venv of its own.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from comfyfn.cli._common import EngineName, err, esc, out, report
from comfyfn.engine import Device, Engine

engine_app = typer.Typer(
    help="Local ComfyUI engines: the managed one (no GPU needed) or any ComfyUI source tree.",
    no_args_is_help=True,
)

ComfyUIPath = Annotated[
    Path | None,
    typer.Option(
        help="Run this ComfyUI source tree (a checkout or an unpacked release) instead of "
        "the managed ComfyUI 0.3.75. It is only read; its venv (CPU torch, built from its "
        "requirements.txt) is kept in the engine home, unless the tree has its own "
        "venv/ or .venv/ or --python is given.",
        show_default=False,
    ),
]
PythonOpt = Annotated[
    Path | None,
    typer.Option(
        "--python",
        help="An interpreter that has torch and the tree's packages (e.g. your CUDA venv).",
        show_default=False,
    ),
]


@engine_app.command("install")
def engine_install(comfyui_path: ComfyUIPath = None, python: PythonOpt = None) -> None:
    """Install an engine (venv, ComfyUI, tiny weights) without starting it."""
    install = Engine(comfyui_path=comfyui_path, python=python).install
    seconds = install.install(report=report)
    err.print(
        f"engine for ComfyUI {esc(install.version)} installed in {esc(install.home)}"
        f" ({seconds:.1f}s)",
        highlight=False,
    )


@engine_app.command("up")
def engine_up(
    name: EngineName = "default",
    port: Annotated[int | None, typer.Option(help="Port (default: a free one).")] = None,
    comfyui_path: ComfyUIPath = None,
    models_dir: Annotated[
        Path | None,
        typer.Option(help="A folder of real weights (diffusion_models/, text_encoders/, vae/)."),
    ] = None,
    python: PythonOpt = None,
    device: Annotated[
        Device | None,
        typer.Option(
            help="cpu, cuda, or auto (the GPU if the engine's torch sees one). "
            "Default: auto with --comfyui-path, cpu for the managed engine.",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Install (first time) and start a local engine; prints its URL.

    Already running: kept as it is, unless an option given here (--comfyui-path,
    --models-dir, --python, --device, --port) differs from what it was started with;
    then it is restarted with the new options, and a line says what changed.
    Paths are checked first: a missing one exits 2 at once.
    """
    started = time.monotonic()
    engine = Engine(
        name, comfyui_path=comfyui_path, models_dir=models_dir, python=python, device=device
    )
    state = engine.up(port=port, report=report)
    err.print(
        f"engine {esc(repr(name))} up in {time.monotonic() - started:.1f}s (pid {state.pid})",
        highlight=False,
    )
    typer.echo(state.url)


@engine_app.command("down")
def engine_down(name: EngineName = "default") -> None:
    """Stop a local engine (by its pid)."""
    stopped = Engine(name).down()
    err.print(
        f"engine {esc(repr(name))} {'stopped' if stopped else 'was not running'}",
        highlight=False,
    )


@engine_app.command("status")
def engine_status(
    name: EngineName = "default", as_json: Annotated[bool, typer.Option("--json")] = False
) -> None:
    """URL, pid and ComfyUI version of a local engine; exit 1 if it is not running."""
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
    """The last lines of a local engine's server log."""
    typer.echo(Engine(name).log_tail(lines))
