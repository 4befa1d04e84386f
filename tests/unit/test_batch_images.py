"""Batch rows with input images: paths relative to the job file, URLs, and row errors that
name row and column (before anything is submitted)."""

from __future__ import annotations

import asyncio
import threading
from functools import partial
from pathlib import Path

import pytest

from comfyfn.batch.jobs import FOLDER, Job, aprepare, image_path, prepare
from comfyfn.batch.rows import Row, RowError
from comfyfn.workflow import _images, builtin
from tests.support.special_files import make_fifo, make_sparse, without_waiting_on
from tests.support.tests_png import image_bytes

pytestmark = pytest.mark.filterwarnings("ignore::comfyfn.ComfyWarning")  # tiny test images


@pytest.fixture
def edit():
    return builtin("zimage-edit")


def test_image_path_is_relative_to_the_job_folder(tmp_path: Path) -> None:
    assert image_path("in/a.png", tmp_path) == tmp_path / "in" / "a.png"
    assert image_path("/abs/a.png", tmp_path) == Path("/abs/a.png")
    assert image_path("a.png", None) == Path("a.png")
    assert image_path("~/a.png", tmp_path) == Path.home() / "a.png"


def test_a_relative_image_is_read_from_the_rows_folder(tmp_path: Path, edit) -> None:
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "photo.png").write_bytes(image_bytes((50, 30), "red"))
    job = prepare(edit, Row(1, {"prompt": "p", "image": "in/photo.png", FOLDER: str(tmp_path)}))
    assert isinstance(job, Job), job
    (name,) = job.workflow.uploads
    assert name.startswith("comfyfn/") and job.workflow.uploads[name].size == (50, 30)
    assert job.values["image"] == "in/photo.png"  # the manifest shows what the row gave
    assert (job.values["width"], job.values["height"]) == (48, 32)  # rounded to ×16


def test_an_absolute_image_path_ignores_the_folder(tmp_path: Path, edit) -> None:
    image = tmp_path / "photo.png"
    image.write_bytes(image_bytes((40, 24), "red"))
    row = Row(1, {"prompt": "p", "image": str(image), FOLDER: "/nonexistent"})
    assert isinstance(prepare(edit, row), Job)


def test_a_missing_image_is_a_row_error_naming_row_and_column(tmp_path: Path, edit) -> None:
    error = prepare(edit, Row(7, {"prompt": "p", "image": "gone.png", FOLDER: str(tmp_path)}))
    assert isinstance(error, RowError)
    assert (error.index, error.column) == (7, "image")
    assert str(error).startswith("row 7, column 'image': ")
    assert str(tmp_path / "gone.png") in str(error) and "cannot be read" in str(error)


def test_a_file_that_is_not_an_image_is_a_row_error(tmp_path: Path, edit) -> None:
    (tmp_path / "notes.png").write_text("not a picture")
    error = prepare(edit, Row(2, {"prompt": "p", "image": "notes.png", FOLDER: str(tmp_path)}))
    assert isinstance(error, RowError) and error.column == "image"
    assert "is not an image" in error.message


def test_the_key_follows_the_images_content(tmp_path: Path, edit) -> None:
    (tmp_path / "a.png").write_bytes(image_bytes((40, 24), "red"))
    (tmp_path / "b.png").write_bytes(image_bytes((40, 24), "blue"))
    (tmp_path / "a_copy.png").write_bytes(image_bytes((40, 24), "red"))

    def key(name: str) -> str:
        job = prepare(edit, Row(1, {"prompt": "p", "image": name, FOLDER: str(tmp_path)}))
        assert isinstance(job, Job)
        return job.key

    assert key("a.png") == key("a_copy.png") != key("b.png")


def test_an_image_by_path_column_naming_no_local_file_stays_a_server_file(edit) -> None:
    job = prepare(edit, Row(1, {"prompt": "p", "40.image": "example.png", "width": 64}))
    assert isinstance(job, Job), job
    assert job.workflow.graph["40"]["inputs"]["image"] == "example.png"
    assert not job.workflow.uploads


