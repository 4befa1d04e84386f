"""Batch rows with input images: paths relative to the job file, URLs, and row errors that
name row and column (before anything is submitted)."""

from __future__ import annotations

import asyncio
import http.server
import io
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from PIL import Image as PIL

from comfyfn.batch.jobs import FOLDER, Job, image_path, prepare, prepare_async
from comfyfn.batch.rows import Row, RowError
from comfyfn.workflow import builtin

pytestmark = pytest.mark.filterwarnings("ignore::comfyfn.ComfyWarning")  # tiny test images


def png(size: tuple[int, int] = (40, 24), color: str = "red") -> bytes:
    buffer = io.BytesIO()
    PIL.new("RGB", size, color).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture
def edit():
    return builtin("zimage-edit")


@pytest.fixture
def image_server() -> Iterator[tuple[str, dict[str, bytes]]]:
    """A local HTTP server serving the PNGs put in the returned dict, else 404."""
    files: dict[str, bytes] = {}

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = files.get(self.path)
            self.send_response(200 if body is not None else 404)
            self.send_header("Content-Type", "image/png")
            self.send_header("Content-Length", str(len(body or b"")))
            self.end_headers()
            self.wfile.write(body or b"")

        def log_message(self, *args: object) -> None:
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}", files
    httpd.shutdown()
    thread.join(timeout=10)


def test_image_path_is_relative_to_the_job_folder(tmp_path: Path) -> None:
    assert image_path("in/a.png", tmp_path) == tmp_path / "in" / "a.png"
    assert image_path("/abs/a.png", tmp_path) == Path("/abs/a.png")
    assert image_path("a.png", None) == Path("a.png")
    assert image_path("~/a.png", tmp_path) == Path.home() / "a.png"


def test_a_relative_image_is_read_from_the_rows_folder(tmp_path: Path, edit) -> None:
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "photo.png").write_bytes(png((50, 30)))
    job = prepare(edit, Row(1, {"prompt": "p", "image": "in/photo.png", FOLDER: str(tmp_path)}))
    assert isinstance(job, Job), job
    (name,) = job.workflow.uploads
    assert name.startswith("comfyfn/") and job.workflow.uploads[name].size == (50, 30)
    assert job.values["image"] == "in/photo.png"  # the manifest shows what the row gave
    assert (job.values["width"], job.values["height"]) == (48, 32)  # rounded to ×16


def test_an_absolute_image_path_ignores_the_folder(tmp_path: Path, edit) -> None:
    image = tmp_path / "photo.png"
    image.write_bytes(png())
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
    (tmp_path / "a.png").write_bytes(png(color="red"))
    (tmp_path / "b.png").write_bytes(png(color="blue"))
    (tmp_path / "a_copy.png").write_bytes(png(color="red"))

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


def test_an_image_url_is_fetched_even_from_inside_the_event_loop(image_server, edit) -> None:
    base, files = image_server
    files["/p.png"] = png((32, 32))

    async def from_the_loop() -> Job | RowError:  # as the batch runner prepares rows
        return prepare(edit, Row(3, {"prompt": "p", "image": f"{base}/p.png"}))

    job = asyncio.run(from_the_loop())
    assert isinstance(job, Job), job
    assert [image.size for image in job.workflow.uploads.values()] == [(32, 32)]
    assert job.values["image"] == f"{base}/p.png"


def test_a_failing_url_is_a_row_error(image_server, edit) -> None:
    base, _ = image_server
    error = prepare(edit, Row(4, {"prompt": "p", "image": f"{base}/none.png"}))
    assert isinstance(error, RowError) and (error.index, error.column) == (4, "image")
    assert "HTTP 404" in error.message


def test_prepare_async_fetches_urls_without_a_thread(image_server, edit, monkeypatch) -> None:
    from comfyfn.batch import jobs

    base, files = image_server
    files["/q.png"] = png((48, 16))
    monkeypatch.setattr(jobs, "_fetch", None)  # the blocking path must not be taken
    job = asyncio.run(prepare_async(edit, Row(5, {"prompt": "p", "image": f"{base}/q.png"})))
    assert isinstance(job, Job), job
    assert [image.size for image in job.workflow.uploads.values()] == [(48, 16)]
    assert job.values["image"] == f"{base}/q.png"
    monkeypatch.undo()
    same = prepare(edit, Row(5, {"prompt": "p", "image": f"{base}/q.png"}))
    assert isinstance(same, Job) and same.key == job.key  # the same job either way
    missing = asyncio.run(prepare_async(edit, Row(6, {"prompt": "p", "image": f"{base}/x.png"})))
    assert isinstance(missing, RowError) and (missing.index, missing.column) == (6, "image")
    assert "HTTP 404" in missing.message
