"""``comfyfn batch`` with an image column on the local engine: the built-in ``zimage-edit``
fed by paths relative to the job file (and an absolute one); a missing or broken image fails
its own row only, before anything is submitted, and a resumed run skips what was made. A
device, a named pipe or a huge file fails its row at once, unread."""

from __future__ import annotations

import io
import json
import resource
import sqlite3
import subprocess
from pathlib import Path

import pytest
from PIL import Image as PIL
from typer.testing import CliRunner

from comfyfn.cli._app import app
from tests.support.cli_proc import start_cli, stop
from tests.support.special_files import make_fifo, make_sparse
from tests.support.tests_png import image_bytes

pytestmark = pytest.mark.engine
runner = CliRunner()


def save_png(path: Path, size: tuple[int, int], color: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(image_bytes(size, color))
    return path


def states(output: Path) -> dict[int, tuple[str, str | None]]:
    with sqlite3.connect(output / "manifest.sqlite") as db:
        return {
            row: (state, error)
            for row, state, error in db.execute("SELECT row, state, error FROM jobs")
        }


def test_a_job_file_with_image_paths_runs_zimage_edit(server, unique, tmp_path):
    jobs = tmp_path / "jobs"
    save_png(jobs / "in" / "a.png", (50, 30), "red")
    absolute = save_png(tmp_path / "elsewhere" / "b.png", (64, 64), "blue")
    (jobs / "broken.png").write_text("not a picture")
    (jobs / "job.yaml").write_text(
        "workflow: zimage-edit\n"
        f"defaults: {{steps: 2, denoise: 0.5, seed: {unique()}}}\n"
        "rows:\n"
        "  - {prompt: from a relative path, image: in/a.png}\n"
        "  - {prompt: a missing file, image: in/missing.png}\n"
        f"  - {{prompt: from an absolute path, image: '{absolute}'}}\n"
        "  - {prompt: not an image, image: broken.png}\n",
        encoding="utf-8",
    )
    output = tmp_path / "out"
    args = ["batch", str(jobs / "job.yaml"), "-o", str(output), "-s", server, "--json"]
    result = runner.invoke(app, args)  # run from another working directory than the file's
    assert result.exit_code == 1, result.output
    summary = json.loads(result.stdout)
    assert (summary["done"], summary["invalid"], summary["failed"]) == (2, 2, 0)
    got = states(output)
    assert got[1][0] == got[3][0] == "done"
    assert got[2] == (
        "invalid",
        f"row 2, column 'image': the image for image, {jobs / 'in' / 'missing.png'}, "
        "cannot be read: No such file or directory",
    )
    state, error = got[4]
    assert state == "invalid" and error is not None
    assert error.startswith("row 4, column 'image': ") and "is not an image" in error
    with PIL.open(output / "images" / "000001.png") as first:
        assert first.size == (48, 32)  # the input's size rounded to multiples of 16
    with PIL.open(output / "images" / "000003.png") as third:
        assert third.size == (64, 64)
    # the same batch again: the images are read again, the jobs are the same, nothing re-runs
    again = runner.invoke(app, args)
    assert again.exit_code == 1, again.output
    summary = json.loads(again.stdout)
    assert (summary["done"], summary["skipped"], summary["invalid"]) == (0, 2, 2)


def test_a_csv_image_column_defaults_to_zimage_edit(server, unique, tmp_path):
    save_png(tmp_path / "photo.png", (32, 48), "green")
    source = tmp_path / "rows.csv"
    source.write_text(f"prompt,image,steps,seed\nrecoloured,photo.png,2,{unique()}\n")
    output = tmp_path / "out"
    result = runner.invoke(app, ["batch", str(source), "-o", str(output), "-s", server])
    assert result.exit_code == 0, result.output
    data = (output / "images" / "000001.png").read_bytes()
    with PIL.open(io.BytesIO(data)) as made:
        assert made.size == (32, 48)


def test_an_image_url_column_is_fetched_and_a_failing_url_fails_its_row(
    server,
    unique,
    tmp_path,
    file_server,
):
    base = file_server.url
    file_server.files["/photo.png"] = image_bytes((80, 48), "purple")
    source = tmp_path / "rows.jsonl"
    rows = [
        {"prompt": "by url", "image": f"{base}/photo.png", "steps": 2, "seed": unique()},
        {"prompt": "gone", "image": f"{base}/gone.png", "steps": 2, "seed": unique()},
    ]
    source.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    output = tmp_path / "out"
    args = ["batch", str(source), "-o", str(output), "-s", server, "-w", "zimage-edit"]
    result = runner.invoke(app, [*args, "--json"])
    assert result.exit_code == 1, result.output
    got = states(output)
    assert got[1][0] == "done"
    state, error = got[2]
    assert state == "invalid" and error is not None
    assert error.startswith("row 2, column 'image': ") and "HTTP 404" in error
    with PIL.open(output / "images" / "000001.png") as made:
        assert made.size == (80, 48)


#: the address space a ``comfyfn batch`` child may take: a regression reading /dev/zero or a
#: 4 GiB file whole ends in its MemoryError, not in the machine's OOM killer
CHILD_ADDRESS_SPACE = 1024**3


def _limit_address_space() -> None:  # run in the child, before it execs Python
    resource.setrlimit(resource.RLIMIT_AS, (CHILD_ADDRESS_SPACE, CHILD_ADDRESS_SPACE))


def run_limited(job: Path, output: Path, server: str) -> tuple[int, dict, str]:
    """``comfyfn batch JOB --json`` in a child process within CHILD_ADDRESS_SPACE: its exit
    code, JSON summary and stderr; the test fails if it still runs after 120 s."""
    args = ["batch", str(job), "-o", str(output), "-s", server, "--json"]
    proc = start_cli(*args, stderr=subprocess.PIPE, preexec_fn=_limit_address_space)
    try:
        stdout, stderr = proc.communicate(timeout=120)
    except subprocess.TimeoutExpired:
        pytest.fail("comfyfn batch still runs after 120 s (waiting on a named pipe?)")
    finally:
        stop(proc)
    assert stdout, stderr
    return proc.returncode, json.loads(stdout), stderr


def image_rows(job: Path, seed: int, *images: str) -> Path:
    """A zimage-edit job file with one row per image (1 step)."""
    rows = "".join(f"  - {{prompt: row {n}, image: '{image}'}}\n" for n, image in enumerate(images))
    job.write_text(
        f"workflow: zimage-edit\ndefaults: {{steps: 1, denoise: 0.5, seed: {seed}}}\nrows:\n{rows}",
        encoding="utf-8",
    )
    return job


def test_a_device_or_a_huge_file_fails_its_row_unread(server, unique, tmp_path):
    save_png(tmp_path / "in.png", (64, 64), "red")
    huge = make_sparse(tmp_path / "huge.png", 4 * 1024**3)  # no disk used
    job = image_rows(tmp_path / "job.yaml", unique(), "/dev/zero", "huge.png", "in.png")
    code, summary, stderr = run_limited(job, tmp_path / "out", server)
    assert code == 1, stderr
    assert (summary["done"], summary["invalid"], summary["failed"]) == (1, 2, 0)
    got = states(tmp_path / "out")
    prefix = "column 'image': the image for image,"
    assert got[1] == (
        "invalid",
        f"row 1, {prefix} /dev/zero, is not a regular file (a character device)",
    )
    assert got[2] == (
        "invalid",
        f"row 2, {prefix} {huge}, has 4,294,967,296 bytes; "
        "the limit is 52,428,800 bytes ($COMFYFN_MAX_INPUT_BYTES)",
    )
    assert got[3] == ("done", None)
    with PIL.open(tmp_path / "out" / "images" / "000003.png") as made:
        assert made.size == (64, 64)


def test_a_named_pipe_fails_its_row_at_once(server, unique, tmp_path):
    # nothing waits on the pipe, so nothing keeps a signal from stopping the batch either
    save_png(tmp_path / "in.png", (64, 64), "blue")
    pipe = make_fifo(tmp_path / "pipe.png")
    job = image_rows(tmp_path / "job.yaml", unique(), "pipe.png", "in.png")
    code, summary, stderr = run_limited(job, tmp_path / "out", server)
    assert code == 1, stderr
    assert (summary["done"], summary["invalid"]) == (1, 1)
    assert states(tmp_path / "out") == {
        1: (
            "invalid",
            f"row 1, column 'image': the image for image, {pipe}, "
            "is not a regular file (a named pipe)",
        ),
        2: ("done", None),
    }
