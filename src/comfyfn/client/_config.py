"""Settings resolved at use, never at import: argument > environment variable > default.

| setting | argument       | environment       | default                              |
|---------|----------------|-------------------|--------------------------------------|
| server  | ``server=``    | ``COMFYFN_SERVER``| the local engine (started if needed)  |
| home    | —              | ``COMFYFN_HOME``  | the platform's user cache dir        |
| engine  | —              | ``COMFYFN_ENGINE``| instance name ``default``            |
| Comfy.org key | ``comfy_org_key=`` | ``COMFY_ORG_API_KEY`` | none (partner nodes refused) |

A server URL may carry credentials for a reverse proxy in front of ComfyUI
(``https://user:password@host``, ``https://host/?token=…``): they are kept in the URL these
functions return and taken out of it by the client (see ``_credentials``).
"""

from __future__ import annotations

import asyncio
import os
from urllib.parse import urlsplit, urlunsplit

from comfyfn.client._credentials import public_url
from comfyfn.errors import ConfigError
from comfyfn.workflow import KEY_ENV

__all__ = ["aresolve_server", "comfy_org_key", "explicit_server", "resolve_server"]


def comfy_org_key(given: str | None) -> str | None:
    """The Comfy.org API key for partner nodes: ``given``, else ``$COMFY_ORG_API_KEY``;
    None if neither is set (an empty value counts as unset)."""
    key = given if given is not None else os.environ.get(KEY_ENV)
    return key or None


def _normalise(url: str, source: str) -> str:
    url = url.strip()
    if "://" not in url:
        url = f"http://{url}"
    parts = urlsplit(url)
    shown = public_url(url)  # never the credentials, even in an error
    if parts.scheme not in ("http", "https"):
        raise ConfigError(f"{source}: {shown!r} is not an http(s) URL")
    try:
        parts.port  # noqa: B018 - parsing the port is the check
    except ValueError as exc:
        raise ConfigError(f"{source}: {shown!r} has an invalid port ({exc})") from None
    if not parts.hostname:
        raise ConfigError(f"{source}: {shown!r} names no host")
    return urlunsplit((parts.scheme, parts.netloc, parts.path.rstrip("/"), parts.query, ""))


def explicit_server(server: str | None) -> str | None:
    """The server given as an argument or in ``COMFYFN_SERVER`` (no I/O); None if neither.

    The URL keeps the credentials it carries; show it only through ``public_url``.
    """
    if server:
        return _normalise(server, "server")
    env = os.environ.get("COMFYFN_SERVER")
    return _normalise(env, "COMFYFN_SERVER") if env else None


def resolve_server(server: str | None, *, start_engine: bool = True) -> str:
    """The server URL to use (with the credentials it carries); may start the local engine
    (blocking)."""
    if (url := explicit_server(server)) is not None:
        return url
    from comfyfn.engine import Engine

    engine = Engine(os.environ.get("COMFYFN_ENGINE", "default"))
    if (url := engine.url) is not None:
        return url
    if start_engine and engine.install.is_installed():
        return engine.up().url
    raise ConfigError(
        "no ComfyUI server: pass server=..., set COMFYFN_SERVER, or install and start the "
        "local engine with `comfyfn engine up`"
    )


async def aresolve_server(server: str | None) -> str:
    """As :func:`resolve_server`; the local engine is looked up in a worker thread."""
    if (url := explicit_server(server)) is not None:
        return url
    return await asyncio.to_thread(resolve_server, server)
