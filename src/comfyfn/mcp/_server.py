"""The MCP server (the official SDK's low-level server) over :class:`~comfyfn.mcp._tools.Tools`:
the same tools on stdio and on the gateway's streamable HTTP endpoint. A tool's progress
goes to the caller as progress notifications (when it asked for them with a progress
token); a cancelled request cancels its job (the backends see the cancellation)."""

from __future__ import annotations

from importlib.metadata import version
from typing import Any

import mcp_types as types
from mcp.server import Server
from mcp.server.context import ServerRequestContext

from comfyfn.mcp._backend import Backend
from comfyfn.mcp._tools import Tools

__all__ = ["build_server"]

INSTRUCTIONS = (
    "comfyfn runs ComfyUI workflows. generate_image makes images from a prompt (Chinese or "
    "English); edit_image changes an input image; list_workflows shows every workflow's tool "
    "and parameters; run_batch runs a recipe (social, ecommerce, design: sizes per platform) "
    "over topics. Results carry a small preview, links to the full images, the seed and the "
    "parameters: give the same seed again to reproduce an image."
)


def build_server(backend: Backend) -> Server[Any]:
    """An MCP server with the tools of the workflows ``backend`` serves."""
    tools = Tools(backend)

    async def list_tools(
        _: ServerRequestContext[Any], __: types.PaginatedRequestParams | None
    ) -> types.ListToolsResult:
        return types.ListToolsResult(tools=tools.definitions())

    async def call_tool(
        ctx: ServerRequestContext[Any], params: types.CallToolRequestParams
    ) -> types.CallToolResult:
        async def progress(done: float, total: float | None, message: str | None) -> None:
            await ctx.session.report_progress(done, total, message)

        return await tools.call(params.name, params.arguments or {}, ctx.request, progress)

    return Server(
        "comfyfn",
        version=version("comfyfn"),
        instructions=INSTRUCTIONS,
        on_list_tools=list_tools,
        on_call_tool=call_tool,
    )
