"""``comfyfn mcp``: the served workflows as MCP tools on stdio, for a local AI agent (Claude
Desktop, Cursor, …) that starts the command itself. Jobs run on comfyfn's own fleet
(``--server``, repeatable; resolved as every command resolves them); images land in the
output folder and reach the agent as a preview plus file:// links.

stdout carries the protocol alone: everything else (the local engine starting, warnings,
logs) goes to stderr. Needs the ``mcp`` extra (and the gateway's, whose typed workflow
schemas and image checks it shares).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import anyio
import typer

from comfyfn.cli._batch import resolve_servers
from comfyfn.cli._common import ServersOpt, fail, workflow_source
from comfyfn.cli._gateway import GATEWAY_MODULES, _missing, served_workflows
from comfyfn.errors import ConfigError

if TYPE_CHECKING:
    from comfyfn.mcp import Backend

log = logging.getLogger("comfyfn.mcp")


def _default_output() -> Path:
    import platformdirs

    return Path(platformdirs.user_data_dir("comfyfn")) / "mcp"


def mcp_command(
    server: ServersOpt = None,
    workflow: Annotated[
        list[str] | None,
        typer.Option(
            "--workflow",
            "-w",
            help="NAME=FILE or a built-in name to offer as a tool (repeatable; default "
            "zimage-turbo and zimage-edit: generate_image and edit_image).",
        ),
    ] = None,
    output: Annotated[
        Path | None,
        typer.Option(
            "--output",
            "-o",
            help="Where the images go, a folder per job (default: comfyfn's data dir, mcp/).",
        ),
    ] = None,
) -> None:
    """Serve the workflows to an AI agent over MCP on stdio (the agent starts this command)."""
    missing = [m for m in ("mcp", *GATEWAY_MODULES) if _missing(m)]
    if missing:
        raise fail(
            ConfigError(f"comfyfn mcp needs {', '.join(missing)}: pip install 'comfyfn[mcp]'")
        )
    from comfyfn.gateway.registry import Registry
    from comfyfn.mcp import LocalBackend

    served = served_workflows(workflow)
    for _, source in served:
        workflow_source(source)  # a usage error before any server is looked up or started
    servers = resolve_servers(server)
    registry = Registry()
    registry.load(served, servers=servers)
    folder = output or _default_output()
    backend = LocalBackend(servers, registry, folder)
    log.info("MCP on stdio; images under %s", folder)
    anyio.run(_serve, backend)


async def _serve(backend: Backend) -> None:
    from mcp.server.stdio import stdio_server

    from comfyfn.mcp import build_server

    server = build_server(backend)
    async with stdio_server() as (read, write):
        await server.run(read, write, server.create_initialization_options())
