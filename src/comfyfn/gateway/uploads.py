"""Input images the gateway takes: checked, kept content-addressed per API key, fetched by
URL behind the webhook guard, and read back for the job that uses them.

An image is accepted only if Pillow decodes it completely (a JPEG's scans must hold all its
blocks) as a single-frame PNG, JPEG or WebP within :data:`MAX_UPLOAD_BYTES`,
:data:`MAX_UPLOAD_PIXELS` and :data:`MAX_UPLOAD_DECODED_BYTES` (known from the header, before
decoding), whatever its name or declared type says; :data:`DECODE_WORKERS` images at most are
decoded at once, off the event loop. It is stored under ``uploads/<api key id>/<sha256>.<ext>``
and known by the id ``upl_<sha256>``: the same bytes give the same id, and one key cannot read
another's upload.

A job carries an input image as a reference, ``{"upload": "upl_…"}``; :func:`resolve_inputs`
replaces each by the image's bytes (an 8-bit RGB(A) PNG: :func:`for_comfyui`) before the
workflow is bound, and the client uploads those to the ComfyUI server that runs the job under
their content hash (never a caller's name).

URLs are fetched with :func:`comfyfn.gateway.security.check_webhook`'s rules: the host is
resolved once, every address must be public (unless the gateway allows private webhooks),
and the request goes to an address checked (``Host`` and TLS name the original host); no
redirects, no environment proxy, the body limited while it streams, the whole fetch timed.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import hashlib
import io
import re
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar

import httpx

from comfyfn.errors import ComfyError
from comfyfn.gateway.security import (
    Resolver,
    WebhookRefused,
    WebhookTarget,
    check_webhook,
    resolve_host,
)
from comfyfn.gateway.settings import (
    MAX_UPLOAD_BYTES,
    MAX_UPLOAD_DECODED_BYTES,
    MAX_UPLOAD_PIXELS,
    UPLOAD_FETCH_TIMEOUT,
    GatewaySettings,
    pixel_problem,
)
from comfyfn.storage import Storage, StorageNotFound
from comfyfn.workflow import InputImage, Workflow

__all__ = [
    "DECODE_WORKERS",
    "MAX_UPLOAD_BYTES",
    "MAX_UPLOAD_DECODED_BYTES",
    "MAX_UPLOAD_PIXELS",
    "UPLOAD_FETCH_TIMEOUT",
    "UPLOAD_FORMATS",
    "UPLOAD_PREFIX",
    "Upload",
    "UploadLimits",
    "UploadMissing",
    "UploadRefused",
    "check_image",
    "decode_base64",
    "decoded_bytes",
    "fetch_image",
    "find_upload",
    "for_comfyui",
    "resolve_inputs",
    "store_image",
    "take_image",
    "upload_limits",
    "upload_ref",
]

UPLOAD_PREFIX = "uploads"  #: storage key prefix of uploads
#: Pillow format → (file extension, media type) of the images accepted
UPLOAD_FORMATS: Mapping[str, tuple[str, str]] = {
    "PNG": ("png", "image/png"),
    "JPEG": ("jpg", "image/jpeg"),
    "WEBP": ("webp", "image/webp"),
}
_T = TypeVar("_T")
_ID = re.compile(r"upl_([0-9a-f]{64})")
_DATA_URL = re.compile(r"data:image/[\w.+-]+;base64,", re.I)


class UploadRefused(ComfyError):
    """An input image the gateway will not take; ``param`` names the field, ``code`` says why
    (``too_large``, ``not_an_image``, ``unsupported_image``, ``too_many_pixels``,
    ``url_refused``, ``url_failed``, ``invalid_image_value``, ``limit_exceeded``)."""

    def __init__(self, param: str, message: str, *, code: str) -> None:
        super().__init__(message)
        self.param, self.code = param, code


class UploadMissing(ComfyError):
    """A job names an upload its key does not have (never made, or another key's)."""

    def __init__(self, param: str, upload_id: str) -> None:
        super().__init__(f"{param}: no upload {upload_id!r} for this API key")
        self.param, self.upload_id = param, upload_id


@dataclass(frozen=True)
class UploadLimits:
    max_bytes: int = MAX_UPLOAD_BYTES
    max_pixels: int = MAX_UPLOAD_PIXELS
    max_decoded_bytes: int = MAX_UPLOAD_DECODED_BYTES  #: what one image holds once decoded
    fetch_timeout: float = UPLOAD_FETCH_TIMEOUT
    allow_private: bool = False  #: URLs may name loopback/private hosts (as webhooks may)


def upload_limits(settings: GatewaySettings) -> UploadLimits:
    """The gateway's upload limits (its settings); private URLs as its webhooks."""
    return UploadLimits(
        settings.max_upload_bytes,
        settings.max_upload_pixels,
        settings.max_upload_decoded_bytes,
        settings.upload_fetch_timeout,
        settings.allow_private_webhooks,
    )


@dataclass(frozen=True)
class Upload:
    """A stored input image."""

    id: str  #: ``upl_<sha256>``
    key: str  #: its storage key
    media_type: str
    width: int
    height: int
    size: int  #: bytes
    data: bytes

    def input_image(self) -> InputImage:
        """The image as a workflow binds it (named by its hash, as the client does)."""
        sha = self.id.removeprefix("upl_")
        ext = self.key.rsplit(".", 1)[-1]
        return InputImage(
            self.data, f"{sha[:32]}.{ext}", self.media_type, (self.width, self.height)
        )

    def json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "object": "upload",
            "bytes": self.size,
            "width": self.width,
            "height": self.height,
            "media_type": self.media_type,
        }


