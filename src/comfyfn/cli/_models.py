"""``comfyfn models``: which model files a workflow needs and which servers have them
(``check``), downloading them from a manifest (``pull``), warming servers up (``warm``),
and listing a server's model folders (``list``)."""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)

from comfyfn.cli._common import ServerOpt, ServersOpt, err, esc, fail, server_url
from comfyfn.client import AsyncClient, Client, public_url
from comfyfn.errors import ComfyError, ConfigError, WorkflowInvalid
from comfyfn.models import (
    BUILTIN_MANIFESTS,
    PULL_MIN_RATE,
    PULL_STALL_SECONDS,
    Manifest,
    ModelFile,
    Pulled,
    ServerModels,
    Source,
    check_server,
    load_manifest,
    pull,
    sources_from,
    warm,
)

models_app = typer.Typer(
    help="Model files: which a workflow needs and which servers have them (check), "
    "downloads from manifests (pull), warm-up (warm).",
    no_args_is_help=True,
)

MODELS_DIR_ENV = "COMFYFN_MODELS_DIR"

WorkflowArg = Annotated[
    str, typer.Argument(help="A workflow file (API/UI JSON, PNG) or built-in name.")
]


def _servers(given: list[str] | None) -> list[str]:
    return list(dict.fromkeys(given)) if given else [server_url(None)]


