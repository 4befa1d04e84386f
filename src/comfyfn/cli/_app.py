"""The ``comfyfn`` command. Exit codes: 0 ok, 1 the generation (or server) failed, 2 usage,
130 stopped by Ctrl-C or SIGTERM (see :mod:`comfyfn.cli._common`).

Only the CLI modules print, draw progress bars or configure logging.
"""

from __future__ import annotations

import json
import logging
import sys
from importlib.metadata import version
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from comfyfn._files import ready_folder
from comfyfn.cli._batch import batch_command
from comfyfn.cli._common import (
    DEBUG,
    DEBUG_ENV,
    ComfyOrgKeyOpt,
    Commands,
    ServerOpt,
    err,
    esc,
    server_url,
    sigterm_as_ctrl_c,
    warnings_once,
    workflow_source,
)
from comfyfn.cli._engine import engine_app
from comfyfn.cli._gateway import keys_app, serve_command
from comfyfn.cli._mcp import mcp_command
from comfyfn.cli._models import models_app
from comfyfn.cli._recipe import recipe_app
from comfyfn.cli._worker import worker_command, workers_command
from comfyfn.cli._workflow import parse_params, workflow_app
from comfyfn.client import Client, Job, default_workflow, resolve_server
from comfyfn.errors import ConfigError
from comfyfn.events import NodeCached, NodeStarted, Queued, Started
from comfyfn.events import Progress as ProgressEvent
from comfyfn.result import Generation
from comfyfn.workflow import (
    BUILTIN,
    CONTROL_TYPES,
    Workflow,
    builtin,
    parse_loras,
    parse_size,
)

app = typer.Typer(
    cls=Commands,
    help="Run ComfyUI workflows (Z-Image-Turbo first) from the shell.",
    no_args_is_help=True,
    add_completion=False,
)
app.add_typer(engine_app, name="engine")
app.add_typer(workflow_app, name="workflow")
app.add_typer(recipe_app, name="recipe")
app.add_typer(models_app, name="models")
app.command("batch")(batch_command)
app.command("serve")(serve_command)
app.command("mcp")(mcp_command)
app.command("worker")(worker_command)
app.command("workers")(workers_command)
app.add_typer(keys_app, name="keys")


class _BriefErrors(logging.Formatter):
    """Without --verbose, a logged exception is one line (its type and message), never a
    traceback: the command's own message says what happened; ``-v`` shows tracebacks."""

    def formatException(self, ei: Any) -> str:
        return f"  ({ei[0].__name__}: {ei[1]})" if ei and ei[0] else ""

    def formatStack(self, stack_info: str) -> str:
        return ""


def _version(asked: bool) -> None:
    if asked:
        typer.echo(f"comfyfn {version('comfyfn')}")
        raise typer.Exit()


@app.callback()
def _main(
    ctx: typer.Context,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log more.")] = False,
    debug: Annotated[
        bool,
        typer.Option(
            "--debug",
            envvar=DEBUG_ENV,
            help="Show the traceback of an error (also COMFYFN_DEBUG=1).",
        ),
    ] = False,
    _: Annotated[
        bool,
        typer.Option(
            "--version", callback=_version, is_eager=True, help="Print the version and exit."
        ),
    ] = False,
) -> None:
    ctx.meta[DEBUG] = debug  # read by the command group's error handling
    fmt = "%(levelname)s %(name)s: %(message)s"
    handler = logging.StreamHandler()
    full = verbose or debug
    handler.setFormatter(logging.Formatter(fmt) if full else _BriefErrors(fmt))
    logging.basicConfig(level=logging.DEBUG if verbose else logging.WARNING, handlers=[handler])


def _control_type(value: str | None) -> str | None:
    if value is not None and value not in CONTROL_TYPES:
        raise typer.BadParameter(f"{value!r} is not one of {', '.join(CONTROL_TYPES)}")
    return value


