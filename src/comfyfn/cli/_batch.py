"""``comfyfn batch`` and ``comfyfn recipe``: many jobs over a pool of servers, with progress."""

from __future__ import annotations

import asyncio
import enum
import errno
import hashlib
import os
import signal
import sqlite3
import sys
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Annotated, Any

import typer

from comfyfn.batch import (
    Batch,
    BatchSettings,
    Row,
    RowError,
    expand,
    parse_vary,
    read_job_file,
    read_rows,
    template_variables,
    write_report,
)
from comfyfn.batch.jobs import FOLDER
from comfyfn.batch.rows import (
    RawRows,
    count_rows,
    csv_columns,
    prompt_placeholders,
    template_fields,
    template_problem,
    variation_problem,
)
from comfyfn.cli._batch_queue import (
    CONTROLS,
    QueueDb,
    QueuedRun,
    QueueName,
    QueueWork,
    check_queue_args,
    control_batch,
    run_queued,
)
from comfyfn.cli._common import (
    ComfyOrgKeyOpt,
    ServersOpt,
    err,
    esc,
    server_url,
    warnings_once,
    workflow_source,
)
from comfyfn.cli._engine import warm_servers
from comfyfn.cli._gateway import require_extras
from comfyfn.cli._progress import BatchProgress
from comfyfn.errors import ConfigError
from comfyfn.storage import Storage, StorageError
from comfyfn.workflow import MEANINGS

Prime = Annotated[
    int | None,
    typer.Option(
        "--prime",
        "--concurrency",
        help="Jobs queued on each server beyond the running one (default: adapts to the "
        "job times measured on each server).",
    ),
]


class OnInterruptChoice(enum.StrEnum):
    finish = "finish"
    cancel = "cancel"


OnInterrupt = Annotated[
    OnInterruptChoice,
    typer.Option(
        help="What the first Ctrl-C (or SIGTERM) does to running jobs: finish or cancel; a "
        "second one cancels them and stops at once."
    ),
]


def execute(
    rows: Iterable[Row | RowError],
    output: Path,
    servers: list[str],
    *,
    workflow: Any,
    settings: BatchSettings,
    total: int | None,
    as_json: bool,
    on_interrupt: OnInterruptChoice,
    status_every: float,
    storage: Storage | None = None,
) -> None:
    """Run a batch with progress, a summary, a contact sheet and the exit code: 0 all done,
    1 some rows failed, 2 the output folder (or object store) cannot be used, 130 stopped by
    Ctrl-C/SIGTERM.
    With ``storage`` the images go there and ``output`` keeps the manifest and report."""
    try:
        batch = Batch(
            rows, output, servers=servers, workflow=workflow, settings=settings, storage=storage
        )
        counted, presses = _run(batch, total, on_interrupt, status_every)
        if presses > 1:
            err.print(
                "stopped at once: running jobs were cancelled on their servers; run the same "
                "command again to resume"
            )
            raise typer.Exit(130)
        summary, sheet = write_report(batch, counted)
    except (OSError, sqlite3.DatabaseError, ConfigError, StorageError, ExceptionGroup) as exc:
        message = output_failure(exc, output)
        if message is None:
            raise
        err.print(f"[red]error:[/red] {esc(message)}", highlight=False)
        raise typer.Exit(2) from None
    if as_json:
        typer.echo(summary.to_json())
    else:
        print_summary(summary, sheet)
    if presses:
        err.print("stopped before the end: run the same command again to resume")
        raise typer.Exit(130)
    if not summary.ok:
        raise typer.Exit(1)


def _run(
    batch: Batch, total: int | None, on_interrupt: OnInterruptChoice, status_every: float
) -> tuple[dict[str, int], int]:
    """Run to the end or until stopped: (results by state, Ctrl-C/SIGTERM presses)."""
    presses = 0
    with BatchProgress(batch, total) as progress:

        def interrupted() -> None:
            nonlocal presses
            presses += 1
            if presses > 1:
                err.print("stopping now: cancelling running jobs")
                batch.abandon()
                return
            cancel = on_interrupt == OnInterruptChoice.cancel
            err.print(
                "stopping: "
                + (
                    "cancelling running jobs (Ctrl-C again to stop at once)"
                    if cancel
                    else "running jobs finish (Ctrl-C again to stop at once)"
                )
            )
            batch.stop(cancel_running=cancel)

        async def consume() -> None:
            status = asyncio.create_task(progress.keep_saying(status_every))
            try:
                with _signals(asyncio.get_running_loop(), interrupted):
                    async for _ in batch.results():
                        pass
            finally:
                status.cancel()

        batch.on_event = progress.on_event
        with warnings_once():
            asyncio.run(consume())
    return progress.counted, presses