@models_app.command()
def check(
    workflow: WorkflowArg,
    server: ServersOpt = None,
    manifest: Annotated[
        list[str] | None,
        typer.Option("--manifest", "-m", help="A manifest naming download sources (repeatable)."),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Every model file WORKFLOW needs, and whether each server has it (exit 1 if not)."""
    try:
        sources = sources_from(workflow, [load_manifest(m) for m in manifest or []])
        urls = _servers(server)
    except ComfyError as exc:
        raise fail(exc) from None
    results = asyncio.run(_check_all(workflow, urls, sources))
    if as_json:
        typer.echo(json.dumps([_as_json(url, r) for url, r in results], indent=2))
    else:
        for url, result in results:
            _print_check(url, result)
    if all(isinstance(r, ConfigError | WorkflowInvalid) for _, r in results):
        raise typer.Exit(2)  # the workflow (or an option) is wrong, wherever it is checked
    if not all(isinstance(r, ServerModels) and r.ok for _, r in results):
        raise typer.Exit(1)


async def _check_all(
    workflow: str, urls: list[str], sources: dict[tuple[str, str], Source]
) -> list[tuple[str, ServerModels | ComfyError]]:
    async def one(url: str) -> ServerModels | ComfyError:
        try:
            async with AsyncClient(url) as client:
                return await check_server(client, workflow, sources)
        except ComfyError as exc:
            return exc

    found = await asyncio.gather(*(one(url) for url in urls))
    return list(zip(urls, found, strict=True))


def _print_check(url: str, result: ServerModels | ComfyError) -> None:
    shown = esc(public_url(url))
    if isinstance(result, ComfyError):
        err.print(f"[red]{shown}[/red]: {esc(result)}", highlight=False)
        return
    total, missing = len(result.needed), len(result.missing)
    if result.ok:
        typer.echo(f"{public_url(url)}: all {total} model file(s) present")
        return
    err.print(f"[red]{shown}[/red]: {missing} of {total} model file(s) missing", highlight=False)
    for needed in result.missing:
        err.print(f"  missing {esc(needed.describe())}", highlight=False)
    for folder in result.unknown_folders:
        err.print(f"  the server has no models/{esc(folder)}/ folder", highlight=False)


def _as_json(url: str, result: ServerModels | ComfyError) -> dict[str, Any]:
    if isinstance(result, ComfyError):
        return {"server": public_url(url), "ok": False, "error": str(result)}
    missing = {(n.folder, n.name) for n in result.missing}
    return {
        "server": public_url(url),
        "ok": result.ok,
        "models": [
            {
                "folder": n.folder,
                "name": n.name,
                "present": (n.folder, n.name) not in missing,
                "nodes": [f"{node} {cls}" for node, cls in n.nodes],
                "url": n.source.url if n.source else None,
                "manifest": n.source.manifest if n.source else None,
            }
            for n in result.needed
        ],
        "unknown_folders": list(result.unknown_folders),
    }


@models_app.command("pull")
def pull_command(
    manifest: Annotated[
        str,
        typer.Argument(
            help=f"A built-in manifest ({', '.join(BUILTIN_MANIFESTS)}) or a YAML/JSON file."
        ),
    ],
    models_dir: Annotated[
        Path | None,
        typer.Option(
            "--models-dir",
            help=f"The models folder to fill (default: ${MODELS_DIR_ENV}).",
            show_default=False,
        ),
    ] = None,
    verify: Annotated[
        bool, typer.Option("--verify", help="Re-hash files already there (slow for big ones).")
    ] = False,
    min_rate: Annotated[
        float,
        typer.Option(
            "--min-rate",
            min=0,
            help="A transfer averaging fewer bytes/s than this over --stall-seconds has "
            "stalled: it is stopped and resumed (0: never).",
        ),
    ] = PULL_MIN_RATE,
    stall_seconds: Annotated[
        float, typer.Option("--stall-seconds", min=0.01, help="The window --min-rate applies to.")
    ] = PULL_STALL_SECONDS,
    allow_unverified: Annotated[
        bool,
        typer.Option(
            "--allow-unverified",
            help="Download files whose sha256 and size neither the manifest nor the server "
            "publishes (otherwise refused: nothing to verify them against).",
        ),
    ] = False,
) -> None:
    """Download a manifest's files into their folders: resumed, checked against the sha256
    and size the manifest (or the server) publishes, atomic."""
    try:
        target = _models_dir(models_dir)
        chosen = load_manifest(manifest)
        pulled = _pull_with_progress(
            chosen, target, verify, allow_unverified, (min_rate, stall_seconds)
        )
    except ComfyError as exc:
        raise fail(exc) from None
    for p in pulled:
        digest = f" sha256 {p.sha256}" if p.sha256 else ""
        unchecked = p.verified is None and p.action != "present"
        note = " (NOT verified: nothing published to check it against)" if unchecked else ""
        typer.echo(f"{p.action:10} {p.path}{digest}{note}")


def _models_dir(given: Path | None) -> Path:
    where = given or (Path(os.environ[MODELS_DIR_ENV]) if os.environ.get(MODELS_DIR_ENV) else None)
    if where is None:
        raise ConfigError(f"give --models-dir DIR (or set ${MODELS_DIR_ENV})")
    return where.expanduser()


def _pull_with_progress(
    manifest: Manifest,
    target: Path,
    verify: bool,
    allow_unverified: bool,
    stall: tuple[float, float],
) -> list[Pulled]:
    """``pull``, with a progress bar on a terminal; ``stall`` is (min_rate, stall_seconds)."""
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
        console=err,
        transient=True,
        disable=not err.is_terminal,
    ) as bar:
        tasks: dict[str, TaskID] = {}

        def progress(file: ModelFile, done: int, total: int | None) -> None:
            if file.relpath not in tasks:
                tasks[file.relpath] = bar.add_task(esc(file.relpath), total=total)
            bar.update(tasks[file.relpath], completed=done, total=total)

        return pull(
            manifest,
            target,
            on_progress=progress,
            verify_existing=verify,
            allow_unverified=allow_unverified,
            min_rate=stall[0],
            stall_seconds=stall[1],
        )


@models_app.command("warm")
def warm_command(workflow: WorkflowArg, server: ServersOpt = None) -> None:
    """Run WORKFLOW's smallest job once on each server, so models are loaded."""
    failed = False
    try:
        urls = _servers(server)
    except ComfyError as exc:
        raise fail(exc) from None
    for url in urls:
        try:
            with Client(url) as client:
                done = warm(client, workflow)
        except ComfyError as exc:
            err.print(f"[red]{esc(public_url(url))}[/red]: {esc(exc)}", highlight=False)
            failed = True
            continue
        typer.echo(f"{public_url(done.server)}: warm ({done.seconds:.2f}s)")
    if failed:
        raise typer.Exit(1)


@models_app.command("list")
def list_command(
    folder: Annotated[str | None, typer.Argument(help="e.g. diffusion_models, vae")] = None,
    server: ServerOpt = None,
) -> None:
    """List a server's model folders, or the files in one folder."""
    try:
        with Client(server_url(server)) as client:
            names = client.models(folder)
    except ComfyError as exc:
        raise fail(exc) from None
    for name in names:
        typer.echo(name)
