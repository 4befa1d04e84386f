"""Fetching a finished job's outputs of every kind; still images are checked before they count.

Each ``/history`` output is classified (:data:`~comfyfn.result.OUTPUT_KINDS`): refs under
``images`` are still images unless the node marks them ``animated`` or their type is a video;
``audio``, ``gifs``/``videos`` and other file refs by their media type; ``text`` strings are
text outputs. Only still images are decoded and size-checked.

An image is accepted only if it arrived whole (as many bytes as announced) and decodes
completely (PNG, JPEG, WebP); a damaged ``/view`` body is fetched again, up to the session's
retries, then the job fails with :class:`~comfyfn.errors.CorruptOutput`. Images sent over
the websocket cannot be fetched again: a damaged one fails at once. With an expected size,
every SaveImage/PreviewImage/SaveImageWebsocket image must have it.
"""

from __future__ import annotations

import asyncio
import logging
import mimetypes
from collections.abc import Mapping
from typing import Any

from comfyfn.client._http import HttpSession, retried, transient
from comfyfn.errors import CorruptOutput
from comfyfn.events import BinaryFrame
from comfyfn.result import Image, Output, image_problem

__all__ = ["SIZED_OUTPUTS", "fetch_outputs", "media_type"]

log = logging.getLogger("comfyfn")

#: Output nodes whose images ``JobSettings.expect_size`` applies to.
SIZED_OUTPUTS = frozenset({"SaveImage", "PreviewImage", "SaveImageWebsocket"})


class _Damaged(Exception):
    """A fetched body that is not the whole image (internal: triggers a re-fetch)."""


_DECODABLE = (".png", ".jpg", ".jpeg", ".webp")
#: bodies up to this size are decoded on the event loop: a thread costs more than they do
_DECODED_INLINE = 16 * 1024


async def _image_problem(data: bytes) -> str | None:
    """What keeps ``data`` from decoding (None: it decodes); a large image in a thread
    (~15 ms per 1 MP), so the event loop goes on meanwhile."""
    if len(data) <= _DECODED_INLINE:
        return image_problem(data)
    return await asyncio.to_thread(image_problem, data)


def _must_decode(filename: str, data: bytes) -> bool:
    """Outputs named or shaped like PNG/JPEG/WebP must decode; others (video...) are kept."""
    return (
        filename.lower().endswith(_DECODABLE)
        or data.startswith((b"\x89PNG", b"\xff\xd8\xff"))
        or (data[:4] == b"RIFF" and data[8:12] == b"WEBP")
    )


_MEDIA_TYPES = {
    ".webp": "image/webp",
    ".webm": "video/webm",
    ".mp4": "video/mp4",
    ".flac": "audio/flac",
    ".opus": "audio/ogg",
    ".mp3": "audio/mpeg",
    ".glb": "model/gltf-binary",
}


def media_type(filename: str) -> str:
    """The media type a file name says (``application/octet-stream`` if unknown)."""
    suffix = filename[filename.rfind(".") :].lower() if "." in filename else ""
    return (
        _MEDIA_TYPES.get(suffix)
        or mimetypes.guess_type(filename)[0]
        or ("application/octet-stream")
    )


def _kind(key: str, output: Mapping[str, Any], media: str) -> str:
    top = media.split("/")[0]
    if top == "video":
        return "video"
    if top == "audio":
        return "audio"
    if top == "image":
        animated = key in ("gifs", "animated") or any(output.get("animated") or ())
        return "animated" if animated else "image" if key == "images" else "file"
    return "file"


async def _view(
    session: HttpSession, node_id: str, ref: Mapping[str, Any], prompt_id: str, *, decode: bool
) -> Image:
    """GET one output from ``/view``; a short (or, with ``decode``, undecodable) body is
    fetched again."""
    params = {
        "filename": str(ref["filename"]),
        "subfolder": str(ref.get("subfolder") or ""),
        "type": str(ref.get("type") or "output"),
    }
    attempts = 0

    async def fetch() -> bytes:
        nonlocal attempts
        attempts += 1
        data, problem = await session.download("/view", params=params)
        if problem is None and decode and _must_decode(params["filename"], data):
            bad = await _image_problem(data)
            problem = f"the body {bad}" if bad else None
        if problem:
            log.debug("output %s of %s is damaged: %s", params["filename"], prompt_id, problem)
            raise _Damaged(problem)
        return data

    try:
        data = await retried(
            session.retries,
            f"GET /view {params['filename']}",
            fetch,
            on=lambda exc: transient(exc) or isinstance(exc, _Damaged),
        )
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


def _refs(entry: Mapping[str, Any]) -> list[tuple[str, str, Mapping[str, Any], str]]:
    """(node id, kind, file ref, media type) of every file output in a history entry."""
    found = []
    for node_id, output in (entry.get("outputs") or {}).items():
        for key, items in output.items():
            for ref in items if isinstance(items, list | tuple) else ():
                if isinstance(ref, Mapping) and isinstance(ref.get("filename"), str):
                    media = media_type(ref["filename"])
                    found.append((str(node_id), _kind(key, output, media), ref, media))
    return found


def _texts(entry: Mapping[str, Any]) -> list[Output]:
    return [
        Output("text", "text/plain", text.encode("utf-8"), str(node_id))
        for node_id, output in (entry.get("outputs") or {}).items()
        for text in output.get("text") or ()
        if isinstance(text, str)
    ]


async def fetch_outputs(
    session: HttpSession,
    entry: Mapping[str, Any],
    frames: list[BinaryFrame],
    types: Mapping[str, str],
    *,
    prompt_id: str,
    expect_size: tuple[int, int] | None = None,
) -> tuple[list[Image], list[Output]]:
    """Every output: the still images, each checked to decode completely (and to have
    ``expect_size``), and all outputs (images included) with their kinds."""
    refs = _refs(entry)
    files = await asyncio.gather(
        *(_view(session, n, r, prompt_id, decode=k == "image") for n, k, r, _ in refs)
    )
    images = [f for f, (_, kind, _, _) in zip(files, refs, strict=True) if kind == "image"]
    images += await _frame_images(frames, types, session, prompt_id)
    if expect_size is not None:
        _check_sizes(images, types, expect_size, session, prompt_id)
    outputs = [
        Output(kind, media, f.data, f.node_id, f.filename, f.subfolder, f.type)
        for f, (_, kind, _, media) in zip(files, refs, strict=True)
    ]
    outputs += [
        Output("image", media_type(f"frame.{i.format}"), i.data, i.node_id, None, "", i.type)
        for i in images
        if i.type == "websocket"
    ]
    return images, outputs + _texts(entry)