def test_an_image_url_is_fetched_even_from_inside_the_event_loop(file_server, edit) -> None:
    base, files = file_server.url, file_server.files
    files["/p.png"] = image_bytes((32, 32), "red")

    async def from_the_loop() -> Job | RowError:  # as the batch runner prepares rows
        return prepare(edit, Row(3, {"prompt": "p", "image": f"{base}/p.png"}))

    job = asyncio.run(from_the_loop())
    assert isinstance(job, Job), job
    assert [image.size for image in job.workflow.uploads.values()] == [(32, 32)]
    assert job.values["image"] == f"{base}/p.png"


def test_a_failing_url_is_a_row_error(file_server, edit) -> None:
    base = file_server.url
    error = prepare(edit, Row(4, {"prompt": "p", "image": f"{base}/none.png"}))
    assert isinstance(error, RowError) and (error.index, error.column) == (4, "image")
    assert "HTTP 404" in error.message


def test_prepare_async_fetches_urls_without_a_thread(file_server, edit, monkeypatch) -> None:
    from comfyfn.batch import jobs

    base, files = file_server.url, file_server.files
    files["/q.png"] = image_bytes((48, 16), "red")
    monkeypatch.setattr(jobs, "_fetch", None)  # the blocking path must not be taken
    job = asyncio.run(aprepare(edit, Row(5, {"prompt": "p", "image": f"{base}/q.png"})))
    assert isinstance(job, Job), job
    assert [image.size for image in job.workflow.uploads.values()] == [(48, 16)]
    assert job.values["image"] == f"{base}/q.png"
    monkeypatch.undo()
    same = prepare(edit, Row(5, {"prompt": "p", "image": f"{base}/q.png"}))
    assert isinstance(same, Job) and same.key == job.key  # the same job either way
    missing = asyncio.run(aprepare(edit, Row(6, {"prompt": "p", "image": f"{base}/x.png"})))
    assert isinstance(missing, RowError) and (missing.index, missing.column) == (6, "image")
    assert "HTTP 404" in missing.message


def test_a_device_a_pipe_or_a_huge_file_is_a_row_error_and_never_read(
    tmp_path: Path, edit, monkeypatch
) -> None:
    fifo = make_fifo(tmp_path / "pipe.png")
    monkeypatch.setenv("COMFYFN_MAX_INPUT_BYTES", "1000")  # so a regression reads 1 MiB only
    make_sparse(tmp_path / "huge.png", 1024**2)
    rows = {
        3: ("/dev/null", "is not a regular file (a character device)"),
        4: ("pipe.png", "is not a regular file (a named pipe)"),
        5: ("huge.png", "has 1,048,576 bytes; the limit is 1,000 bytes"),
    }
    for index, (value, problem) in rows.items():
        row = Row(index, {"prompt": "p", "image": value, FOLDER: str(tmp_path)})
        error = without_waiting_on(fifo, partial(asyncio.run, aprepare(edit, row)))
        assert isinstance(error, RowError) and (error.index, error.column) == (index, "image")
        path = image_path(value, tmp_path)
        assert str(error).startswith(f"row {index}, column 'image': the image for image, {path}, ")
        assert problem in error.message
        same = without_waiting_on(fifo, partial(prepare, edit, row))  # blocking path
        assert isinstance(same, RowError) and same.message == error.message


def test_prepare_async_reads_image_files_off_the_event_loop(
    tmp_path: Path, edit, monkeypatch
) -> None:
    (tmp_path / "a.png").write_bytes(image_bytes((48, 16), "red"))
    readers: list[int] = []
    real = _images.read_image_file

    def spy(*args, **kwargs):  # type: ignore[no-untyped-def]
        readers.append(threading.get_ident())
        return real(*args, **kwargs)

    monkeypatch.setattr(_images, "read_image_file", spy)
    row = Row(1, {"prompt": "p", "image": "a.png", FOLDER: str(tmp_path)})
    job = asyncio.run(aprepare(edit, row))  # an event loop on this thread
    assert isinstance(job, Job), job
    assert [image.size for image in job.workflow.uploads.values()] == [(48, 16)]
    assert len(readers) == 1 and readers[0] != threading.get_ident()
    same = prepare(edit, row)
    assert isinstance(same, Job) and same.key == job.key  # the same job either way
