"""``comfyfn batch`` with an image column on the local engine: the built-in ``zimage-edit``
fed by paths relative to the job file (and an absolute one); a missing or broken image fails
its own row only, before anything is submitted, and a resumed run skips what was made."""

from __future__ import annotations

import io
import json
import sqlite3
from pathlib import Path

import pytest
from PIL import Image as PIL
from tests_png import image_bytes
from typer.testing import CliRunner

from comfyfn.cli._app import app

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
    assert got[4][0] == "invalid" and got[4][1].startswith("row 4, column 'image': ")
    assert "is not an image" in got[4][1]
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
    assert got[2][0] == "invalid" and got[2][1].startswith("row 2, column 'image': ")
    assert "HTTP 404" in got[2][1]
    with PIL.open(output / "images" / "000001.png") as made:
        assert made.size == (80, 48)
