"""Batch input: CSV/JSONL/YAML rows, variations, templates, and row → job preparation."""

from __future__ import annotations

import json
from typing import Any, TypeVar

import pytest

from comfyfn.batch import Manifest, expand, parse_vary, read_job_file, read_rows
from comfyfn.batch.jobs import Job, prepare
from comfyfn.batch.rows import Row, RowError, prompt_placeholders, variation_problem
from comfyfn.errors import ConfigError
from comfyfn.workflow import zimage_turbo

T = TypeVar("T")


def ok(item: T | RowError) -> T:
    """``item``, failing the test if it is a row error."""
    assert not isinstance(item, RowError), item
    return item


def write(path, text):
    path.write_text(text, encoding="utf-8")
    return path


def test_seed_csv_format_with_chinese_and_bom(tmp_path):
    f = write(
        tmp_path / "p.csv",
        "\ufeffprompt,negative_prompt,seed,width,height\n"
        "旗袍女性漫步外滩夜景,模糊,42,1024,768\n水墨山水,,,512,512\n",
    )
    rows = list(read_rows(f))
    assert rows == [
        (
            1,
            {
                "prompt": "旗袍女性漫步外滩夜景",
                "negative": "模糊",
                "seed": "42",
                "width": "1024",
                "height": "768",
            },
        ),
        (2, {"prompt": "水墨山水", "width": "512", "height": "512"}),
    ]


def test_jsonl_rows_and_errors_keep_line_numbers(tmp_path):
    f = write(tmp_path / "p.jsonl", '{"prompt": "a"}\n\nnot json\n[1]\n{"prompt": "b"}\n')
    rows = list(read_rows(f))
    assert rows[0] == (1, {"prompt": "a"})
    assert isinstance(rows[1][1], RowError) and rows[1][0] == 3
    assert "not a JSON object" in str(rows[2][1])
    assert rows[3] == (5, {"prompt": "b"})


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("seed=1..4", ("seed", [1, 2, 3, 4])),
        ("style=watercolor, ink ,photo", ("style", ["watercolor", "ink", "photo"])),
    ],
)
def test_parse_vary(spec, expected):
    assert parse_vary(spec) == expected


@pytest.mark.parametrize("spec", ["seed", "=1..2", "seed=4..1", "x=", "x=,,"])
def test_parse_vary_errors(spec):
    with pytest.raises(ConfigError, match="--vary"):
        parse_vary(spec)


def test_expand_is_a_cartesian_product_with_a_template():
    rows: list[tuple[int, dict[str, Any] | RowError]] = [
        (1, {"prompt": "猫"}),
        (2, RowError(2, None, "bad")),
    ]
    out = list(
        expand(
            rows,
            vary=[parse_vary("seed=1..2"), parse_vary("style=ink,photo")],
            template="{prompt}, {style} style",
        )
    )
    first = [ok(r) for r in out[:4]]
    assert [r.values["prompt"] for r in first] == ["猫, ink style", "猫, photo style"] * 2
    assert [(r.values["seed"], r.variant) for r in first] == [(1, 0), (1, 1), (2, 2), (2, 3)]
    assert first[1].label == "row 1 [seed=1, style=photo]" and first[1].stem == "000001-001"
    assert isinstance(out[4], RowError)


def test_template_with_a_missing_column_names_it():
    (err,) = list(expand([(3, {"prompt": "x"})], template="{prompt} {mood}"))
    assert (
        str(err)
        == "row 3, column 'mood': the prompt template uses this column, which the row lacks"
    )


def test_job_file(tmp_path):
    write(tmp_path / "in.csv", "subject\n猫\n狗\n")
    job = write(
        tmp_path / "job.yaml",
        "workflow: zimage-turbo\ntemplate: '{subject}, {style}'\n"
        "vary:\n  style: [ink, photo]\n  seed: 1..2\ninput: in.csv\n"
        "defaults: {steps: 4}\n",
    )
    settings = read_job_file(job)
    rows = list(
        expand(
            settings["rows"],
            vary=settings["vary"],
            template=settings["template"],
            defaults=settings["defaults"],
        )
    )
    assert len(rows) == 8 and ok(rows[0]).values["prompt"] == "猫, ink"
    assert ok(rows[0]).values["steps"] == 4
    assert "prime" not in settings and "workflow" in settings  # only what the file sets
    bad = write(tmp_path / "bad.yaml", "colour: red\nrows: []\n")
    with pytest.raises(ConfigError) as info:
        read_job_file(bad)
    assert str(info.value) == (
        f"{bad}: unknown field 'colour'; known: workflow, defaults, template, vary, rows, "
        "input, prime"
    )


WF = zimage_turbo()


def row(values, index=1):
    return Row(index, values)