def upload_ref(upload_id: str) -> dict[str, str]:
    """How a job's parameters name an upload."""
    return {"upload": upload_id}


def _key(key_id: str, sha: str, ext: str) -> str:
    return f"{UPLOAD_PREFIX}/{key_id}/{sha}.{ext}"


# -- checking ---------------------------------------------------------------------------------

#: images decoded at once, each within the decoded-bytes budget, on threads of their own (off
#: the event loop): what decoding holds in memory is bounded however many requests come in
DECODE_WORKERS = 2
_decoders = ThreadPoolExecutor(DECODE_WORKERS, thread_name_prefix="comfyfn-image")


async def _decoding(func: Callable[..., _T], *args: Any) -> _T:
    """``func(*args)`` on a decoding thread: at most :data:`DECODE_WORKERS` run at once."""
    return await asyncio.get_running_loop().run_in_executor(_decoders, func, *args)


def decoded_bytes(mode: str, size: tuple[int, int]) -> int:
    """The bytes Pillow holds for an image of ``mode`` and ``size`` once decoded: width ×
    height × bands × bytes per sample, several 8-bit bands taking 4 bytes a pixel as Pillow
    keeps them (RGB too). Known from the header, before anything is decoded."""
    from PIL import ImageMode

    info = ImageMode.getmode(mode)
    per_pixel = int(info.typestr[-1]) if len(info.bands) == 1 else 4 * int(info.typestr[-1])
    return size[0] * size[1] * per_pixel


def check_image(data: bytes, param: str, limits: UploadLimits, key_id: str) -> Upload:
    """``data`` as an :class:`Upload` of key ``key_id`` if it is an image within ``limits``
    (decoded completely, its size checked before decoding); :class:`UploadRefused` if not."""
    from PIL import Image, UnidentifiedImageError

    if len(data) > limits.max_bytes:
        raise UploadRefused(
            param,
            f"{param}: {len(data):,} bytes, over the limit of {limits.max_bytes:,}",
            code="too_large",
        )
    try:
        with Image.open(io.BytesIO(data)) as im:
            fmt, (width, height) = im.format or "", im.size
            _check_header(im, param, limits)
            im.load()
            if fmt == "JPEG" and _jpeg_cut_short(data, im.size):
                raise OSError("the JPEG's scans end before its blocks do")
    except Image.DecompressionBombError as exc:  # (over Pillow's own limit, far above ours)
        raise UploadRefused(param, f"{param}: {exc}", code="too_many_pixels") from None
    except UnidentifiedImageError:
        raise UploadRefused(
            param, f"{param}: not a PNG, JPEG or WebP image", code="not_an_image"
        ) from None
    except (OSError, ValueError, SyntaxError, IndexError):  # (IndexError: a cut-off segment)
        raise UploadRefused(
            param,
            f"{param}: a {fmt or 'damaged'} image that does not decode completely "
            f"(its data is cut off or corrupt)",
            code="not_an_image",
        ) from None
    ext, media_type = UPLOAD_FORMATS[fmt]
    sha = hashlib.sha256(data).hexdigest()
    return Upload(f"upl_{sha}", _key(key_id, sha, ext), media_type, width, height, len(data), data)


