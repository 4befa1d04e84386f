"""``comfyfn models``: which model files a workflow needs and which servers have them
(``check``), downloading them from a manifest or a URL (``pull``), putting them onto a
server through its assets API (``push``, ``pull --to-server``), warming servers up
(``warm``), and listing a server's model folders (``list``)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
from collections.abc import Callable, Iterator
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
from rich.table import Table

from comfyfn.cli._common import ServerOpt, ServersOpt, err, esc, fail, out, server_url
from comfyfn.client import Client, public_url
from comfyfn.errors import ComfyError, ConfigError, WorkflowInvalid
from comfyfn.models import (
    BUILTIN_MANIFESTS,
    PULL_MIN_RATE,
    PULL_STALL_SECONDS,
    ModelFile,
    ModelManifest,
    Pulled,
    Pushed,
    ServerModels,
    check_servers,
    load_manifest,
    pull,
    pull_to_server,
    push_file,
    sources_from,
    url_file,
    warm,
)

models_app = typer.Typer(
    help="Model files: which a workflow needs and which servers have them (check), "
    "downloads from manifests or URLs (pull), onto a server (push, pull --to-server), "
    "warm-up (warm).",
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
    pool: Annotated[
        bool,
        typer.Option("--pool", help="One table for all --server: a row per server, its gaps."),
    ] = False,
) -> None:
    """Every model file WORKFLOW needs, and whether each server has it (exit 1 if not)."""
    try:
        sources = sources_from(workflow, [load_manifest(m) for m in manifest or []])
        urls = _servers(server)
    except ComfyError as exc:
        raise fail(exc) from None
    results = asyncio.run(check_servers(urls, workflow, sources))
    if as_json:
        typer.echo(json.dumps([_as_json(url, r) for url, r in results], indent=2))
    elif pool:
        out.print(_pool_table(results))
    else:
        for url, result in results:
            _print_check(url, result)
    if all(isinstance(r, ConfigError | WorkflowInvalid) for _, r in results):
        raise typer.Exit(2)  # the workflow (or an option) is wrong, wherever it is checked
    if not all(isinstance(r, ServerModels) and r.ok for _, r in results):
        raise typer.Exit(1)


def _pool_table(results: list[tuple[str, ServerModels | ComfyError]]) -> Table:
    """A row per server: whether it has every file, and the ones it lacks, named."""
    table = Table(title="model files per server")
    for heading in ("server", "models", "missing"):
        table.add_column(heading, overflow="fold")
    for url, result in results:
        if isinstance(result, ComfyError):
            table.add_row(esc(public_url(url)), "[red]error[/red]", esc(result))
            continue
        have = len(result.needed) - len(result.missing)
        status = f"{have}/{len(result.needed)}"
        gaps = [n.relpath for n in result.missing]
        gaps += [f"(no models/{folder}/ folder)" for folder in result.unknown_folders]
        shown = "\n".join(esc(g) for g in gaps) or "-"
        table.add_row(esc(public_url(url)), status if result.ok else f"[red]{status}[/red]", shown)
    return table


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
    source: Annotated[
        str,
        typer.Argument(
            metavar="MANIFEST",
            help=f"A built-in manifest ({', '.join(BUILTIN_MANIFESTS)}), a YAML/JSON file, "
            "or the http(s) URL of one file (with --folder and --sha256).",
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
    folder: Annotated[
        str | None,
        typer.Option("--folder", help="For a URL: the models/ folder it goes in (e.g. loras)."),
    ] = None,
    sha256: Annotated[
        str | None,
        typer.Option("--sha256", metavar="HEX", help="For a URL: the file's sha256 (checked)."),
    ] = None,
    to_server: Annotated[
        str | None,
        typer.Option(
            "--to-server",
            metavar="URL",
            help="Put the files onto this ComfyUI through its assets API: downloaded here "
            "(into --models-dir, else a temporary folder), verified, then pushed.",
        ),
    ] = None,
) -> None:
    """Download a manifest's files (or one file by URL) into their folders: resumed,
    checked against the sha256 and size published, atomic; or onto a server (--to-server)."""
    try:
        chosen = _chosen(source, folder, sha256, allow_unverified)
        if to_server is not None:
            _pull_to_server(chosen, to_server, models_dir, allow_unverified)
            return
        target = _models_dir(models_dir)
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


def _chosen(source: str, folder: str | None, sha256: str | None, unverified: bool) -> ModelManifest:
    """The manifest SOURCE names, or a one-file manifest for a URL (--folder and --sha256)."""
    if not source.lower().startswith(("http://", "https://")):
        if folder is not None or sha256 is not None:
            raise ConfigError(
                "--folder and --sha256 are for one file by URL; a manifest's entries name "
                "their own folder and sha256"
            )
        return load_manifest(source)
    if folder is None:
        raise ConfigError("a file by URL needs --folder: the models/ folder it goes in (loras…)")
    if sha256 is None and not unverified:
        raise ConfigError(
            "a file by URL needs --sha256 HEX, to check what is downloaded (or "
            "--allow-unverified, checking only what the server publishes)"
        )
    file = url_file(source, folder, sha256)
    return ModelManifest(file.name, (file,))


def _models_dir(given: Path | None) -> Path:
    where = given or (Path(os.environ[MODELS_DIR_ENV]) if os.environ.get(MODELS_DIR_ENV) else None)
    if where is None:
        raise ConfigError(f"give --models-dir DIR (or set ${MODELS_DIR_ENV})")
    return where.expanduser()


@contextlib.contextmanager
def _progress_bars() -> Iterator[Callable[[str, int, int | None], None]]:
    """``update(label, done, total)``: one bar per label, on a terminal."""
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

        def update(label: str, done: int, total: int | None) -> None:
            if label not in tasks:
                tasks[label] = bar.add_task(esc(label), total=total)
            bar.update(tasks[label], completed=done, total=total)

        yield update


def _pull_with_progress(
    manifest: ModelManifest,
    target: Path,
    verify: bool,
    allow_unverified: bool,
    stall: tuple[float, float],
) -> list[Pulled]:
    """``pull``, with a progress bar on a terminal; ``stall`` is (min_rate, stall_seconds)."""
    with _progress_bars() as update:

        def progress(file: ModelFile, done: int, total: int | None) -> None:
            update(file.relpath, done, total)

        return pull(
            manifest,
            target,
            on_progress=progress,
            verify_existing=verify,
            allow_unverified=allow_unverified,
            min_rate=stall[0],
            stall_seconds=stall[1],
        )


def _pull_to_server(
    manifest: ModelManifest, server: str, models_dir: Path | None, allow_unverified: bool
) -> None:
    """``pull_to_server``, saying that the files travel through here, with progress bars."""
    err.print(
        f"{esc(public_url(server))}: ComfyUI's assets API has no server-side download, so "
        "the files are downloaded here, verified, then pushed to it",
        highlight=False,
    )
    with _progress_bars() as update:
        pushed = pull_to_server(
            manifest,
            server,
            models_dir=models_dir.expanduser() if models_dir else None,
            on_pull=lambda file, done, total: update(file.relpath, done, total),
            on_push=lambda label, done, total: update(f"push {label}", done, total),
            allow_unverified=allow_unverified,
        )
    for p in pushed:
        _print_pushed(p)


def _print_pushed(p: Pushed) -> None:
    typer.echo(
        f"{p.action:10} {p.folder}/{p.name} on {p.server} as {p.relpath} "
        f"({p.blake3}, {p.size} bytes, verified)"
    )


@models_app.command("push")
def push_command(
    file: Annotated[Path, typer.Argument(help="The local model file.", show_default=False)],
    folder: Annotated[
        str,
        typer.Option(
            "--folder", help="The server's models/ folder (loras, checkpoints, diffusion_models…)."
        ),
    ],
    server: ServerOpt = None,
) -> None:
    """Put FILE into a ComfyUI's models/FOLDER/ through its own assets API (ComfyUI started
    with --enable-assets), verified by hash. ComfyUI stores it under its content hash: the
    name printed is the one its loaders (and workflows) use."""
    try:
        url = server_url(server)
        with _progress_bars() as update:
            pushed = push_file(file, url, folder=folder, on_progress=update)
    except ComfyError as exc:
        raise fail(exc) from None
    _print_pushed(pushed)


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