def print_summary(summary: Any, sheet: Path) -> None:
    err.print(
        f"done {summary.done} · failed {summary.failed} · invalid {summary.invalid} · "
        f"skipped {summary.skipped} · {summary.jobs_per_minute} jobs/min · "
        f"ran p50 {summary.p50 or 0:.2f}s · p95 {summary.p95 or 0:.2f}s · turnaround p50 "
        f"{summary.turnaround_p50 or 0:.2f}s · p95 {summary.turnaround_p95 or 0:.2f}s",
        highlight=False,
    )
    for url, s in summary.servers.items():
        err.print(
            f"  {esc(url)}: {s['done']} done, {s['failures']} failures, busy "
            f"{s['busy_fraction']:.0%}",
            highlight=False,
        )
    err.print(
        f"contact sheet: {esc(sheet)} · results: {esc(sheet.with_name('results.csv'))}",
        highlight=False,
    )


class _signals:
    """Ctrl-C (SIGINT) and SIGTERM stop the batch the same way for its duration: the first
    stops taking rows, the second stops at once (the default handlers are restored after)."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self, loop: asyncio.AbstractEventLoop, handler: Callable[[], None]) -> None:
        self.loop, self.handler = loop, handler

    def __enter__(self) -> None:
        if sys.platform != "win32":
            for sig in self.SIGNALS:
                self.loop.add_signal_handler(sig, self.handler)

    def __exit__(self, *exc: object) -> None:
        if sys.platform != "win32":
            for sig in self.SIGNALS:
                self.loop.remove_signal_handler(sig)


# -- the output folder cannot be used: one sentence, exit 2 -------------------------------------

_DISK_ERRNOS = {errno.EROFS, errno.ENOSPC, errno.EDQUOT, errno.EACCES, errno.EPERM}


def output_failure(exc: BaseException, output: Path) -> str | None:
    """One sentence naming the folder when ``exc`` (or what caused it) means the output folder
    or its manifest cannot be used: not SQLite, read-only, not writable, full. None for any
    other error. Works on the raw sqlite3/OSError and on a ComfyError raised from one; an
    object store's failure (it names the store) is one too."""
    for cause in _chain(exc):
        if isinstance(cause, StorageError):
            return f"the outputs cannot be stored: {cause}"
        if isinstance(cause, sqlite3.DatabaseError):
            return _sqlite_failure(cause, output)
        if isinstance(cause, OSError) and cause.errno in _DISK_ERRNOS:
            name = cause.filename
            if name is None or _inside(Path(os.fsdecode(name)), output):
                return _disk_failure(cause.errno, _detail(cause), output)
    return None