def _check_header(im: Any, param: str, limits: UploadLimits) -> None:
    """Refuse what the header shows: the format, the pixels, the decoded bytes, frames."""
    fmt, (width, height) = im.format or "", im.size
    if fmt not in UPLOAD_FORMATS:
        raise UploadRefused(
            param, f"{param}: a {fmt} image; accepted: PNG, JPEG, WebP", code="unsupported_image"
        )
    if width * height > limits.max_pixels:
        raise UploadRefused(
            param,
            f"{param}: {width}x{height} = {width * height:,} pixels, over the limit "
            f"of {limits.max_pixels:,}",
            code="too_many_pixels",
        )
    decoded = decoded_bytes(im.mode, im.size)
    if decoded > limits.max_decoded_bytes:
        raise UploadRefused(
            param,
            f"{param}: a {width}x{height} {im.mode} image decodes to {decoded:,} bytes, over "
            f"the limit of {limits.max_decoded_bytes:,}",
            code="too_many_pixels",
        )
    if getattr(im, "n_frames", 1) > 1:
        raise UploadRefused(param, f"{param}: an animated image", code="unsupported_image")


#: JPEG frame types coded with Huffman tables (baseline, extended, progressive)
_HUFFMAN_SOF = (0xC0, 0xC1, 0xC2)


def _jpeg_cut_short(data: bytes, size: tuple[int, int]) -> bool:
    """Whether a Huffman-coded JPEG's scans hold fewer bytes than the blocks they must code.

    libjpeg fills in what a cut-off scan lacks and only warns (Pillow does not see it), so a
    header claiming 6000x6000 over a few hundred bytes decodes "completely". Every block's
    DC coefficient needs at least one bit in the first scan that codes it."""
    components: dict[int, tuple[int, int]] = {}  # id → sampling factors (h, v)
    coded: set[int] = set()
    short, pos = False, 2
    while pos + 4 <= len(data) and data[pos] == 0xFF and data[pos + 1] != 0xD9:  # (EOI)
        if data[pos + 1] == 0xFF:  # a fill byte
            pos += 1
            continue
        marker, length = data[pos + 1], int.from_bytes(data[pos + 2 : pos + 4])
        segment, pos = data[pos + 4 : pos + 2 + length], pos + 2 + length
        if marker in _HUFFMAN_SOF:
            components = {
                segment[6 + 3 * i]: (segment[7 + 3 * i] >> 4, segment[7 + 3 * i] & 15)
                for i in range(segment[5])
            }
        elif marker == 0xDA and components:
            ids = [segment[1 + 2 * i] for i in range(segment[0])]
            start, approx = segment[1 + 2 * len(ids)], segment[3 + 2 * len(ids)]
            end = _scan_end(data, pos)
            if start == 0 and approx >> 4 == 0:  # a scan that codes DC coefficients first
                coded.update(ids)
                short |= end - pos < _scan_blocks(components, ids, size) // 8
            pos = end
    return bool(components) and (short or not coded >= set(components))


def _scan_blocks(
    components: Mapping[int, tuple[int, int]], ids: list[int], size: tuple[int, int]
) -> int:
    """The 8x8 blocks a scan of ``ids`` codes in a ``size`` frame (ITU T.81, A.2)."""
    h_max = max(h for h, _ in components.values())
    v_max = max(v for _, v in components.values())
    if len(ids) == 1:  # a component alone: its own blocks, not whole MCUs
        h, v = components.get(ids[0], (1, 1))
        return _ceil(_ceil(size[0] * h, h_max), 8) * _ceil(_ceil(size[1] * v, v_max), 8)
    mcus = _ceil(size[0], 8 * h_max) * _ceil(size[1], 8 * v_max)
    return mcus * sum(components[c][0] * components[c][1] for c in ids if c in components)


