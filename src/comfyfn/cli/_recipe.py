"""``comfyfn recipe``: list, show and run the YAML recipes (outputs per topic)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from comfyfn.batch import BatchSettings, Row, RowError
from comfyfn.batch.rows import values_problem
from comfyfn.cli._batch import (
    AsJson,
    HttpTimeout,
    JobTimeout,
    OnInterrupt,
    OnInterruptChoice,
    Prime,
    Retries,
    StatusEvery,
    execute,
    resolve_servers,
)
from comfyfn.cli._common import ServersOpt, esc, out, warnings_once, workflow_source
from comfyfn.recipes import Recipe, list_recipes, load_recipe, plan_topics, recipe_text

recipe_app = typer.Typer(
    help="Recipes: editable YAML files of outputs per topic.", no_args_is_help=True
)

RecipeName = Annotated[str, typer.Argument(help="Recipe name or path to a recipe YAML.")]


@recipe_app.command("list")
def recipe_list() -> None:
    """Built-in and user recipes (``$COMFYFN_RECIPES``), with their outputs."""
    for recipe in list_recipes():
        outs = ", ".join(
            f"{o.name} {o.deliver[0]}×{o.deliver[1]}" + (f" ×{o.count}" if o.count > 1 else "")
            for o in recipe.outputs
        )
        typer.echo(f"{recipe.name:12} {recipe.description}\n{'':12} {outs}")


@recipe_app.command("show")
def recipe_show(name: RecipeName) -> None:
    """Print a recipe's YAML, to copy and edit: ``comfyfn recipe show social > mine.yaml``,
    then ``comfyfn recipe run mine.yaml topics.txt``."""
    typer.echo(recipe_text(name), nl=False)


@recipe_app.command("run")
def recipe_run(
    name: RecipeName,
    topics: Annotated[Path, typer.Argument(help="A text file, one topic per line.")],
    output: Annotated[Path, typer.Option("--output", "-o")] = Path("out"),
    server: ServersOpt = None,
    workflow: Annotated[
        str | None,
        typer.Option("--workflow", "-w", help="Run this workflow instead of the recipe's."),
    ] = None,
    seed: Annotated[int, typer.Option(help="Base seed for the recipe's stable seeds.")] = 0,
    prime: Prime = None,
    retries: Retries = 3,
    job_timeout: JobTimeout = None,
    http_timeout: HttpTimeout = 10.0,
    dry_run: Annotated[
        bool,
        typer.Option("--dry-run", help="Print every image's prompt, sizes and seed; run nothing."),
    ] = False,
    on_interrupt: OnInterrupt = OnInterruptChoice.finish,
    as_json: AsJson = False,
    status_every: StatusEvery = 30.0,
) -> None:
    """Make every output of a recipe for every topic, delivered at the exact pixel sizes."""
    recipe = load_recipe(name)
    plan = plan_topics(recipe, topics, seed=seed, workflow=workflow)
    chosen = workflow_source(plan.workflow)
    if dry_run:
        with warnings_once():
            _print_plan(recipe, plan.rows)
        return
    execute(
        _recipe_rows(plan.rows),
        output,
        resolve_servers(server),
        workflow=chosen,
        settings=BatchSettings(
            prime=prime, retries=retries, job_timeout=job_timeout, http_timeout=http_timeout
        ),
        total=plan.total,
        as_json=as_json,
        on_interrupt=on_interrupt,
        status_every=status_every,
    )


def _print_plan(recipe: Recipe, rows: Iterable[dict[str, Any]]) -> None:
    """What ``recipe run`` would make, one line per image (a table on a terminal)."""
    table = Table("file", "delivered", "generated", "seed", "prompt", title=esc(recipe.name))
    for row in rows:
        deliver = row["_deliver"]
        table.add_row(
            esc(f"{row['_name']}.png"),
            f"{deliver['width']}×{deliver['height']} {deliver['fit']}",
            f"{row['width']}×{row['height']}",
            str(row["seed"]),
            esc(row["prompt"]),
        )
    out.print(table)


def _recipe_rows(rows: Iterable[dict[str, Any]]) -> Iterator[Row | RowError]:
    for i, values in enumerate(rows, 1):
        problem = values_problem(values)  # e.g. a topic line over the cell limit
        yield Row(i, values) if problem is None else RowError(i, *problem)