def _chain(exc: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    todo: list[BaseException | None] = [exc]
    while todo:
        item = todo.pop(0)
        if item is None or id(item) in seen:
            continue
        seen.add(id(item))
        yield item
        if isinstance(item, BaseExceptionGroup):
            todo.extend(item.exceptions)
        todo += [item.__cause__, item.__context__]


def _inside(path: Path, folder: Path) -> bool:
    try:
        return path.absolute().is_relative_to(folder.absolute())
    except (OSError, ValueError):
        return False


def _detail(exc: OSError) -> str:
    name = f": {os.fsdecode(exc.filename)}" if exc.filename is not None else ""
    return f"{exc.strerror or exc}{name}"


def _sqlite_failure(exc: sqlite3.DatabaseError, output: Path) -> str:
    code, text = getattr(exc, "sqlite_errorname", None) or "", str(exc)
    if code == "SQLITE_FULL" or "disk is full" in text:
        return _disk_failure(errno.ENOSPC, text, output)
    if code.startswith(("SQLITE_READONLY", "SQLITE_CANTOPEN")) or "unable to open" in text:
        read_only = not (output.is_dir() and os.access(output, os.W_OK))
        return _disk_failure(errno.EROFS if read_only else errno.EACCES, text, output)
    if code.startswith(("SQLITE_NOTADB", "SQLITE_CORRUPT")) or "not a database" in text:
        return (
            f"the output folder {output} holds a manifest.sqlite that is not a usable comfyfn "
            f"manifest ({exc}); move it away or give another folder with -o"
        )
    return f"cannot use the manifest in the output folder {output} ({exc})"


def _disk_failure(code: int | None, detail: str, output: Path) -> str:
    if code in (errno.ENOSPC, errno.EDQUOT):
        return (
            f"the output folder {output} is on a full disk ({detail}); free some space, "
            "then run the same command again to resume"
        )
    if code == errno.EROFS:
        return f"the output folder {output} is read-only ({detail}); give a writable folder with -o"
    return f"the output folder {output} is not writable ({detail}); give a writable folder with -o"


def resolve_servers(servers: list[str] | None) -> list[str]:
    return [server_url(s) for s in servers] if servers else [server_url(None)]


# -- options shared by `batch` and `recipe run` -------------------------------------------------

Retries = Annotated[int, typer.Option(help="Moves to another server on failure.")]
JobTimeout = Annotated[float | None, typer.Option(help="Seconds per job.")]
HttpTimeout = Annotated[
    float, typer.Option(help="Seconds before a silent server counts as failed.")
]
AsJson = Annotated[bool, typer.Option("--json", help="Print the summary as JSON.")]
StatusEvery = Annotated[
    float,
    typer.Option(
        min=0,
        help="Off a terminal (a pipe, a log file, CI): print the counts after this many "
        "seconds without a line (0: only a line per finished row).",
    ),
]


def output_place(output: str, state: Path | None) -> tuple[Path, Storage | None]:
    """The local folder of the manifest and report, and the object store of the images
    (None: they go to that folder). ``-o s3://bucket/prefix`` keeps the manifest in
    ``state``, by default a folder in the comfyfn home named after the URL, so the same
    command resumes from anywhere on this machine."""
    if not output.startswith("s3://"):
        if state is not None:
            raise ConfigError("--state is for -o s3://…; an output folder keeps its own manifest")
        return Path(output), None
    from comfyfn.storage import open_storage, parse_s3_url

    bucket, prefix = parse_s3_url(output)
    if state is None:
        from comfyfn.engine.install import engine_home

        name = hashlib.sha256(f"s3://{bucket}/{prefix}".encode()).hexdigest()[:16]
        state = engine_home() / "batches" / name
    return state, open_storage(output)


def batch_command(
    source: Annotated[
        str | None,
        typer.Argument(
            help="prompts.csv, prompts.jsonl or a job.yaml; or status / cancel / retry (with --db) "
            "and a batch's name (a file named so: ./status).",
            show_default=False,
        ),
    ] = None,
    batch_name: Annotated[
        str | None, typer.Argument(help="The batch's name, after status or cancel.")
    ] = None,
    output: Annotated[
        str,
        typer.Option(
            "--output",
            "-o",
            help="Output folder, or s3://bucket/prefix (endpoint and credentials from the AWS "
            "environment variables; the manifest and report stay in --state).",
        ),
    ] = "out",
    state: Annotated[
        Path | None,
        typer.Option(
            help="With -o s3://…: the local folder of the manifest and report. Default: "
            "<comfyfn home>/batches/<hash of the URL>.",
            show_default=False,
        ),
    ] = None,
    server: ServersOpt = None,
    workflow: Annotated[
        str | None, typer.Option("--workflow", "-w", help="Built-in name or workflow file.")
    ] = None,
    vary: Annotated[
        list[str] | None,
        typer.Option(help="name=a,b,c or name=1..8 (repeat for a cartesian product)."),
    ] = None,
    template: Annotated[
        str | None, typer.Option(help='Prompt template, e.g. "{prompt}, {style} style".')
    ] = None,
    prime: Prime = None,
    retries: Retries = 3,
    job_timeout: JobTimeout = None,
    http_timeout: HttpTimeout = 10.0,
    on_interrupt: OnInterrupt = OnInterruptChoice.finish,
    as_json: AsJson = False,
    status_every: StatusEvery = 30.0,
    warm: Annotated[
        bool,
        typer.Option(
            "--warm",
            help="Before the rows, run the workflow's smallest job once on every server (so "
            "none pays the model load on a real row); a server that fails stops the batch.",
        ),
    ] = False,
    db: QueueDb = None,
    name: QueueName = None,
    work: QueueWork = False,
    comfy_org_key: ComfyOrgKeyOpt = None,
) -> None:
    """Run every row of a CSV/JSONL/YAML job file; re-running resumes where it stopped.
    With --db the rows go to the shared queue (status / cancel / retry NAME: see the batch)."""
    if db is not None or name is not None or work:
        require_extras(db)
    if source in CONTROLS:
        control_batch(source, batch_name, db)
        return
    check_queue_args(source, batch_name, db, name, bool(server), work)
    if source is None:  # follow a queued batch
        assert db is not None and name is not None  # check_queue_args
        following = QueuedRun(db, name, output, as_json=as_json, status_every=status_every)
        run_queued(following, state, None, None)
        return
    path = Path(source)
    folder, storage = output_place(output, state)
    chosen: str | dict[str, Any] | None = workflow
    if path.suffix.lower() in (".yaml", ".yml"):
        job = read_job_file(path)
        raw, job_vary = job["rows"], job["vary"]
        template = template or job.get("template")
        chosen = workflow or job.get("workflow")
        prime = job.get("prime", prime)
        defaults = job.get("defaults")
        total = job["total"]
        columns = list(defaults or ())
    else:
        total = count_rows(path)  # a file unreadable mid-way fails before anything runs
        raw, job_vary, defaults = read_rows(path), [], None
        _check_header(path, template)
        columns = csv_columns(path) or []
    if total == 0:
        raise ConfigError(f"{path}: no rows to run (see examples/ for the formats)")
    # input images named by relative paths are read from the job file's folder
    defaults = {FOLDER: str(path.parent.resolve()), **(defaults or {})}
    if chosen is None and "image" in columns:
        chosen = "zimage-edit"  # as generate(image=...) does
    if template is not None and (problem := template_problem(template)):
        raise ConfigError(f"--template {template!r}: {problem}")
    varies = job_vary + [parse_vary(v) for v in vary or ()]
    _check_variations([n for n, _ in varies], template, lambda: _reread(path), defaults)
    if isinstance(chosen, str):
        chosen = workflow_source(chosen)
    combos = 1
    for _, values in varies:
        combos *= len(values)
    settings = BatchSettings(
        prime=prime,
        retries=retries,
        job_timeout=job_timeout,
        http_timeout=http_timeout,
        variables=template_variables(template, [n for n, _ in varies]),
        comfy_org_key=comfy_org_key,
    )
    rows = expand(raw, vary=varies, template=template, defaults=defaults)
    if db is not None:
        queued = QueuedRun(db, name, output, rows=rows, workflow=chosen or "zimage-turbo")
        queued.total, queued.variables = total * combos, settings.variables
        queued.as_json, queued.status_every = as_json, status_every
        run_queued(queued, state, path, server if work else None)
        return
    if storage is not None:
        err.print(f"images to {esc(output)}; manifest and report in {esc(folder)}", highlight=False)
    servers = resolve_servers(server)
    if warm:
        warm_servers(servers, chosen or "zimage-turbo", job_timeout)
    execute(
        rows,
        folder,
        servers,
        workflow=chosen or "zimage-turbo",
        settings=settings,
        total=total * combos,
        as_json=as_json,
        on_interrupt=on_interrupt,
        status_every=status_every,
        storage=storage,
    )


def _check_variations(
    names: list[str],
    template: str | None,
    rows: Callable[[], RawRows],
    defaults: dict[str, Any],
) -> None:
    """A variation nothing uses (neither a workflow parameter nor a placeholder of the
    template or, without one, of any row's prompt) is a usage error naming it, before
    anything runs: every combination would be the same job. The rows are read again only
    for a name that is not a parameter."""
    if all(variation_problem(name, ()) is None for name in names):
        return
    if template is not None:
        placeholders = set(template_fields(template))
    else:
        placeholders = prompt_placeholders(rows(), names, defaults)
    for name in names:
        if (problem := variation_problem(name, placeholders)) is not None:
            raise ConfigError(f"--vary {name}: {problem}")


def _reread(source: Path) -> RawRows:
    """The input rows of ``source`` from the start, as :func:`batch_command` read them."""
    if source.suffix.lower() in (".yaml", ".yml"):
        return read_job_file(source)["rows"]
    return read_rows(source)


def _check_header(source: Path, template: str | None) -> None:
    """A CSV's first line must name workflow parameters (or, with --template, its columns):
    a list of topics given to ``batch`` would otherwise make rows of nothing."""
    columns = csv_columns(source)
    if columns is None or template is not None:
        return
    if not any(c in MEANINGS or "." in c for c in columns):
        first = ",".join(columns)[:80]
        raise ConfigError(
            f"{source}: its first line ({first}) names no workflow parameter; a CSV starts "
            "with a header such as prompt,seed,width,height (see examples/prompts.csv). "
            "For one topic per line, use comfyfn recipe run"
        )
