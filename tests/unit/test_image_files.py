"""Local input image files read safely: a regular file within the byte limit only, stat'ed
before it is opened and read to at most one byte over the limit, so a device, a named pipe
or a huge file is a quick ConfigError naming the parameter (never a hang or a huge read)."""

from __future__ import annotations

from pathlib import Path

import pytest

from comfyfn.errors import ConfigError
from comfyfn.workflow._images import MAX_INPUT_BYTES, is_local_file, read_image_file
from tests.support.special_files import make_fifo, make_sparse, without_waiting_on
from tests.support.tests_png import image_bytes


def test_a_regular_file_is_read_whole(tmp_path: Path) -> None:
    data = image_bytes((16, 16), "red")
    path = tmp_path / "a.png"
    path.write_bytes(data)
    assert read_image_file(path, "image") == data
    assert read_image_file(path, "image", limit=len(data)) == data  # the limit itself is fine


def test_a_directory_is_refused_naming_the_parameter(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        read_image_file(tmp_path, "mask")
    assert str(caught.value) == (
        f"the image for mask, {tmp_path}, is not a regular file (a directory)"
    )


def test_a_named_pipe_is_refused_at_once_without_a_writer(tmp_path: Path) -> None:
    fifo = make_fifo(tmp_path / "pipe.png")

    def read() -> str:
        with pytest.raises(ConfigError) as caught:
            read_image_file(fifo, "image")
        return str(caught.value)

    assert without_waiting_on(fifo, read) == (
        f"the image for image, {fifo}, is not a regular file (a named pipe)"
    )


def test_a_character_device_is_refused_unread() -> None:
    # /dev/null, not /dev/zero: were it read, the test process could not run out of memory
    with pytest.raises(ConfigError, match=r"/dev/null, is not a regular file \(a character"):
        read_image_file(Path("/dev/null"), "image")


def test_a_symlink_to_a_device_is_refused(tmp_path: Path) -> None:
    (tmp_path / "photo.png").symlink_to("/dev/null")
    with pytest.raises(ConfigError, match="not a regular file"):
        read_image_file(tmp_path / "photo.png", "image")


def test_a_file_over_the_limit_is_refused_by_its_size(tmp_path: Path) -> None:
    big = make_sparse(tmp_path / "big.png", MAX_INPUT_BYTES + 1)
    with pytest.raises(ConfigError) as caught:
        read_image_file(big, "image")
    assert str(caught.value) == (
        f"the image for image, {big}, has 52,428,801 bytes; "
        "the limit is 52,428,800 bytes ($COMFYFN_MAX_INPUT_BYTES)"
    )


def test_a_file_longer_than_its_stat_says_is_read_to_one_byte_over_the_limit() -> None:
    status = Path("/proc/self/status")  # a regular file whose stat says 0 bytes
    assert status.stat().st_size == 0 and len(status.read_bytes()) > 65
    with pytest.raises(ConfigError, match="is over 64 bytes; the limit is 64 bytes"):
        read_image_file(status, "image", limit=64)


def test_the_environment_sets_the_limit(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "a.png"
    path.write_bytes(image_bytes((16, 16), "red"))
    monkeypatch.setenv("COMFYFN_MAX_INPUT_BYTES", "10")
    with pytest.raises(ConfigError, match=r"the limit is 10 bytes \(\$COMFYFN_MAX_INPUT_BYTES\)"):
        read_image_file(path, "image")
    monkeypatch.setenv("COMFYFN_MAX_INPUT_BYTES", "lots")
    with pytest.raises(ConfigError, match="COMFYFN_MAX_INPUT_BYTES='lots' is not a positive"):
        read_image_file(path, "image")


def test_is_local_file_is_a_stat_that_never_raises(tmp_path: Path) -> None:
    (tmp_path / "a.png").write_bytes(b"x")
    fifo = make_fifo(tmp_path / "pipe.png")
    assert is_local_file(tmp_path / "a.png") and is_local_file(str(tmp_path / "a.png"))
    for other in (tmp_path, fifo, "/dev/null", tmp_path / "gone.png", "x" * 5000, "a\0b"):
        assert not is_local_file(other), other