@app.command()
def generate(
    prompt: Annotated[
        str | None, typer.Argument(help="The prompt (Chinese and English both work).")
    ] = None,
    output: Annotated[Path, typer.Option("--output", "-o", help="Output directory.")] = Path("."),
    seed: Annotated[int | None, typer.Option(help="Seed (default: random, reported).")] = None,
    size: Annotated[str | None, typer.Option(help="WIDTHxHEIGHT, multiples of 16.")] = None,
    steps: Annotated[int | None, typer.Option(help="Sampling steps.")] = None,
    cfg: Annotated[float | None, typer.Option(help="CFG scale (1 = negative ignored).")] = None,
    negative: Annotated[str | None, typer.Option(help="Negative prompt (needs cfg > 1).")] = None,
    batch: Annotated[int | None, typer.Option("--batch", help="Images per job.")] = None,
    workflow: Annotated[
        str | None,
        typer.Option(
            "--workflow",
            "-w",
            help="Built-in name, a workflow file (API/UI/PNG), or blueprint:NAME / "
            "template:NAME (served by the server). Default: zimage-control with "
            "--control-image, else zimage-turbo.",
        ),
    ] = None,
    lora: Annotated[
        list[str] | None,
        typer.Option(
            "--lora",
            metavar="NAME[:STRENGTH]",
            help="A LoRA (a file in models/loras/) on the diffusion model, strength 1.0 by "
            "default (repeatable, applied in order).",
        ),
    ] = None,
    control_image: Annotated[
        str | None,
        typer.Option(
            "--control-image",
            metavar="PATH|URL",
            help="The ControlNet's control image (default workflow: zimage-control).",
        ),
    ] = None,
    control_type: Annotated[
        str | None,
        typer.Option(
            "--control-type",
            metavar="[" + "|".join(CONTROL_TYPES) + "]",
            callback=_control_type,
            help="How the control map is made: canny (edges computed from the control "
            "image) or depth, pose, hed, mlsd, tile (the control image is that map).",
        ),
    ] = None,
    comfy_org_key: ComfyOrgKeyOpt = None,
    param: Annotated[
        list[str] | None,
        typer.Option("--param", "-p", help="name=value or node.input=value (repeatable)."),
    ] = None,
    timeout: Annotated[
        float | None, typer.Option(help="Give up (and cancel) after seconds.")
    ] = None,
    server: ServerOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")] = False,
) -> None:
    """Generate images and save them (with provenance) into the output directory.

    Ctrl-C or SIGTERM cancels the job on the server and exits 130.
    """
    given: dict[str, Any] = {
        "prompt": prompt,
        "seed": seed,
        "steps": steps,
        "cfg": cfg,
        "negative": negative,
        "batch_size": batch,
        "loras": parse_loras(lora) or None,
        "control_image": control_image,
        "control_type": control_type,
    }
    if size:
        given["width"], given["height"] = parse_size(size)
    source = workflow_source(workflow if workflow is not None else default_workflow(given))
    if source in BUILTIN:  # a usage error before any server is looked up or started
        _require_prompt(builtin(source), given | parse_params(builtin(source), param or []))
    ready_folder(output)  # before the job: an image made for a folder it cannot go to is lost
    url = server_url(server)
    client = Client(url, comfy_org_key=comfy_org_key)
    with sigterm_as_ctrl_c(), warnings_once(), client:
        wf = client.workflow(source)
        params = given | parse_params(wf, param or [])
        _require_prompt(wf, params)
        params = {k: v for k, v in params.items() if v is not None or k == "seed"}
        result = _run_with_progress(client, wf, timeout, params, quiet=as_json)
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
            f"ran {t.executed:.2f}s · total {t.total:.2f}s · {esc(result.server)}",
            highlight=False,
        )


def _require_prompt(wf: Workflow, params: dict[str, Any]) -> None:
    """A workflow with a prompt runs only with one: given, or stored in its file."""
    slot = next((p for p in wf.params if p.name == "prompt"), None)
    if slot is not None and not params.get("prompt") and not slot.default:
        raise ConfigError(
            'no prompt: give one, as in comfyfn generate "a red apple" (or --param prompt=TEXT)'
        )


def _run_with_progress(
    client: Client, wf: Workflow, timeout: float | None, params: dict[str, Any], *, quiet: bool
) -> Generation:
    job = client.submit(workflow=wf, timeout=timeout, **params)
    try:
        return _follow(job, quiet=quiet)
    except KeyboardInterrupt:  # the client has cancelled the job on the server
        err.print(f"interrupted: job {job.prompt_id} was cancelled on {esc(client.server)}")
        raise typer.Exit(130) from None


def _follow(job: Job, *, quiet: bool) -> Generation:
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
        for ev in job.events():
            if isinstance(ev, Queued):
                bar.update(task, description=f"queued (position {ev.position})")
            elif isinstance(ev, Started):
                bar.update(task, description="running")
            elif isinstance(ev, NodeCached):
                bar.update(task, description=f"{len(ev.node_ids)} node(s) cached")
            elif isinstance(ev, NodeStarted):
                bar.update(
                    task,
                    description=esc(f"node {ev.node_id} {ev.class_type or ''}"),
                    total=None,
                    completed=0,
                    step="",
                )
            elif isinstance(ev, ProgressEvent):
                bar.update(task, total=ev.max, completed=ev.value, step=f"{ev.value}/{ev.max}")
    return job.result()  # the Generation, or the error the job ended with


@app.command()
def info(
    server: ServerOpt = None, as_json: Annotated[bool, typer.Option("--json")] = False
) -> None:
    """Server URL, ComfyUI version, devices and queue."""
    with Client(resolve_server(server)) as client:
        stats, queue = client.system_stats(), client.queue()
        url = client.server
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


def main() -> None:
    try:
        app()
    except KeyboardInterrupt:
        err.print("interrupted")
        sys.exit(130)
