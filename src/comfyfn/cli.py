"""The ``comfyfn`` command. Exit codes: 0 ok, 1 the generation (or server) failed, 2 usage.

Only this module prints, draws progress bars or configures logging.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
import warnings
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from comfyfn import _config
from comfyfn.binding import parse_size
from comfyfn.engine import Engine
from comfyfn.errors import ComfyError, ConfigError, WorkflowInvalid
from comfyfn.events import Failed, Interrupted, NodeCached, NodeStarted, Queued, Started, Succeeded
from comfyfn.events import Progress as ProgressEvent
from comfyfn.sync import Client

app = typer.Typer(
    help="Run ComfyUI workflows (Z-Image-Turbo first) from the shell.",
    no_args_is_help=True,
    add_completion=False,
)
engine_app = typer.Typer(
    help="The managed local ComfyUI engine (no GPU needed).", no_args_is_help=True
)
app.add_typer(engine_app, name="engine")

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


def _fail(exc: ComfyError) -> typer.Exit:
    err.print(f"[red]error:[/red] {exc}", markup=True, highlight=False)
    usage = isinstance(exc, ConfigError | WorkflowInvalid)
    return typer.Exit(2 if usage else 1)


def _server(server: str | None) -> str:
    """Resolve the server; with none given, install and start the local engine if needed."""
    try:
        return _config.resolve_server_sync(server)
    except ConfigError:
        if server or os.environ.get("COMFYFN_SERVER"):
            raise
    engine = Engine(os.environ.get("COMFYFN_ENGINE", "default"))
    err.print("no server given: using the local engine (first run installs it, ~1-2 min)")
    return engine.up(report=lambda msg: err.print(msg)).url


@app.callback()
def _main(verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )


@app.command()
def generate(
    prompt: Annotated[str, typer.Argument(help="The prompt (Chinese and English both work).")],
    output: Annotated[Path, typer.Option("--output", "-o", help="Output directory.")] = Path("."),
    seed: Annotated[int | None, typer.Option(help="Seed (default: random, reported).")] = None,
    size: Annotated[str | None, typer.Option(help="WIDTHxHEIGHT, multiples of 16.")] = None,
    steps: Annotated[int | None, typer.Option(help="Sampling steps.")] = None,
    cfg: Annotated[float | None, typer.Option(help="CFG scale (1 = negative ignored).")] = None,
    negative: Annotated[str | None, typer.Option(help="Negative prompt (needs cfg > 1).")] = None,
    batch: Annotated[int | None, typer.Option("--batch", help="Images per job.")] = None,
    workflow: Annotated[Path | None, typer.Option(help="An API-format workflow JSON.")] = None,
    timeout: Annotated[
        float | None, typer.Option(help="Give up (and cancel) after seconds.")
    ] = None,
    server: ServerOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")] = False,
) -> None:
    """Generate images and save them (with provenance) into the output directory."""
    params: dict[str, Any] = {
        "seed": seed,
        "steps": steps,
        "cfg": cfg,
        "negative": negative,
        "batch_size": batch,
    }
    try:
        if size:
            params["width"], params["height"] = parse_size(size)
        url = _server(server)
        with warnings.catch_warnings(record=True) as caught, Client(url) as client:
            warnings.simplefilter("always")
            result = _run_with_progress(client, prompt, workflow, timeout, params, quiet=as_json)
        for w in caught:
            err.print(f"[yellow]warning:[/yellow] {w.message}")
    except ComfyError as exc:
        raise _fail(exc) from None
    paths = result.save(output)
    if as_json:
        typer.echo(
            json.dumps(
                {
                    "prompt_id": result.prompt_id,
                    "server": result.server,
                    "seed": result.seed,
                    "files": [str(p) for p in paths],
                    "params": dict(result.params),
                    "timings": vars(result.timings),
                },
                ensure_ascii=False,
                indent=2,
            )
        )
    else:
        for p in paths:
            typer.echo(str(p))
        t = result.timings
        err.print(
            f"seed {result.seed} · {len(paths)} image(s) · queued {t.queued:.2f}s · "
            f"ran {t.executed:.2f}s · total {t.total:.2f}s · {result.server}"
        )


def _run_with_progress(
    client: Client,
    prompt: str,
    workflow: Path | None,
    timeout: float | None,
    params: dict[str, Any],
    *,
    quiet: bool,
):
    events = client.stream(prompt, workflow=workflow, timeout=timeout, **params)
    show = err.is_terminal and not quiet
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.fields[step]}"),
        TimeElapsedColumn(),
        console=err,
        transient=True,
        disable=not show,
    ) as bar:
        task = bar.add_task("queued", total=None, step="")
        for ev in events:
            if isinstance(ev, Queued):
                bar.update(task, description=f"queued (position {ev.position})")
            elif isinstance(ev, Started):
                bar.update(task, description="running")
            elif isinstance(ev, NodeCached):
                bar.update(task, description=f"{len(ev.node_ids)} node(s) cached")
            elif isinstance(ev, NodeStarted):
                bar.update(
                    task,
                    description=f"node {ev.node_id} {ev.class_type or ''}",
                    total=None,
                    completed=0,
                    step="",
                )
            elif isinstance(ev, ProgressEvent):
                bar.update(task, total=ev.max, completed=ev.value, step=f"{ev.value}/{ev.max}")
            elif isinstance(ev, Succeeded):
                return ev.generation
            elif isinstance(ev, Failed | Interrupted):
                raise ev.error
    raise ComfyError("the job ended without a result")


@app.command()
def info(
    server: ServerOpt = None, as_json: Annotated[bool, typer.Option("--json")] = False
) -> None:
    """Server URL, ComfyUI version, devices and queue."""
    try:
        with Client(_config.resolve_server_sync(server)) as client:
            stats, queue = client.system_stats(), client.queue()
            url = client.server
    except ComfyError as exc:
        raise _fail(exc) from None
    system = stats.get("system", {})
    data = {
        "server": url,
        "comfyui_version": system.get("comfyui_version"),
        "python": system.get("python_version"),
        "pytorch": system.get("pytorch_version"),
        "devices": [d.get("name") for d in stats.get("devices", [])],
        "queue_running": len(queue.get("queue_running", [])),
        "queue_pending": len(queue.get("queue_pending", [])),
    }
    if as_json:
        typer.echo(json.dumps(data, indent=2))
        return
    for key, value in data.items():
        typer.echo(f"{key:16} {value}")


@app.command()
def models(
    folder: Annotated[str | None, typer.Argument(help="e.g. diffusion_models, vae")] = None,
    server: ServerOpt = None,
) -> None:
    """List model folders, or the files in one folder."""
    try:
        with Client(_config.resolve_server_sync(server)) as client:
            names = client.models(folder)
    except ComfyError as exc:
        raise _fail(exc) from None
    for name in names:
        typer.echo(name)


@engine_app.command("install")
def engine_install() -> None:
    """Install the engine (venv, ComfyUI, tiny weights) without starting it."""
    install = Engine().install
    try:
        seconds = install.install(report=lambda msg: err.print(msg))
    except ComfyError as exc:
        raise _fail(exc) from None
    err.print(f"engine installed in {install.home} ({seconds:.1f}s)")


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
        state = engine.up(port=port, report=lambda msg: err.print(msg))
    except ComfyError as exc:
        raise _fail(exc) from None
    err.print(f"engine {name!r} up in {time.monotonic() - started:.1f}s (pid {state.pid})")
    typer.echo(state.url)


@engine_app.command("down")
def engine_down(name: EngineName = "default") -> None:
    """Stop the local engine (by its pid)."""
    stopped = Engine(name).down()
    err.print(f"engine {name!r} {'stopped' if stopped else 'was not running'}")


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
            table.add_row(key, str(value))
        out.print(table)
    if not status["running"]:
        raise typer.Exit(1)


@engine_app.command("logs")
def engine_logs(
    name: EngineName = "default", lines: Annotated[int, typer.Option("--lines", "-n")] = 50
) -> None:
    """The last lines of the engine's server log."""
    typer.echo(Engine(name).log_tail(lines))


def main() -> None:
    try:
        app()
    except KeyboardInterrupt:
        err.print("interrupted")
        sys.exit(130)
