"""One client's node definitions (``GET /object_info``): fetched at the first use, again
only when a graph names a class or a value they do not know (a node installed, a file added);
graphs are checked against them before they are sent, and partner nodes found in them."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from comfyfn.client._http import HttpSession
from comfyfn.client._shared import fetch_definitions
from comfyfn.errors import WorkflowInvalid
from comfyfn.workflow import EXTRA_DATA_KEY, Workflow

__all__ = ["Definitions"]

#: validation problems that fresh definitions may not have: a node installed, a file added
_STALE = frozenset({"unknown_class", "bad_value"})


class Definitions:
    """The definitions of the server ``http`` gives the session of (opened at the first
    fetch); the answer is shared (:mod:`comfyfn.client._shared`): never changed here."""

    def __init__(self, http: Callable[[], Awaitable[HttpSession]]) -> None:
        self._http = http
        self._info: dict[str, Any] | None = None
        self._lock = asyncio.Lock()  #: one fetch at a time

    async def get(self) -> dict[str, Any]:
        """The definitions, fetched if not held."""
        async with self._lock:
            if self._info is None:
                self._info = await fetch_definitions(await self._http())
            return self._info

    async def validate(self, wf: Workflow, *, server: str, partner_key: bool) -> None:
        """Check ``wf`` (:meth:`Workflow.validate`); a problem fresh definitions may not have
        is judged by fresh ones."""
        info = await self.get()
        try:
            wf.validate(info, server=server, partner_key=partner_key)
        except WorkflowInvalid as exc:
            if not any(p.kind in _STALE for p in exc.problems):
                raise
            # Nodes and files appear on servers (installs, uploads, new models): a class or
            # a value the definitions do not know is judged by fresh ones.
            if self._info is info:
                self._info = None
            wf.validate(await self.get(), server=server, partner_key=partner_key)

    async def extra_data(self, wf: Workflow, comfy_org_key: str | None) -> dict[str, str]:
        """The job's ``extra_data``: the Comfy.org key, only for a graph with partner nodes."""
        if comfy_org_key is None or not wf.partner_nodes(await self.get()):
            return {}
        return {EXTRA_DATA_KEY: comfy_org_key}
