"""``comfyfn serve`` and ``comfyfn keys``.

Both need the ``gateway`` extra (FastAPI, uvicorn, SQLAlchemy, prometheus-client,
sse-starlette), and a ``postgresql://`` database the ``postgres`` extra (psycopg): they are
imported inside the commands, after :func:`require_extras` has said which extra to install
if one is missing (exit 2), so the rest of the CLI works without them.
"""

from __future__ import annotations

import importlib.util
import logging
import os
from typing import TYPE_CHECKING, Annotated

import typer

from comfyfn.cli._common import ComfyOrgKeyOpt, ServersOpt, err, esc, fail
from comfyfn.errors import ComfyError, ConfigError

if TYPE_CHECKING:
    from comfyfn.jobs.store import Store

#: what ``pip install 'comfyfn[gateway]'`` brings: import names
GATEWAY_MODULES = (
    "fastapi",
    "uvicorn",
    "sqlalchemy",
    "prometheus_client",
    "sse_starlette",
    "python_multipart",
)

keys_app = typer.Typer(help="API keys of the gateway (stored hashed).", no_args_is_help=True)

DbOpt = Annotated[
    str | None,
    typer.Option(
        "--db",
        help="Database URL (default: $COMFYFN_DB, else an embedded SQLite file).",
        envvar="COMFYFN_DB",
    ),
]


