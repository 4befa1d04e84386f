"""Talking to one ComfyUI server: the async client does the I/O, the sync client drives it
from a private event-loop thread. Everything under ``_`` is the private transport
(HTTP, websocket, job protocol, output fetching, server resolution)."""

from comfyfn.client._async import AsyncClient
from comfyfn.client._sync import Client

__all__ = ["AsyncClient", "Client"]
