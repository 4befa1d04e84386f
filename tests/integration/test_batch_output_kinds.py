"""Every kind of output a batch row makes is written, on both batch paths, on the real
engine: a graph with a still image, an animated WebP and two texts, run by ``comfyfn batch``
here and through the shared store (``--db … --work``). The files are named after the row
(``<stem>.png``, ``<stem>_animated0.webp``, ``<stem>_text0.txt``…), hold what the server
made, are listed in results.csv, counted in summary.json and linked from the contact sheet; a
second run makes nothing again and finds every file intact."""

from __future__ import annotations

import json
import re

import pytest
from PIL import Image as PIL

from tests.support.batches import results
from tests.support.cli_proc import run_cli
from tests.support.graphs import kinds_graph

pytestmark = pytest.mark.engine

ROWS = 2


def graph(color: int) -> dict:
    """kinds_graph (an animated WebP and a text) with a still image and a second text."""
    nodes = kinds_graph(color, "first")
    nodes["7"] = {"class_type": "SaveImage", "inputs": {"images": ["5", 0], "filename_prefix": "k"}}
    nodes["8"] = {"class_type": "PrimitiveString", "inputs": {"value": "second"}}
    nodes["9"] = {"class_type": "PreviewAny", "inputs": {"source": ["8", 0]}}
    return nodes


@pytest.mark.parametrize("path", ["here", "store"])
def test_every_kind_is_written_under_the_rows_name(server, tmp_path, unique, path):
    wf = tmp_path / "kinds.json"
    wf.write_text(json.dumps(graph(unique())))
    texts = [f"行 {i} {unique()}" for i in range(1, ROWS + 1)]
    rows = tmp_path / "rows.csv"
    rows.write_text("3.value,5.color\n" + "".join(f"{t},{unique()}\n" for t in texts), "utf-8")
    out = tmp_path / "out"
    args = ["batch", str(rows), "-w", str(wf), "-o", str(out), "-s", server]
    if path == "store":
        args += ["--db", f"sqlite:///{tmp_path / 'q.db'}", "--work"]

    first = run_cli(*args)
    assert first.returncode == 0, first.stderr
    lines = results(out)
    by_row: dict[str, list[str]] = {}
    for line in lines:
        assert line["state"] == "done", line
        by_row.setdefault(line["row"], []).append(line["file"])
    assert sorted(by_row) == [str(i) for i in range(1, ROWS + 1)]
    for row, text in zip(sorted(by_row), texts, strict=True):
        files = sorted(by_row[row])
        stem = files[0].removesuffix(".png")
        assert files == [
            f"{stem}.png",
            f"{stem}_animated0.webp",
            f"{stem}_text0.txt",
            f"{stem}_text1.txt",
        ]
        assert re.fullmatch(r"images/[^/]+", stem), stem
        with PIL.open(out / f"{stem}_animated0.webp") as animated:
            assert getattr(animated, "n_frames", 1) == 2
        with PIL.open(out / f"{stem}.png") as still:
            assert still.size == (32, 24)
        made = {(out / f).read_text("utf-8") for f in files if f.endswith(".txt")}
        assert made == {text, "second"}  # the row's own text reached the server and back
        sheet = (out / "index.html").read_text("utf-8")
        assert f"href='{stem}.png'" in sheet and f"href='{stem}_text1.txt'" in sheet
    summary = json.loads((out / "summary.json").read_text())
    assert (summary["images"], summary["other_files"]) == (ROWS, 3 * ROWS)

    again = run_cli(*args)
    assert again.returncode == 0, again.stderr
    assert results(out) == lines  # nothing made twice, every file still listed
    summary = json.loads((out / "summary.json").read_text())
    assert summary["done"] == 0 and summary["other_files"] == 3 * ROWS