def _missing(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is None
    except (ImportError, ValueError):
        return True


def require_extras(db: str | None, *, service: bool = True) -> None:
    """Exit 2 with one sentence naming the extra to install if the gateway's libraries (the
    service, or ``comfyfn worker``, which runs its API jobs; not ``service`` for the job
    store and a batch's own worker), or the PostgreSQL driver for a ``postgresql://``
    database, are missing."""
    missing = [m for m in GATEWAY_MODULES if _missing(m)] if service else []
    if missing:
        raise fail(
            ConfigError(f"the gateway needs {', '.join(missing)}: pip install 'comfyfn[gateway]'")
        )
    scheme = (db or os.environ.get("COMFYFN_DB") or "").partition("://")[0]
    if scheme in ("postgresql", "postgres", "postgresql+psycopg") and _missing("psycopg"):
        raise fail(
            ConfigError("a PostgreSQL database needs psycopg: pip install 'comfyfn[postgres]'")
        )


def served_workflows(items: list[str] | None) -> tuple[tuple[str, str], ...]:
    """``--workflow`` values (``NAME=FILE`` or a built-in name) as (name, source) pairs;
    default zimage-turbo and zimage-edit."""
    served = []
    for item in items or ["zimage-turbo", "zimage-edit"]:
        name, sep, source = item.partition("=")
        served.append((name, source) if sep else (item, item))
    return tuple(served)


def open_store(db: str | None) -> Store:
    """The job store at ``db`` (else $COMFYFN_DB, else the embedded file)."""
    from comfyfn.gateway.settings import GatewaySettings
    from comfyfn.jobs.store import Store

    return Store(GatewaySettings.resolve(servers=[], db_url=db).db_url)


def serve_command(
    server: ServersOpt = None,
    host: Annotated[str, typer.Option(help="Listen address.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Listen port.")] = 8000,
    db: DbOpt = None,
    storage: Annotated[
        str | None,
        typer.Option(
            help=(
                "Where output files go: a folder or s3://bucket/prefix (endpoint and "
                "credentials from the AWS environment variables). Default: $COMFYFN_STORAGE, "
                "else files/ in the data dir."
            ),
        ),
    ] = None,
    workflow: Annotated[
        list[str] | None,
        typer.Option(
            "--workflow",
            "-w",
            help="NAME=FILE or a built-in name to serve (repeatable; default zimage-turbo "
            "and zimage-edit).",
        ),
    ] = None,
    prime: Annotated[
        int | None,
        typer.Option(
            help="Jobs queued per server beyond the running one (default: adapts to the "
            "measured job times)."
        ),
    ] = None,
    url_ttl: Annotated[
        int,
        typer.Option(help="Seconds a file URL (signed or presigned) stays valid.", min=1),
    ] = 3600,
    warm: Annotated[
        list[str] | None,
        typer.Option(
            help=(
                "A workflow (served name, built-in or file) to run once on every server at "
                "start; /readyz answers 503 until it is done (repeatable)."
            ),
        ),
    ] = None,
    allow_private_webhooks: Annotated[
        bool, typer.Option(help="Allow webhooks to loopback/private addresses.")
    ] = False,
    cors_origin: Annotated[
        list[str] | None, typer.Option(help="Enable CORS for an origin.")
    ] = None,
    stale_after: Annotated[
        float,
        typer.Option(help="Seconds without heartbeat before a running job is taken over."),
    ] = 30.0,
    max_pixels: Annotated[
        int | None, typer.Option(help="Largest width × height of one image [4194304].")
    ] = None,
    max_batch_size: Annotated[int | None, typer.Option(help="Most images per job [4].")] = None,
    max_steps: Annotated[
        int | None, typer.Option(help="Most sampling steps per job [100].")
    ] = None,
    max_total_pixels: Annotated[
        int | None,
        typer.Option(help="Largest width × height × batch size of one request [16777216]."),
    ] = None,
    mcp: Annotated[
        bool,
        typer.Option(
            help="Serve the workflows to AI agents at /mcp (MCP, streamable HTTP, the same "
            "API keys); needs the mcp extra."
        ),
    ] = True,
    ui: Annotated[
        bool, typer.Option("--ui/--no-ui", help="Serve the web app at / (sign in by API key).")
    ] = True,
    access_log: Annotated[
        bool,
        typer.Option(
            help="Log every request (method, path without query, status, seconds, key id) "
            "to stderr."
        ),
    ] = True,
    no_worker: Annotated[
        bool,
        typer.Option(
            "--no-worker",
            help="Only serve the API: `comfyfn worker` runners on the GPU machines run the "
            "jobs (a shared PostgreSQL --db). /readyz then needs only the database.",
        ),
    ] = False,
    comfy_org_key: ComfyOrgKeyOpt = None,
) -> None:
    """Run the gateway (OpenAI-compatible images API + async jobs) with uvicorn."""
    require_extras(db)
    if no_worker and (server or warm):
        raise fail(ConfigError("--no-worker runs no job here: drop --server and --warm"))
    import uvicorn

    from comfyfn.cli._batch import resolve_servers
    from comfyfn.gateway import GatewaySettings, create_app

    given = {
        "max_pixels": max_pixels,
        "max_batch_size": max_batch_size,
        "max_steps": max_steps,
        "max_total_pixels": max_total_pixels,
    }
    limits = {name: value for name, value in given.items() if value is not None}
    try:
        settings = GatewaySettings.resolve(
            servers=[] if no_worker else resolve_servers(server),
            db_url=db,
            storage=storage,
            workflows=served_workflows(workflow),
            prime=prime,
            warm=tuple(warm or ()),
            url_ttl=url_ttl,
            allow_private_webhooks=allow_private_webhooks,
            cors_origins=tuple(cors_origin or ()),
            stale_after=stale_after,
            heartbeat=max(0.2, stale_after / 4),
            comfy_org_key=comfy_org_key,
            **limits,
        )
        serves_mcp = mcp and not _missing("mcp")  # the extra: optional, unless it is asked
        app = create_app(settings, mcp=serves_mcp, ui=ui, worker=not no_worker)
    except ComfyError as exc:
        raise fail(exc) from None
    err.print(
        esc(
            f"gateway on http://{host}:{port} → "
            f"{', '.join(settings.servers) or 'the workers (comfyfn worker)'} "
            f"(db {settings.db_url.split('@')[-1]}, files {settings.storage})"
            + (f"; MCP at http://{host}:{port}/mcp" if serves_mcp else "")
        ),
        highlight=False,
    )
    if access_log:
        logging.getLogger("comfyfn.gateway.access").setLevel(logging.INFO)
    # uvicorn's own access log would print query strings (a file URL's signature): ours only
    uvicorn.run(app, host=host, port=port, log_level="warning", access_log=False)


@keys_app.command("create")
def keys_create(
    name: str,
    rate: Annotated[str, typer.Option(help="e.g. 60/min, 5/s")] = "60/min",
    max_priority: Annotated[
        int,
        typer.Option(help="The highest job priority this key may ask for (0-100)."),
    ] = 0,
    db: DbOpt = None,
) -> None:
    """Create a key; it is printed once (only its hash is stored)."""
    require_extras(db)
    from comfyfn.jobs import parse_rate

    try:
        parse_rate(rate)
        with open_store(db) as store:
            secret, key = store.create_key(name, rate, max_priority=max_priority)
    except ValueError as exc:
        raise fail(ConfigError(str(exc))) from None
    err.print(
        esc(
            f"key {key.name!r} ({key.id}, {key.rate}, max priority {key.max_priority}) — "
            "store it now, it is not shown again:"
        ),
        highlight=False,
    )
    typer.echo(secret)


@keys_app.command("list")
def keys_list(db: DbOpt = None) -> None:
    """Keys with their prefix, rate, maximum priority and state."""
    require_extras(db)
    with open_store(db) as store:
        keys = store.list_keys()
    for key in keys:
        typer.echo(
            f"{key.id}  {key.name:20} {key.prefix}…  {key.rate:10} "
            f"max priority {key.max_priority:<3} {'revoked' if key.revoked else 'active'}"
        )


@keys_app.command("revoke")
def keys_revoke(name: str, db: DbOpt = None) -> None:
    """Revoke a key by name or id (exit 1 if there is none)."""
    require_extras(db)
    with open_store(db) as store:
        revoked = store.revoke_key(name)
    if not revoked:
        err.print(esc(f"no active key {name!r}"), highlight=False)
        raise typer.Exit(1)
    err.print(esc(f"revoked {name!r}"), highlight=False)
