"""``comfyfn batch`` and ``comfyfn recipe``: many jobs over a pool of servers, with progress."""

from __future__ import annotations

import asyncio
import csv
import enum
import signal
import sys
import time
import warnings
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from comfyfn._cli_common import err, fail, server_url
from comfyfn.batch import (
    Batch,
    BatchSettings,
    JobResult,
    Row,
    expand,
    parse_vary,
    read_job_file,
    read_rows,
    template_variables,
    write_report,
)
from comfyfn.errors import ComfyError, ConfigError
from comfyfn.recipes import list_recipes, load_recipe

recipe_app = typer.Typer(
    help="Recipes: editable YAML files of outputs per topic.", no_args_is_help=True
)

Servers = Annotated[
    list[str] | None,
    typer.Option(
        "--server",
        "-s",
        help="A ComfyUI URL (repeat for a pool). Default: $COMFYFN_SERVER, else the local engine.",
    ),
]
Prime = Annotated[
    int,
    typer.Option(
        "--prime", "--concurrency", help="Jobs queued on each server beyond the running one."
    ),
]


class OnInterruptChoice(enum.StrEnum):
    finish = "finish"
    cancel = "cancel"


OnInterrupt = Annotated[
    OnInterruptChoice,
    typer.Option(
        help="What the first Ctrl-C does to running jobs: finish or cancel (a second Ctrl-C "
        "cancels)."
    ),
]


def _count(path: Path) -> int | None:
    try:
        if path.suffix.lower() in (".jsonl", ".ndjson"):
            with path.open(encoding="utf-8") as fh:
                return sum(1 for line in fh if line.strip())
        with path.open(encoding="utf-8-sig", newline="") as fh:
            return sum(1 for _ in csv.DictReader(fh))
    except (OSError, UnicodeDecodeError, csv.Error):
        return None


def _progress() -> Progress:
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[rate]}"),
        TimeRemainingColumn(),
        console=err,
        disable=not err.is_terminal,
    )


def execute(
    rows: Iterable[Row],
    output: Path,
    servers: list[str],
    *,
    workflow: Any,
    settings: BatchSettings,
    total: int | None,
    as_json: bool,
    on_interrupt: OnInterruptChoice,
) -> None:
    """Run a batch with progress, a summary, a contact sheet and the exit code."""
    started = time.monotonic()
    counted: dict[str, int] = {}
    with _progress() as progress:
        overall = progress.add_task("jobs", total=total, rate="")
        lines = {url: progress.add_task(url, total=None, rate="") for url in servers}

        def on_event(kind: str, data: Any) -> None:
            if kind == "result":
                result: JobResult = data
                counted[result.state] = counted.get(result.state, 0) + 1
                elapsed = max(time.monotonic() - started, 1e-6)
                rate = f"{counted.get('done', 0) / elapsed * 60:.1f}/min"
                progress.update(overall, advance=1, rate=rate)
                if result.state in ("failed", "invalid"):
                    progress.console.print(
                        f"[red]{result.state}[/red] {result.error}", highlight=False
                    )
            for url, task in lines.items():
                s = batch.pool.states[url]
                status = "up" if s.healthy else "[red]down[/red]"
                progress.update(
                    task,
                    description=f"{url} {status} busy {min(s.in_flight, 1)} "
                    f"queued {s.queued} failures {s.failures}",
                    rate=f"{s.done} done",
                )

        batch = Batch(
            rows, output, servers=servers, workflow=workflow, settings=settings, on_event=on_event
        )

        async def consume() -> None:
            loop = asyncio.get_running_loop()
            presses = 0

            def interrupted() -> None:
                nonlocal presses
                presses += 1
                cancel = presses > 1 or on_interrupt == OnInterruptChoice.cancel
                err.print(
                    "stopping: "
                    + (
                        "cancelling running jobs"
                        if cancel
                        else "running jobs finish (Ctrl-C again to cancel them)"
                    )
                )
                batch.stop(cancel_running=cancel)

            with _signal(loop, interrupted):
                async for _ in batch.results():
                    pass

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            asyncio.run(consume())
    summary, sheet = write_report(batch, counted)
    if as_json:
        typer.echo(summary.to_json())
    else:
        err.print(
            f"done {summary.done} · failed {summary.failed} · invalid {summary.invalid} · "
            f"skipped {summary.skipped} · {summary.images_per_minute} jobs/min · "
            f"p50 {summary.p50 or 0:.2f}s · p95 {summary.p95 or 0:.2f}s"
        )
        for url, s in summary.servers.items():
            err.print(
                f"  {url}: {s['done']} done, {s['failures']} failures, busy "
                f"{s['busy_fraction']:.0%}"
            )
        err.print(f"contact sheet: {sheet}")
    if not summary.ok:
        raise typer.Exit(1)


