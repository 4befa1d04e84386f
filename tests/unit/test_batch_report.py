"""What a batch leaves beside its images: results.csv and a contact sheet that groups a
recipe's images by topic, labelled with output name and delivered size (real recipe rows,
real delivery, a real manifest; no server)."""

from __future__ import annotations

import csv
import io
import re

import pytest
from PIL import Image

from comfyfn import read_provenance
from comfyfn.batch import Manifest, Row
from comfyfn.batch.jobs import Job, prepare
from comfyfn.batch.report import (
    RESULT_COLUMNS,
    Summary,
    summarize,
    write_contact_sheet,
    write_results,
)
from comfyfn.batch.rows import RowError
from comfyfn.delivery import deliver
from comfyfn.provenance import PROVENANCE_KEY, add_text_chunks
from comfyfn.recipes import load_recipe, nearest_generate_size
from comfyfn.workflow import zimage_turbo

WF = zimage_turbo()
SMALL = {"wechat": (108, 108), "weibo": (120, 67), "douyin": (108, 192), "xiaohongshu": (124, 166)}
SUMMARY = Summary(6, 0, 0, 1, 6, 1.0, 60.0, 1.0, 1.0, {})


def _made(tmp_path, job: Job) -> list[dict]:
    """Write the job's image as the runner would: generated size, provenance, delivered."""
    w, h = job.values["width"], job.values["height"]
    buf = io.BytesIO()
    Image.new("RGB", (w, h), (job.row * 20 % 255, 80, 160)).save(buf, format="PNG")
    data = add_text_chunks(buf.getvalue(), {PROVENANCE_KEY: '{"seed": 1}'})
    assert job.deliver is not None
    data = deliver(data, job.deliver["width"], job.deliver["height"], job.deliver["fit"])
    rel = f"{job.name}.png"
    (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
    (tmp_path / rel).write_bytes(data)
    return [{"path": rel}]


@pytest.fixture
def recipe_run(tmp_path):
    """A 'social' run over two topics at a tenth of the sizes, plus one row that failed."""
    recipe = load_recipe("social")
    manifest = Manifest(tmp_path / "manifest.sqlite")
    for i, values in enumerate(recipe.rows(["中秋节", "春节 庙会"]), 1):
        small = SMALL[values["_output"]]  # a tenth of the platform size, generated as usual
        values = {**values, "_deliver": {**values["_deliver"], "width": small[0]}}
        values["_deliver"]["height"] = small[1]
        values["width"], values["height"] = nearest_generate_size(*small)
        job = prepare(WF, Row(i, values))
        assert isinstance(job, Job)
        manifest.add(job.key, job.row, job.label, job.stem, job.values)
        if i == 3:
            manifest.failed(job.key, "row 3: the server failed")
            continue
        manifest.done(job.key, _made(tmp_path, job), "http://gpu-1:8188", seconds=1.5, executed=1.0)
    manifest.add("invalid:9:0", 9, "row 9", "000009", {}, "invalid", str(RowError(9, "x", "bad")))
    yield manifest
    manifest.close()


def test_results_csv_has_one_line_per_file_and_per_failed_row(tmp_path, recipe_run):
    path = write_results(recipe_run, tmp_path)
    text = path.read_text(encoding="utf-8")
    assert text.startswith("\ufeff")  # spreadsheets then read the Chinese as UTF-8
    rows = list(csv.DictReader(io.StringIO(text.lstrip("\ufeff"))))
    assert tuple(rows[0]) == RESULT_COLUMNS
    assert [(r["row"], r["topic"], r["output"], r["state"]) for r in rows] == [
        ("1", "中秋节", "wechat", "done"),
        ("2", "中秋节", "weibo", "done"),
        ("3", "中秋节", "douyin", "failed"),
        ("4", "中秋节", "xiaohongshu", "done"),
        ("5", "春节 庙会", "wechat", "done"),
        ("6", "春节 庙会", "weibo", "done"),
        ("7", "春节 庙会", "douyin", "done"),
        ("8", "春节 庙会", "xiaohongshu", "done"),
        ("9", "", "", "invalid"),
    ]
    weibo = rows[1]
    assert weibo["file"] == "中秋节/weibo.png" and weibo["size"] == "120×67"  # delivered
    assert weibo["prompt"].startswith("以「中秋节」为主题的横版配图")
    assert int(weibo["seed"]) == list(load_recipe("social").rows(["中秋节"]))[1]["seed"]
    assert rows[2]["file"] == "" and rows[2]["error"] == "row 3: the server failed"
    assert rows[8]["error"] == "row 9, column 'x': bad"
    # execution and turnaround apart: queued behind our own jobs is not job time
    assert (weibo["executed_s"], weibo["turnaround_s"]) == ("1.00", "1.50")
    assert (rows[2]["executed_s"], rows[2]["turnaround_s"]) == ("", "")


def test_contact_sheet_groups_by_topic_with_output_names_and_delivered_sizes(tmp_path, recipe_run):
    sheet = write_contact_sheet(recipe_run, tmp_path, SUMMARY).read_text(encoding="utf-8")
    assert "<h1>Recipe social</h1>" in sheet
    sections = re.findall(r"<section>(.*?)</section>", sheet)
    assert [re.findall(r"<h2>(.*?)</h2>", s)[:1] for s in sections] == [["中秋节"], ["春节 庙会"]]
    label = re.compile(r"<div class='output'>(\w+)<span class='size'>(.*?)</span>")
    first, second = (label.findall(s) for s in sections)
    assert first == [("wechat", "108×108"), ("weibo", "120×67"), ("xiaohongshu", "124×166")]
    assert second == [*first[:2], ("douyin", "108×192"), first[2]]
    assert "112×112" not in sheet  # wechat's generated size is not what the sheet shows
    assert "ran 1.00s (turnaround 1.50s)" in sheet
    failed = sheet[sheet.index("<h2>Failed rows</h2>") :]
    assert "中秋节 / douyin" in failed and "row 9, column &#x27;x&#x27;: bad" in failed


def test_a_delivered_file_records_its_delivered_size(tmp_path, recipe_run):
    meta = read_provenance(tmp_path / "中秋节" / "weibo.png")
    generated = list(nearest_generate_size(120, 67))
    assert meta["delivery"] == {"width": 120, "height": 67, "fit": "cover", "from": generated}
    with Image.open(tmp_path / "中秋节" / "weibo.png") as image:
        assert image.size == (120, 67)


def test_a_plain_batch_keeps_one_untitled_grid(tmp_path):
    manifest = Manifest(tmp_path / "manifest.sqlite")
    for i in (1, 2):
        job = prepare(WF, Row(i, {"prompt": f"p{i}", "width": 64, "height": 48}))
        assert isinstance(job, Job)
        manifest.add(job.key, job.row, job.label, job.stem, job.values)
        (tmp_path / "images").mkdir(exist_ok=True)
        Image.new("RGB", (64, 48)).save(tmp_path / "images" / f"{i}.png")
        manifest.done(job.key, [{"path": f"images/{i}.png"}], "http://a", seconds=3.0, executed=1.0)
    sheet = write_contact_sheet(manifest, tmp_path, SUMMARY).read_text(encoding="utf-8")
    manifest.close()
    assert "<h1>Batch results</h1>" in sheet and "<h2>" not in sheet
    assert sheet.count("<figure>") == 2 and "64×48" in sheet


def test_other_kinds_are_counted_apart_and_linked_from_their_rows_figure(tmp_path):
    manifest = Manifest(tmp_path / "manifest.sqlite")
    made = {
        1: ["images/1.png", "images/1_video0.mp4", "images/1_text0.txt"],
        2: ["images/2_audio0.flac"],  # a row that made no image
    }
    (tmp_path / "images").mkdir()
    for i, files in made.items():
        job = prepare(WF, Row(i, {"prompt": f"p{i}", "width": 64, "height": 48}))
        assert isinstance(job, Job)
        manifest.add(job.key, job.row, job.label, job.stem, job.values)
        for rel in files:
            if rel.endswith(".png"):
                Image.new("RGB", (64, 48)).save(tmp_path / rel)
            else:
                (tmp_path / rel).write_bytes(b"not a picture")
        manifest.done(job.key, [{"path": f} for f in files], "http://a", seconds=1.0, executed=1.0)
    summary = summarize(manifest, None, 1.0, {"done": 2})
    assert (summary.images, summary.other_files) == (1, 3)
    sheet = write_contact_sheet(manifest, tmp_path, summary).read_text(encoding="utf-8")
    manifest.close()
    figures = re.findall(r"<figure>.*?</figure>", sheet)
    assert len(figures) == 2
    assert "<img " in figures[0] and "<img " not in figures[1]
    assert "href='images/1_video0.mp4'>video: 1_video0.mp4" in figures[0]
    assert "href='images/1_text0.txt'>text: 1_text0.txt" in figures[0]
    assert "href='images/2_audio0.flac'>audio: 2_audio0.flac" in figures[1]
    assert "more images" not in sheet


def test_a_file_name_is_a_link_beside_the_sheet_never_a_scheme(tmp_path):
    manifest = Manifest(tmp_path / "manifest.sqlite")
    job = prepare(WF, Row(1, {"prompt": "p", "width": 64, "height": 48}))
    assert isinstance(job, Job)
    manifest.add(job.key, job.row, job.label, job.stem, job.values)
    rel = "javascript:alert('x')#?.png"
    Image.new("RGB", (64, 48)).save(tmp_path / rel, format="PNG")
    manifest.done(job.key, [{"path": rel}], "http://a", seconds=1.0, executed=1.0)
    sheet = write_contact_sheet(manifest, tmp_path, SUMMARY).read_text(encoding="utf-8")
    manifest.close()
    assert "href='javascript%3Aalert%28%27x%27%29%23%3F.png'" in sheet
    assert "javascript:" not in sheet


def test_a_manifest_made_before_execution_times_gets_the_column(tmp_path):
    import sqlite3

    path = tmp_path / "manifest.sqlite"
    old = sqlite3.connect(path)
    old.execute(
        "CREATE TABLE jobs (key TEXT PRIMARY KEY, row INTEGER NOT NULL, label TEXT NOT NULL, "
        "stem TEXT NOT NULL, params TEXT NOT NULL, state TEXT NOT NULL, server TEXT, "
        "prompt_id TEXT, files TEXT, error TEXT, attempts INTEGER NOT NULL DEFAULT 0, "
        "submitted_at REAL, finished_at REAL, seconds REAL)"
    )
    old.execute(
        "INSERT INTO jobs (key, row, label, stem, params, state, files, seconds) "
        "VALUES ('k1', 1, 'row 1', '000001', '{}', 'done', '[]', 4.0)"
    )
    old.commit()
    old.close()
    manifest = Manifest(path)
    k1 = manifest.get("k1")
    assert k1 is not None and k1.executed is None and k1.seconds == 4.0
    manifest.add("k2", 2, "row 2", "000002", {})
    manifest.done("k2", [], "http://a", seconds=3.0, executed=2.0)
    assert manifest.percentile(0.5) == 2.0  # the old row has no execution time to count
    assert manifest.percentile(0.5, "seconds") == 3.0
    manifest.close()