def _ceil(a: int, b: int) -> int:
    return -(-a // b)


def _scan_end(data: bytes, pos: int) -> int:
    """Where the entropy-coded data from ``pos`` ends: the next marker but RSTn."""
    while True:
        pos = data.find(b"\xff", pos)
        if pos < 0 or pos + 1 >= len(data):
            return len(data)
        if data[pos + 1] != 0 and not 0xD0 <= data[pos + 1] <= 0xD7:
            return pos
        pos += 2


async def store_image(
    storage: Storage, key_id: str, data: bytes, param: str, limits: UploadLimits
) -> Upload:
    """Check ``data`` and keep it under its content key (written once: same bytes, same key)."""
    upload = await _decoding(check_image, data, param, limits, key_id)
    if not await storage.exists(upload.key):
        await storage.put(upload.key, data, upload.media_type)
    return upload


# -- fetching ---------------------------------------------------------------------------------


async def fetch_image(
    url: str, param: str, limits: UploadLimits, *, resolve: Resolver = resolve_host
) -> bytes:
    """GET an image by URL under the webhook guard (see the module docstring); the body,
    at most ``limits.max_bytes``. Each address checked is tried in turn until one connects.
    :class:`UploadRefused` for a refused or failed fetch."""
    try:
        target = await asyncio.to_thread(
            check_webhook, url, allow_private=limits.allow_private, resolve=resolve
        )
    except WebhookRefused as exc:
        reason = exc.reason.replace("the webhook", "the URL")
        raise UploadRefused(param, f"{param}: {reason}", code="url_refused") from None
    try:
        async with (
            asyncio.timeout(limits.fetch_timeout),
            httpx.AsyncClient(trust_env=False, follow_redirects=False) as http,
        ):
            for address in target.addresses[:-1]:
                with contextlib.suppress(httpx.ConnectError):
                    return await _download(http, target, address, param, limits)
            return await _download(http, target, target.addresses[-1], param, limits)
    except TimeoutError:
        raise UploadRefused(
            param,
            f"{param}: the URL did not answer within {limits.fetch_timeout:g} s",
            code="url_failed",
        ) from None
    except httpx.HTTPError as exc:
        raise UploadRefused(
            param, f"{param}: the URL cannot be fetched ({type(exc).__name__})", code="url_failed"
        ) from None


async def _download(
    http: httpx.AsyncClient, target: WebhookTarget, address: str, param: str, limits: UploadLimits
) -> bytes:
    """The body of a GET of ``target`` at ``address``, if it answers 200 within the size."""
    extensions = {"sni_hostname": target.host} if target.scheme == "https" else {}
    headers = {"Host": target.host_header, "Accept": "image/*"}
    over = UploadRefused(
        param, f"{param}: the URL's body is over {limits.max_bytes:,} bytes", code="too_large"
    )
    async with http.stream(
        "GET", target.url_for(address), headers=headers, extensions=extensions
    ) as response:
        if response.status_code != 200:
            raise UploadRefused(
                param, f"{param}: the URL answered HTTP {response.status_code}", code="url_failed"
            )
        declared = response.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > limits.max_bytes:
            raise over
        body = bytearray()
        async for chunk in response.aiter_bytes():
            body += chunk
            if len(body) > limits.max_bytes:
                raise over
    return bytes(body)


def decode_base64(text: str, param: str) -> bytes:
    """The bytes of base64 text (a ``data:image/…;base64,`` URL too); UploadRefused if not."""
    payload = _DATA_URL.sub("", text, count=1) if _DATA_URL.match(text) else text
    try:
        return base64.b64decode("".join(payload.split()), validate=True)
    except (binascii.Error, ValueError):
        raise UploadRefused(
            param,
            f"{param}: not an upload id (upl_…), an http(s) URL or base64 image data",
            code="invalid_image_value",
        ) from None


async def take_image(
    storage: Storage, key_id: str, value: str | bytes, param: str, limits: UploadLimits
) -> Upload:
    """An image given in a request — file bytes, an upload id, an http(s) URL or base64 —
    as a stored upload of key ``key_id``."""
    if isinstance(value, bytes):
        return await store_image(storage, key_id, value, param, limits)
    text = value.strip()
    if _ID.fullmatch(text):
        stored = await find_upload(storage, key_id, text, param)
        return await _decoding(check_image, stored, param, limits, key_id)
    if text.lower().startswith(("http://", "https://")):
        data = await fetch_image(text, param, limits)
        return await store_image(storage, key_id, data, param, limits)
    return await store_image(storage, key_id, decode_base64(text, param), param, limits)


# -- reading back -----------------------------------------------------------------------------


async def find_upload(storage: Storage, key_id: str, upload_id: str, param: str) -> bytes:
    """The bytes of upload ``upload_id`` of key ``key_id``; :class:`UploadMissing` if none."""
    match = _ID.fullmatch(upload_id)
    if match is not None:
        for ext, _ in UPLOAD_FORMATS.values():
            try:
                return await storage.get(_key(key_id, match.group(1), ext))
            except StorageNotFound:
                continue
    raise UploadMissing(param, upload_id)


async def resolve_inputs(
    storage: Storage,
    workflow: Workflow,
    values: Mapping[str, Any],
    *,
    key_id: str,
    max_pixels: int | None = None,
) -> dict[str, Any]:
    """A job's ``values`` with each input image's reference (``{"upload": "upl_…"}``) replaced
    by the image's bytes, read from ``storage`` among key ``key_id``'s uploads, as ComfyUI
    reads them safely (:func:`for_comfyui`).

    Raises :class:`UploadMissing` naming the parameter for an upload the key lacks, and
    :class:`UploadRefused` for an input image given in any other form (a text would be
    bound as a path on the gateway's machine) or over ``max_pixels`` (the gateway's limit
    on an image's pixels: an input costs the ComfyUI server as much as an output)."""
    resolved = dict(values)
    for name, value in values.items():
        if not workflow.is_image_input(name):
            continue
        upload_id = value.get("upload") if isinstance(value, Mapping) else None
        if not isinstance(upload_id, str):
            raise UploadRefused(
                name,
                f"{name}: an input image must be an upload reference",
                code="invalid_image_value",
            )
        data = await find_upload(storage, key_id, upload_id, name)
        resolved[name] = await _decoding(for_comfyui, data, name, max_pixels)
    return resolved


def for_comfyui(data: bytes, param: str, max_pixels: int | None = None) -> bytes:
    """A checked image as ComfyUI reads it on every version: an 8-bit RGB or RGBA PNG as it
    is, anything else decoded and re-encoded so (upright by its EXIF orientation, 16-bit
    grey scaled to 8 bits, transparency kept as alpha). ComfyUI 0.28 reads every input
    through PyAV, which fails on some (a 1x1 JPEG, grey or 16-bit PNGs, WebP) unless it
    is 8-bit RGB(A). :class:`UploadRefused` over ``max_pixels``, naming ``param``."""
    from PIL import Image, ImageOps

    with Image.open(io.BytesIO(data)) as im:
        problem = None if max_pixels is None else pixel_problem(param, im.size, max_pixels)
        if problem is not None:
            raise UploadRefused(param, problem, code="limit_exceeded")
        if im.format == "PNG" and data[24:26] in (b"\x08\x02", b"\x08\x06"):
            return data  # IHDR: bit depth 8, colour type RGB or RGBA
        image = ImageOps.exif_transpose(im)
        if image.mode.startswith("I"):
            image = image.point(lambda v: v / 257, "L")
        image = image.convert("RGBA" if image.has_transparency_data else "RGB")
    out = io.BytesIO()
    image.save(out, format="PNG", compress_level=1)
    return out.getvalue()
