"""One input image uploaded by :meth:`AsyncClient.upload_image
<comfyfn.client.AsyncClient.upload_image>` (``POST /upload/image``), under the name it is
given or its own."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path

from comfyfn.client._http import HttpSession
from comfyfn.workflow import read_image_file

__all__ = ["upload_image"]


async def upload_image(
    http: Callable[[], Awaitable[HttpSession]],
    image: bytes | str | Path,
    name: str | None,
    subfolder: str,
    overwrite: bool,
) -> str:
    """Upload ``image`` (bytes or a path, read first) to the server ``http`` gives the session
    of; the name to use in a LoadImage node."""
    if isinstance(image, bytes):
        data, filename = image, name or f"comfyfn-{uuid.uuid4().hex[:12]}.png"
    else:
        path = Path(image)
        data = await asyncio.to_thread(read_image_file, path, "image")
        filename = name or path.name
    files = {"image": (filename, data, "application/octet-stream")}
    form = {"subfolder": subfolder, "type": "input", "overwrite": str(overwrite).lower()}
    session = await http()
    response = await session.send("POST", "/upload/image", files=files, data=form)
    answer = session.decode_json("POST", "/upload/image", response, dict)
    name, subfolder = answer.get("name"), answer.get("subfolder")
    if not isinstance(name, str) or not name:
        raise session.protocol_error("POST", "/upload/image", "an answer without a name")
    return f"{subfolder}/{name}" if subfolder else name
