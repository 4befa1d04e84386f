"""comfyfn: a ComfyUI workflow (Z-Image-Turbo first) as a Python function.

::

    import comfyfn

    gen = comfyfn.generate("旗袍女性漫步外滩夜景", seed=42, size=(1024, 768))
    gen.images[0].save("out.png")

    with comfyfn.Client() as c:          # server: argument > COMFYFN_SERVER > local engine
        job = c.submit("a red apple", seed=7)    # queued: job.prompt_id, job.server
        for event in job.events():               # Queued … Succeeded | Failed | Stopped
            print(event)
        gen = job.result()
"""

from __future__ import annotations

import importlib
import logging
from typing import TYPE_CHECKING, Any

from comfyfn import workflow
from comfyfn.errors import (
    ComfyError,
    ConfigError,
    CorruptOutput,
    EngineError,
    ExecutionFailed,
    GenerationError,
    GenerationTimeout,
    HTTPStatusError,
    Interrupted,
    NodeProblem,
    NoOutputs,
    ProtocolError,
    ServerUnreachable,
    TransportError,
    WorkflowInvalid,
)
from comfyfn.events import (
    Event,
    Failed,
    NodeCached,
    NodeFinished,
    NodeStarted,
    Preview,
    Progress,
    Queued,
    Started,
    Stopped,
    Succeeded,
)
from comfyfn.provenance import read_provenance
from comfyfn.result import Generation, Image, Output, Timings
from comfyfn.workflow import PARAMETERS, ComfyWarning, Param, Workflow

if TYPE_CHECKING:
    from httpx import Timeout

    from comfyfn.client import AsyncClient, AsyncJob, Client, Credentials, Job

#: loaded on first use: the HTTP stack (httpx, websockets) costs more than the rest of
#: ``import comfyfn`` together, and code that only builds workflows never needs it
_LAZY = {
    "AsyncClient": "comfyfn.client",
    "AsyncJob": "comfyfn.client",
    "Client": "comfyfn.client",
    "Credentials": "comfyfn.client",
    "Job": "comfyfn.client",
    "Timeout": "httpx",
}

__version__ = "0.1.0"

__all__ = [
    "PARAMETERS",
    "AsyncClient",
    "AsyncJob",
    "Client",
    "ComfyError",
    "ComfyWarning",
    "ConfigError",
    "CorruptOutput",
    "Credentials",
    "EngineError",
    "Event",
    "ExecutionFailed",
    "Failed",
    "Generation",
    "GenerationError",
    "GenerationTimeout",
    "HTTPStatusError",
    "Image",
    "Interrupted",
    "Job",
    "NoOutputs",
    "NodeCached",
    "NodeFinished",
    "NodeProblem",
    "NodeStarted",
    "Output",
    "Param",
    "Preview",
    "Progress",
    "ProtocolError",
    "Queued",
    "ServerUnreachable",
    "Started",
    "Stopped",
    "Succeeded",
    "Timeout",
    "Timings",
    "TransportError",
    "Workflow",
    "WorkflowInvalid",
    "agenerate",
    "generate",
    "read_provenance",
    "workflow",
]

logging.getLogger("comfyfn").addHandler(logging.NullHandler())


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'comfyfn' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # once: later lookups do not come here
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


def generate(
    prompt: str, *, server: str | None = None, comfy_org_key: str | None = None, **params: Any
) -> Generation:
    """One-shot :meth:`Client.generate` (opens and closes a client around the call)."""
    from comfyfn.client import Client

    with Client(server, comfy_org_key=comfy_org_key) as client:
        return client.generate(prompt, **params)


async def agenerate(
    prompt: str, *, server: str | None = None, comfy_org_key: str | None = None, **params: Any
) -> Generation:
    """One-shot :meth:`AsyncClient.generate`."""
    from comfyfn.client import AsyncClient

    async with AsyncClient(server, comfy_org_key=comfy_org_key) as client:
        return await client.generate(prompt, **params)
