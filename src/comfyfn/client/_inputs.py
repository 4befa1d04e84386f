"""Input images on the wire: fetching http(s) URLs, and uploading to the job's server once.

Before a workflow is bound, an async caller's input images given by URL are fetched and those
given as a local file are read and checked on a worker thread (by
:func:`~comfyfn.workflow._images.read_image_file`), so binding does no I/O on the event loop.
A URL is fetched with its own HTTP client (the server's credentials never go to it), bounded
in bytes and time, and must answer with an ``image/*`` body. Uploads go to the server's input
subfolder ``comfyfn/`` under the content-hashed name (``overwrite``: same name, same bytes);
each client remembers, per server, which names it has uploaded.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Mapping
from typing import Any

import httpx

from comfyfn.client._http import HttpSession
from comfyfn.errors import ConfigError
from comfyfn.workflow import (
    INPUT_SUBFOLDER,
    InputImage,
    Workflow,
    input_image,
    is_local_file,
    is_url,
    max_input_bytes,
)

__all__ = ["URL_TIMEOUT", "fetch_url", "fetch_urls", "upload_inputs"]

log = logging.getLogger("comfyfn.client")

URL_TIMEOUT = httpx.Timeout(30.0, connect=10.0)


async def fetch_url(url: str, param: str) -> InputImage:
    """GET an input image; a failure, a non-image or an oversized body is a ConfigError."""
    try:
        async with (
            httpx.AsyncClient(follow_redirects=True, max_redirects=5, timeout=URL_TIMEOUT) as http,
            http.stream("GET", url) as response,
        ):
            if response.status_code != 200:
                raise ConfigError(
                    f"the image for {param}, {url}, cannot be fetched: HTTP {response.status_code}"
                )
            media_type = response.headers.get("content-type", "").split(";")[0].strip()
            if not media_type.startswith("image/"):
                raise ConfigError(
                    f"the image for {param}, {url}, is {media_type or 'untyped'}, not image/*"
                )
            body, limit = bytearray(), max_input_bytes()
            async for chunk in response.aiter_bytes():
                body += chunk
                if len(body) > limit:
                    raise ConfigError(f"the image for {param}, {url}, is over {limit:,} bytes")
    except httpx.HTTPError as exc:
        raise ConfigError(
            f"the image for {param}, {url}, cannot be fetched: {type(exc).__name__}: {exc}"
        ) from None
    return input_image(bytes(body), f"{param} ({url})")


async def fetch_urls(wf: Workflow, params: Mapping[str, Any]) -> dict[str, Any]:
    """``params`` with each input image given by http(s) URL or as a local file replaced by
    its image: URLs fetched, files read and checked on a worker thread (the event loop never
    waits on a file). Any other value, a path naming no regular file included, is left to
    :meth:`Workflow.bind`, which names the problem without reading anything."""
    out = dict(params)
    for name, value in params.items():
        if not wf.is_image_input(name):
            continue
        if is_url(value):
            out[name] = await fetch_url(str(value), name)
        elif isinstance(value, str | os.PathLike):
            image = await asyncio.to_thread(_local_image, value, name)
            out[name] = value if image is None else image
    return out


def _local_image(value: str | os.PathLike[str], param: str) -> InputImage | None:
    """The image in the regular file ``value`` names, read and checked (None if it names
    no regular file)."""
    return input_image(value, param) if is_local_file(value) else None


async def upload_inputs(
    session: HttpSession, uploads: Mapping[str, InputImage], uploaded: set[str]
) -> None:
    """Upload each image the server does not have yet (by this client's memory). Without
    ``overwrite``: a file the server already holds under the image's content-hashed name is
    the same image, and ComfyUI keeps it as it is; an overwrite would rewrite it while a
    running prompt may be reading it (two jobs of one image, or two clients: the reader got
    a file cut short). Only a different file under that name (one cut short by a crash) is
    replaced."""
    for server_name, image in uploads.items():
        if server_name in uploaded:
            continue
        if await _upload(session, image, overwrite=False) != server_name:
            log.warning("%s on %s is damaged; replacing it", server_name, session.server)
            got = await _upload(session, image, overwrite=True)
            if got != server_name:
                raise session.protocol_error(
                    "POST", "/upload/image", f"the upload stored as {got!r}, not {server_name!r}"
                )
        uploaded.add(server_name)
        log.debug("uploaded %s (%d bytes) to %s", server_name, len(image.data), session.server)


async def _upload(session: HttpSession, image: InputImage, *, overwrite: bool) -> str:
    """POST /upload/image; the name the server stored it under (``subfolder/name``)."""
    files = {"image": (image.filename, image.data, image.media_type)}
    form = {"subfolder": INPUT_SUBFOLDER, "type": "input", "overwrite": str(overwrite).lower()}
    response = await session.send("POST", "/upload/image", files=files, data=form)
    answer = session.decode_json("POST", "/upload/image", response, dict)
    return f"{answer.get('subfolder') or ''}/{answer.get('name')}".lstrip("/")