class _signal:
    """SIGINT handler for the duration of the batch (restored after)."""

    def __init__(self, loop: asyncio.AbstractEventLoop, handler) -> None:
        self.loop, self.handler = loop, handler

    def __enter__(self) -> None:
        if sys.platform != "win32":
            self.loop.add_signal_handler(signal.SIGINT, self.handler)

    def __exit__(self, *exc: object) -> None:
        if sys.platform != "win32":
            self.loop.remove_signal_handler(signal.SIGINT)


def resolve_servers(servers: list[str] | None) -> list[str]:
    return [server_url(s) for s in servers] if servers else [server_url(None)]


def batch_command(
    source: Annotated[Path, typer.Argument(help="prompts.csv, prompts.jsonl or a job.yaml.")],
    output: Annotated[Path, typer.Option("--output", "-o", help="Output folder.")] = Path("out"),
    server: Servers = None,
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
    prime: Prime = 1,
    retries: Annotated[int, typer.Option(help="Moves to another server on failure.")] = 3,
    job_timeout: Annotated[float | None, typer.Option(help="Seconds per job.")] = None,
    http_timeout: Annotated[
        float, typer.Option(help="Seconds before a silent server counts as failed.")
    ] = 10.0,
    on_interrupt: OnInterrupt = OnInterruptChoice.finish,
    as_json: Annotated[bool, typer.Option("--json", help="Print the summary as JSON.")] = False,
) -> None:
    """Run every row of a CSV/JSONL/YAML job file; re-running resumes where it stopped."""
    try:
        if source.suffix.lower() in (".yaml", ".yml"):
            job = read_job_file(source)
            raw, job_vary = job["rows"], job["vary"]
            template = template or job.get("template")
            workflow = workflow or job.get("workflow")
            prime = job.get("prime", prime)
            defaults = job.get("defaults")
            total = None
        else:
            raw, job_vary, defaults = read_rows(source), [], None
            total = _count(source)
        varies = job_vary + [parse_vary(v) for v in vary or ()]
        combos = 1
        for _, values in varies:
            combos *= len(values)
        rows = expand(raw, vary=varies, template=template, defaults=defaults)
        settings = BatchSettings(
            prime=prime,
            retries=retries,
            job_timeout=job_timeout,
            http_timeout=http_timeout,
            variables=template_variables(template, [n for n, _ in varies]),
        )
        execute(
            rows,
            output,
            resolve_servers(server),
            workflow=workflow or "zimage-turbo",
            settings=settings,
            total=total * combos if total else None,
            as_json=as_json,
            on_interrupt=on_interrupt,
        )
    except ComfyError as exc:
        raise fail(exc) from None


@recipe_app.command("list")
def recipe_list() -> None:
    """Built-in and user recipes (``$COMFYFN_RECIPES``), with their outputs."""
    for recipe in list_recipes():
        outs = ", ".join(
            f"{o.name} {o.deliver[0]}×{o.deliver[1]}" + (f" ×{o.count}" if o.count > 1 else "")
            for o in recipe.outputs
        )
        typer.echo(f"{recipe.name:12} {recipe.description}\n{'':12} {outs}")


def _topics(path: Path) -> Iterator[str]:
    try:
        with path.open(encoding="utf-8-sig") as fh:
            yield from fh
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror}") from exc


@recipe_app.command("run")
def recipe_run(
    name: Annotated[str, typer.Argument(help="Recipe name or path to a recipe YAML.")],
    topics: Annotated[Path, typer.Argument(help="A text file, one topic per line.")],
    output: Annotated[Path, typer.Option("--output", "-o")] = Path("out"),
    server: Servers = None,
    seed: Annotated[int, typer.Option(help="Base seed for the recipe's stable seeds.")] = 0,
    prime: Prime = 1,
    on_interrupt: OnInterrupt = OnInterruptChoice.finish,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Make every output of a recipe for every topic, delivered at the exact pixel sizes."""
    try:
        recipe = load_recipe(name)
        rows = (
            Row(i, values) for i, values in enumerate(recipe.rows(_topics(topics), seed=seed), 1)
        )
        n_topics = sum(1 for t in _topics(topics) if t.strip() and not t.strip().startswith("#"))
        execute(
            rows,
            output,
            resolve_servers(server),
            workflow=recipe.workflow,
            settings=BatchSettings(prime=prime),
            total=n_topics * recipe.images_per_topic,
            as_json=as_json,
            on_interrupt=on_interrupt,
        )
    except ComfyError as exc:
        raise fail(exc) from None
