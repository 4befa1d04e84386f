"""Talking to one ComfyUI server: the async client does the I/O, the sync client drives it
from a private event-loop thread; a submitted job is a handle (:class:`AsyncJob`,
:class:`Job`). A protected server's credentials are :class:`Credentials` (or part of its
URL); :func:`public_url` is a URL as comfyfn shows it, without them. Everything under ``_``
is the private transport (HTTP, websocket, job protocol, output fetching); what other
packages use of it is exported here (:func:`aresolve_server`, :func:`fetch_url`).
"""

from comfyfn._public import present as _present
from comfyfn.client._async import AsyncClient
from comfyfn.client._async_job import AsyncJob
from comfyfn.client._config import aresolve_server, resolve_server
from comfyfn.client._credentials import Credentials, public_url
from comfyfn.client._inputs import fetch_url
from comfyfn.client._lookup import queue_ids
from comfyfn.client._sync import Client, Job
from comfyfn.client._workflows import WorkflowSource, default_workflow

__all__ = [
    "AsyncClient",
    "AsyncJob",
    "Client",
    "Credentials",
    "Job",
    "WorkflowSource",
    "aresolve_server",
    "default_workflow",
    "fetch_url",
    "public_url",
    "queue_ids",
    "resolve_server",
]

_present(__name__, globals(), __all__)
