"""An MCP server (Model Context Protocol, the official ``mcp`` SDK) over the served workflows,
for AI agents: ``comfyfn mcp`` on stdio (local agents; jobs on comfyfn's own fleet) and the
gateway's ``/mcp`` endpoint (streamable HTTP; jobs through the gateway's job API, under its
API keys and limits). Both have the same tools (:mod:`comfyfn.mcp._tools`): one per served
workflow (``generate_image``, ``edit_image``, …) with its typed parameters, plus
``list_workflows``, ``get_job``, ``cancel_job`` and ``run_batch``. Needs the ``mcp`` extra.
"""

from comfyfn._public import present as _present
from comfyfn.mcp._backend import Backend, JobOutcome, OutputFile, ToolError
from comfyfn.mcp._gateway import MCP_PATH, GatewayBackend, mcp_endpoint
from comfyfn.mcp._local import LocalBackend
from comfyfn.mcp._server import build_server
from comfyfn.mcp._tools import MAX_BATCH_ROWS, Tools

__all__ = [
    "MAX_BATCH_ROWS",
    "MCP_PATH",
    "Backend",
    "GatewayBackend",
    "JobOutcome",
    "LocalBackend",
    "OutputFile",
    "ToolError",
    "Tools",
    "build_server",
    "mcp_endpoint",
]

_present(__name__, globals(), __all__)