def test_prepare_types_values_and_keys_are_stable():
    job = prepare(WF, row({"prompt": "猫", "seed": "42", "width": "512", "height": "768"}))
    assert isinstance(job, Job)
    assert job.workflow.graph["3"]["inputs"]["seed"] == 42
    assert job.workflow.graph["13"]["inputs"]["width"] == 512
    again = ok(prepare(WF, row({"prompt": "猫", "seed": "42", "width": "512", "height": "768"})))
    assert again.key == job.key
    other = ok(prepare(WF, row({"prompt": "猫", "seed": "43", "width": "512", "height": "768"})))
    assert other.key != job.key


def test_missing_seed_comes_from_the_row_content():
    a = ok(prepare(WF, row({"prompt": "猫"})))
    b = ok(prepare(WF, row({"prompt": "猫"}, index=2)))
    c = ok(prepare(WF, row({"prompt": "狗"})))
    assert a.values["seed"] == b.values["seed"] != c.values["seed"]
    assert a.key != b.key  # two identical rows are still two jobs (two files)


def test_bad_input_files_are_named_errors(tmp_path):
    gbk = tmp_path / "gbk.csv"
    gbk.write_bytes("prompt\n旗袍女性\n".encode("gbk"))
    with pytest.raises(ConfigError, match="is not UTF-8"):
        list(read_rows(gbk))
    (err,) = list(expand([(1, {"prompt": "x"})], template="{prompt.upper}"))
    assert "bad template" in str(err)


@pytest.mark.parametrize(
    ("values", "column", "text"),
    [
        ({"width": "512"}, "prompt", "is empty"),
        ({"prompt": "p", "seed": "abc"}, "seed", "'abc' is not an integer"),
        ({"prompt": "p", "width": "1000"}, "width", "width 1000 is not a multiple of 16"),
        ({"prompt": "p", "cfg": "high"}, "cfg", "'high' is not a number"),
        ({"prompt": "p", "colour": "red"}, "colour", "is not a parameter of the workflow"),
        ({"prompt": "p", "height": "99999"}, "height", "out of range"),
    ],
)
def test_bad_rows_name_row_and_column(values, column, text):
    error = prepare(WF, row(values, index=7))
    assert isinstance(error, RowError)
    assert (error.index, error.column) == (7, column)
    assert text in str(error) and str(error).startswith(f"row 7, column '{column}'")


def test_template_variables_are_not_parameters():
    job = prepare(WF, row({"prompt": "猫 ink", "style": "ink"}), variables=frozenset({"style"}))
    assert isinstance(job, Job)


def test_manifest_states_and_percentiles(tmp_path):
    m = Manifest(tmp_path / "m.sqlite")
    for i in range(1, 11):
        m.add(f"k{i}", i, f"row {i}", f"{i:06d}", {"prompt": "p"})
        m.submitted(f"k{i}", "http://a", f"p{i}")
    assert [r.prompt_id for r in m.records("submitted")] == [f"p{i}" for i in range(1, 11)]
    for i in range(1, 11):
        files = [{"path": f"images/{i}.png"}]
        m.done(f"k{i}", files, "http://a", seconds=float(i) + 10, executed=float(i))
    m.add("bad", 11, "row 11", "000011", {}, "invalid", "row 11: broken")
    m.add("k1", 1, "row 1", "000001", {})  # re-adding a done job does not reset it
    k1 = m.get("k1")
    assert k1 is not None and k1.state == "done" and k1.files == ["images/1.png"]
    assert m.counts() == {"done": 10, "invalid": 1}
    assert (m.percentile(0.5), m.percentile(0.95)) == (5.0, 10.0)  # execution times
    assert (m.percentile(0.5, "seconds"), m.percentile(0.95, "seconds")) == (15.0, 20.0)
    m.close()
    k3 = Manifest(tmp_path / "m.sqlite").get("k3")
    assert k3 is not None and json.loads(json.dumps(k3.params)) == {"prompt": "p"}


def test_each_job_saves_into_its_own_small_folder_on_the_server():
    job = ok(prepare(WF, row({"prompt": "p"}, index=1234)))
    assert job.workflow.graph["9"]["inputs"]["filename_prefix"] == "z-image-turbo/0001/001234"
    own = ok(prepare(WF, row({"prompt": "p", "filename_prefix": "mine"})))
    assert own.workflow.graph["9"]["inputs"]["filename_prefix"] == "mine"


def _done_manifest(tmp_path, prompts_and_files):
    from PIL import Image

    m = Manifest(tmp_path / "manifest.sqlite")
    for i, (prompt, files) in enumerate(prompts_and_files, 1):
        m.add(f"k{i}", i, f"row {i}", f"{i:06d}", {"prompt": prompt, "seed": i})
        checks = []
        for name in files:
            (tmp_path / name).parent.mkdir(exist_ok=True)
            Image.new("RGB", (32, 32), (10 * i, 0, 0)).save(tmp_path / name)
            checks.append({"path": name})
        m.done(f"k{i}", checks, "http://a", seconds=1.0, executed=0.5)
    return m


