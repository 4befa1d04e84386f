"""Fetching a finished job's output images, each checked before it counts as a result.

An image is accepted only if it arrived whole (as many bytes as announced) and decodes
completely (PNG, JPEG, WebP); a damaged ``/view`` body is fetched again, up to the session's
retries, then the job fails with :class:`~comfyfn.errors.CorruptOutput`. Images sent over
the websocket cannot be fetched again: a damaged one fails at once. With an expected size,
every SaveImage/PreviewImage/SaveImageWebsocket image must have it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from typing import Any

from comfyfn.client._http import HttpSession, retrying, transient
from comfyfn.errors import CorruptOutput
from comfyfn.events import BinaryFrame
from comfyfn.result import Image, image_problem

__all__ = ["SIZED_OUTPUTS", "fetch_images"]

log = logging.getLogger("comfyfn")

#: Output nodes whose images ``JobSettings.expect_size`` applies to.
SIZED_OUTPUTS = frozenset({"SaveImage", "PreviewImage", "SaveImageWebsocket"})


class _Damaged(Exception):
    """A fetched body that is not the whole image (internal: triggers a re-fetch)."""


_DECODABLE = (".png", ".jpg", ".jpeg", ".webp")


def _must_decode(filename: str, data: bytes) -> bool:
    """Outputs named or shaped like PNG/JPEG/WebP must decode; others (video...) are kept."""
    return (
        filename.lower().endswith(_DECODABLE)
        or data.startswith((b"\x89PNG", b"\xff\xd8\xff"))
        or (data[:4] == b"RIFF" and data[8:12] == b"WEBP")
    )


async def _view(
    session: HttpSession, node_id: str, ref: Mapping[str, Any], prompt_id: str
) -> Image:
    """GET one output from ``/view``; a short or undecodable body is fetched again."""
    params = {
        "filename": str(ref["filename"]),
        "subfolder": str(ref.get("subfolder") or ""),
        "type": str(ref.get("type") or "output"),
    }
    attempts = 0
    try:
        async for attempt in retrying(
            session.retries,
            f"GET /view {params['filename']}",
            on=lambda exc: transient(exc) or isinstance(exc, _Damaged),
        ):
            with attempt:
                attempts += 1
                data, problem = await session.download("/view", params=params)
                if problem is None and _must_decode(params["filename"], data):
                    bad = await asyncio.to_thread(image_problem, data)  # ~15 ms per 1 MP
                    problem = f"the body {bad}" if bad else None
                if problem:
                    log.debug(
                        "output %s of %s is damaged: %s", params["filename"], prompt_id, problem
                    )
                    raise _Damaged(problem)
    except _Damaged as exc:
        times = "once" if attempts == 1 else f"{attempts} times"
        raise CorruptOutput(
            f"{exc} (GET /view, fetched {times})",
            server=session.server,
            prompt_id=prompt_id,
            node_id=node_id,
            filename=params["filename"],
        ) from None
    return Image(data, node_id, params["filename"], params["subfolder"], params["type"])


async def _frame_images(
    frames: list[BinaryFrame], types: Mapping[str, str], session: HttpSession, prompt_id: str
) -> list[Image]:
    """SaveImageWebsocket's images (they cannot be fetched again: damaged ones fail)."""
    images = []
    for f in frames:
        if f.node_id is not None and types.get(f.node_id) != "SaveImageWebsocket":
            continue
        if problem := await asyncio.to_thread(image_problem, f.data):
            raise CorruptOutput(
                f"the websocket frame {problem}",
                server=session.server,
                prompt_id=prompt_id,
                node_id=f.node_id,
                filename=None,
            )
        images.append(Image(f.data, f.node_id, None, "", "websocket"))
    return images


def _check_sizes(
    images: list[Image],
    types: Mapping[str, str],
    expected: tuple[int, int],
    session: HttpSession,
    prompt_id: str,
) -> None:
    for image in images:
        if types.get(image.node_id or "") not in SIZED_OUTPUTS:
            continue
        size = (image.width, image.height)
        if size != tuple(expected):
            raise CorruptOutput(
                f"it is {size[0]}x{size[1]} but {expected[0]}x{expected[1]} was expected",
                server=session.server,
                prompt_id=prompt_id,
                node_id=image.node_id,
                filename=image.filename,
                expected_size=(expected[0], expected[1]),
                actual_size=size,
            )


async def fetch_images(
    session: HttpSession,
    entry: Mapping[str, Any],
    frames: list[BinaryFrame],
    types: Mapping[str, str],
    *,
    prompt_id: str,
    expect_size: tuple[int, int] | None = None,
) -> list[Image]:
    """Every output image, each checked to decode completely (and to have ``expect_size``)."""
    refs = [
        (str(node_id), ref)
        for node_id, output in (entry.get("outputs") or {}).items()
        for ref in output.get("images") or ()
    ]
    images = list(await asyncio.gather(*(_view(session, n, r, prompt_id) for n, r in refs)))
    images += await _frame_images(frames, types, session, prompt_id)
    if expect_size is not None:
        _check_sizes(images, types, expect_size, session, prompt_id)
    return images
