"""Files comfyfn writes: atomic, durable, normal permissions; PNG provenance readable at open;
and the image check that decides whether fetched bytes are a whole image."""

from __future__ import annotations

import io
import os
import stat
import struct

import pytest
from PIL import Image as PIL
from PIL import ImageFile

import comfyfn._files as files
from comfyfn._files import current_umask, write_atomic
from comfyfn.provenance import PROVENANCE_KEY, add_text_chunks, read_provenance
from comfyfn.result import Image, image_problem


@pytest.fixture
def umask():
    """Set the process umask for one test, then restore it."""
    saved = os.umask(0o022)
    os.umask(saved)

    def set_(mask: int) -> None:
        os.umask(mask)

    yield set_
    os.umask(saved)


def test_content_and_normal_permissions(tmp_path, umask):
    umask(0o022)
    path = write_atomic(tmp_path / "a" / "b.txt", "旗袍\n")
    assert path.read_text(encoding="utf-8") == "旗袍\n"
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    path = write_atomic(tmp_path / "c.bin", b"\x00\x01")
    assert path.read_bytes() == b"\x00\x01"
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".tmp-")] == []


def test_permissions_follow_the_umask(tmp_path, umask):
    umask(0o077)
    assert current_umask() == 0o077
    assert stat.S_IMODE(write_atomic(tmp_path / "private", b"x").stat().st_mode) == 0o600
    umask(0o002)
    assert stat.S_IMODE(write_atomic(tmp_path / "group", b"x").stat().st_mode) == 0o664


def test_umask_fallback_without_proc(monkeypatch, umask):
    umask(0o027)

    def no_proc(*args, **kwargs):
        raise FileNotFoundError("/proc/self/status")

    monkeypatch.setattr(files, "open", no_proc, raising=False)
    assert current_umask() == 0o027
    assert os.umask(0o027) == 0o027  # the fallback restored it


def test_file_and_directory_are_fsynced(tmp_path, monkeypatch):
    synced: list[os.stat_result] = []
    real_fsync = os.fsync

    def recording_fsync(fd: int) -> None:
        synced.append(os.fstat(fd))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", recording_fsync)
    path = write_atomic(tmp_path / "out.png", b"data")
    kinds = [("dir" if stat.S_ISDIR(s.st_mode) else "file", s.st_ino) for s in synced]
    # the temporary file (now renamed to path) first, then its directory after the rename
    assert kinds == [("file", path.stat().st_ino), ("dir", tmp_path.stat().st_ino)]

    synced.clear()
    write_atomic(tmp_path / "index.html", "<p>", durable=False)
    assert synced == []


def test_failure_leaves_no_temporary_file_and_old_content(tmp_path, monkeypatch):
    target = tmp_path / "keep.txt"
    write_atomic(target, "old")

    def broken_replace(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(OSError, match="No space left"):
        write_atomic(target, "new")
    assert target.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keep.txt"]


def test_failed_fsync_leaves_no_temporary_file(tmp_path, monkeypatch):
    def broken_fsync(fd):
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(os, "fsync", broken_fsync)
    with pytest.raises(OSError, match="Input/output"):
        write_atomic(tmp_path / "x.png", b"x")
    assert list(tmp_path.iterdir()) == []


# -- provenance chunks are readable without decoding pixels ----------------------------------


def _chunk_types(data: bytes) -> list[bytes]:
    types, pos = [], 8
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        types.append(data[pos + 4 : pos + 8])
        pos += 12 + length
    return types


def test_text_chunks_come_before_the_pixels(tmp_path, sample):
    image = Image(
        sample("zimage_tiny_preview_256.png"),
        "9",
        "z_00001_.png",
        provenance={"prompt": "上海外滩", "seed": 42},
        workflow={"3": {"class_type": "KSampler"}},
    )
    path = image.save(tmp_path / "z.png")
    types = _chunk_types(path.read_bytes())
    first_idat = types.index(b"IDAT")
    assert types.index(b"iTXt") < first_idat
    assert types.count(b"iTXt") == 2 and b"iTXt" not in types[first_idat:]
    with PIL.open(path) as im:  # opened, not loaded: info holds what precedes IDAT
        assert '"上海外滩"' in im.info[PROVENANCE_KEY]
        assert '"KSampler"' in im.info["prompt"]
    assert read_provenance(path) == {"prompt": "上海外滩", "seed": 42}
    assert image_problem(path.read_bytes()) is None


def test_replacing_chunks_keeps_one_before_idat():
    buf = io.BytesIO()
    PIL.new("RGB", (16, 16), (9, 9, 9)).save(buf, format="PNG")
    once = add_text_chunks(buf.getvalue(), {"prompt": "a"})
    twice = add_text_chunks(once, {"prompt": "b", "comfyfn": "{}"})
    types = _chunk_types(twice)
    assert types[:4] == [b"IHDR", b"iTXt", b"iTXt", b"IDAT"]
    with PIL.open(io.BytesIO(twice)) as im:
        assert im.info["prompt"] == "b"


# -- whole-image check -----------------------------------------------------------------------


def _noise(fmt: str, size=(96, 64)) -> bytes:
    buf = io.BytesIO()
    PIL.effect_noise(size, 50).convert("RGB").save(buf, format=fmt)
    return buf.getvalue()


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "WEBP"])
def test_whole_images_pass_and_cut_ones_fail(fmt):
    data = _noise(fmt)
    assert image_problem(data) is None
    for cut in (len(data) // 2, len(data) - 12, len(data) - 1, 30):
        assert image_problem(data[:cut]) is not None, (fmt, cut)
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False


def test_png_problems_are_described():
    data = _noise("PNG")
    assert "cut short inside a 'IDAT' chunk" in (image_problem(data[: len(data) // 2]) or "")
    assert "no IEND chunk" in (image_problem(data[:-12]) or "")
    flipped = bytearray(data)
    flipped[len(data) // 2] ^= 0xFF
    assert "does not decode" in (image_problem(bytes(flipped)) or "")
    assert image_problem(b"") == "is empty"
    assert (image_problem(b"<html>502</html>") or "").startswith(
        "is not an image (16 bytes beginning"
    )
