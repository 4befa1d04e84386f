"""Provenance in PNG text chunks: write without re-encoding pixels, read back (pure).

A saved image carries two chunks:

- ``prompt``: the API-format workflow, as ComfyUI itself writes it, so ComfyUI (and
  :func:`comfyfn.workflow._graph.load_api_graph`) can load the graph back from the file;
- ``comfyfn``: a JSON object with prompt, negative, seed, width, height, steps, cfg,
  sampler, scheduler, model file names, server and prompt id.

Chunks are inserted before the first ``IDAT`` as UTF-8 ``iTXt``, so readers (Pillow's
``Image.open(p).info``, ComfyUI's loader) see them without decoding pixels; existing chunks
of the same keyword are replaced. The image data itself is left byte-for-byte as the server
made it.
"""

from __future__ import annotations

import json
import struct
import zlib
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

__all__ = [
    "MAX_CHUNK_TEXT",
    "MAX_TOTAL_TEXT",
    "PROVENANCE_KEY",
    "add_text_chunks",
    "png_structure_problem",
    "read_provenance",
    "read_text_chunks",
]

PROVENANCE_KEY = "comfyfn"
_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
_TEXT_TYPES = (b"tEXt", b"iTXt", b"zTXt")
#: The most text one chunk may hold (inflated), and all of a PNG's text chunks together;
#: ComfyUI's workflows are far smaller (a large one is a few MB).
MAX_CHUNK_TEXT = 16 * 2**20
MAX_TOTAL_TEXT = 32 * 2**20


def _chunks(data: bytes) -> Iterator[tuple[bytes, bytes, bytes]]:
    """Each chunk's type, body and whole bytes (length, type, body, CRC)."""
    if not data.startswith(_PNG_MAGIC):
        raise ValueError("not a PNG file")
    pos = len(_PNG_MAGIC)
    while pos + 8 <= len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        ctype = data[pos + 4 : pos + 8]
        end = pos + 12 + length
        yield ctype, data[pos + 8 : pos + 8 + length], data[pos:end]
        pos = end


def _keyword(ctype: bytes, body: bytes) -> str:
    return body.split(b"\0", 1)[0].decode("latin-1") if ctype in _TEXT_TYPES else ""


def _itxt(keyword: str, text: str) -> bytes:
    body = keyword.encode("latin-1") + b"\0\0\0\0\0" + text.encode("utf-8")
    head = struct.pack(">I", len(body)) + b"iTXt"
    return head + body + struct.pack(">I", zlib.crc32(b"iTXt" + body) & 0xFFFFFFFF)


def png_structure_problem(data: bytes) -> str | None:
    """What is wrong with a PNG's chunk layout (cut short, no IDAT, no IEND), or None."""
    if not data.startswith(_PNG_MAGIC):
        return "is not a PNG file"
    seen_idat = False
    pos = len(_PNG_MAGIC)
    while pos + 8 <= len(data):
        length, ctype = struct.unpack(">I4s", data[pos : pos + 8])
        pos += 12 + length
        if pos > len(data):
            name = ctype.decode("latin-1")
            return f"is cut short inside a {name!r} chunk ({len(data)} bytes)"
        seen_idat = seen_idat or ctype == b"IDAT"
        if ctype == b"IEND":
            return None if seen_idat else "has no image data (no IDAT chunk)"
    return f"is cut short: no IEND chunk ({len(data)} bytes)"


def add_text_chunks(data: bytes, texts: Mapping[str, str]) -> bytes:
    """Return the PNG ``data`` with ``texts`` (keyword → text) set as iTXt chunks.

    They go before the first ``IDAT`` (or before ``IEND`` in a PNG without image data).
    """
    out = [_PNG_MAGIC]
    added = False
    for ctype, body, raw in _chunks(data):
        if ctype in (b"IDAT", b"IEND") and not added:
            out.extend(_itxt(k, v) for k, v in texts.items())
            added = True
        if _keyword(ctype, body) in texts:
            continue
        out.append(raw)
    return b"".join(out)


def read_text_chunks(source: bytes | str | Path) -> dict[str, str]:
    """All text chunks of a PNG (tEXt, zTXt, iTXt) as keyword → text.

    Bounded: a chunk whose text is over :data:`MAX_CHUNK_TEXT` bytes (a zlib "bomb": a few
    hundred KB that inflate to hundreds of MB), all of them together over
    :data:`MAX_TOTAL_TEXT`, or a compressed text that is not whole zlib data raise
    ValueError naming the chunk; nothing is truncated, and no more than the bound is ever
    inflated.
    """
    data = source if isinstance(source, bytes) else Path(source).read_bytes()
    texts: dict[str, str] = {}
    room = MAX_TOTAL_TEXT
    for ctype, body, _ in _chunks(data):
        if ctype not in _TEXT_TYPES:
            continue
        head, sep, rest = body.partition(b"\0")
        key = head.decode("latin-1")
        shown = key[:80]  # a keyword is at most 79 bytes; a hostile one is shown cut
        if not sep:
            raise ValueError(f"PNG text chunk {shown!r} has no text (no NUL after its keyword)")
        raw, encoding = _text_of(ctype, rest, shown, min(MAX_CHUNK_TEXT, room))
        _check_size(shown, len(raw), room)
        room -= len(raw)
        texts[key] = raw.decode(encoding)
    return texts


def _text_of(ctype: bytes, rest: bytes, key: str, limit: int) -> tuple[bytes, str]:
    """A text chunk's text (after its keyword), inflated to at most ``limit + 1`` bytes,
    and its encoding."""
    if ctype == b"tEXt":
        return rest, "latin-1"
    if ctype == b"zTXt":
        return _inflate(rest[1:], key, limit), "latin-1"
    fields = rest[2:].split(b"\0", 2)  # after the compression flag and method
    if len(fields) != 3:
        raise ValueError(f"PNG iTXt chunk {key!r} is malformed")
    text = fields[2]
    return (_inflate(text, key, limit) if rest[0] else text), "utf-8"


def _inflate(data: bytes, key: str, limit: int) -> bytes:
    """``data`` inflated, stopping one byte past ``limit`` (:func:`_check_size` refuses it)."""
    inflater = zlib.decompressobj()
    try:
        text = inflater.decompress(data, limit + 1)
    except zlib.error as exc:
        raise ValueError(f"PNG text chunk {key!r} is not valid zlib data ({exc})") from None
    if len(text) <= limit and not inflater.eof:
        raise ValueError(f"PNG text chunk {key!r} is cut short (its zlib data ends early)")
    return text


def _check_size(key: str, size: int, room: int) -> None:
    if size > MAX_CHUNK_TEXT:
        raise ValueError(
            f"PNG text chunk {key!r} holds over {MAX_CHUNK_TEXT // 2**20} MiB of text; "
            "refused (a zlib bomb?)"
        )
    if size > room:
        raise ValueError(
            f"PNG text chunks hold over {MAX_TOTAL_TEXT // 2**20} MiB of text together "
            f"(at {key!r}); refused"
        )


def read_provenance(source: bytes | str | Path) -> dict[str, Any]:
    """The ``comfyfn`` provenance of a saved image; ``{}`` if it has none."""
    text = read_text_chunks(source).get(PROVENANCE_KEY)
    return json.loads(text) if text else {}
