"""``comfyfn engine``: local ComfyUI engines (install, up, down, status, logs).

The managed engine is ComfyUI 0.3.75 from PyPI; ``--comfyui-path`` runs any ComfyUI
source tree instead (a checkout, or an unpacked release), with a venv of its own.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from comfyfn.cli._common import (
    EngineName,
    err,
    esc,
    exit_code,
    out,
    report,
    sentence,
    workflow_source,
)
from comfyfn.client import AsyncClient, public_url
from comfyfn.engine import Device, Engine, PreviewMethod

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
    warm: Annotated[
        str | None,
        typer.Option(
            help="Then run the smallest job of this workflow (built-in name or file) once, so "
            "the first real job does not pay for loading its models.",
            show_default=False,
        ),
    ] = None,
    device: Annotated[
        Device | None,
        typer.Option(
            help="cpu, cuda, or auto (the GPU if the engine's torch sees one). "
            "Default: auto with --comfyui-path, cpu for the managed engine.",
            show_default=False,
        ),
    ] = None,
    preview_method: Annotated[
        PreviewMethod | None,
        typer.Option(
            help="ComfyUI's sampler previews, sent to clients as Preview events while a job "
            "runs. Default: none.",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Install (first time) and start a local engine; prints its URL.

    Already running: kept as it is, unless an option given here (--comfyui-path,
    --models-dir, --python, --device, --port, --preview-method) differs from what it was
    started with; then it is restarted with the new options, and a line says what changed.
    Paths are checked first: a missing one exits 2 at once.
    """
    started = time.monotonic()
    engine = Engine(
        name,
        comfyui_path=comfyui_path,
        models_dir=models_dir,
        python=python,
        device=device,
        preview_method=preview_method,
    )
    chosen = workflow_source(warm) if warm is not None else None
    state = engine.up(port=port, report=report)
    err.print(
        f"engine {esc(repr(name))} up in {time.monotonic() - started:.1f}s (pid {state.pid})",
        highlight=False,
    )
    if chosen is not None:
        warm_servers([state.url], chosen)
    typer.echo(state.url)


def warm_servers(
    servers: Sequence[str], workflow: str | dict[str, Any], timeout: float | None = None
) -> None:
    """Run ``workflow``'s warm-up job (:func:`comfyfn.models.awarm`) once on every
    server, all at once; a server that fails is named, with why, and the command exits
    non-zero (2 for a workflow problem, else 1) before anything else is sent."""
    from comfyfn.models import awarm

    async def one(url: str) -> float:
        async with AsyncClient(url) as client:
            return (await awarm(client, workflow, timeout=timeout)).seconds

    async def every() -> list[float | BaseException]:
        return await asyncio.gather(*(one(url) for url in servers), return_exceptions=True)

    failed: BaseException | None = None
    for url, outcome in zip(servers, asyncio.run(every()), strict=True):
        if isinstance(outcome, Exception):
            failed = failed or outcome
            err.print(
                f"[red]error:[/red] warm-up failed on {esc(public_url(url))}: "
                f"{esc(sentence(outcome))}",
                highlight=False,
            )
        elif isinstance(outcome, BaseException):
            raise outcome
        else:
            err.print(f"warmed {esc(public_url(url))} in {outcome:.1f}s", highlight=False)
    if failed is not None:
        raise typer.Exit(exit_code(failed))


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
    """The last lines of a local engine's server log (exit 1 if it has none)."""
    engine = Engine(name)
    if not engine.log_file.exists():
        err.print(
            f"[red]error:[/red] engine {esc(name)} has no log yet (it never started): "
            f"comfyfn engine up --name {esc(name)}",
            highlight=False,
        )
        raise typer.Exit(1)
    typer.echo(engine.log_tail(lines))