def test_the_summary_counts_jobs_per_minute_not_images(tmp_path):
    from comfyfn.batch.report import summarize
    from comfyfn.fleet.pool import Pool

    m = _done_manifest(tmp_path, [("p", ["images/1.png"]), ("q", ["images/2.png", "images/3.png"])])
    summary = summarize(m, Pool(["http://a"], 0), 30.0, {"done": 2})
    m.close()
    assert (summary.done, summary.images, summary.jobs_per_minute) == (2, 3, 4.0)
    saved = json.loads(summary.to_json())
    assert saved["jobs_per_minute"] == 4.0 and "images_per_minute" not in saved


def test_the_contact_sheet_cuts_a_prompt_before_escaping_it(tmp_path):
    import html
    import re

    from comfyfn.batch.report import CAPTION, Summary, write_contact_sheet

    prompt = "x" * (CAPTION - 2) + "&<'\"" + "tail"  # '&' and '<' straddle the cut
    m = _done_manifest(tmp_path, [(prompt, ["images/1.png"])])
    summary = Summary(1, 0, 0, 0, 1, 1.0, 60.0, 1.0, 1.0, {})
    sheet = write_contact_sheet(m, tmp_path, summary).read_text(encoding="utf-8")
    m.close()
    (shown,) = re.findall(r"<b>(.*?)</b>", sheet)
    assert shown == "x" * (CAPTION - 2) + "&amp;&lt;"  # whole entities, the text cut at CAPTION
    assert html.unescape(shown) == prompt[:CAPTION]
    assert "60.0 jobs/min" in sheet


def test_a_variation_that_changes_nothing_is_a_row_error_naming_it():
    rows = [(1, {"prompt": "猫 {style}"}), (2, {"prompt": "狗"})]
    out = list(expand(rows, vary=[("style", ["ink"]), ("stepz", [4, 8])]))
    assert [(e.index, e.column) for e in out if isinstance(e, RowError)] == [(1, "stepz")] * 2 + [
        (2, "style"),
        (2, "style"),
    ]
    assert "parameters: prompt, negative, seed" in str(out[0])
    used = list(expand([(1, {"prompt": "猫 {style}"})], vary=[("style", ["ink"]), ("steps", [4])]))
    assert [ok(r).values["prompt"] for r in used] == ["猫 ink"]  # a placeholder and a parameter


def test_prompt_placeholders_are_every_rows_and_reading_stops_once_all_are_found():
    def rows():
        yield 1, {"prompt": "猫"}
        yield 2, RowError(2, "prompt", "not valid Unicode")  # has the default prompt
        yield 3, {"prompt": "{subject}, {style} style", "style": "ink"}
        raise AssertionError("read past the row that uses every wanted name")

    defaults = {"prompt": "{subject}"}
    assert prompt_placeholders(rows(), ["style"], defaults) == {"subject", "style"}
    assert prompt_placeholders([(1, {"prompt": "{a} {b:>9}"}), (2, {})], ["x"]) == set()


def test_a_variation_problem_suggests_the_closest_name():
    assert "did you mean 'steps'? parameters:" in (variation_problem("stepz", ()) or "")
    assert "did you mean 'style'?" in (variation_problem("stlye", {"style"}) or "")
    assert "did you mean" not in (variation_problem("colour_grading", ()) or "")
    assert variation_problem("steps", ()) is variation_problem("57:3.denoise", ()) is None


def test_a_priority_column_orders_rows_and_is_never_bound(tmp_path):
    f = write(tmp_path / "p.csv", "prompt,priority\na,5\nb,\nc,-2\nd,high\n")
    rows = list(expand(read_rows(f)))
    assert [ok(r).priority for r in rows[:3]] == [5, 0, -2]
    assert isinstance(rows[3], RowError) and rows[3].column == "priority"
    job = prepare(zimage_turbo(), ok(rows[0]))
    assert isinstance(job, Job) and "priority" not in job.workflow.provenance()


def test_a_lora_column_adds_the_rows_loras_and_an_empty_cell_adds_none():
    job = prepare(WF, row({"prompt": "p", "lora": "style.safetensors:0.5, detail.safetensors"}))
    assert isinstance(job, Job)
    loaders = [n for n in job.workflow.graph.values() if n["class_type"] == "LoraLoaderModelOnly"]
    assert [(n["inputs"]["lora_name"], n["inputs"]["strength_model"]) for n in loaders] == [
        ("style.safetensors", 0.5),
        ("detail.safetensors", 1.0),
    ]
    plain = prepare(WF, row({"prompt": "p", "lora": ""}))
    assert isinstance(plain, Job)
    assert "LoraLoaderModelOnly" not in {n["class_type"] for n in plain.workflow.graph.values()}


def test_a_bad_lora_cell_is_a_row_error_naming_the_column():
    bad = prepare(WF, row({"prompt": "p", "lora": "style.safetensors:inf"}, index=7))
    assert isinstance(bad, RowError)
    assert (bad.index, bad.column) == (7, "lora") and "strength" in str(bad)
